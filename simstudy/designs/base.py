"""Designs: the base every data-generating design shares.

A design is a frozen dataclass of parameters registered under a family name
(`@register_design("multisite")`); `simulate(rng, J, n_j)` draws one replicate: a training set,
a test set of NEW individuals in the SAME clusters, and the truth (Delta, Y0, Y1, d_opt).
Here: the Replicate, the family registry, validated construction from a config mapping, the
identity a store records (with data files' hashes) and the check every replicate passes.
"""
from __future__ import annotations

import copy
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError

SITE, TREAT, OUTCOME = "site", "T", "Y"
TRUTH = ("Delta", "Y0", "Y1", "d_opt")


@dataclass(frozen=True)
class Replicate:
    """One simulated data set: train/test frames (site, X1..Xp, T, Y) and test-set truth."""
    train: pd.DataFrame
    test: pd.DataFrame
    truth: pd.DataFrame          # columns Delta, Y0, Y1, d_opt aligned with `test`
    draws: int = 1               # how many draws the rejection step needed
    # more(rng, factor) -> (frame, truth): `factor` x the training sizes of NEW people in the
    # SAME training sites with their truth (value_claims' true value; None: the design has none)
    more: Any = field(default=None, repr=False, compare=False)

    def test_with_truth(self) -> pd.DataFrame:
        return pd.concat([self.test, self.truth], axis=1)


def frame_of(columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """A DataFrame of equal-length 1-d arrays, built the fast way: column labels as an object
    Index (pandas 3 would infer its arrow-backed str dtype, ~4x slower to build and to look
    up) and no re-validation of arrays a design just drew (a replicate's four frames cost
    ~0.2 ms instead of ~0.8 ms). The values are those of pd.DataFrame(columns)."""
    names = pd.Index(list(columns), dtype=object)
    arrays = [np.asarray(a) for a in columns.values()]
    n = len(arrays[0]) if arrays else 0
    try:
        return pd.DataFrame._from_arrays(arrays, columns=names, index=pd.RangeIndex(n),
                                         verify_integrity=False)
    except (AttributeError, TypeError):       # a pandas without it: the public constructor
        return pd.DataFrame(dict(zip(names, arrays)), columns=names, copy=False)


DESIGNS: dict[str, type] = {}


def check_replicate(rep, design, J: int, n_j: int) -> None:
    """What every design must return, checked once per replicate before any method sees it
    (issue 29, class 5): train/test frames with site, T (0/1) and Y, J training sites (n_j
    each for equal sizes; a mean size within [n_j / 2, 2 n_j] otherwise, unless the sizes
    are a trial's real ones), test sites among the training sites, and a finite truth
    (Delta, Y0, Y1, d_opt) row-aligned with the test set with d_opt = 1{Delta > 0}.
    A violation is a ConfigError that blames the design by name, not the methods."""
    name = f"design {getattr(design, 'name', '?')!r} ({type(design).__module__}." \
           f"{type(design).__qualname__})"

    def bad(what):
        raise ConfigError(f"{name} returned {what} for J={J}, n_j={n_j}; fix its simulate()")
    if not isinstance(rep, Replicate):
        bad(f"a {type(rep).__name__}, not a simstudy.designs.Replicate")
    for part in ("train", "test", "truth"):
        if not isinstance(getattr(rep, part), pd.DataFrame):
            bad(f"a {part} that is not a DataFrame")
    for part in ("train", "test"):
        frame = getattr(rep, part)
        missing = [c for c in (SITE, TREAT, OUTCOME) if c not in frame.columns]
        if missing:
            bad(f"a {part} set without column(s) {missing}")
        if not frame.columns.is_unique:
            bad(f"a {part} set with duplicate columns")
        t = frame[TREAT].to_numpy()
        if not ((t == 0) | (t == 1)).all():
            bad(f"a {part} set whose T is not 0/1")
        if not np.isfinite(frame[OUTCOME].to_numpy(float)).all():
            bad(f"a {part} set with missing or infinite Y")
    missing = [c for c in TRUTH if c not in rep.truth.columns]
    if missing:
        bad(f"a truth without column(s) {missing}")
    if len(rep.truth) != len(rep.test) or not rep.truth.index.equals(rep.test.index):
        bad(f"a truth of {len(rep.truth)} rows for {len(rep.test)} test rows (they must be "
            f"row-aligned, same index)")
    delta = rep.truth["Delta"].to_numpy(float)
    truth = [delta, rep.truth["Y0"].to_numpy(float), rep.truth["Y1"].to_numpy(float)]
    if not all(np.isfinite(t).all() for t in truth):
        bad("a truth with missing or infinite values (Delta, Y0, Y1)")
    y = rep.train[OUTCOME].to_numpy(float)
    with np.errstate(over="ignore"):   # the metrics' sums (a value is a mean of Y0 / Y1)
        if not all(np.isfinite(np.abs(t).sum()) for t in truth + [y]):
            bad("a truth or outcomes too large to sum (Delta, Y0, Y1 or Y overflow a mean: "
                "the values and regrets would be infinite)")
        if not np.isfinite(np.dot(y, y)):
            bad("outcomes too large to square (every fit's sums of squares would overflow)")
    if not np.array_equal(rep.truth["d_opt"].to_numpy(), delta > 0):
        bad("a truth whose d_opt is not 1{Delta > 0}")
    train_sites, test_sites = rep.train[SITE].to_numpy(), rep.test[SITE].to_numpy()
    if train_sites.dtype.kind in "iu" and test_sites.dtype.kind in "iu" and len(train_sites) \
            and train_sites.min() >= 0 and train_sites.max() < 4 * J + 1000:
        seen = np.bincount(train_sites) > 0          # integer site codes: no sort needed
        n_sites = int(seen.sum())
        orphans = len(test_sites) and (test_sites.min() < 0 or test_sites.max() >= seen.size
                                       or not seen[test_sites].all())
    else:
        sites = pd.unique(rep.train[SITE])
        n_sites = len(sites)
        orphans = not pd.Series(pd.unique(rep.test[SITE])).isin(sites).all()
    if n_sites != J:
        bad(f"{n_sites} training sites (asked for J={J})")
    if getattr(design, "test_sites", "same") == "new":     # the test set's sites are all new
        if pd.Series(pd.unique(rep.test[SITE])).isin(pd.unique(rep.train[SITE])).any():
            bad("test rows in training sites (test_sites=new asks for sites never seen)")
    elif orphans:
        bad("test rows in sites that have no training rows")
    sizes = getattr(design, "site_sizes", None)
    mean = len(rep.train) / J
    if sizes == "equal" and len(rep.train) != J * n_j:
        bad(f"{len(rep.train)} training rows (equal site sizes: J x n_j = {J * n_j})")
    if sizes not in ("equal", "real") and not n_j / 2 <= mean <= 2 * n_j:
        bad(f"a mean site size of {mean:.1f} (asked for n_j={n_j})")


def blame(design, J: int, n_j: int, seed, exc: ConfigError) -> ConfigError:
    """`check_replicate` refused a replicate of a registered design: name the design keys that
    cause it. Each parameter the user moved from the family's default (a mapping term too:
    design.delta.X3) is set back alone and the same replicate drawn again; the keys whose reset
    gives a valid replicate are named, with their values (issue 45, class 3). A plugin family
    with no such key keeps the message that tells its author to fix simulate()."""
    import dataclasses
    defaults = design_defaults(design.family)
    trials = []
    for f in fields(design):
        value, default = getattr(design, f.name), defaults.get(f.name)
        if isinstance(value, Mapping):
            default = default if isinstance(default, Mapping) else {}
            for term, v in value.items():
                if v != default.get(term, 0.0):
                    trials.append((f"design.{f.name}.{term}", v,
                                   {f.name: {**value, term: default.get(term, 0.0)}}))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and value != default and isinstance(default, (int, float)):
            trials.append((f"design.{f.name}", value, {f.name: default}))
    culprits = []
    for key, value, change in trials[:40]:
        try:
            other = dataclasses.replace(design, **change)
            with np.errstate(all="ignore"):
                check_replicate(other.simulate(np.random.default_rng(seed), J, n_j), other, J,
                                n_j)
        except Exception:                                          # noqa: BLE001
            continue
        culprits.append(f"{key}={value!r}")
    what = str(exc).split(" returned ", 1)[-1].rsplit("; fix its simulate()", 1)[0]
    if culprits:
        return ConfigError(f"{', '.join(culprits)} (design {design.name!r}) gives {what}: "
                           f"use a smaller value (the truth and outcomes must be finite numbers "
                           f"whose means are finite)")
    if type(design).__module__.startswith("simstudy."):
        return ConfigError(f"the parameters of design {design.name!r} give {what}; bring the "
                           f"ones you changed back towards the preset's values")
    return exc


def register_design(family: str):
    """Class decorator: make a design class (a frozen dataclass with `name` and
    `simulate(rng, J, n_j) -> Replicate`) available as `design.family: <family>`."""
    def deco(cls: type) -> type:
        old = DESIGNS.get(family)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__,
                                                                      cls.__qualname__):
            raise ConfigError(f"design family {family!r}: registered by {old.__module__}."
                              f"{old.__qualname__} and again by {cls.__module__}."
                              f"{cls.__qualname__}; rename one of them")
        DESIGNS[family] = cls
        cls.family = family
        return cls
    return deco


def make_design(cfg: Mapping) -> Any:
    """The design of a config mapping: its `family` (default multisite) and parameters."""
    cfg = dict(cfg)
    family = str(cfg.pop("family", "multisite"))
    if family not in DESIGNS:
        raise ConfigError(f"design.family={family!r}: registered families "
                          f"{', '.join(sorted(DESIGNS))} (a plugin module registers more: "
                          f"plugins=[my_module])")
    return DESIGNS[family].from_config(cfg)


def design_defaults(family: str) -> dict:
    """Default parameters of a family (to read stores written before a parameter existed)."""
    cls = DESIGNS.get(family)
    if cls is None:
        return {}
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory()
    return out


def param(default, help: str, rule=None):
    """A design parameter, declared once: its default, a line of help (`simstudy run --help`,
    `simstudy designs NAME`) and its rule (an options.Opt, checked by `DesignBase.validate`)."""
    meta = {"help": help, "rule": rule}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def schema(cls) -> dict[str, tuple]:
    """A design family's parameters: name -> (default, help, rule)."""
    out = {}
    for f in fields(cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        out[f.name] = (default, f.metadata.get("help", ""), f.metadata.get("rule"))
    return out


class DesignBase:
    """What every registered design shares: validated construction from a config mapping."""
    family: ClassVar[str] = ""
    name: str

    def validate(self) -> None:
        """Each parameter against its field's rule (`param`), then the family's `check`."""
        for f in fields(self):
            rule = f.metadata.get("rule")
            if rule is not None:
                try:
                    rule.check(f"design.{f.name}", getattr(self, f.name))
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        self.check()

    def check(self) -> None:
        """Rules that tie parameters together (a family overrides it)."""

    @classmethod
    def from_config(cls, cfg: Mapping):
        cfg = dict(cfg)
        family = cfg.pop("family", cls.family)
        if family != cls.family:
            raise ConfigError(f"design.family={family!r} given to the {cls.family} family; use "
                              f"simstudy.designs.make_design to choose the family")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"design has unknown keys {unknown}; the {cls.family} family "
                              f"allows: {sorted(known)}")
        from ..options import parse_bool
        flags = {f.name for f in fields(cls) if isinstance(f.default, bool)}
        cfg = {k: parse_bool(v, f"design.{k}") if k in flags else v for k, v in cfg.items()}
        try:
            return cls(**{k: (dict(v) if isinstance(v, Mapping) else
                              list(v) if type(v).__name__ == "ListConfig" else v)
                          for k, v in cfg.items()})
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"design ({cls.family}): {exc}") from None

    def identity(self) -> dict:
        """Family and parameters: what the store records for this design, and the SHA-256 of
        the content of each data file it reads (`data_files`), so that a changed file is a
        different study, not silently mixed rows (issue 29, class 6)."""
        out = {"family": self.family, **{f.name: getattr(self, f.name) for f in fields(self)}}
        for key, path in self.data_files().items():
            out[f"{key}_sha256"] = file_sha256(path)
        return out

    def data_files(self) -> dict[str, str]:
        """{parameter: path} of the files the design reads (none here)."""
        return {}

    def effect_covariates(self) -> list[str] | None:
        """The covariates Delta depends on (None: not declared; a plugin family may declare
        them): a rule whose inputs miss one cannot learn the optimal rule, and the study warns
        so before it starts (issue 39)."""
        return None

    def rule_defaults(self) -> dict[str, Any]:
        """Method defaults the design carries (its `rules` parameter where it has one: the
        moderators / features that let every rule see its effect); {} for none."""
        return dict(getattr(self, "rules", None) or {})

    def roles(self) -> dict[str, Any]:
        """The columns of the design's frames by role: site, treatment, outcome (the names every
        design uses) and the covariates a method may use (None: not declared, not checked).
        A method's column options are checked against these before the probe."""
        cov = getattr(self, "covariates", None)
        return {"site": SITE, "treatment": TREAT, "outcome": OUTCOME,
                "covariates": list(cov) if isinstance(cov, (list, tuple)) else None}


def data_path(name: str) -> str:
    """A shipped trial's path (star, thornton), or the path given."""
    from .. import data
    return str(data.path(name)) if name in data.FILES else str(name)


def file_sha256(path: str) -> str:
    import os
    st = os.stat(path)
    return _sha256(str(path), st.st_mtime_ns, st.st_size)


from functools import lru_cache  # noqa: E402


@lru_cache(maxsize=32)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def preset(name: str) -> dict:
    """A design preset of conf/design (`design=NAME`) with the presets its `defaults` list names
    merged under it (design2 = design1 + its changes), as Hydra composes it."""
    from importlib import resources

    import yaml
    path = resources.files("simstudy.conf") / "design" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no design preset {name!r} in conf/design")
    raw = yaml.safe_load(path.read_text()) or {}
    out: dict = {}
    for parent in raw.pop("defaults", []) or []:
        if parent != "_self_":
            out = _merged(out, preset(str(parent)))
    return _merged(out, raw)


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
