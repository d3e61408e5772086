"""Typed reading of option values, one rule per type for every command, design, method and
apply's YAML (issue 29, class 1: a boolean is never read by truthiness: `overwrite=no` is
false, `overwrite=maybe` is refused naming the key)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
    if isinstance(value, dict):                  # a mapping: its keys sorted
        return "{" + ",".join(f"{k}:{canonical(value[k])}" for k in sorted(value, key=str)) + "}"
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class Opt:
    """An option's rule, declared once where the option is (a method's OPTIONS, a design
    family's fields) and checked where the object is made, never in a constructor (the idea of
    scikit-learn's `_parameter_constraints`): one of `choices`; an integer in [low, high]; a
    finite number in an interval whose ends are open or closed (`ends`, e.g. "(]"); a boolean;
    a string. `optional` also allows null; `why` is added to the message."""
    kind: str                       # "choice" | "int" | "float" | "bool" | "str"
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    optional: bool = False
    ends: str = "(]"
    why: str = ""

    def describe(self) -> str:
        if self.kind == "choice":
            text = f"one of {', '.join(map(str, self.choices))}"
        elif self.kind in ("bool", "str"):
            text = "true or false" if self.kind == "bool" else "a string"
        elif self.kind == "float":
            text = self._interval()
        else:
            text = (f"an integer {self.low}..{self.high}" if self.high is not None else
                    f"an integer >= {self.low}")
        return text + (", or null" if self.optional else "")

    def _interval(self) -> str:
        closed_low, closed_high = self.ends[0] == "[", self.ends[1] == "]"
        if self.low is None and self.high is None:
            return "a finite number"
        if self.high is None:
            return f"a finite number {'>=' if closed_low else '>'} {self.low}"
        if self.low is None:
            return f"a finite number {'<=' if closed_high else '<'} {self.high}"
        return f"a finite number in {self.ends[0]}{self.low}, {self.high}{self.ends[1]}"

    def check(self, key: str, value) -> None:
        """ValueError naming `key`, the value and what is allowed."""
        if value is None and self.optional:
            return
        if not self._ok(value):
            if self.kind == "choice":
                raise ValueError(f"{key}={value!r}: allowed {list(self.choices)}")
            raise ValueError(f"{key}={value!r}: must be {self.describe()}"
                             + (f" ({self.why})" if self.why else ""))

    def _ok(self, value) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str)
        number = isinstance(value, (int, float, np.integer, np.floating)) \
            and not isinstance(value, bool)
        if self.kind == "int":
            return (number and isinstance(value, (int, np.integer))
                    and (self.low is None or value >= self.low)
                    and (self.high is None or value <= self.high))
        if not number or not math.isfinite(float(value)):
            return False
        x = float(value)
        above = self.low is None or (x >= self.low if self.ends[0] == "[" else x > self.low)
        below = self.high is None or (x <= self.high if self.ends[1] == "]" else x < self.high)
        return above and below


def choice(*values) -> Opt:
    return Opt("choice", tuple(values))


def integer(low: int, high: int | None = None, optional: bool = False, why: str = "") -> Opt:
    return Opt("int", low=low, high=high, optional=optional, why=why)


def number(low: float | None = None, high: float | None = None, ends: str = "(]") -> Opt:
    """A finite number in the interval low..high (None: unbounded) with `ends` open/closed."""
    return Opt("float", low=low, high=high, ends=ends)


FLAG = Opt("bool")
TEXT = Opt("str")


def plain(obj):
    """A config value as plain Python: mappings (OmegaConf's too) as dicts with str keys,
    lists / tuples as lists, numpy scalars as Python numbers; the one conversion every door
    (Hydra's composition, the API's settings, the stored identity) uses."""
    from collections.abc import Mapping
    if isinstance(obj, Mapping) or type(obj).__name__ == "DictConfig":
        return {str(k): plain(v) for k, v in dict(obj).items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
