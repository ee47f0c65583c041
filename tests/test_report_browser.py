"""report.html in headless Chromium: no console errors, the confusion matrix shows.

Chromium and ChromeDriver are Debian's packages, installed by `make test`
(see the Makefile's test-deps); nothing is downloaded by the browser itself.
"""

import pytest

from results import report
from tests.browser import console_errors as _console_errors


@pytest.fixture(scope="module")
def report_html(tiny_run_dir):
  return report.generate(tiny_run_dir)[1]["html"]


def test_the_console_check_catches_errors(browser, tmp_path):
  """Proves the next test's check can fail: a page with a script error."""
  page = tmp_path / "broken.html"
  page.write_text("<html><body><script>notAFunction();</script></body></html>")
  browser.get(page.as_uri())
  assert _console_errors(browser)


def test_report_renders_without_console_errors(browser, report_html, tmp_path):
  browser.get("file://" + report_html)
  assert not _console_errors(browser)
  shown = browser.execute_script(
      "const i = document.getElementById('confusion-matrix');"
      "if (!i || !i.complete) return null;"
      "const r = i.getBoundingClientRect();"
      "return [i.naturalWidth, i.naturalHeight, r.width, r.height];")
  assert shown is not None, "no decoded confusion-matrix image"
  natural_w, natural_h, w, h = shown
  assert natural_w >= 400 and natural_h >= 400  # the PNG decoded
  assert w > 200 and h > 200  # and is laid out on the page
  assert "Per digit" in browser.find_element("tag name", "body").text
  browser.save_screenshot(str(tmp_path / "report.png"))
