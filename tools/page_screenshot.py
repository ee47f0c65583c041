"""Writes docs/page.png: the served page with a 7 drawn on it, from a real run.

    .venv/bin/python -m tools.page_screenshot [--output-dir outputs]

Run after `make run`: it serves the run's pushed model with `mnist-tfx
serve` (free ports), draws a 7 in headless Chromium as the page tests do,
and saves the browser's screenshot.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOT = os.path.join(ROOT, "docs", "page.png")


def main(argv=None) -> int:
  sys.path.insert(0, ROOT)
  from tests import drawn_digits, test_page  # pylint: disable=g-import-not-at-top
  from tests.browser import chromium  # pylint: disable=g-import-not-at-top
  from tests.serve_process import serving  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--output-dir", default=os.path.join(ROOT, "outputs"))
  args = parser.parse_args(argv)
  out = os.path.abspath(args.output_dir)
  import tempfile  # pylint: disable=g-import-not-at-top
  with serving(os.path.join(out, "serving_model", "mnist"), "--output-dir", out) as served, \
      tempfile.TemporaryDirectory() as profile:
    browser = chromium(profile, 1100, 1700)
    try:
      browser.get(f"http://127.0.0.1:{served.rest}/ui/")
      test_page._wait(browser, "return document.body.dataset.ready === 'true'")  # pylint: disable=protected-access
      test_page._draw(browser, drawn_digits.STROKES[7])  # pylint: disable=protected-access
      time.sleep(6)  # one refresh of the traffic bars
      browser.save_screenshot(SHOT)
      from PIL import Image  # pylint: disable=g-import-not-at-top
      with Image.open(SHOT) as shot:  # a palette of 64 greys and blues: a third the size
        small = shot.convert("RGB").quantize(64)
      small.save(SHOT, optimize=True)
      print(f"{SHOT}: predicted {browser.find_element('id', 'prediction').text}")
    finally:
      browser.quit()
  return 0


if __name__ == "__main__":
  sys.exit(main())
