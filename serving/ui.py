"""The page `mnist-tfx serve` serves under /ui/: draw a digit, see the runs.

The page itself (`serving/ui/`: one HTML file, one script, one style sheet,
no library, nothing fetched from elsewhere) asks the model through the same
REST API as any client (`/v1/models/...:predict`); what it cannot get from
TF Serving's API comes from here, as JSON under /ui/api/:
  models            the served name, its versions' states and labels
  runs              what `mnist-tfx runs --json` prints, and the kept reports
  lineage?version=  what `mnist-tfx lineage VERSION --json` prints
  metrics           requests, errors and latency per 10 s, last 10 minutes
and each run's report, as `report` kept it, under /ui/reports/<run>.html.
ML Metadata is read in a worker thread, never on the event loop.
"""

import logging
import os
import re
from typing import Any, Callable, Dict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from mnist_tfx import defaults

_LOG = logging.getLogger(__name__)
PREFIX = defaults.UI_PATH
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")
_STATIC = {"": ("index.html", "text/html; charset=utf-8"),
           "page.js": ("page.js", "text/javascript; charset=utf-8"),
           "page.css": ("page.css", "text/css; charset=utf-8")}
# What a pipeline run's name looks like in ML Metadata (a timestamp).
_RUN = re.compile(r"[0-9A-Za-z][0-9A-Za-z:._-]{0,99}")
# Nothing on the page comes from elsewhere, and no other page may frame it.
_HEADERS = {"content-security-policy": "default-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'",
            "x-content-type-options": "nosniff", "cache-control": "no-cache"}


def report_path(output_dir: str, run: str) -> str:
  """Where `report` keeps the page of run `run` (see results.report)."""
  from results import report  # pylint: disable=g-import-not-at-top
  return report.kept_path(output_dir, run)


class Ui:
  """The page's routes; `handle` answers any path under PREFIX."""

  def __init__(self, store, output_dir: str, metrics=None):
    self.store = store  # the serving ModelStore
    self.output_dir = output_dir
    self.metrics = metrics

  async def handle(self, request: Request) -> Response:
    path = request.url.path
    if path == PREFIX.rstrip("/"):
      return RedirectResponse(PREFIX)
    rest = path[len(PREFIX):]
    if request.method not in ("GET", "HEAD"):
      return _error(405, f"Method {request.method} not allowed")
    if rest in _STATIC:
      name, media = _STATIC[rest]
      return FileResponse(os.path.join(STATIC_DIR, name), media_type=media,
                          headers=_HEADERS)
    api: Dict[str, Callable[[Request], Any]] = {
        "api/models": self.models, "api/runs": self.runs,
        "api/lineage": self.lineage, "api/metrics": self.traffic}
    if rest in api:
      try:
        found = await run_in_threadpool(api[rest], request)
      except _NotFound as e:
        return _error(404, str(e))
      except ValueError as e:
        return _error(400, str(e))
      except Exception as e:  # pylint: disable=broad-except
        # An unreadable store, say: the page says so; serving goes on.
        _LOG.error("page: %s failed: %r", rest, e)
        return _error(500, f"cannot read {rest[4:]}: "
                      f"{(str(e).splitlines() or [type(e).__name__])[0][:300]}")
      return found if isinstance(found, Response) else JSONResponse(
          found, headers=_HEADERS)
    if rest.startswith("reports/") and rest.endswith(".html"):
      return self.report(rest[len("reports/"):-len(".html")])
    return _error(404, f"Not found: {path} (the page is at {PREFIX})")

  # --- the API -----------------------------------------------------------------

  def models(self, request: Request) -> Dict[str, Any]:
    del request
    try:
      statuses = self.store.status(self.store.name)
    except Exception:  # pylint: disable=broad-except
      statuses = []  # nothing loaded yet
    return {"name": self.store.name,
            "versions": [{"version": int(s.version), "state": s.state}
                         for s in statuses],
            "labels": dict(self.store.labels)}

  def _history_store(self):
    from pipeline.configs import PipelineConfig  # pylint: disable=g-import-not-at-top
    from results import metadata  # pylint: disable=g-import-not-at-top
    config = PipelineConfig(output_dir=self.output_dir)
    if not config.metadata_exists:
      raise _NotFound(f"no ML Metadata store at {config.metadata_shown} "
                      "(run the pipeline first, or serve with --output-dir)")
    return config, metadata.open_store(config.metadata_uri)

  def runs(self, request: Request) -> Dict[str, Any]:
    """`mnist-tfx runs --json`'s rows, and the link of each kept report."""
    del request
    from pipeline import workspace  # pylint: disable=g-import-not-at-top
    from results import lineage  # pylint: disable=g-import-not-at-top
    try:
      config, store = self._history_store()
    except _NotFound as e:
      return {"runs": [], "reports": {}, "note": str(e)}
    rows = lineage.runs(store, workspace.dead_executions(config))
    return {"runs": rows,
            "reports": {r["run"]: f"{PREFIX}reports/{r['run']}.html" for r in rows
                        if _RUN.fullmatch(r["run"] or "")
                        and os.path.isfile(report_path(self.output_dir, r["run"]))}}

  def lineage(self, request: Request) -> Dict[str, Any]:
    from results import lineage  # pylint: disable=g-import-not-at-top
    text = request.query_params.get("version", "")
    if text and not text.isdigit():
      raise ValueError(f"version must be a number, got {text[:40]!r}")
    _, store = self._history_store()
    try:
      return lineage.lineage(store, int(text) if text else None)
    except lineage.LineageError as e:
      raise _NotFound(str(e)) from None

  def traffic(self, request: Request) -> Dict[str, Any]:
    del request
    if self.metrics is None:
      raise _NotFound("metrics are off for this server")
    from serving import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
    return {"step_seconds": metrics_lib.RECENT_STEP, "steps": self.metrics.recent()}

  def report(self, run: str) -> Response:
    if not _RUN.fullmatch(run):
      return _error(400, "not a run name")
    path = report_path(self.output_dir, run)
    if not os.path.isfile(path):
      return _error(404, f"no report kept for run {run} (runs with --no-report have none)")
    # The report is one self-contained page: inline styles and images only.
    return FileResponse(path, media_type="text/html; charset=utf-8", headers={
        "content-security-policy": "default-src 'none'; img-src data:; "
                                   "style-src 'unsafe-inline'",
        "x-content-type-options": "nosniff"})


class _NotFound(LookupError):
  pass


def _error(status: int, message: str) -> Response:
  return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)

