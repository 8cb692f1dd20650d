"""Headless Chromium for the browser tests: Debian's chromium with its own chromedriver, never a
downloaded one (Selenium Manager is not used: the driver path is given explicitly)."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def skip_without_chromium() -> None:
    if chromium_binary() is None or not os.path.exists(CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")


def make_driver(width: int = 1200, height: int = 900):
    """A headless Chromium WebDriver with a ``width`` x ``height`` window."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_binary()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--hide-scrollbars", "--force-device-scale-factor=1",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)


def chromium_session(width: int, height: int):
    """The body of a driver fixture: skips without Chromium, quits the driver afterwards."""
    skip_without_chromium()
    driver = make_driver(width, height)
    yield driver
    driver.quit()
