"""A headless Chromium driven by Selenium, for looking at ``benchmarks.view`` reports: the tests,
``benchmarks.view_screenshots`` and ``benchmarks.view_speed`` open the page through here.

Chromium and its driver come from the system's packages (Debian: ``apt-get install chromium
chromium-driver``), Selenium from the ``test`` extra (``pip install -e ".[test]"``). Selenium is
pointed at the installed driver, so it never looks for one on the network.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from sotopia_env.errors import ConfigError

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver",)
INSTALL_HINT = "apt-get install -y chromium chromium-driver"


def _which(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):
        return shutil.which(os.environ[env])
    return next((p for p in map(shutil.which, names) if p), None)


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) executables, from ``CHROMIUM_BIN`` / ``CHROMEDRIVER_BIN`` or the PATH;
    None when either is missing."""
    browser, driver = _which(BROWSERS, "CHROMIUM_BIN"), _which(DRIVERS, "CHROMEDRIVER_BIN")
    return (browser, driver) if browser and driver else None


def open_browser(width: int = 1400, height: int = 1000):
    """A headless Chromium that keeps the page's console messages (``console_errors``).
    ConfigError naming what to install when Chromium or Selenium is missing."""
    found = find_chromium()
    if found is None:
        raise ConfigError(f"Chromium and chromedriver are needed to open the report: {INSTALL_HINT}")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        raise ConfigError('selenium is not installed: pip install -e ".[test]"') from None
    browser, driver = found
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    # --no-sandbox: the tests run as root in containers, where Chromium's sandbox cannot start.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


def page_url(path: str | os.PathLike, view: str = "") -> str:
    """The file URL of a report, opened at ``view`` (episodes, branches, pairs or results)."""
    return Path(path).resolve().as_uri() + (f"#{view}" if view else "")


def console_errors(driver) -> list[str]:
    """The page's console errors (and uncaught exceptions) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def wait_ready(driver, timeout: float = 10.0) -> None:
    """Wait until the page has drawn its first view (it sets ``body[data-ready]``)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
