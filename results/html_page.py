"""The report as one self-contained HTML page: images inlined, no script,
nothing fetched."""

import base64
import datetime
import html
import importlib.metadata
from typing import Any, Dict, List

from results.report_text import tensorboard_commands
from results.run_view import RunView
from results.summary import component_time, search_line, trials_table

PACKAGES = ("tfx", "tensorflow", "keras", "tensorflow-transform",
            "tensorflow-model-analysis", "tensorflow-data-validation",
            "apache-beam")


def _img(path: str, alt: str, element_id: str) -> str:
  with open(path, "rb") as f:
    data = base64.b64encode(f.read()).decode()
  return f'<img id="{element_id}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _rows(rows: List[List[Any]]) -> str:
  return "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                 + "</tr>" for r in rows)


def _number(v: float) -> str:
  return f"{int(v):,}" if float(v).is_integer() else f"{v:.4g}"


def _when(run_id: Any) -> Any:
  """LocalDagRunner's run id (an ISO timestamp) as a reader writes a time."""
  try:
    return datetime.datetime.fromisoformat(str(run_id)).strftime("%Y-%m-%d %H:%M:%S")
  except ValueError:
    return run_id


def _versions() -> Dict[str, str]:
  out = {}
  for name in PACKAGES:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      out[name] = "not installed"
  return out


def write_html(view: RunView, pictures: Dict[str, str], path: str) -> str:
  e, s = view.evaluation, view.summary
  baseline = e.baseline_per_class_accuracy or {}
  digits = [[d, f"{a:.4f}", f"{view.precision[d]:.4f}", e.per_class_count[d]] +
            ([f"{baseline[d]:.4f}", f"{a - baseline[d]:+.4f}"] if d in baseline else [])
            for d, a in e.per_class_accuracy.items()]
  digit_head = ["digit", "accuracy (recall)", "precision", "examples"] + (
      ["baseline accuracy", "change"] if baseline else [])
  stats_rows = [[split, feature] + [_number(v) for v in values.values()]
                for split, by_feature in view.statistics.items()
                for feature, values in by_feature.items() if feature != "examples"]
  stats_head = ["split", "feature", "present", "values/example", "min", "max",
                "mean", "std", "zeros"]
  anomalies = "".join(f"<li>[{html.escape(split)}] {html.escape(line)}</li>"
                      for split, lines in view.anomalies.items() for line in lines)
  boards = dict(tensorboard_commands(s))
  facts = [["run", _when(s.get("run_id"))], ["status", s.get("status")],
           ["TensorBoard", boards.get("TensorBoard", "no logs")],
           ["total seconds", s.get("total_seconds")],
           ["TensorBoard (the search's trials)",
            boards.get("TensorBoard (the search's trials)", "no search")],
           ["pushed", s.get("pushed_model_path") or "nothing"]]
  facts += [[f"hyperparameter {k}", v] for k, v in s["hyperparameters"].items()]
  facts += [[f"SHA-256 of {k} (the file, as sha256sum prints it)", v]
            for k, v in (s.get("data_sha256") or {}).items()]
  facts += [[f"version {k}", v] for k, v in _versions().items()]
  facts += [[f"seconds {k}", component_time(s, k)]
            for k in s.get("component_seconds", {})]
  sections = [
      f"<h1>mnist-tfx evaluation: {html.escape(s['model'])}</h1>",
      f'<p id="accuracy">Accuracy <b>{e.accuracy:.4f}</b> on {e.example_count} eval '
      "examples" + (f"; last blessed model {e.baseline_accuracy:.4f}"
                    if e.baseline_accuracy is not None else "") + "</p>",
      f'<p id="blessing">Blessed: <b>{"yes" if s["blessed"] else "no"}</b> - '
      f"{html.escape(str(s['blessing']))}</p>",
      "<h2>Per digit</h2><table id=\"per-digit\"><tr>" +
      "".join(f"<th>{h}</th>" for h in digit_head) + "</tr>" + _rows(digits) + "</table>",
      "<h2>Per writer population</h2><table id=\"per-writer\"><tr><th>writers</th>"
      "<th>accuracy</th><th>examples</th></tr>" + _rows(
          [[w, f"{a:.4f}", e.per_writer_count.get(w, 0)]
           for w, a in e.per_writer_accuracy.items()]) + "</table>" + (
               f"<p>Gap (SD-3 less SD-1): {e.writer_gap:+.4f}</p>"
               if e.writer_gap is not None else ""),
      "<h2>Most frequent confusions</h2><table id=\"confusions\"><tr><th>true</th>"
      "<th>predicted</th><th>count</th></tr>" + _rows([list(c) for c in view.confusions]) +
      "</table>",
      "<h2>Confusion matrix</h2>" + _img(pictures["confusion_matrix"],
                                         "confusion matrix", "confusion-matrix"),
  ]
  if s.get("tuning"):
    head, rows = trials_table(s["tuning"])
    sections.append(
        f'<h2>Hyperparameter search</h2><p id="search">{html.escape(search_line(s["tuning"]))}'
        '</p><table id="trials"><tr>' + "".join(f"<th>{h}</th>" for h in head) +
        "</tr>" + _rows(rows) + "</table>")
  if view.calibration is not None:
    sections.append(f'<p id="ece">Calibration: expected calibration error (ECE) '
                    f"<b>{view.calibration.ece:.4f}</b> over "
                    f"{len(view.calibration.bins)} equal-width bins of the "
                    "top-class probability (0 is perfect)</p>")
  for key, title in (("calibration", "Reliability diagram"), ("training", "Training"),
                     ("predictions", "Sample predictions"),
                     ("mistakes", "Most confident mistakes")):
    if key in pictures:
      sections.append(f"<h2>{title}</h2>" + _img(pictures[key], title, key))
  sections += [
      "<h2>Data validation</h2><table id=\"statistics\"><tr>" +
      "".join(f"<th>{h}</th>" for h in stats_head) + "</tr>" + _rows(stats_rows) + "</table>",
      "<p>Anomalies: " + (f"<ul>{anomalies}</ul>" if anomalies else "none") + "</p>",
      "<h2>Run facts</h2><table id=\"facts\">" + _rows(facts) + "</table>",
  ]
  page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
          "<title>mnist-tfx evaluation</title><style>body{font-family:sans-serif;"
          "margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
          "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
          "#facts td{text-align:left;font-family:monospace}"
          "img{max-width:100%}</style></head><body>" + "".join(sections) +
          "</body></html>")
  with open(path, "w", encoding="utf-8") as f:
    f.write(page)
  return path
