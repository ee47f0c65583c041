"""`make bench`: the reference plain-Keras workflow vs. the full pipeline, same data.

Each workflow runs in a fresh process, so both pay their imports, and each
process's peak RSS is read from the kernel (wait4). Three pairs by default
(plain, fresh pipeline, cached rerun), ratios within each pair, medians
reported. Printed: wall times and their ratio, the pipeline's per-component
seconds, both accuracies, a cached rerun's wall time, and peak RSS. Figures
also go to <output-dir>/bench.json. Each figure is printed beside its goal
(GOALS); the command exits 1 when one is missed.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

from components.models import MODELS
from mnist_tfx import defaults, speedups

PAIRS = 3  # paired runs per model; the medians are reported


def plain_keras(data_dir: str, model: str, seed: int = 0) -> Dict[str, Any]:
  """The reference workflow: IDX -> numpy, /255, flatten, fit 5 epochs at 32, evaluate.

  The model is the registry's architecture with the reference script's
  settings: sigmoid output, Adam at Keras' constant default rate, one step
  per graph call. For `basic`/`improved` that is the script's very model.
  """
  start = time.monotonic()
  import keras  # pylint: disable=g-import-not-at-top
  from components import idx  # pylint: disable=g-import-not-at-top
  from components.models import Hyperparameters, build_model  # pylint: disable=g-import-not-at-top

  def load(stem):
    x, y = idx.load(idx.find_file(data_dir, stem, "images"),
                    idx.find_file(data_dir, stem, "labels"))
    return x.reshape(len(x), -1).astype("float32") / 255.0, y

  (x_train, y_train), (x_test, y_test) = load("train"), load("t10k")
  keras.utils.set_random_seed(seed)
  net = build_model(Hyperparameters(
      model=model, output_activation="sigmoid", learning_rate=1e-3,
      lr_schedule="constant", steps_per_execution=1, seed=seed), 1)
  net.fit(x_train, y_train, epochs=5, batch_size=32, verbose=0)
  _, accuracy = net.evaluate(x_test, y_test, verbose=0)
  return {"accuracy": float(accuracy),
          "seconds_in_process": time.monotonic() - start}


def _run_child(argv: List[str]) -> Dict[str, Any]:
  start = time.monotonic()
  proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  # wait4 reaps the child and reports its own peak RSS, not the max over all.
  out_chunks, err_chunks = [], []
  readers = [threading.Thread(target=lambda s=s, c=c: c.append(s.read()))
             for s, c in ((proc.stdout, out_chunks), (proc.stderr, err_chunks))]
  for r in readers:
    r.start()
  _, status, rusage = os.wait4(proc.pid, 0)
  for r in readers:
    r.join()
  return {"seconds": round(time.monotonic() - start, 1),
          "exit": os.waitstatus_to_exitcode(status),
          "peak_rss_mb": round(rusage.ru_maxrss / 1024),
          "stdout": b"".join(out_chunks).decode(errors="replace"),
          "stderr": b"".join(err_chunks).decode(errors="replace")}


def _pair(data_dir: str, model: str, out: str,
          run_args: List[str]) -> Dict[str, Any]:
  """Plain Keras, then a fresh pipeline run (with `run_args`) and its rerun."""
  plain = _run_child([sys.executable, "-m", "bench.pipeline_bench", "--plain",
                      "--data-dir", data_dir, "--model", model])
  if plain["exit"] != 0:
    raise RuntimeError(f"plain Keras run failed:\n{plain['stderr'][-3000:]}")
  plain_result = json.loads(plain["stdout"].strip().splitlines()[-1])
  shutil.rmtree(out, ignore_errors=True)
  # --no-report: the report (pictures, HTML) is timed apart, not as pipeline.
  cmd = [sys.executable, "-m", "mnist_tfx", "run", "--data-dir", data_dir,
         "--output-dir", out, "--model", model, "--no-report", *run_args]
  fresh = _run_child(cmd)
  if fresh["exit"] != 0:
    raise RuntimeError(f"pipeline run failed:\n{fresh['stderr'][-3000:]}")
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  cached = _run_child(cmd)
  with open(os.path.join(out, "summary.json")) as f:
    cached_summary = json.load(f)
  return {
      "model": model,
      "plain_keras": {"seconds": plain["seconds"],
                      "accuracy": plain_result["accuracy"],
                      "peak_rss_mb": plain["peak_rss_mb"]},
      "run_args": list(run_args),
      "pipeline": {"seconds": fresh["seconds"], "accuracy": summary["accuracy"],
                   "hyperparameters": summary["hyperparameters"],
                   "tuning": summary.get("tuning"),
                   "blessed": summary["blessed"],
                   "pushed": summary["pushed_model_path"],
                   "component_seconds": summary["component_seconds"],
                   "peak_rss_mb": fresh["peak_rss_mb"]},
      "cached_rerun": {"seconds": cached["seconds"],
                       "all_cached": all(
                           s == "cached" for n, s in
                           cached_summary["component_status"].items()
                           if n != "latest_blessed_model_resolver"),
                       "pushed_new": cached_summary["pushed_new"],
                       "peak_rss_mb": cached["peak_rss_mb"]},
      "ratio_fresh": round(fresh["seconds"] / plain["seconds"], 2),
      "ratio_cached": round(cached["seconds"] / plain["seconds"], 2),
  }


def bench(data_dir: str, model: str, work_dir: str, run_args: List[str] = (),
          pairs: int = PAIRS) -> Dict[str, Any]:
  """`pairs` paired runs (plain, fresh pipeline, cached rerun), one after another.

  This machine's speed drifts between minutes, so each ratio compares the
  runs of one pair; the report gives the pair with the median fresh ratio
  and the median of each ratio.
  """
  out = os.path.join(work_dir, model + ("-tuned" if "--tune" in run_args else ""))
  runs = []
  for n in range(pairs):
    runs.append(_pair(data_dir, model, out, run_args))
    print(f"pair {n + 1}/{pairs}: plain {runs[-1]['plain_keras']['seconds']}s, "
          f"pipeline {runs[-1]['pipeline']['seconds']}s "
          f"({runs[-1]['ratio_fresh']}x), cached rerun "
          f"{runs[-1]['cached_rerun']['seconds']}s ({runs[-1]['ratio_cached']}x)",
          flush=True)
  middle = sorted(runs, key=lambda r: r["ratio_fresh"])[(len(runs) - 1) // 2]
  return dict(middle, pairs=runs,
              ratio_fresh_median=round(statistics.median(
                  r["ratio_fresh"] for r in runs), 2),
              ratio_cached_median=round(statistics.median(
                  r["ratio_cached"] for r in runs), 2))


DATA_COMPONENTS = ("IdxExampleGen", "StatisticsGen", "Transform")
SCALING_MODES = {
    "in-process": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "2 workers": ["--direct_running_mode=multi_processing",
                  "--direct_num_workers=2"],
    # Beam's portable job API (pipeline.portable_beam): the service is
    # started per run, outside the timed components.
    "portable LOOPBACK": "LOOPBACK",
    "portable EXTERNAL": "EXTERNAL",
}


def write_subset(data_dir: str, total: int, out_dir: str) -> str:
  """The first `total` MNIST records, split 6:1 like the official files."""
  from components import idx  # pylint: disable=g-import-not-at-top
  os.makedirs(out_dir, exist_ok=True)
  n_train = round(total * 6 / 7)
  for stem, n in (("train", n_train), ("t10k", total - n_train)):
    x, y = idx.load(idx.find_file(data_dir, stem, "images"),
                    idx.find_file(data_dir, stem, "labels"))
    idx.write_images(os.path.join(out_dir, f"{stem}-images-idx3-ubyte"), x[:n])
    idx.write_labels(os.path.join(out_dir, f"{stem}-labels-idx1-ubyte"), y[:n])
  return out_dir


def scaling(data_dir: str, work_dir: str,
            sizes=(10_000, 35_000, 70_000)) -> List[Dict[str, Any]]:
  """Seconds of the data components per size and Beam mode (one process)."""
  import contextlib  # pylint: disable=g-import-not-at-top
  import io  # pylint: disable=g-import-not-at-top
  from pipeline import local_runner, portable_beam  # pylint: disable=g-import-not-at-top
  from pipeline.configs import PipelineConfig  # pylint: disable=g-import-not-at-top
  rows = []
  for size in sizes:
    subset = write_subset(data_dir, size, os.path.join(work_dir, f"data-{size}"))
    for mode, beam_args in SCALING_MODES.items():
      out = os.path.join(work_dir, f"run-{size}-{mode.replace(' ', '_')}")
      shutil.rmtree(out, ignore_errors=True)
      with contextlib.ExitStack() as stack:
        if isinstance(beam_args, str):  # a portable environment
          beam_args = stack.enter_context(portable_beam.JobService(beam_args)).beam_args
        summary = local_runner.run(PipelineConfig(output_dir=out,
                                                  beam_args=beam_args),
                                   subset, out=io.StringIO(), data_only=True)
      seconds = {c: summary["component_seconds"][c] for c in DATA_COMPONENTS}
      total = sum(seconds.values())
      rows.append({"examples": size, "mode": mode, "seconds": seconds,
                   "total": round(total, 2),
                   "per_10k": round(total / size * 10_000, 2)})
      print(f"{size:>6} {mode:<17} " + "  ".join(
          f"{c} {s:5.1f}s" for c, s in seconds.items()) +
            f"  total {total:5.1f}s  = {rows[-1]['per_10k']:.2f}s per 10k",
            flush=True)
  for mode in SCALING_MODES:  # least squares: total = fixed + slope * size
    pts = [(r["examples"], r["total"]) for r in rows if r["mode"] == mode]
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    slope = (sum((x - mx) * (y - my) for x, y in pts) /
             sum((x - mx) ** 2 for x, _ in pts))
    print(f"{mode:<17} fixed {my - slope * mx:5.1f}s + "
          f"{slope * 10_000:.2f}s per 10k examples", flush=True)
  return rows


# The goals each figure is held to: (what, how it is compared, the bound).
GOALS = (("fresh pipeline / plain Keras (median)", "<=", 1.5),
         ("cached rerun / plain Keras (median)", "<=", 0.3),
         ("pipeline peak RSS / plain Keras's", "<=", 1.0))


def figures(r: Dict[str, Any]) -> List[float]:
  """The run's figures in the order of GOALS."""
  return [r["ratio_fresh_median"], r["ratio_cached_median"],
          r["pipeline"]["peak_rss_mb"] / r["plain_keras"]["peak_rss_mb"]]


def missed(r: Dict[str, Any]) -> List[str]:
  """One line per figure that misses its goal (empty: all met)."""
  return [f"{what}: {value:.2f}x, goal {op} {bound}x"
          for (what, op, bound), value in zip(GOALS, figures(r))
          if not (value <= bound if op == "<=" else value >= bound)]


def report(r: Dict[str, Any]) -> str:
  p, k, c = r["pipeline"], r["plain_keras"], r["cached_rerun"]
  fresh, cached, rss = figures(r)
  lines = [
      f"== {r['model']} (speed-ups {r.get('speedups', 'on')}) ==",
      f"plain Keras : {k['seconds']:6.1f}s  accuracy {k['accuracy']:.4f}  "
      f"peak RSS {k['peak_rss_mb']} MB",
      f"pipeline    : {p['seconds']:6.1f}s  accuracy {p['accuracy']:.4f}  "
      f"peak RSS {p['peak_rss_mb']} MB  blessed={p['blessed']}",
      f"ratio       : {r['ratio_fresh']:.2f}x this pair, median "
      f"{fresh:.2f}x of {len(r['pairs'])} (goal <= {GOALS[0][2]}x)",
      f"cached rerun: {c['seconds']:6.1f}s  = {r['ratio_cached']:.2f}x plain, median "
      f"{cached:.2f}x (goal <= {GOALS[1][2]}x)  all cached={c['all_cached']}  "
      f"pushed new={c['pushed_new']}  peak RSS {c['peak_rss_mb']} MB",
      f"peak RSS    : pipeline {p['peak_rss_mb']} MB = "
      f"{rss:.2f}x plain's (goal <= {GOALS[2][2]}x)",
      "components  : " + ", ".join(f"{n} {s:.1f}s" for n, s in
                                   p["component_seconds"].items() if s >= 0.05),
  ]
  if p.get("tuning"):
    from results.summary import search_line  # pylint: disable=g-import-not-at-top
    lines.append(search_line(p["tuning"]))
    lines.append(f"tuned model : hidden layers {p['hyperparameters']['hidden_units']}"
                 f", test accuracy {p['accuracy']:.4f} (the search never saw "
                 "the test split)")
  lines += [f"MISSED      : {line}" for line in missed(r)] or ["goals       : all met"]
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m bench.pipeline_bench")
  parser.add_argument("--data-dir", help="MNIST IDX folder (default: the "
                      "verified download cache, as `mnist-tfx run` uses)")
  parser.add_argument("--model", action="append", choices=sorted(MODELS))
  parser.add_argument("--output-dir", default=os.path.join(defaults.OUTPUT_DIR, "bench"))
  parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--tune", action="store_true",
                      help="the pipeline runs with --tune (its default budget)")
  parser.add_argument("--tune-minutes", help="the search's time limit")
  parser.add_argument("--pairs", type=int, default=PAIRS,
                      help="paired runs (plain, pipeline, cached rerun); "
                      "the medians are reported")
  parser.add_argument("--scaling", action="store_true",
                      help="the data components at 10k/35k/70k examples: "
                      "in-process, 2 Beam workers, and the portable job API "
                      "with LOOPBACK and EXTERNAL workers")
  args = parser.parse_args(argv)
  if args.data_dir is None:
    from mnist_tfx import data  # pylint: disable=g-import-not-at-top
    args.data_dir = data.ensure_mnist()
  data_dir = os.path.abspath(args.data_dir)
  if args.pairs < 1:
    parser.error("--pairs must be >= 1")
  models = args.model or ["improved"]
  if args.plain:
    print(json.dumps(plain_keras(data_dir, models[0])))
    return 0
  os.makedirs(args.output_dir, exist_ok=True)
  if args.scaling:
    rows = scaling(data_dir, os.path.abspath(args.output_dir))
    with open(os.path.join(args.output_dir, "scaling.json"), "w") as f:
      json.dump(rows, f, indent=2)
    return 0
  results = []
  for model in models:
    print(f"Benchmarking {model}: {args.pairs} x (plain Keras, fresh pipeline, "
          "cached rerun) ...", flush=True)
    run_args = (["--tune"] if args.tune else []) + (
        ["--tune-minutes", args.tune_minutes] if args.tune_minutes else [])
    results.append(bench(data_dir, model, os.path.abspath(args.output_dir),
                         run_args, args.pairs))
    results[-1]["speedups"] = "on" if speedups.enabled() else "off"
    print(report(results[-1]), flush=True)
  with open(os.path.join(args.output_dir, "bench.json"), "w") as f:
    json.dump(results, f, indent=2)
  # A regression is seen the day it lands: a missed goal fails the command.
  return 1 if any(missed(r) for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
