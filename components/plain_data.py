"""Configuration as plain data: dataclasses filled from JSON, strictly.

A JSON config is typed by hand, so every mistake must be one clear line
before anything runs: a misspelt key, a string where a number belongs, 1.5
epochs. `strict_from_dict` checks each value against the field's type hint
(bool, int, float, str, Optional, List, Tuple[X, ...] and nested dataclasses:
what the configs use) and builds the dataclass.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Type, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
  """A configuration value is missing, misspelt or of the wrong type."""


def read_text(path: str, error: Type[Exception], what: str) -> str:
  """A config file's text, or `error` saying in one line why it cannot be read."""
  try:
    with open(path, encoding="utf-8") as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise error(f"{what} {path}: cannot read it "
                f"({getattr(e, 'strerror', None) or e})") from None


def _describe(hint: Any) -> str:
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin is typing.Union:
    return " or ".join("null" if a is type(None) else _describe(a) for a in args)
  if origin in (list, tuple):
    return "a list of " + {bool: "booleans", int: "integers", float: "numbers",
                           str: "strings"}.get(args[0], "values")
  if dataclasses.is_dataclass(hint):
    return "an object"
  return {bool: "true or false", int: "an integer", float: "a number",
          str: "a string"}.get(hint, str(hint))


def _convert(value: Any, hint: Any, name: str) -> Any:
  """`value` checked against `hint` (ints become floats where floats belong)."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if hint is Any:
    return value
  if origin is typing.Union:
    if value is None and type(None) in args:
      return None
    for arg in (a for a in args if a is not type(None)):
      try:
        return _convert(value, arg, name)
      except ConfigError:
        pass
    raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")
  if origin in (list, tuple):
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")
    items = [_convert(v, args[0], f"{name}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if origin is tuple else items
  if dataclasses.is_dataclass(hint):
    if isinstance(value, hint):
      return value
    if not isinstance(value, dict):
      raise ConfigError(f"{name} must be an object, got {value!r}")
    return strict_from_dict(hint, value, f"keys in {name}", prefix=f"{name}.")
  ok = {bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v)),
        str: lambda v: isinstance(v, str)}.get(hint)
  if ok is None:
    raise TypeError(f"{name}: unsupported type hint {hint}")
  if not ok(value):
    raise ConfigError(f"{name} must be {_describe(hint)}, got {value!r}")
  return float(value) if hint is float else value


def strict_from_dict(cls: Type[T], d: Any, what: str, prefix: str = "") -> T:
  """`cls(**d)` with every key known and every value of its field's type.

  `what` names the keys in errors ("config keys"); `prefix` is put before a
  field's name in errors about its value ("hyperparameters.").
  """
  if not isinstance(d, dict):
    raise ConfigError(f"{what.replace('keys in ', '')} must be a JSON object, "
                      f"got {type(d).__name__}")
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  unknown = set(d) - fields
  if unknown:
    raise ConfigError(f"unknown {what}: {', '.join(sorted(unknown))} "
                      f"(known: {', '.join(sorted(fields))})")
  hints = typing.get_type_hints(cls)
  values: Dict[str, Any] = {k: _convert(v, hints[k], prefix + k)
                            for k, v in d.items()}
  return cls(**values)
