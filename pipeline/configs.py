"""Pipeline configuration: plain data, with the one set of defaults and paths.

A `PipelineConfig` is all that differs between a laptop run and a run on
Kubeflow/Vertex with Dataflow: URIs, Beam arguments, the runner and image.
`create_pipeline` reads nothing else, so scaling out never edits code. It is
filled from defaults, then an optional JSON file (`--config`), then CLI flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional

from components import tuning
from components.models import Hyperparameters
from components.plain_data import ConfigError, read_text, strict_from_dict
from mnist_tfx import defaults

RUNNERS = ("local", "kubeflow_v2")


@dataclasses.dataclass
class PipelineConfig:
  """Everything `create_pipeline` and the runners need; JSON-serializable."""

  data_dir: Optional[str] = None  # None: the download cache (see mnist_tfx.data)
  output_dir: str = defaults.OUTPUT_DIR
  pipeline_root: Optional[str] = None  # default: <output_dir>/pipeline
  metadata_path: Optional[str] = None  # default: <output_dir>/metadata.sqlite
  # A shared ML Metadata store in MySQL/MariaDB, mysql://USER[:PASS]@HOST:PORT/DB,
  # instead of the SQLite file (see `mysql_parts`).
  metadata_server: Optional[str] = None
  serving_dir: Optional[str] = None  # default: <output_dir>/serving_model
  serving_model_name: str = defaults.MODEL_NAME
  pipeline_name: str = defaults.PIPELINE_NAME
  hyperparameters: Hyperparameters = dataclasses.field(
      default_factory=Hyperparameters)
  min_accuracy: Optional[float] = None  # None: the architecture's default
  max_regression: float = defaults.MAX_REGRESSION
  min_class_accuracy: Optional[float] = None  # every digit's; None: the architecture's
  max_class_regression: float = defaults.MAX_CLASS_REGRESSION
  # |SD-3's accuracy - SD-1's|; None: the architecture's.
  max_writer_gap: Optional[float] = None
  # Over the `basic` model's last blessed accuracy in the store.
  min_margin_over_simpler: float = defaults.MIN_MARGIN_OVER_SIMPLER
  # Data validation of the label distribution (see components.data_validation).
  min_label_share: float = defaults.MIN_LABEL_SHARE
  max_label_drift: float = defaults.MAX_LABEL_DRIFT
  # Hyperparameter search (components.tuning) before training.
  tune: bool = False
  tune_trials: int = defaults.TUNE_TRIALS
  tune_minutes: float = defaults.TUNE_MINUTES
  validation_share: float = defaults.VALIDATION_SHARE
  beam_args: List[str] = dataclasses.field(
      default_factory=lambda: list(defaults.BEAM_ARGS))
  runner: str = "local"
  image: str = defaults.IMAGE  # container image of a compiled (KFP v2) pipeline
  enable_cache: bool = True

  def __post_init__(self):
    if isinstance(self.hyperparameters, dict):
      self.hyperparameters = Hyperparameters.from_dict(self.hyperparameters)
    if self.runner not in RUNNERS:
      raise ConfigError(f"unknown runner {self.runner!r}; choose from "
                        f"{', '.join(RUNNERS)}")
    for name in ("min_accuracy", "min_class_accuracy", "max_writer_gap"):
      if getattr(self, name) is not None and not 0 <= getattr(self, name) <= 1:
        raise ConfigError(f"{name} must be between 0 and 1")
    for name in ("max_regression", "max_class_regression", "min_label_share",
                 "max_label_drift"):
      if not 0 <= getattr(self, name) <= 1:
        raise ConfigError(f"{name} must be between 0 and 1")
    if not -1 <= self.min_margin_over_simpler <= 1:
      raise ConfigError("min_margin_over_simpler must be between -1 and 1")
    if self.metadata_server is not None:
      mysql_parts(self.metadata_server)  # a clear error for a bad URI
    try:
      self.budget  # pylint: disable=pointless-statement
      tuning.check_validation_share(self.validation_share)
    except ValueError as e:
      raise ConfigError(str(e)) from None
    for name in ("output_dir", "serving_model_name", "pipeline_name"):
      if not getattr(self, name):
        raise ConfigError(f"{name} must not be empty")

  # Derived locations: computed here only, so nothing else joins paths.
  @property
  def pipeline_root_uri(self) -> str:
    return self.pipeline_root or _join(self.output_dir, "pipeline")

  @property
  def metadata_uri(self) -> str:
    """The ML Metadata store: a mysql:// URI, or the SQLite file (always
    local: SQLite cannot live on gs://)."""
    if self.metadata_server:
      return self.metadata_server
    if self.metadata_path:
      return self.metadata_path
    return _join(self.local_dir, defaults.METADATA_FILE)

  @property
  def shared_metadata(self) -> bool:
    """A database server other runs (other output dirs) may use too."""
    return bool(self.metadata_server)

  @property
  def metadata_shown(self) -> str:
    """The store as messages show it: never with its password."""
    return redact(self.metadata_uri)

  @property
  def metadata_exists(self) -> bool:
    return self.shared_metadata or os.path.exists(self.metadata_uri)

  @property
  def local_dir(self) -> str:
    """Where local-only files go: the output dir, or ./outputs for a URI."""
    return (self.output_dir if "://" not in self.output_dir
            else os.path.abspath(defaults.OUTPUT_DIR))

  @property
  def serving_base_uri(self) -> str:
    """TF Serving's model base path: `<serving_dir>/<model name>`."""
    return _join(self.serving_dir or _join(self.output_dir, "serving_model"),
                 self.serving_model_name)

  @property
  def summary_uri(self) -> str:
    return _join(self.output_dir, defaults.SUMMARY_FILE)

  @property
  def budget(self) -> tuning.Budget:
    return tuning.Budget(self.tune_trials, self.tune_minutes)

  @property
  def effective_min_accuracy(self) -> float:
    if self.min_accuracy is not None:
      return self.min_accuracy
    return self.hyperparameters.architecture.min_accuracy

  @property
  def effective_min_class_accuracy(self) -> float:
    if self.min_class_accuracy is not None:
      return self.min_class_accuracy
    return self.hyperparameters.architecture.min_class_accuracy

  @property
  def effective_max_writer_gap(self) -> float:
    if self.max_writer_gap is not None:
      return self.max_writer_gap
    return self.hyperparameters.architecture.max_writer_gap

  @property
  def bounds(self) -> Dict[str, float]:
    """The blessing bounds, as `components.evaluation.thresholds` reads them back."""
    return {"min_accuracy": self.effective_min_accuracy,
            "max_regression": self.max_regression,
            "min_class_accuracy": self.effective_min_class_accuracy,
            "max_class_regression": self.max_class_regression,
            "max_writer_gap": self.effective_max_writer_gap,
            "min_margin_over_simpler": self.min_margin_over_simpler}

  def to_dict(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d["hyperparameters"] = self.hyperparameters.to_dict()
    return d

  @classmethod
  def from_dict(cls, d: Dict[str, Any]) -> "PipelineConfig":
    return strict_from_dict(cls, d, "config keys")

  @classmethod
  def from_file(cls, path: str) -> "PipelineConfig":
    try:
      with open(path, encoding="utf-8") as f:
        d = json.load(f)
    except OSError as e:
      raise ConfigError(f"--config {path}: {e.strerror or e}") from None
    except ValueError as e:  # JSON or UTF-8
      raise ConfigError(f"--config {path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
      raise ConfigError(f"--config {path}: must hold a JSON object of "
                        f"PipelineConfig fields, not a {type(d).__name__}")
    try:
      return cls.from_dict(d)
    except ConfigError as e:
      raise ConfigError(f"--config {path}: {e}") from None

  def check_local_paths(self) -> None:
    """Paths that cannot work, as one clear error before anything runs."""
    for name in ("output_dir", "pipeline_root", "serving_dir"):
      value = getattr(self, name)
      if value and "://" not in value and os.path.exists(value) and (
          not os.path.isdir(value)):
        raise ConfigError(f"--{name.replace('_', '-')} {value} is a file, "
                          "not a directory")
    if not self.shared_metadata and os.path.isdir(self.metadata_uri):
      raise ConfigError(f"--metadata-path {self.metadata_uri} is a directory; "
                        "it names ML Metadata's SQLite file")
    parent = os.path.dirname(os.path.abspath(self.local_dir))
    while parent and not os.path.exists(parent):
      parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
      raise ConfigError(f"--output-dir {self.local_dir}: {parent} is a file")


# MySQL's clients take the password from this variable when none is given
# (`--metadata-password-file` sets it for the processes a command starts).
PASSWORD_ENV = "MYSQL_PWD"


def read_password_file(path: str) -> str:
  """The password in `path`: the file's one line, or the `password=` of the
  [client] section of a MySQL option file (~/.my.cnf's form)."""
  import configparser  # pylint: disable=g-import-not-at-top
  text = read_text(path, ConfigError, "--metadata-password-file")
  if text.lstrip().startswith("["):
    parser = configparser.ConfigParser(interpolation=None)
    try:
      parser.read_string(text)
      password = parser.get("client", "password")
    except (configparser.Error, KeyError) as e:
      raise ConfigError(f"--metadata-password-file {path}: a MySQL option file "
                        "needs password=... in its [client] section "
                        f"({type(e).__name__})") from None
    return password.strip().strip("'\"")
  lines = text.splitlines()
  if len([l for l in lines if l.strip()]) != 1:
    raise ConfigError(f"--metadata-password-file {path}: expected the password "
                      "alone on one line (or a MySQL option file)")
  return next(l for l in lines if l.strip()).rstrip("\r")


def mysql_parts(uri: str) -> Dict[str, Any]:
  """mysql://USER[:PASS]@HOST:PORT/DB -> host, port, database, user, password.

  Without a password in the URI, the password is $MYSQL_PWD's (MySQL's own
  convention; `--metadata-password-file` puts it there), so it need be in
  no command line, config file or process list.
  """
  from urllib.parse import unquote, urlsplit  # pylint: disable=g-import-not-at-top
  usage = "expected mysql://USER[:PASSWORD]@HOST:PORT/DATABASE"
  try:
    parts = urlsplit(uri)
    port = parts.port
  except ValueError as e:
    raise ConfigError(f"--metadata-uri {redact(uri)}: {e}; {usage}") from None
  database = parts.path.lstrip("/")
  if (parts.scheme != "mysql" or not parts.hostname or not parts.username
      or not port or not database or "/" in database or parts.query):
    raise ConfigError(f"--metadata-uri {redact(uri)}: {usage}")
  password = (unquote(parts.password) if parts.password is not None
              else os.environ.get(PASSWORD_ENV, ""))
  return {"host": parts.hostname, "port": port, "database": database,
          "user": unquote(parts.username), "password": password}


def secrets(config: "PipelineConfig") -> List[str]:
  """The strings no file or message of a run may hold: the store's password
  (as given and percent-encoded)."""
  from urllib.parse import quote  # pylint: disable=g-import-not-at-top
  if not config.metadata_server:
    return []
  password = mysql_parts(config.metadata_server)["password"]
  return [p for p in {password, quote(password, safe="")} if p]


def masked(value: Any, hidden: List[str]) -> Any:
  """`value` (text, or JSON-like data) with every string in `hidden` as ***."""
  if isinstance(value, str):
    for secret in hidden:
      value = value.replace(secret, "***")
    return value
  if isinstance(value, dict):
    return {k: masked(v, hidden) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return type(value)(masked(v, hidden) for v in value)
  return value


def redact(uri: str) -> str:
  """The URI (or any text holding URIs) without their passwords."""
  import re  # pylint: disable=g-import-not-at-top
  return re.sub(r"(//[^:/@\s]*):[^@/\s]*@", r"\1:***@", uri)


def _join(base: str, *parts: str) -> str:
  if "://" in base:
    return "/".join([base.rstrip("/"), *parts])
  return os.path.join(base, *parts)


def with_overrides(config: PipelineConfig, **overrides: Any) -> PipelineConfig:
  """A copy with top-level fields and `hyperparameters.<name>` keys replaced."""
  d = config.to_dict()
  for key, value in overrides.items():
    if value is None:
      continue
    if key.startswith("hyperparameters."):
      d["hyperparameters"][key.split(".", 1)[1]] = value
    else:
      d[key] = value
  return PipelineConfig.from_dict(d)
