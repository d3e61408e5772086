"""Typed reading of option values, one rule per type for every command, design, method and
apply's YAML (issue 29, class 1: a boolean is never read by truthiness: `overwrite=no` is
false, `overwrite=maybe` is refused naming the key)."""
from __future__ import annotations

from .errors import ConfigError

TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0")


def parse_bool(value, key: str) -> bool:
    """true/false/yes/no/on/off/1/0 in any case (and Python's True/False, 1/0); anything else,
    including None, an empty string or 2, is a ConfigError naming `key`."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in TRUE:
            return True
        if text in FALSE:
            return False
    raise ConfigError(f"{key}={value!r}: must be true or false (also yes/no, on/off, 1/0)")


def bool_keys(defaults: dict) -> set[str]:
    """Names of the options whose default is a boolean (so their values are read as booleans)."""
    return {k for k, v in defaults.items() if isinstance(v, bool)}


def canonical(value) -> str:
    """One spelling per value: YAML-parsed, integral numbers without a decimal point (0 == 0.0),
    other numbers by repr, lists element-wise, booleans lower case."""
    import math

    import yaml
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        x = float(value)
        if math.isfinite(x) and x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return repr(x)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    return "null" if value is None else str(value)
