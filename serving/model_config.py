"""TF Serving's `--model_config_file`: a ModelServerConfig in protobuf text format.

The same file serves this server and the real TF Serving (see
deploy/docker-compose.yml): name, base_path, model_version_policy and
version_labels of each model. This server serves one model per config: a
file with several is refused with that reason, not half-applied.

`promote` and `rollback` edit the file atomically: the new text is parsed
and checked before it replaces the old one (a temp file renamed over it),
so a server polling the file never reads half of it.
"""

import dataclasses
import json
import os
import tempfile
from typing import Dict, List, Optional, Tuple

from serving.model_store import VersionPolicy

STABLE = "stable"
CANARY = "canary"
HISTORY_SUFFIX = ".history.json"  # the label moves promote made, for rollback


class ConfigFileError(ValueError):
  """The config file cannot be read, parsed or applied; says which and why."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The one model of a config file, as the server applies it."""
  name: str
  base_path: str
  policy: VersionPolicy
  labels: Dict[str, int]


def _protos():
  from tensorflow_serving.config import model_server_config_pb2  # pylint: disable=g-import-not-at-top
  return model_server_config_pb2


def parse(text: str, source: str = "the config") -> ModelConfig:
  """ModelServerConfig text -> ModelConfig, or ConfigFileError saying why."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  proto = _protos().ModelServerConfig()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise ConfigFileError(f"{source}: not a ModelServerConfig in text format: "
                          f"{e}") from None
  if proto.WhichOneof("config") != "model_config_list":
    raise ConfigFileError(f"{source}: needs model_config_list {{ config {{ ... }} }}")
  configs = proto.model_config_list.config
  if len(configs) != 1:
    raise ConfigFileError(f"{source}: {len(configs)} models configured; this "
                          "server serves exactly one (run one server per model)")
  config = configs[0]
  if not config.name:
    raise ConfigFileError(f"{source}: the model has no name")
  if not config.base_path:
    raise ConfigFileError(f"{source}: model {config.name!r} has no base_path")
  if config.model_platform not in ("", "tensorflow"):
    raise ConfigFileError(f"{source}: model_platform {config.model_platform!r} "
                          "is not served here (tensorflow only)")
  labels = dict(config.version_labels)
  for label, version in labels.items():
    if not label or version < 0:
      raise ConfigFileError(f"{source}: bad version label {label!r}: {version}")
  return ModelConfig(config.name, config.base_path, _policy(config, source), labels)


def _policy(config, source: str) -> VersionPolicy:
  policy = config.model_version_policy
  kind = policy.WhichOneof("policy_choice") or "latest"
  if kind == "latest":
    count = policy.latest.num_versions or 1
    return VersionPolicy("latest", num_versions=count)
  if kind == "all":
    return VersionPolicy("all")
  found = tuple(sorted(set(policy.specific.versions)))
  if not found:
    raise ConfigFileError(f"{source}: model_version_policy specific lists no versions")
  return VersionPolicy("specific", versions=found)


def read(path: str) -> ModelConfig:
  from components.plain_data import read_text  # pylint: disable=g-import-not-at-top
  return parse(read_text(path, ConfigFileError, "the model config file"), path)


def render(config: ModelConfig) -> str:
  """A ModelConfig as ModelServerConfig text (what TF Serving reads)."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  proto = _protos().ModelServerConfig()
  entry = proto.model_config_list.config.add()
  entry.name = config.name
  entry.base_path = config.base_path
  entry.model_platform = "tensorflow"
  policy = config.policy
  if policy.kind == "specific":
    entry.model_version_policy.specific.versions.extend(policy.versions)
  elif policy.kind == "all":
    entry.model_version_policy.all.SetInParent()
  else:
    entry.model_version_policy.latest.num_versions = policy.num_versions
  for label, version in sorted(config.labels.items()):
    entry.version_labels[label] = version
  return text_format.MessageToString(proto)


def write(path: str, config: ModelConfig) -> None:
  """Replaces `path` with `config` in one rename, after checking the text."""
  text = render(config)
  parse(text, "the new config")  # what the server will read back
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=".model-config-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


# --- promote and rollback ------------------------------------------------------

def _history(path: str) -> List[Dict]:
  try:
    with open(path + HISTORY_SUFFIX, encoding="utf-8") as f:
      found = json.load(f)
    return found if isinstance(found, list) else []
  except (OSError, ValueError):
    return []


def _save_history(path: str, history: List[Dict]) -> None:
  tmp = f"{path}{HISTORY_SUFFIX}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(history[-100:], f, indent=1)
  os.replace(tmp, path + HISTORY_SUFFIX)


def _with_label(config: ModelConfig, label: str, version: int) -> ModelConfig:
  """`label` -> `version`; the policy then serves every labelled version."""
  labels = dict(config.labels, **{label: version})
  policy = config.policy
  if policy.kind != "all":
    # The labelled versions are served; a version no label names is let go.
    policy = VersionPolicy("specific", versions=tuple(sorted(set(labels.values()))))
  return dataclasses.replace(config, policy=policy, labels=labels)


def _check_version(config: ModelConfig, version: int) -> None:
  from components.model_layout import versions  # pylint: disable=g-import-not-at-top
  present = versions(config.base_path)
  if version not in present:
    shown = ", ".join(map(str, sorted(present))) or "none"
    raise ConfigFileError(f"version {version} is not under {config.base_path} "
                          f"(versions there: {shown})")


def initial(path: str, name: str, base_path: str) -> ModelConfig:
  """The config at `path`, or a new one for `name` at `base_path`."""
  if os.path.exists(path):
    return read(path)
  return ModelConfig(name, base_path, VersionPolicy(), {})


def promote(path: str, version: int, label: str, name: str,
            base_path: str) -> Tuple[ModelConfig, Optional[int]]:
  """Points `label` at `version`; (the new config, the version it left)."""
  config = initial(path, name, base_path)
  _check_version(config, version)
  before = config.labels.get(label)
  new = _with_label(config, label, version)
  write(path, new)
  _save_history(path, _history(path) + [{"label": label, "from": before,
                                          "to": version}])
  return new, before


def rollback(path: str, label: str = STABLE) -> Tuple[ModelConfig, int, int]:
  """Moves `label` back to the version it held before its last promote.

  Returns (the new config, the version rolled back from, the one now
  labelled). Without such a move on record, the version below the current
  one under the base path.
  """
  config = read(path)
  current = config.labels.get(label)
  if current is None:
    raise ConfigFileError(f"{path}: no label {label!r} to roll back (labels: "
                          f"{', '.join(sorted(config.labels)) or 'none'})")
  history = _history(path)
  moves = [m for m in history if m.get("label") == label]
  target = None
  if moves and moves[-1].get("to") == current and isinstance(moves[-1].get("from"), int):
    target = moves[-1]["from"]
  if target is None:
    from components.model_layout import versions  # pylint: disable=g-import-not-at-top
    older = [v for v in versions(config.base_path) if v < current]
    if not older:
      raise ConfigFileError(f"{path}: {label} is version {current} and there is "
                            "no earlier version to roll back to")
    target = max(older)
  _check_version(config, target)
  new = _with_label(config, label, target)
  write(path, new)
  # The undone move leaves the record, so a second rollback goes further back.
  if moves and moves[-1].get("to") == current:
    history.remove(moves[-1])
  _save_history(path, history)
  return new, current, target
