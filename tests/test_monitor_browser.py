"""The live pages in a real headless Chromium: rows arrive without a reload, plots draw."""

from __future__ import annotations

import shutil
import tempfile
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

INSTALL_HINT = "apt-get install chromium chromium-driver"


def _find(names: tuple[str, ...], fallback: str) -> str:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return fallback


def new_driver(user_data_dir: Path):  # -> selenium WebDriver
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:  # a failure, not a skip: the test must run
        pytest.fail(f"selenium is not installed ({exc}): pip install selenium")
    chromium = _find(("chromium", "chromium-browser"), "/usr/bin/chromium")
    driver_exe = _find(("chromedriver",), "/usr/bin/chromedriver")
    missing = [p for p in (chromium, driver_exe) if not Path(p).exists()]
    if missing:
        pytest.fail(f"headless browser not found ({', '.join(missing)}): {INSTALL_HINT}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-quic",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={user_data_dir}",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_exe), options=opts)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    profile = Path(tempfile.mkdtemp(prefix="monitor-chromium-"))
    driver = new_driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def live(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[tuple[Monitor, Server]]:
    m = start_monitor(mosquitto.url, tmp_path / "browser.sqlite3")
    server = Server(m.app)
    yield m, server
    m.store.feed.close()  # end the page's event stream so the server can stop
    server.close()
    stop_monitor(m)


def test_new_detection_appears_without_reload(browser, live, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    m, server = live
    m.pub.send(topics.result("door"), result_payload("door", "already_there", 0.9, 1))
    wait_for(lambda: m.store.count() == 1, what="seed row")

    browser.get(f"{server.url}/log/html")
    wait = WebDriverWait(browser, 10)
    wait.until(lambda d: d.find_element(By.ID, "stream-state").text == "live")
    names = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#rows td.name")]
    assert names == ["already_there"]
    marker = browser.execute_script("return window.facewireLogLoadedAt")
    assert marker

    m.pub.send(topics.result("lobby"), result_payload("lobby", "Zoe_Live", 0.45, 2))
    row = wait.until(
        lambda d: next(
            (
                tr
                for tr in d.find_elements(By.CSS_SELECTOR, "#rows tr")
                if tr.find_element(By.CSS_SELECTOR, "td.name").text == "Zoe_Live"
            ),
            False,
        )
    )
    # same page, no reload: the load-time marker is still the one we read before
    assert browser.execute_script("return window.facewireLogLoadedAt") == marker
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[1:4] == ["lobby", "Zoe_Live", "0.450"]
    assert cells[5] == "19.0"  # stages ms
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#log thead th")]
    assert headers[5].lower() == "stages ms"  # CSS shows headers in capitals
    assert "band-near" in row.get_attribute("class")  # 0.45 is within the margin of 0.4
    first = browser.find_element(By.CSS_SELECTOR, "#rows tr td.name").text
    assert first == "Zoe_Live"  # newest on top

    m.pub.send(topics.result("door"), result_payload("door", "unknown", 0.12, 3))
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#rows tr").get_attribute("class"))
    wait.until(
        lambda d: (
            "band-unknown" in d.find_element(By.CSS_SELECTOR, "#rows tr").get_attribute("class")
        )
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3
    assert browser.execute_script("return window.facewireLogLoadedAt") == marker
    browser.save_screenshot(str(tmp_path / "log.png"))


def test_a_frame_named_against_its_tracks_decision_says_so(browser, live) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    m, server = live
    browser.get(f"{server.url}/log/html")
    wait = WebDriverWait(browser, 10)
    wait.until(lambda d: d.find_element(By.ID, "stream-state").text == "live")
    # one frame of a stranger's track named as someone; the track says unknown
    outlier = result_payload("door", "Ann_Outlier", 0.49, 1) | {"track": 3, "track_name": "unknown"}
    agreed = result_payload("door", "Bob_Agreed", 0.8, 2) | {"track": 4, "track_name": "Bob_Agreed"}
    undecided = result_payload("door", "Cy_New", 0.8, 3) | {"track": 5, "track_name": None}
    for payload in (outlier, agreed, undecided):
        m.pub.send(topics.result("door"), payload)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#rows tr")) == 3)

    def name_cell(name: str):
        (td,) = [
            td
            for td in browser.find_elements(By.CSS_SELECTOR, "#rows td.name")
            if td.text.splitlines()[0] == name
        ]
        return td

    notes = name_cell("Ann_Outlier").find_elements(By.CSS_SELECTOR, ".track-name")
    assert [n.text for n in notes] == ["track: unknown"]
    assert "says unknown" in (notes[0].get_attribute("title") or "")
    assert name_cell("Bob_Agreed").find_elements(By.CSS_SELECTOR, ".track-name") == []
    assert name_cell("Cy_New").find_elements(By.CSS_SELECTOR, ".track-name") == []
    # and the JSON rows carry it
    rows = {r["name"]: r["track_name"] for r in m.store.query()}
    assert rows == {"Ann_Outlier": "unknown", "Bob_Agreed": "Bob_Agreed", "Cy_New": None}


LOG_IDS_JS = """
const ids = (sel) => Array.from(document.querySelectorAll(sel)).map((tr) => Number(tr.dataset.id));
return [ids("#rows tr"), ids("#older-rows tr"), document.getElementById("log-older").hidden];
"""
COLUMN_X_JS = """
const left = (td) => Math.round(td.getBoundingClientRect().left);
const x = (sel) => Array.from(document.querySelectorAll(sel)).map(left);
return [x("#rows tr:first-child td"), x("#older-rows tr:first-child td")];
"""


def test_the_log_keeps_its_newest_rows_apart_and_in_order(browser, live) -> None:
    """The page keeps a small table of the newest rows (where a row is inserted) above the
    older ones: rows move over in batches, the order (newest first) and the columns hold
    across both, and the page is trimmed to its 100 rows."""
    from selenium.webdriver.support.ui import WebDriverWait

    m, server = live
    for seq in range(1, 31):
        m.pub.send(topics.result("door"), result_payload("door", f"p{seq}", 0.9, seq))
    wait_for(lambda: m.store.count() == 30, what="the first rows")
    browser.get(f"{server.url}/log/html")
    wait = WebDriverWait(browser, 10)
    wait.until(lambda d: len(d.execute_script(LOG_IDS_JS)[0]) == 25)
    live_ids, older_ids, older_hidden = browser.execute_script(LOG_IDS_JS)
    assert len(older_ids) == 5 and not older_hidden
    ids = live_ids + older_ids
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 30
    # the same columns in both tables
    newest_x, older_x = browser.execute_script(COLUMN_X_JS)
    assert newest_x == older_x and len(newest_x) == 9

    for seq in range(31, 141):  # live, one by one: more than the page keeps
        m.pub.send(topics.result("lobby"), result_payload("lobby", f"p{seq}", 0.9, seq))
    wait_for(lambda: m.store.count() == 140, what="the live rows")

    def settled(d) -> bool:
        newest, rest, _ = d.execute_script(LOG_IDS_JS)
        return (
            len(newest) < 50
            and len(newest) + len(rest) <= 125
            and bool(newest)
            and (
                d.execute_script("return document.querySelector('#rows td.name').textContent")
                == "p140"
            )
        )

    wait.until(settled)
    live_ids, older_ids, _ = browser.execute_script(LOG_IDS_JS)
    ids = live_ids + older_ids
    assert ids == sorted(ids, reverse=True), "newest first across both tables"
    assert len(ids) == len(set(ids)) and ids[0] == max(ids)
    assert ids == list(range(ids[0], ids[0] - len(ids), -1)), "no row skipped"
    assert len(ids) >= 100 - 1  # trimmed to about MAX_ROWS (it may hold a batch more)
    shown = browser.find_element("id", "row-count").text
    assert shown.startswith(f"{len(ids)} shown")


def test_threshold_and_node_pages_draw(browser, live, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    m, server = live
    wait = WebDriverWait(browser, 10)

    browser.get(f"{server.url}/threshold_stats/html")
    missing = wait.until(lambda d: (e := d.find_element(By.ID, "th-missing")).is_displayed() and e)
    assert "faces/stats/thresholds" in missing.text
    m.pub.send(topics.THRESHOLDS, thresholds_payload(), retain=True)
    # the page polls: curves, bars and the EER label appear without a reload
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-cal svg path"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-hist svg rect")) >= 4
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-grid svg path")) == 2
    labels = " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, "svg text"))
    assert "EER 3.10 %" in labels and "threshold 0.363" in labels
    assert browser.find_element(By.ID, "c-rec").text == "0.410"
    browser.save_screenshot(str(tmp_path / "thresholds.png"))

    m.pub.send(topics.status("door"), status_payload("door", 12.0, 31.0), retain=True)
    m.pub.send(topics.status("door"), status_payload("door", 14.0, 35.0), retain=True)
    browser.get(f"{server.url}/nodes/html")
    row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#node-rows tr[data-node="door"]'))
    cells = [td.text for td in row[0].find_elements(By.TAG_NAME, "td")]
    assert cells[0] == "door" and cells[1] == "online"
    assert cells[5:7] == ["14.0", "35.0"]
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '.chart[data-node="door"] svg path'))
    m.pub.send(topics.status("door"), {"node": "door", "state": "offline"}, retain=True)
    wait.until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, '#node-rows tr[data-node="door"] td.state').text
            == "offline"
        )
    )
