"""Headless Chromium for the page tests: Debian's chromium and chromedriver,
installed by `make test` (the Makefile's test-deps); the browser fetches nothing."""

import json
import os
import shutil
from typing import List

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium(user_data_dir: str, width: int = 1280, height: int = 2000):
  """A headless Chromium that logs the console and every network request."""
  assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), (
      "Chromium/ChromeDriver missing: `make test` installs Debian's chromium "
      "and chromium-driver")
  os.environ["SE_OFFLINE"] = "true"  # Selenium must never fetch a driver
  from selenium import webdriver  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.chrome.service import Service  # pylint: disable=g-import-not-at-top
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync",
              f"--user-data-dir={user_data_dir}"):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
  driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
  driver.set_window_size(width, height)
  return driver


def console_errors(driver) -> List[dict]:
  return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def requested_urls(driver) -> List[str]:
  """Every URL the page asked for since the last call (Chromium's network log)."""
  urls = []
  for entry in driver.get_log("performance"):
    message = json.loads(entry["message"])["message"]
    if message.get("method") == "Network.requestWillBeSent":
      urls.append(message["params"]["request"]["url"])
  return urls
