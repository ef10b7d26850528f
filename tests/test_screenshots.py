"""Every monitor page in headless Chromium, kept in docs/img/ (issue 13, item 6).

The pages are those of the compose services run as real processes (tests/compose_rig):
the monitor behind its login, the classifier with the sample gallery and the edge
profile's node sending a gallery person's probe photos, sealed. The browser logs in as
the account ``facewire nodes init`` made, waits until each page shows live data and
saves it to ``docs/img/monitor-<page>.png`` (the README shows them) when
``FACEWIRE_UPDATE_SCREENSHOTS=1``: ``FACEWIRE_UPDATE_SCREENSHOTS=1 ./dev.sh test -k
screenshots``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compose_rig import ROOT, Stack, wait_for
from tests.test_monitor_browser import new_driver

#: Where the pictures go: docs/img/ when FACEWIRE_UPDATE_SCREENSHOTS is set (to refresh
#: the README's), else a temporary folder, so a test run leaves the checkout unchanged.
DOCS_IMG = ROOT / "docs" / "img"
WIDTH = 1280
#: path → (file, CSS selector that means the page has its data)
PAGES = {
    "/": ("monitor-index.png", "#i-detections"),
    "/log/html": ("monitor-log.png", "#rows tr"),
    "/nodes/html": ("monitor-nodes.png", "#nodes tbody tr"),
    "/threshold_stats/html": ("monitor-thresholds.png", "#th-body:not([hidden])"),
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("shots")).start()
    try:
        c = s.services["classifier"]
        wait_for(lambda: "classifier: connected to" in c.output(), 240, "the classifier", c)
        s.start_edge(ROOT / "dataset" / "probes" / "ORL_s04")
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    profile = Path(tempfile.mkdtemp(prefix="shots-chromium-"))
    driver = new_driver(profile)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _shown(driver, selector: str) -> bool:
    from selenium.webdriver.common.by import By

    return any(e.is_displayed() for e in driver.find_elements(By.CSS_SELECTOR, selector))


def _save(driver, path: Path) -> None:
    height = driver.execute_script("return Math.ceil(document.documentElement.scrollHeight || 900)")
    # the whole page: headless Chromium's viewport, not the window, sets the picture
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": max(600, min(int(height), 2400)), "deviceScaleFactor": 1,
         "mobile": False},
    )  # fmt: skip
    time.sleep(0.4)
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000  # a page, not a blank


def test_every_monitor_page_is_screenshotted(stack: Stack, browser, tmp_path: Path) -> None:
    IMG = DOCS_IMG if os.environ.get("FACEWIRE_UPDATE_SCREENSHOTS") else tmp_path
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    IMG.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(WIDTH, 900)
    # not logged in: every page leads to the login
    browser.get(stack.monitor_url("/log/html"))
    WebDriverWait(browser, 20).until(lambda d: _shown(d, "#login-submit"))
    assert "/login" in browser.current_url
    _save(browser, IMG / "monitor-login.png")
    browser.find_element(By.ID, "user").send_keys(stack.login["user"])
    browser.find_element(By.ID, "password").send_keys(stack.login["password"])
    browser.find_element(By.ID, "login-submit").click()
    WebDriverWait(browser, 20).until(lambda d: "/log/html" in d.current_url)
    # wait for live data: a named face in the log
    WebDriverWait(browser, 120).until(lambda d: "ORL_s04" in d.page_source)
    for path, (name, ready) in PAGES.items():
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.get(stack.monitor_url(path))
        WebDriverWait(browser, 60).until(lambda d, sel=ready: _shown(d, sel))
        assert "/login" not in browser.current_url, path
        time.sleep(1.5)  # the row flash and the charts' first draw
        _save(browser, IMG / name)
    for name, _ in PAGES.values():
        assert (IMG / name).exists()
