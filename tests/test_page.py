"""The page `mnist-tfx serve` serves at /ui/, in headless Chromium, as a user
gets it: after `mnist-tfx run`, `mnist-tfx serve` with the run's output dir.

The model is fit on digits drawn as strokes (tests.drawn_digits), so the
strokes drawn here on the canvas are read as the digits they are.
"""

import base64
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from serving.client import load_digit
from tests import drawn_digits
from tests.browser import console_errors, requested_urls
from tests.serve_process import ROOT, serving


def _mnist_tfx(*args):
  return subprocess.run([sys.executable, "-m", "mnist_tfx", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("page")
  data = drawn_digits.write_dataset(str(root / "data"))
  out = str(root / "out")
  done = _mnist_tfx("run", "--data-dir", data, "--output-dir", out,
                    "--min-accuracy", "0", "--min-class-accuracy", "0")
  assert done.returncode == 0, done.stderr[-3000:]
  return out


@pytest.fixture(scope="module")
def server(run_dir):
  with serving(os.path.join(run_dir, "serving_model", "mnist"),
               "--output-dir", run_dir) as served:
    yield served


@pytest.fixture(scope="module")
def page_url(server):
  line, = [l for l in server.lines if l.startswith("Page: ")]
  url = line.split()[1]
  assert url == f"http://127.0.0.1:{server.rest}/ui/"
  return url


@pytest.fixture(scope="module")
def opened(browser, page_url):
  requested_urls(browser)  # the browser's own start-up (its new-tab page), before the page
  browser.get(page_url)
  _wait(browser, "return document.body.dataset.ready === 'true'")
  _wait(browser, "return document.querySelectorAll('#runs tbody tr').length > 0")
  return browser


def _wait(browser, script, timeout=30):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    found = browser.execute_script(script)
    if found:
      return found
    time.sleep(0.1)
  raise AssertionError(f"timed out waiting for: {script}")


def _draw(browser, strokes):
  """Draws `strokes` (unit-box polylines) with the mouse, as a user would."""
  from selenium.webdriver.common.action_chains import ActionChains  # pylint: disable=g-import-not-at-top
  pad = browser.find_element("id", "pad")
  side = pad.size["width"]
  answered = browser.execute_script("return window.mnistPage.answered")
  for stroke in strokes:
    points = [(round((x - 0.5) * side), round((y - 0.5) * side)) for x, y in stroke]
    chain = ActionChains(browser, duration=10).move_to_element_with_offset(pad, *points[0])
    chain.click_and_hold()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
      for t in np.linspace(0, 1, 8)[1:]:  # a hand moves in small steps
        chain.move_to_element_with_offset(pad, round(x0 + t * (x1 - x0)),
                                          round(y0 + t * (y1 - y0)))
    chain.release().perform()
  # The answer for the finished drawing: none pending, none asked since.
  _wait(browser, f"const s = window.mnistPage; return s.answered > {answered} && "
                 "!s.pending && !s.again && !s.drawing")
  time.sleep(0.3)
  _wait(browser, "const s = window.mnistPage; return !s.pending && !s.again")


def _shown(browser):
  return browser.execute_script("""
    const rows = [...document.querySelectorAll('#probabilities tbody tr')];
    return {digit: document.getElementById('prediction').textContent,
            probabilities: rows.map(r => Number(r.dataset.value)),
            pixels: window.mnistPage.pixels, target: window.mnistPage.answer.target};""")


@pytest.mark.parametrize("digit", [7, 1])
def test_a_drawn_digit_is_read_and_the_bars_are_the_rest_api_s_answer(opened, server,
                                                                       digit):
  browser = opened
  browser.find_element("id", "clear").click()
  _draw(browser, drawn_digits.STROKES[digit])
  shown = _shown(browser)
  assert shown["digit"] == str(digit), shown["probabilities"]
  assert shown["target"] == "/v1/models/mnist"
  pixels = shown["pixels"]
  assert len(pixels) == 784 and all(isinstance(p, int) and 0 <= p <= 255 for p in pixels)
  answer = server.post("/v1/models/mnist:predict", {"instances": [pixels]}).json()
  assert np.allclose(shown["probabilities"], answer["predictions"][0]["probabilities"],
                     rtol=0, atol=1e-6)
  assert int(np.argmax(shown["probabilities"])) == digit


def test_the_page_preprocesses_as_mnist_tfx_predict_does(opened, tmp_path):
  """The pixels the page sends and those `mnist-tfx predict` makes of the
  same canvas saved as a PNG: the same digit, placed the same way."""
  browser = opened
  browser.find_element("id", "clear").click()
  _draw(browser, drawn_digits.STROKES[7])
  page = np.array(_shown(browser)["pixels"], np.float64).reshape(28, 28)
  png = browser.execute_script("return document.getElementById('pad').toDataURL()")
  path = tmp_path / "canvas.png"
  path.write_bytes(base64.b64decode(png.split(",", 1)[1]))
  python = load_digit(str(path)).astype(np.float64)
  assert np.corrcoef(page.ravel(), python.ravel())[0, 1] > 0.97
  for axis in (0, 1):  # the same centre of mass, within a pixel
    grid = np.arange(28)
    centre = lambda im: (im.sum(axis=1 - axis) * grid).sum() / im.sum()
    assert abs(centre(page) - centre(python)) <= 1.0


def test_the_keyboard_clears_the_pad(opened):
  from selenium.webdriver.common.keys import Keys  # pylint: disable=g-import-not-at-top
  browser = opened
  _draw(browser, drawn_digits.STROKES[1])
  browser.find_element("id", "pad").send_keys(Keys.ESCAPE)
  assert browser.find_element("id", "prediction").text == "–"
  assert browser.execute_script("return window.mnistPage.pixels") is None


def test_a_version_can_be_picked(opened, server):
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  browser = opened
  status = httpx.get(f"http://127.0.0.1:{server.rest}/v1/models/mnist").json()
  served = status["model_version_status"][0]["version"]
  Select(browser.find_element("id", "version")).select_by_value(f"version:{served}")
  browser.find_element("id", "clear").click()
  _draw(browser, drawn_digits.STROKES[7])
  assert _shown(browser)["target"] == f"/v1/models/mnist/versions/{served}"
  _wait(browser, f"return document.getElementById('lineage').textContent.includes('{served}')")
  lineage = browser.find_element("id", "lineage").text
  assert "blessed, accuracy" in lineage and "SHA-256" in lineage


def test_the_runs_table_is_what_mnist_tfx_runs_json_says(opened, run_dir):
  rows = json.loads(_mnist_tfx("runs", "--output-dir", run_dir, "--json").stdout)
  shown = opened.execute_script("""
    return [...document.querySelectorAll('#runs tbody tr')].map(r => ({
      run: r.dataset.run,
      cells: Object.fromEntries([...r.cells].map(c => [c.className, c.textContent])),
      accuracy: r.cells[4].dataset.value,
      report: r.querySelector('a') ? r.querySelector('a').href : null}));""")
  assert [s["run"] for s in shown] == [r["run"] for r in rows]
  for s, r in zip(shown, rows):
    assert s["cells"]["status"] == r["status"]
    assert s["cells"]["model"] == r["model"]
    assert float(s["accuracy"]) == r["accuracy"]
    assert s["cells"]["blessed"] == ("yes" if r["blessed"] else "no")
    assert s["cells"]["why"] == r["why"]
    assert s["cells"]["pushed"] == str(r["pushed_version"])
  report = httpx.get(shown[0]["report"])
  assert report.status_code == 200 and "mnist-tfx evaluation" in report.text


def test_the_traffic_shows_the_page_s_requests(opened):
  _wait(opened, "return /^[1-9][0-9]* requests/.test("
                "document.getElementById('traffic-summary').textContent)", timeout=15)


def test_no_console_errors_and_nothing_fetched_from_elsewhere(opened, server):
  assert not console_errors(opened)
  urls = requested_urls(opened)
  assert urls, "the network log is empty: the check below would prove nothing"
  origin = f"http://127.0.0.1:{server.rest}/"
  assert [u for u in urls if not (u.startswith(origin) or u.startswith("data:"))] == []


def test_it_fits_a_phone_screen(browser, page_url):
  browser.set_window_size(390, 844)
  try:
    browser.get(page_url)
    _wait(browser, "return document.body.dataset.ready === 'true'")
    width = browser.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1]
    pad = browser.find_element("id", "pad").size
    assert pad["width"] <= 390
  finally:
    browser.set_window_size(1280, 2000)


def test_bad_requests_to_the_page_s_api_are_clear_json_errors(server):
  base = f"http://127.0.0.1:{server.rest}/ui/"
  for path, status in (("api/lineage?version=abc", 400), ("api/lineage?version=999", 404),
                       ("reports/..%2F..%2Fetc%2Fpasswd.html", 400),
                       ("reports/1999-01-01T00:00:00.html", 404), ("nope", 404)):
    answer = httpx.get(base + path)
    assert answer.status_code == status, path
    assert answer.json()["error"], path
  assert httpx.post(base, content=b"{}").status_code == 405
  assert httpx.get(base[:-1], follow_redirects=False).status_code == 307
  assert "content-security-policy" in httpx.get(base).headers


def test_without_a_store_the_runs_say_why_and_no_ui_turns_the_page_off(run_dir, tmp_path):
  base = os.path.join(run_dir, "serving_model", "mnist")
  with serving(base, "--output-dir", str(tmp_path)) as other:
    runs = httpx.get(f"http://127.0.0.1:{other.rest}/ui/api/runs").json()
    assert runs["runs"] == [] and "no ML Metadata store at" in runs["note"]
    # A store that is not one: a JSON 500 that says so, and the server goes on.
    (tmp_path / "metadata.sqlite").write_bytes(b"not a database" * 100)
    broken = httpx.get(f"http://127.0.0.1:{other.rest}/ui/api/runs")
    assert broken.status_code == 500 and broken.json()["error"].startswith("cannot read runs")
    assert httpx.get(f"http://127.0.0.1:{other.rest}/v1/models/mnist").status_code == 200
  with serving(base, "--no-ui") as bare:
    assert not any(l.startswith("Page: ") for l in bare.lines)
    answer = httpx.get(f"http://127.0.0.1:{bare.rest}/ui/")
    assert answer.status_code == 404 and "error" in answer.json()
    # The page is gone; TF Serving's API stays.
    assert httpx.get(f"http://127.0.0.1:{bare.rest}/v1/models/mnist").status_code == 200


def test_a_label_is_offered_and_asked_through_its_rest_path(run_dir, browser, tmp_path):
  """After `mnist-tfx promote`, the picker offers the label; a drawing is then
  sent to /v1/models/mnist/labels/stable:predict."""
  from selenium.webdriver.support.ui import Select  # pylint: disable=g-import-not-at-top
  version = max(int(v) for v in os.listdir(os.path.join(run_dir, "serving_model", "mnist"))
                if v.isdigit())
  config = str(tmp_path / "models.config")
  done = _mnist_tfx("promote", str(version), "--output-dir", run_dir,
                    "--model-config-file", config)
  assert done.returncode == 0, done.stderr
  with serving(None, "--model-config-file", config, "--output-dir", run_dir) as served:
    models = httpx.get(f"http://127.0.0.1:{served.rest}/ui/api/models").json()
    assert models["labels"] == {"stable": version}
    browser.get(f"http://127.0.0.1:{served.rest}/ui/")
    _wait(browser, "return document.body.dataset.ready === 'true'")
    Select(browser.find_element("id", "version")).select_by_value("label:stable")
    browser.find_element("id", "clear").click()
    _draw(browser, drawn_digits.STROKES[1])
    shown = _shown(browser)
    assert shown["target"] == "/v1/models/mnist/labels/stable" and shown["digit"] == "1"
    assert "labels stable → " + str(version) in browser.find_element("id", "serving").text
    assert not console_errors(browser)
