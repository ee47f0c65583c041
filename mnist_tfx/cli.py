"""`mnist-tfx`: the command line.

Arguments are parsed and checked before anything heavy is imported, so a
typo fails in a fraction of a second, not after TensorFlow's import.

Exit codes: 0 the command worked (for `run`: blessed or not, the summary
says which); 1 it failed (bad data, anomalies, a component error, a full
disk); 2 bad arguments or configuration; 3 the output dir is in use by
another run; 4 `monitor` found the served data drifted or the served
version stale; 130 interrupted (Ctrl-C or SIGTERM).
"""

import argparse
import functools
import json
import os
import signal
import sys
import warnings
from typing import Any, Dict, List, Optional

from components.models import (ACTIVATIONS, DISTRIBUTIONS, LOSSES,
                               LR_SCHEDULES, MODELS, OPTIMIZERS,
                               OUTPUT_ACTIVATIONS, Hyperparameters)
from components.plain_data import ConfigError
from mnist_tfx import console, defaults, interrupts, speedups
from mnist_tfx.speedups.fast_exit import end_process
from pipeline.configs import (PASSWORD_ENV, PipelineConfig, read_password_file,
                              redact, with_overrides)

# argparse dest -> config key (hyperparameters.* go to the Trainer).
_HP_FLAGS = ("model", "hidden_units", "activation", "output_activation", "optimizer",
             "learning_rate", "lr_schedule", "loss", "epochs", "batch_size",
             "seed", "distribution", "steps_per_execution")
_SERVING_BASE = os.path.join(defaults.OUTPUT_DIR, "serving_model", defaults.MODEL_NAME)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_DRIFTED = 4
_CONFIG_FLAGS = ("data_dir", "output_dir", "pipeline_root", "metadata_path",
                 "metadata_server",
                 "serving_dir", "min_accuracy", "max_regression",
                 "min_class_accuracy", "max_class_regression", "max_writer_gap",
                 "min_margin_over_simpler", "tune_trials",
                 "tune_minutes", "validation_share")


def _hidden_units(text: str) -> List[int]:
  try:
    return [int(u) for u in text.replace(" ", "").split(",") if u]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected comma-separated layer sizes like 128,64, got {text!r}")


def _versions(text: str) -> List[int]:
  try:
    found = [int(v) for v in text.replace(" ", "").split(",") if v]
  except ValueError:
    found = []
  if not found or any(v < 0 for v in found):
    raise argparse.ArgumentTypeError(
        f"expected comma-separated version numbers like 1,2, got {text!r}")
  return found


def _number(kind, low, high):
  """An argparse type: `kind` (int or float) within [low, high]."""
  def parse(text: str):
    try:
      value = kind(text)
    except ValueError:
      value = None
    if value is None or not low <= value <= high:  # also NaN
      raise argparse.ArgumentTypeError(
          f"expected {'an integer' if kind is int else 'a number'} from "
          f"{low} to {high}, got {text!r}")
    return value
  return parse


_port = _number(int, 0, 65535)


def _bounded(parser, flag: str, kind, default, low, high, what: str) -> None:
  """A number flag checked to [low, high], its range and default in its help."""
  parser.add_argument(flag, default=default, type=_number(kind, low, high),
                      help=f"{what}; {low}-{high} ({default})")


def _add_config_args(p: argparse.ArgumentParser, local: bool = True) -> None:
  """The PipelineConfig flags; `local`: also those only a local run uses
  (its ML Metadata store and report), which a compiled pipeline leaves to
  its orchestrator."""
  hp = Hyperparameters()  # the defaults, for the help texts
  p.add_argument("--config", help="JSON file with PipelineConfig fields; "
                 "flags override it")
  g = p.add_argument_group("data and outputs (paths or URIs)")
  g.add_argument("--data-dir", help="folder with the four MNIST IDX files, "
                 "gzipped or raw (default: download into a cache)")
  g.add_argument("--output-dir", help=f"default: {defaults.OUTPUT_DIR}")
  g.add_argument("--pipeline-root", help="where the components write their "
                 "artifacts (default: <output-dir>/pipeline)")
  if local:
    g.add_argument("--metadata-path", help="ML Metadata SQLite file (default: "
                   f"<output-dir>/{defaults.METADATA_FILE})")
    g.add_argument("--metadata-uri", dest="metadata_server", metavar="URI",
                   help="a shared ML Metadata store instead of the SQLite file: "
                   "mysql://USER[:PASSWORD]@HOST:PORT/DATABASE (MySQL or "
                   "MariaDB; default: none)")
    _add_password_file(g)
  g.add_argument("--serving-dir", help="base folder of pushed models "
                 f"(default: <output-dir>/serving_model/{defaults.MODEL_NAME})")
  m = p.add_argument_group("model and training")
  m.add_argument("--model", choices=sorted(MODELS),
                 help=f"architecture (default: {hp.model})")
  m.add_argument("--hidden-units", type=_hidden_units,
                 help="override the hidden layers, e.g. 256,128 ('' = none)")
  m.add_argument("--activation", choices=ACTIVATIONS, metavar="NAME",
                 help=f"hidden activation: {', '.join(ACTIVATIONS)} "
                 f"({hp.activation})")
  m.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS,
                 help=f"output layer ({hp.output_activation}; sigmoid is the "
                 "reference script's; either way the model serves the softmax "
                 "of the output layer's logits, which is what training fits)")
  m.add_argument("--optimizer", choices=OPTIMIZERS,
                 help=f"Keras optimizer ({hp.optimizer})")
  m.add_argument("--learning-rate", type=float,
                 help=f"initial learning rate ({hp.learning_rate})")
  m.add_argument("--lr-schedule", choices=LR_SCHEDULES,
                 help=f"learning rate over the run ({hp.lr_schedule})")
  m.add_argument("--loss", choices=LOSSES, help=f"Keras loss ({hp.loss})")
  m.add_argument("--epochs", type=int, help=f"passes over the train split ({hp.epochs})")
  m.add_argument("--batch-size", type=int, help=f"examples per training step ({hp.batch_size})")
  m.add_argument("--seed", type=int, help=f"random seed of the weights and the "
                 f"shuffling ({hp.seed})")
  m.add_argument("--steps-per-execution", type=int,
                 help="training steps per graph call; speed only "
                 f"({hp.steps_per_execution})")
  m.add_argument("--distribution", choices=DISTRIBUTIONS,
                 help=f"tf.distribute strategy for the Trainer ({hp.distribution})")
  t = p.add_argument_group("hyperparameter search (TFX Tuner, KerasTuner)")
  t.add_argument("--tune", action="store_true", default=None,
                 help="search hidden layers, units, activation, optimizer, "
                 "learning rate and epochs before training; the Trainer "
                 "takes the best trial")
  t.add_argument("--tune-trials", type=int, metavar="N",
                 help=f"at most N trials ({defaults.TUNE_TRIALS})")
  t.add_argument("--tune-minutes", type=float, metavar="M",
                 help="no trial starts after M minutes and a running one "
                 f"stops ({defaults.TUNE_MINUTES:g})")
  t.add_argument("--validation-share", type=float, metavar="F",
                 help="share of the training records held out to select on; "
                 f"the test split is never searched on ({defaults.VALIDATION_SHARE})")
  e = p.add_argument_group("blessing")
  for what, field, regression, default in (
      ("the overall", "min_accuracy", "accuracy the candidate may lose against the "
       "last blessed model", defaults.MAX_REGRESSION),
      ("each digit's", "min_class_accuracy", "accuracy any one digit may lose "
       "against the last blessed model's on that digit", defaults.MAX_CLASS_REGRESSION)):
    flag = field.replace("_", "-")
    e.add_argument(f"--{flag}", type=float, help=f"bound on {what} accuracy "
                   "(default: " + ", ".join(f"{n} {getattr(a, field)}"
                                            for n, a in MODELS.items()) + ")")
    e.add_argument("--" + flag.replace("min", "max").replace("accuracy", "regression"),
                   type=float, help=f"{regression} ({default})")
  e.add_argument("--max-writer-gap", type=float, metavar="G",
                 help="most the accuracies on the test split's two writer "
                 "populations (SD-3 and SD-1) may differ; checked when the "
                 "test split holds both (default: " + ", ".join(
                     f"{n} {a.max_writer_gap}" for n, a in MODELS.items()) + ")")
  e.add_argument("--min-margin-over-simpler", type=float, metavar="M",
                 help="how much a model other than basic must beat the basic "
                 "model's last blessed accuracy in the store by; checked "
                 f"when there is one ({defaults.MIN_MARGIN_OVER_SIMPLER})")
  x = p.add_argument_group("execution")
  x.add_argument("--beam-arg", action="append", dest="beam_args",
                 metavar="ARG", help="Beam pipeline option, repeatable "
                 "(replaces the in-process DirectRunner defaults)")
  x.add_argument("--no-cache", action="store_true",
                 help="re-run every component (default: reuse what is cached)")
  if local:
    x.add_argument("--no-report", action="store_true",
                   help="skip the evaluation report after the run (default: "
                   "write it)")


def _add_password_file(p) -> None:
  p.add_argument("--metadata-password-file", metavar="FILE",
                 help="the --metadata-uri password, read from FILE (the password "
                 "alone, or a MySQL option file with password= under [client]) "
                 f"instead of the URI; default: ${PASSWORD_ENV}, MySQL's variable")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
  config = (PipelineConfig.from_file(args.config) if args.config
            else PipelineConfig())
  overrides: Dict[str, Any] = {k: getattr(args, k, None) for k in _CONFIG_FLAGS}
  for key in ("runner", "image"):  # only `compile` has these flags
    overrides[key] = getattr(args, key, None)
  overrides.update({f"hyperparameters.{k}": getattr(args, k) for k in _HP_FLAGS})
  if args.beam_args:
    overrides["beam_args"] = args.beam_args
  if args.no_cache:
    overrides["enable_cache"] = False
  if args.tune:
    overrides["tune"] = True
  config = with_overrides(config, **overrides)
  # Local paths become absolute, so artifact URIs do not depend on the cwd.
  for field in ("data_dir", "output_dir", "pipeline_root", "metadata_path",
                "serving_dir"):
    value = getattr(config, field)
    if value and "://" not in value:
      setattr(config, field, os.path.abspath(value))
  return config


def _cmd_run(args: argparse.Namespace) -> int:
  config = config_from_args(args)
  if config.runner != "local":
    print(f"mnist-tfx run executes locally; runner {config.runner!r} in the "
          "config is not supported by this command", file=sys.stderr)
    return EXIT_USAGE
  config.check_local_paths()
  from mnist_tfx import data  # pylint: disable=g-import-not-at-top
  data_dir = config.data_dir
  if data_dir and "://" not in data_dir and not os.path.isdir(data_dir):
    return _refuse_run(config, f"--data-dir {data_dir} is not a directory. "
                       f"{data.OFFLINE_HINT}", EXIT_USAGE)
  if data_dir is None:
    try:
      data_dir = data.ensure_mnist()
    except data.DownloadError as e:
      return _refuse_run(config, str(e), EXIT_FAILED)
  _quiet_cpp()  # the run's own warnings go to its log file
  from pipeline import local_runner, workspace
  from results import summary  # pylint: disable=g-import-not-at-top
  if not interrupts.ignored(signal.SIGTERM):
    signal.signal(signal.SIGTERM, _interrupt)  # stop as Ctrl-C does
  # A closed terminal or pipe never stops a run: it goes on into its log.
  signal.signal(signal.SIGHUP, signal.SIG_IGN)
  sys.stdout, sys.stderr = console.Tolerant(sys.stdout), console.Tolerant(sys.stderr)
  try:
    result = local_runner.run(config, data_dir, out=sys.stdout)
  except workspace.OutputDirBusy as e:
    print(f"mnist-tfx: {e}", file=sys.stderr)
    return EXIT_BUSY
  except workspace.DiskFull as e:
    print(f"mnist-tfx: disk full: {e.strerror}", file=sys.stderr)
    return EXIT_FAILED
  except local_runner.PipelineFailed as e:
    interrupted = isinstance(e, local_runner.RunInterrupted)
    if not interrupted:  # what the run got to; the cause is the line below
      print(summary.render(e.summary, with_status=False))
    where = e.summary.get("failed_component")
    cause = "" if interrupted else f": {e.summary.get('error')}"
    print(f"mnist-tfx: the run {'was ' if interrupted else ''}"
          f"{e.summary['status']}" + (f" in {where}" if where else "") +
          f"{cause} (summary: {config.summary_uri}; log: {e.summary.get('log')})",
          file=sys.stderr)
    return EXIT_INTERRUPTED if interrupted else EXIT_FAILED
  report = not getattr(args, "no_report", False) and result.get("accuracy") is not None
  # With the report, its table says the accuracy and the blessing once.
  print(summary.render(result, with_evaluation=not report))
  print(f"Summary: {config.summary_uri}")
  if report:
    return _print_report(config.output_dir)
  return EXIT_OK


def _interrupt(signum, frame):
  del signum, frame
  raise KeyboardInterrupt


def _refuse_run(config: PipelineConfig, message: str, code: int) -> int:
  """A run that cannot start: one line, and a summary that says so.

  Without it, the previous run's `succeeded` would stay in summary.json.
  """
  from pipeline import workspace
  from results import summary  # pylint: disable=g-import-not-at-top
  print(f"mnist-tfx: {message}", file=sys.stderr)
  try:
    with workspace.exclusive(config):
      result = summary.build(config, config.data_dir or "", 0.0,
                             status="failed", read_metadata=False)
      result["error"] = message
      summary.write(result, config.summary_uri)
  except (workspace.OutputDirBusy, OSError):
    pass  # another run owns the summary, or nothing can be written
  return code


def _print_report(run_dir: str) -> int:
  summary_path = os.path.join(run_dir, defaults.SUMMARY_FILE)
  if not os.path.exists(summary_path):  # before TF's import, not after
    print(f"mnist-tfx report: {summary_path} does not exist: run the "
          "pipeline first (make run), or pass --run-dir", file=sys.stderr)
    return 1
  _quiet_tensorflow()
  from results import report  # pylint: disable=g-import-not-at-top
  try:
    text, files = report.generate(run_dir)
  except report.ReportError as e:
    print(f"mnist-tfx report: {e}", file=sys.stderr)
    return 1
  print(text)
  print(f"Report: {files['html']} (pictures and notebook beside it)")
  return 0


def _cmd_report(args: argparse.Namespace) -> int:
  _quiet_tensorflow()
  _quiet_tfma()
  if args.compare:
    from results import report  # pylint: disable=g-import-not-at-top
    try:
      print(report.compare(*args.compare))
    except report.ReportError as e:
      print(f"mnist-tfx report: {e}", file=sys.stderr)
      return 1
    return 0
  return _print_report(args.run_dir)


def _cmd_history(args: argparse.Namespace) -> int:
  """`runs` and `lineage`: read the store, never write it."""
  _quiet_tensorflow()
  _quiet_tfma()
  from results import lineage, metadata  # pylint: disable=g-import-not-at-top
  try:
    config = PipelineConfig(output_dir=args.output_dir, metadata_path=args.metadata_path,
                            metadata_server=args.metadata_server)
  except ConfigError as e:
    print(f"mnist-tfx {args.command}: {e}", file=sys.stderr)
    return EXIT_USAGE
  path = config.metadata_uri
  if not config.metadata_exists:
    print(f"mnist-tfx {args.command}: no ML Metadata store at {config.metadata_shown} "
          "(run the pipeline first, or give --output-dir/--metadata-path)",
          file=sys.stderr)
    return EXIT_FAILED
  try:
    store = metadata.open_store(path)
    if args.command == "runs":
      from pipeline import workspace  # pylint: disable=g-import-not-at-top
      found = lineage.runs(store, workspace.dead_executions(config))
      text = lineage.render_runs(found)
    else:
      found = lineage.lineage(store, args.version)
      text = lineage.render_lineage(found)
  except lineage.LineageError as e:
    print(f"mnist-tfx {args.command}: {e}", file=sys.stderr)
    return EXIT_FAILED
  except Exception as e:  # pylint: disable=broad-except
    from results import summary  # pylint: disable=g-import-not-at-top
    if summary.cannot_connect(e):
      print(f"mnist-tfx {args.command}: {config.metadata_shown}: "
            f"{summary.CANNOT_CONNECT}", file=sys.stderr)
      return EXIT_FAILED
    # Not a store, or one a newer ML Metadata wrote: say so in one line.
    print(f"mnist-tfx {args.command}: cannot read the ML Metadata store at "
          f"{redact(path)}: {(str(e) or type(e).__name__).split(' query:')[0][:200]}",
          file=sys.stderr)
    return EXIT_FAILED
  print(json.dumps(found, indent=1) if args.json else text)
  return EXIT_OK


def _quiet_tfma() -> None:
  """TFMA's deprecation notices while reading results: not ours to fix."""
  import logging  # pylint: disable=g-import-not-at-top
  for name in ("tensorflow", "absl"):
    logging.getLogger(name).setLevel(logging.ERROR)


def _quiet_cpp() -> None:
  """Before TF's and ML Metadata's import: no C++ log lines on the terminal.

  Our own messages say what failed (e.g. a database server that does not
  answer); TF's and ML Metadata's C++ logs would only repeat it, unasked.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  os.environ.setdefault("GLOG_minloglevel", "3")  # ML Metadata's glog


def _quiet_tensorflow() -> None:
  """Before TF's import: no C++ log noise, no Google libraries' FutureWarnings."""
  _quiet_cpp()
  warnings.simplefilter("ignore", FutureWarning)


def _default_serving_base() -> str:
  return os.path.abspath(_SERVING_BASE)


def _cmd_compile(args: argparse.Namespace) -> int:
  config = config_from_args(args)
  _quiet_tensorflow()
  from pipeline import kubeflow_runner  # pylint: disable=g-import-not-at-top
  path = kubeflow_runner.compile_kubeflow_v2(config, args.output)
  print(f"Wrote the {config.runner} pipeline spec to {path} (image "
        f"{config.image}; runtime parameter "
        f"{kubeflow_runner.DATA_ROOT_PARAMETER}={config.data_dir})")
  return 0


def _cmd_serve(args: argparse.Namespace) -> int:
  _quiet_tensorflow()
  from serving import server  # pylint: disable=g-import-not-at-top
  base = args.model_base_path or _default_serving_base()
  # Stopping a server on purpose is a success, not a crash. Once the event
  # loop runs, the server handles SIGINT/SIGTERM itself and returns; these
  # handlers cover the moments before it and after.
  signal.signal(signal.SIGTERM, _stop_serving)
  signal.signal(signal.SIGINT, _stop_serving)
  from serving import model_config  # pylint: disable=g-import-not-at-top
  from serving.model_store import ServingError  # pylint: disable=g-import-not-at-top
  if args.model_config_file and (args.model_base_path or args.versions):
    print("mnist-tfx serve: --model-config-file names the base path and the "
          "versions; leave out --model-base-path and --versions", file=sys.stderr)
    return EXIT_USAGE
  request_log = None
  if args.request_log:
    if args.request_log_max_bytes < args.request_log_max_file_bytes:
      print("mnist-tfx serve: --request-log-max-bytes must be at least "
            "--request-log-max-file-bytes", file=sys.stderr)
      return EXIT_USAGE
    request_log = server.RequestLogSettings(
        os.path.abspath(args.request_log), args.request_log_sampling,
        args.request_log_max_file_bytes, args.request_log_max_bytes)
  try:
    server.serve(None if args.model_config_file else base, args.model_name,
                 host=args.host, rest_port=args.rest_port,
                 grpc_port=args.grpc_port, versions=args.versions,
                 batching=args.enable_batching, max_batch_size=args.max_batch_size,
                 batch_timeout_micros=args.batch_timeout_micros,
                 greedy_batching=not args.no_greedy_batching,
                 poll_seconds=args.poll_seconds,
                 max_payload_bytes=args.max_payload_bytes,
                 header_timeout=args.header_timeout_seconds,
                 max_connections=args.max_connections,
                 max_enqueued_batches=args.max_enqueued_batches,
                 model_config_file=args.model_config_file,
                 config_poll_seconds=args.model_config_file_poll_wait_seconds,
                 request_log=request_log, warmup=not args.no_warmup,
                 ui_output_dir=None if args.no_ui else args.output_dir)
  except server.BindError as e:
    print(f"mnist-tfx serve: {e}", file=sys.stderr)
    return EXIT_FAILED
  except (model_config.ConfigFileError, ServingError) as e:
    print(f"mnist-tfx serve: {getattr(e, 'message', None) or e}", file=sys.stderr)
    return EXIT_USAGE
  except _Stopped:
    pass
  print("mnist-tfx serve: stopped", flush=True)
  return EXIT_OK


class _Stopped(Exception):
  """SIGINT or SIGTERM asked the server to stop."""


def _stop_serving(signum, frame):
  del signum, frame
  raise _Stopped


def _cmd_labels(args: argparse.Namespace) -> int:
  """`promote` and `rollback`: move a label in the model config file, and
  tell ML Metadata which model left service (the next run's baseline)."""
  _quiet_tensorflow()
  from serving import model_config  # pylint: disable=g-import-not-at-top
  path = args.model_config_file or os.path.join(args.output_dir,
                                                defaults.MODEL_CONFIG_FILE)
  base = os.path.abspath(args.serving_dir or os.path.join(
      args.output_dir, "serving_model", args.model_name))
  try:
    if args.command == "promote":
      config, before = model_config.promote(path, args.version, args.label,
                                            args.model_name, base)
      left, now = before, args.version
      print(f"{args.label} -> version {now}" + (
          f" (was {before})" if before is not None else "") + f" in {path}")
    else:
      config, left, now = model_config.rollback(path, args.label)
      print(f"{args.label} rolled back: version {left} -> {now} in {path}")
  except model_config.ConfigFileError as e:
    print(f"mnist-tfx {args.command}: {e}", file=sys.stderr)
    return EXIT_FAILED
  except OSError as e:
    print(f"mnist-tfx {args.command}: cannot write {path}: {e.strerror}",
          file=sys.stderr)
    return EXIT_FAILED
  print("Served versions: " + ", ".join(map(str, config.policy.versions)) +
        "; labels: " + ", ".join(f"{k} -> {v}" for k, v in sorted(config.labels.items())))
  _mark_models(args, config.base_path, rolled_back=left if
               args.command == "rollback" else None, promoted=now)
  return EXIT_OK


def _mark_models(args, base_path: str, rolled_back: Optional[int],
                 promoted: int) -> None:
  """Marks the rolled-back version's model in ML Metadata (and clears the
  promoted one's), so the next run's baseline is the model now served."""
  from components import baseline, pusher  # pylint: disable=g-import-not-at-top
  from results import metadata  # pylint: disable=g-import-not-at-top
  try:
    config = PipelineConfig(output_dir=args.output_dir,
                            metadata_path=args.metadata_path)
  except ConfigError:
    return
  if not config.metadata_exists:
    print(f"(no ML Metadata store at {config.metadata_shown}: the next run's "
          "baseline is not told)")
    return
  store = metadata.open_store(config.metadata_uri, readonly=False)
  for version, mark in ((rolled_back, True), (promoted, False)):
    if version is None:
      continue
    record = pusher.push_record(os.path.join(base_path, str(version)))
    model_id = record.get("model_id")
    if isinstance(model_id, int) and baseline.mark_rolled_back(store, model_id, mark):
      if mark:
        print(f"ML Metadata: model {model_id} (version {version}) marked rolled "
              "back; the next run is compared with the model now stable")
    elif mark:
      print(f"(version {version} has no model in {config.metadata_shown}: the "
            "next run's baseline is not told)")


def _cmd_monitor(args: argparse.Namespace) -> int:
  """Served requests vs the training data: 0 none, 4 anomalies, 1 no check."""
  _quiet_tensorflow()
  _quiet_tfma()
  from results import metadata, monitor  # pylint: disable=g-import-not-at-top
  try:
    config = PipelineConfig(output_dir=args.output_dir,
                            metadata_path=args.metadata_path)
  except ConfigError as e:
    print(f"mnist-tfx monitor: {e}", file=sys.stderr)
    return EXIT_USAGE
  if not config.metadata_exists:
    print(f"mnist-tfx monitor: no ML Metadata store at {config.metadata_shown} "
          "(run the pipeline first, or give --output-dir/--metadata-path)",
          file=sys.stderr)
    return EXIT_FAILED
  serving_dir = os.path.abspath(args.serving_dir or os.path.join(
      args.output_dir, "serving_model", defaults.MODEL_NAME))
  try:
    result = monitor.run(args.logs, metadata.open_store(config.metadata_uri,
                                                        readonly=False),
                         args.output_dir, serving_dir, args.max_age_days,
                         pixel_jsd=args.max_pixel_jsd,
                         class_linf=args.max_class_linf,
                         min_requests=args.min_requests)
  except (monitor.MonitorError, ValueError) as e:
    print(f"mnist-tfx monitor: {e}", file=sys.stderr)
    return EXIT_FAILED
  if args.json:
    print(json.dumps(result, indent=1))
  else:
    print(result["summary"])
    for line in result["anomalies"]:
      print(f"ANOMALY {line}")
    print("No anomaly: the served data looks like the training data."
          if not result["anomalies"] else
          f"{len(result['anomalies'])} anomal{'y' if len(result['anomalies']) == 1 else 'ies'}")
    print(f"Report: {result['report']} (ML Metadata execution "
          f"{result['execution_id']})")
  return EXIT_DRIFTED if result["anomalies"] else EXIT_OK


def _cmd_predict(args: argparse.Namespace) -> int:
  _quiet_tensorflow()
  from serving import client  # pylint: disable=g-import-not-at-top
  model_dir = args.model_dir or _default_serving_base()
  try:
    results = client.predict_files(args.files, rest=args.rest,
                                   grpc_target=args.grpc, model_dir=model_dir,
                                   name=args.model_name)
  except ValueError as e:
    print(f"mnist-tfx predict: {e}", file=sys.stderr)
    return 1
  for r in results:
    probs = "  ".join(f"{d}:{p:.3f}" for d, p in enumerate(r["probabilities"]))
    print(f"{r['file']}: {r['digit']}   ({probs})")
  return 0


def _cmd_download(args: argparse.Namespace) -> int:
  from mnist_tfx import data  # pylint: disable=g-import-not-at-top
  try:
    print(data.ensure_mnist(args.cache_dir))
  except data.DownloadError as e:
    print(f"mnist-tfx: {e}", file=sys.stderr)
    return 1
  return 0


class _Parser(argparse.ArgumentParser):
  """Usage errors as one line (and where to look), not the whole usage text."""

  def error(self, message: str):
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} "
              "--help)\n")


def _add_run_dirs(parser, output_why: str, serving_why: str) -> None:
  """--output-dir, --metadata-path and --serving-dir of a command that reads
  a run's store and its pushed versions."""
  parser.add_argument("--output-dir", default=defaults.OUTPUT_DIR,
                      help=f"the runs' output dir: {output_why} ({defaults.OUTPUT_DIR})")
  parser.add_argument("--metadata-path",
                      help="ML Metadata's SQLite file (default: in the output dir)")
  parser.add_argument("--serving-dir", help=f"base folder of pushed models, "
                      f"{serving_why} (default: <output-dir>/serving_model/NAME)")


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="mnist-tfx", description="The TFX pipeline for MNIST: ingest, "
      "validate, transform, train, evaluate and push.")
  sub = parser.add_subparsers(dest="command", required=True,
                              parser_class=_Parser)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument(
      "--no-speedups", action="store_true",
      help="run every library as shipped, without this project's patches of "
      f"their internals (as {speedups.ENV}=0 does; see mnist_tfx/speedups)")
  run = sub.add_parser("run", parents=[common], help="run the pipeline locally")
  _add_config_args(run)
  run.set_defaults(func=_cmd_run)
  compile_ = sub.add_parser(
      "compile", parents=[common], help="compile the pipeline for Kubeflow "
      "Pipelines v2 / "
      "Vertex AI Pipelines (a JSON spec)")
  _add_config_args(compile_, local=False)
  compile_.add_argument("--runner", choices=["kubeflow_v2"],
                        default="kubeflow_v2",
                        help="the orchestrator to compile for (kubeflow_v2: "
                        "Kubeflow Pipelines v2 and Vertex AI Pipelines)")
  compile_.add_argument("--image", help="the pipeline's container image "
                        "(default: mnist-tfx:latest, see the Dockerfile)")
  compile_.add_argument("--output", required=True, help="spec file to write")
  compile_.set_defaults(func=_cmd_compile)
  report = sub.add_parser("report", parents=[common],
                          help="the evaluation report of a run "
                          "(table, pictures, HTML, notebook)")
  report.add_argument("--run-dir", default=defaults.OUTPUT_DIR,
                      help="a run's output dir (default: outputs)")
  report.add_argument("--compare", nargs=2, metavar=("A", "B"),
                      help="two runs' output dirs side by side")
  report.set_defaults(func=_cmd_report)
  for name, text in (("runs", "every run in the ML Metadata store, newest first"),
                     ("lineage", "a pushed version's chain back to the data files")):
    sub_parser = sub.add_parser(name, parents=[common], help=text)
    if name == "lineage":
      sub_parser.add_argument("version", nargs="?", type=int,
                              help="a pushed version (default: the newest)")
    sub_parser.add_argument("--output-dir", default=defaults.OUTPUT_DIR,
                            help=f"the runs' output dir ({defaults.OUTPUT_DIR})")
    sub_parser.add_argument("--metadata-path",
                            help="ML Metadata's SQLite file (default: in the output dir)")
    sub_parser.add_argument("--metadata-uri", dest="metadata_server", metavar="URI",
                            help="a shared store: mysql://USER[:PASSWORD]@HOST:PORT/DB "
                            "(default: none)")
    _add_password_file(sub_parser)
    sub_parser.add_argument("--json", action="store_true", help="for machines")
    sub_parser.set_defaults(func=_cmd_history)
  serve = sub.add_parser("serve", parents=[common],
                         help="serve the pushed model versions over "
                         "TF Serving's REST and gRPC APIs")
  serve.add_argument("--model-base-path", help=f"default: {_SERVING_BASE}")
  serve.add_argument("--model-name", default=defaults.MODEL_NAME,
                     help="the name clients ask for in /v1/models/NAME and "
                     f"model_spec.name ({defaults.MODEL_NAME})")
  serve.add_argument("--host", default=defaults.HOST,
                     help=f"bind address (default: {defaults.HOST}, loopback only)")
  serve.add_argument("--rest-port", type=_port, default=defaults.REST_PORT,
                     help=f"0-65535, 0 = any free port ({defaults.REST_PORT})")
  serve.add_argument("--grpc-port", type=_port, default=defaults.GRPC_PORT,
                     help=f"0-65535, 0 = any free port ({defaults.GRPC_PORT})")
  serve.add_argument("--versions", type=_versions, metavar="V1,V2",
                     help="serve these versions (default: the latest)")
  serve.add_argument("--poll-seconds", default=defaults.POLL_SECONDS,
                     type=_number(float, defaults.MIN_POLL_SECONDS,
                                  defaults.MAX_POLL_SECONDS),
                     help="how often to look for new versions "
                     f"({defaults.POLL_SECONDS})")
  bounded = functools.partial(_bounded, serve)
  bounded("--max-payload-bytes", int, defaults.MAX_PAYLOAD_BYTES,
          defaults.MIN_PAYLOAD_BYTES, defaults.MAX_PAYLOAD_BYTES_LIMIT,
          "largest request, in bytes")
  bounded("--header-timeout-seconds", float, defaults.HEADER_TIMEOUT_SECONDS,
          defaults.MIN_HEADER_TIMEOUT_SECONDS, defaults.MAX_HEADER_TIMEOUT_SECONDS,
          "a REST request's line and headers must arrive within this, else a "
          "JSON 408 and the connection is closed")
  bounded("--max-connections", int, defaults.MAX_CONNECTIONS, 1,
          defaults.MAX_CONNECTIONS_LIMIT,
          "open REST connections at once; one more gets a JSON 503 and is closed")
  serve.add_argument("--enable-batching", action="store_true",
                     help="TF Serving's timed batching for both APIs: wait up "
                     "to --batch-timeout-micros for a batch to fill")
  serve.add_argument("--no-greedy-batching", action="store_true",
                     help="turn off the default batching of both APIs, which "
                     "merges requests that arrive together, with no timer")
  bounded("--max-batch-size", int, defaults.BATCH_SIZE, 1,
          defaults.MAX_BATCH_SIZE_LIMIT, "most rows one batched model call runs")
  bounded("--max-enqueued-batches", int, defaults.MAX_ENQUEUED_BATCHES, 1,
          defaults.MAX_ENQUEUED_BATCHES_LIMIT,
          "with --enable-batching: full batches that may wait; a request past "
          "them gets UNAVAILABLE (503) at once")
  bounded("--batch-timeout-micros", int, defaults.BATCH_TIMEOUT_MICROS, 0,
          defaults.MAX_BATCH_TIMEOUT_MICROS,
          "with --enable-batching: how long a batch waits to fill")
  serve.add_argument("--no-ui", action="store_true",
                     help=f"do not serve the page at {defaults.UI_PATH} (draw a "
                     "digit for the model; the runs, lineage and traffic; "
                     "default: serve it)")
  serve.add_argument("--output-dir", default=defaults.OUTPUT_DIR,
                     help="the runs' output dir the page shows (its ML Metadata "
                     f"store and kept reports) ({defaults.OUTPUT_DIR})")
  serve.add_argument("--no-warmup", action="store_true",
                     help="load versions without replaying their "
                     "assets.extra/tf_serving_warmup_requests (default: replay "
                     "them before a version is AVAILABLE)")
  serve.add_argument("--model-config-file", metavar="FILE",
                     help="TF Serving's ModelServerConfig (text format): the "
                     "model's name, base path, version policy and labels; "
                     "re-read when it changes (default: none; `promote` writes "
                     f"{defaults.OUTPUT_DIR}/{defaults.MODEL_CONFIG_FILE})")
  serve.add_argument("--model-config-file-poll-wait-seconds",
                     default=defaults.CONFIG_POLL_SECONDS,
                     type=_number(float, defaults.MIN_POLL_SECONDS,
                                  defaults.MAX_POLL_SECONDS),
                     help="how often the config file is read for changes "
                     f"({defaults.CONFIG_POLL_SECONDS})")
  serve.add_argument("--request-log", metavar="DIR",
                     help="keep sampled requests and responses as "
                     "tensorflow.serving.PredictionLog TFRecords in DIR "
                     "(default: none)")
  bounded("--request-log-sampling", float, defaults.REQUEST_LOG_SAMPLING, 0.0, 1.0,
          "with --request-log: the share of answered predict requests kept")
  bounded("--request-log-max-file-bytes", int, defaults.REQUEST_LOG_FILE_BYTES,
          defaults.MIN_REQUEST_LOG_FILE_BYTES, 1 << 40,
          "with --request-log: a log file is closed and a new one started at this size")
  bounded("--request-log-max-bytes", int, defaults.REQUEST_LOG_TOTAL_BYTES,
          defaults.MIN_REQUEST_LOG_FILE_BYTES, 1 << 50,
          "with --request-log: the oldest files are deleted past this total")
  serve.set_defaults(func=_cmd_serve)
  for name, text in (
      ("promote", "point a version label (stable, canary) at a pushed version "
       "in the model config file"),
      ("rollback", "move a label back to the version it held before")):
    labels = sub.add_parser(name, parents=[common], help=text)
    if name == "promote":
      labels.add_argument("version", type=int, help="a pushed version (no default)")
    labels.add_argument("--label", default="stable",
                        help="the version label to move (stable)")
    labels.add_argument("--model-config-file", metavar="FILE",
                        help="the file `serve --model-config-file` reads (default: "
                        f"<output-dir>/{defaults.MODEL_CONFIG_FILE}; created by the "
                        "first promote)")
    _add_run_dirs(labels, "whose ML Metadata store learns of a rollback",
                  "for a new config file")
    labels.add_argument("--model-name", default=defaults.MODEL_NAME,
                        help=f"the model's name in a new config file ({defaults.MODEL_NAME})")
    labels.set_defaults(func=_cmd_labels)
  mon = sub.add_parser("monitor", parents=[common],
                       help="compare served requests (PredictionLog files) with "
                       "the training data: drift, skew, staleness")
  mon.add_argument("logs", nargs="+", metavar="LOG",
                   help="request log dirs (serve --request-log) or PredictionLog "
                   "TFRecord files (no default)")
  _add_run_dirs(mon, "its ML Metadata store, and where monitor/monitor.html goes",
                "for the served version's age")
  mon_bounded = functools.partial(_bounded, mon)
  mon_bounded("--max-age-days", float, defaults.MAX_AGE_DAYS, 0.0, 1e6,
              "the served version may be this old")
  mon_bounded("--max-pixel-jsd", float, defaults.MONITOR_PIXEL_JSD, 0.0, 1.0,
              "Jensen-Shannon divergence of served vs training pixel values")
  mon_bounded("--max-class-linf", float, defaults.MONITOR_CLASS_LINF, 0.0, 1.0,
              "L-infinity distance of predicted-class vs training-label shares")
  mon_bounded("--min-requests", int, defaults.MONITOR_MIN_REQUESTS, 1, 1 << 40,
              "served images needed for a comparison")
  mon.add_argument("--json", action="store_true", help="for machines")
  mon.set_defaults(func=_cmd_monitor)
  predict = sub.add_parser("predict", parents=[common],
                           help="predict the digit in PNG/JPEG "
                           "files (via REST, gRPC, or the SavedModel)")
  predict.add_argument("files", nargs="+", metavar="FILE",
                       help="PNG or JPEG pictures of one digit each, any size "
                       "or colour (no default)")
  where = predict.add_mutually_exclusive_group()
  where.add_argument("--rest", metavar="URL", help="e.g. http://127.0.0.1:8501")
  where.add_argument("--grpc", metavar="HOST:PORT", help="e.g. 127.0.0.1:8500")
  where.add_argument("--model-dir", help="a SavedModel or a base path of "
                     f"versions (default: {_SERVING_BASE}, latest)")
  predict.add_argument("--model-name", default=defaults.MODEL_NAME,
                       help="with --rest or --grpc: the served model's name "
                       f"({defaults.MODEL_NAME})")
  predict.set_defaults(func=_cmd_predict)
  download = sub.add_parser("download", parents=[common],
                            help="fetch and verify MNIST into "
                            "the cache")
  download.add_argument("--cache-dir", help="where to keep the files "
                        "(default: $XDG_CACHE_HOME/mnist-tfx/mnist, else "
                        "~/.cache/mnist-tfx/mnist)")
  download.set_defaults(func=_cmd_download)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.no_speedups:
    speedups.disable()  # also for the processes this command starts
  try:
    speedups.enabled()
  except speedups.SwitchError as e:
    print(f"mnist-tfx: {e}", file=sys.stderr)
    return EXIT_USAGE
  try:
    if getattr(args, "metadata_password_file", None):
      # Where MySQL's clients look, for this process and those it starts.
      os.environ[PASSWORD_ENV] = read_password_file(args.metadata_password_file)
    return args.func(args)
  except ConfigError as e:  # bad configuration values
    print(f"mnist-tfx: {e}", file=sys.stderr)
    return EXIT_USAGE
  except KeyboardInterrupt:
    print("mnist-tfx: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def entry() -> None:
  """`mnist-tfx` and `python -m mnist_tfx`: main(), then a prompt exit."""
  end_process(main())


if __name__ == "__main__":
  entry()
