"""Hostile text on every monitor page, in a real headless Chromium over a real
mosquitto: node ids, names, error details and status fields that contain HTML are
shown as text and create no element; a late result wears its badge (issue 12)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from facewire.bus import topics
from tests.broker import Mosquitto
from tests.test_monitor import (
    Monitor,
    Server,
    result_payload,
    start_monitor,
    status_payload,
    stop_monitor,
    thresholds_payload,
    wait_for,
)
from tests.test_monitor_browser import browser  # noqa: F401 - the fixture

# A node id may hold no space or '/': these are valid ids that are also markup.
NODE = "<b>door<img>"
NAME_IMG = '<img src=x onerror="window.__xss=1">'
NAME_SCRIPT = "<script>window.__xss=2</script>"
DETAIL = '<img src=x onerror="window.__xss=3"> bad <i>size</i>'
MODEL = "<svg/onload=window.__xss=4>"


@pytest.fixture
def live(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[tuple[Monitor, Server]]:
    m = start_monitor(mosquitto.url, tmp_path / "html.sqlite3")
    server = Server(m.app)
    yield m, server
    m.store.feed.close()
    server.close()
    stop_monitor(m)


def no_injection(driver) -> None:
    from selenium.webdriver.common.by import By

    assert driver.execute_script("return window.__xss === undefined")
    # the pages' own markup has no img, b or script, and its only i are legend swatches
    found = driver.find_elements(By.CSS_SELECTOR, "main img, main script, main b, i:not(.swatch)")
    assert not found, [e.get_attribute("outerHTML")[:80] for e in found]
    # svg elements are only the charts' own (they carry role="img")
    stray = [
        e
        for e in driver.find_elements(By.CSS_SELECTOR, "main svg")
        if e.get_attribute("role") != "img"
    ]
    assert not stray


def test_html_in_messages_is_shown_as_text_on_every_page(browser, live) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    m, server = live
    pub = m.pub
    pub.send(topics.status(NODE), status_payload(NODE) | {"model": MODEL}, retain=True)
    pub.send(topics.result(NODE), result_payload(NODE, NAME_IMG, 0.9, 1) | {"model": MODEL})
    pub.send(topics.result(NODE), result_payload(NODE, NAME_SCRIPT, 0.2, 2))
    late = result_payload("lobby", "Late_Lou", 0.9, 3) | {"captured_at": time.time() - 12.0}
    pub.send(topics.result("lobby"), late)
    error = {"node": NODE, "reason": "bad_field", "detail": DETAIL, "count": 1, "seq": 1}
    pub.send(topics.error(NODE), error)
    pub.send(topics.THRESHOLDS, thresholds_payload(), retain=True)
    pub.send(f"faces/{NAME_IMG}/result", b"{}")  # not a valid node id: malformed, shown
    wait_for(lambda: m.store.count() == 3 and m.state.errors_total() == 1, what="messages in")
    wait_for(lambda: m.state.malformed_total >= 1, what="the malformed one counted")
    wait = WebDriverWait(browser, 10)

    browser.get(f"{server.url}/log/html")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3)
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tr")
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in rows]
    names = [c[2] for c in cells]
    assert names == ["Late_Lou", NAME_SCRIPT, NAME_IMG]
    assert [c[1] for c in cells] == ["lobby", NODE, NODE]
    assert cells[2][7] == MODEL
    # the late one wears its badge (received 12 s after its capture), the others not
    badges = browser.find_elements(By.CSS_SELECTOR, "#rows tr .late")
    assert len(badges) == 1 and badges[0].text.startswith("late 1")
    delay = float(badges[0].text.split()[1])
    assert 11.5 < delay < 20
    assert not rows[1].find_elements(By.CSS_SELECTOR, ".late")
    no_injection(browser)
    # a live row arrives as text too
    pub.send(topics.result(NODE), result_payload(NODE, "<b>live</b>", 0.9, 4))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rows tr td.name").text == "<b>live</b>")
    no_injection(browser)

    browser.get(f"{server.url}/nodes/html")
    row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#node-rows tr"))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#error-rows tr"))
    nodes = [tr.find_element(By.TAG_NAME, "td").text for tr in row]
    assert NODE in nodes
    error_cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#error-rows td")]
    assert NODE in error_cells and DETAIL in error_cells
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "#latency-charts h3")]
    assert NODE in headings
    malformed = wait.until(lambda d: d.find_element(By.ID, "malformed").text)
    assert NAME_IMG in malformed
    node_models = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#node-rows td")]
    assert MODEL in node_models
    no_injection(browser)

    for page in ("/", "/threshold_stats/html"):
        browser.get(f"{server.url}{page}")
        wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
        time.sleep(0.5)  # the pages poll once on load
        no_injection(browser)
