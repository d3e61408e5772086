"""A study's configuration: the validated StudyConfig (designs x J x n_j conditions, reps,
methods, options, workers), the run's switches, and the checks of `out` and of the machine's
memory, all before any work starts (issue 29: every value named with its fix)."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .designs import Design, make_design
from .errors import ConfigError
from .methods import load_plugins, make
from .methods.registry import typed_options
from .options import FLAG, Opt, parse_bool
from .options import plain as _plain
from .store import point_label
from .workers import check_n_jobs, resolve_n_jobs


def _as_list(value, key: str) -> list:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        out = list(value)
    else:
        out = [value]
    if not out:
        raise ConfigError(f"{key} is empty; give at least one value")
    return out


def _mapping(value, key: str, example: str) -> dict:
    """A mapping key (method_options, method_defaults): None is empty; anything else is a
    ConfigError with an example (from Python a list or a string would fail deep inside)."""
    if value is None:
        return {}
    if isinstance(value, Mapping) or type(value).__name__ == "DictConfig":
        return {str(k): v for k, v in dict(value).items()}
    raise ConfigError(f"{key}={value!r}: must be a mapping, e.g. {key}={example}")


def _int(value, key: str, minimum: int, maximum: int = 10 ** 9) -> int:
    try:
        if isinstance(value, bool):
            raise ValueError
        iv = int(value)
        if iv != value and not (isinstance(value, str) and str(iv) == value.strip()):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}") from None
    if iv < minimum:
        raise ConfigError(f"{key}={iv}: must be an integer >= {minimum}")
    if iv > maximum:
        raise ConfigError(f"{key}={iv}: must be an integer <= {maximum:,}")
    return iv


@dataclass
class StudyConfig:
    """A validated study: designs x J x n_j conditions, reps replicates, methods."""
    designs: list[Design]
    J: list[int]
    n_j: list[int]
    reps: int
    methods: list[str]
    seed: int = 2024
    method_defaults: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)
    n_jobs: int = 1
    backend: str = "loky"
    batch_size: int | None = None       # None = automatic
    flush_seconds: float = 5.0
    point: dict[str, str] = field(default_factory=dict)   # swept keys of this sweep point
    replicates: tuple[int, int] | None = None             # run only [start, stop) of 0..reps-1
    dask_address: str | None = None                       # backend=dask: scheduler or None
    point_keys: dict[str, str] = field(default_factory=dict)  # every swept key, defaults too
    auto: dict[str, Any] | None = None     # reps=auto: target_mcse, metric, min/max/batch reps
    dask_wait: float = 60.0                # backend=dask: seconds to wait for a worker
    budget: float = 1.0                    # value_at_budget: the share a rule may treat
    value_claims: str = "none"             # claims.py: none | site | estimated propensity
    design_defaults: dict[str, dict] = field(default_factory=dict)   # defaults_for(design)

    @classmethod
    def from_config(cls, cfg: Mapping, point: Mapping | None = None,
                    point_keys: Mapping | None = None) -> "StudyConfig":
        """Validate a (Hydra/OmegaConf or plain) mapping; errors name the key and allowed values.
        `point`: the swept keys of this sweep point (the CLI takes them from Hydra's overrides)."""
        cfg = dict(cfg)
        plugins = [str(p) for p in _as_list(cfg.get("plugins") or [], "plugins")] \
            if cfg.get("plugins") else []
        load_plugins(plugins)
        raw_designs = cfg.get("design")
        if raw_designs is None:
            raise ConfigError("design is missing; choose one of conf/design/*.yaml, e.g. design=design1")
        if isinstance(raw_designs, Mapping) or type(raw_designs).__name__ == "DictConfig":
            raw_designs = [raw_designs]
        designs = [make_design(_plain(d)) for d in raw_designs]
        names = [d.name for d in designs]
        if len(set(names)) != len(names):
            raise ConfigError(f"design names must be unique, got {names}")
        J = [_int(v, "J", 2, 10 ** 7) for v in _as_list(cfg.get("J", [25]), "J")]
        n_j = [_int(v, "n_j", 2, 10 ** 7) for v in _as_list(cfg.get("n_j", [25]), "n_j")]
        for key, values in (("J", J), ("n_j", n_j)):
            if len(set(values)) != len(values):
                raise ConfigError(f"{key}={values} lists a value twice (its replicates would be "
                                  f"computed twice); give each value once")
        auto = None
        if str(cfg.get("reps", 1)).strip().lower() == "auto":
            auto = _auto(cfg)
            reps = auto["max_reps"]
        else:
            reps = _int(cfg.get("reps", 1), "reps", 1)
        methods = [str(m) for m in _as_list(cfg.get("methods", []), "methods")]
        if len(set(methods)) != len(methods):
            raise ConfigError(f"methods lists a name twice: {methods}")
        if auto and auto.get("reference") and auto["reference"] not in methods:
            raise ConfigError(f"target_reference={auto['reference']!r} is not in methods {methods}")
        if auto:                     # a stopping rule that can be met (issue 45, class 11)
            from .metrics import REFERENCE_RULES
            judged = [m for m in methods if m not in REFERENCE_RULES
                      and m != auto.get("reference")]
            if not judged:
                raise ConfigError(
                    f"reps=auto targets the Monte Carlo SE of the rules' {auto['metric']}"
                    + (f" minus {auto['reference']}'s" if auto.get("reference") else "")
                    + f", but methods {methods} hold no rule it applies to (the reference "
                    f"rules {', '.join(REFERENCE_RULES)} are not targeted); add an estimator, "
                    f"or give reps=N")
        if cfg.get("reference") is not None and str(cfg["reference"]) not in methods:
            raise ConfigError(f"reference={cfg['reference']!r} is not in methods {methods}; "
                              f"name one of them, or null (Q-fe if run, else the first method)")
        defaults = dict(_mapping(cfg.get("method_defaults"), "method_defaults",
                                 "{'moderators': ['X1', 'X2']}"))
        options = {str(k): typed_options(str(k), v) for k, v in
                   _mapping(cfg.get("method_options"), "method_options",
                            "{'W-aug': {'nfolds': 10}}").items()}
        unknown = sorted(set(options) - set(methods))
        if unknown:
            raise ConfigError(f"method_options names methods not in `methods`: {unknown}; "
                              f"methods are {methods}")
        base = study_defaults().get("method_defaults") or {}
        per_design = {d.name: {**defaults, **{k: v for k, v in d.rule_defaults().items()
                                              if defaults.get(k) == base.get(k)}}
                      for d in designs}          # a design's rules where the study left them
        # unknown names / options fail here; column options against each design's columns,
        # before the probe
        from .methods.registry import check_columns
        built = []
        for d in designs:
            built = [make(m, options.get(m), per_design[d.name]) for m in methods]
            rules = d.rule_defaults()
            for m, obj in zip(methods, built):
                def source(key, m=m, rules=rules):
                    if key in (options.get(m) or {}):
                        return None                      # method_options.NAME.KEY itself
                    if key in rules and defaults.get(key) == base.get(key):
                        return f"{m}'s {key} from design.rules.{key}"
                    if key in defaults:
                        return f"{m}'s {key} from method_defaults.{key}"
                    return None
                check_columns(m, obj, d.roles(), d.name, source)
        n_jobs = cfg.get("n_jobs", 1)
        n_jobs = check_n_jobs(n_jobs, "n_jobs") if n_jobs is not None else 1
        backend = str(cfg.get("backend", "loky"))
        if backend not in BACKENDS:
            raise ConfigError(f"backend={backend!r}: allowed {', '.join(BACKENDS)}")
        if backend == "dask":
            try:
                import distributed  # noqa: F401
            except ImportError:
                raise ConfigError("backend=dask needs dask.distributed: "
                                  "pip install 'simstudy[dask]'") from None
        reps_range = _replicate_range(cfg.get("replicates"), reps)
        bs = cfg.get("batch_size", "auto")
        batch_size = None if bs in (None, "auto") else _int(bs, "batch_size", 1)
        seed = _int(cfg.get("seed", 2024), "seed", 0)
        address = check_dask_address(cfg.get("dask_address"))
        flush = _number(cfg.get("flush_seconds", 5.0), "flush_seconds", 0.0, 86400.0,
                        open_low=True)
        dask_wait = _number(cfg.get("dask_wait", 60.0), "dask_wait", 0.0, 7 * 86400.0,
                            open_low=True)
        _check_sizes(designs, J, n_j, built, _workers(n_jobs, backend),
                     remote=backend == "dask" and address is not None)
        return cls(designs, J, n_j, reps, methods, seed, defaults, options, plugins,
                   n_jobs, backend, batch_size, flush,
                   {str(k): str(v) for k, v in dict(point or {}).items()}, reps_range,
                   None if address in (None, "", "local") else str(address),
                   {str(k): str(v) for k, v in dict(point_keys or point or {}).items()},
                   auto, dask_wait, design_defaults=per_design,
                   budget=_number(1.0 if cfg.get("budget") is None else cfg.get("budget"),
                                  "budget", 0.0, 1.0, open_low=True),
                   value_claims=_value_claims(cfg.get("value_claims")))

    def defaults_for(self, design) -> dict[str, Any]:
        """The method defaults on `design`: the study's, with the design's `rules` where the
        study left a key at conf/config.yaml's default (`from_config`)."""
        return self.design_defaults.get(design.name, self.method_defaults)

    def blind_rules(self) -> list[str]:
        """One line per (design, method) whose rule cannot see a covariate the design's Delta
        depends on (`effect_covariates`): its features (a tree), else moderators, else
        covariates. A warning, not an error: a methodologist may do it on purpose."""
        lines = []
        for d in self.designs:
            needed = d.effect_covariates()
            if not needed:
                continue
            for m in self.methods:
                obj = make(m, self.method_options.get(m), self.defaults_for(d))
                inputs = next((k for k in ("features", "moderators", "covariates")
                               if isinstance(getattr(obj, k, None), (list, tuple))), None)
                if inputs is None:
                    continue
                have = list(getattr(obj, inputs))
                if getattr(obj, "site_moderators", False):
                    continue
                miss = [c for c in needed if c not in have]
                if miss:
                    lines.append(f"{m}'s {inputs} {have} miss {', '.join(miss)}, on which "
                                 f"the Delta of design {d.name} depends: its rule cannot see "
                                 f"them (method_options.{m}.{inputs}=[...] offers them)")
        return lines

    def identity(self) -> tuple[dict, dict]:
        """What makes two runs the same study (stored in config.yaml, checked on resume)."""
        study = {"seed": self.seed, "methods": list(self.methods),
                 "method_defaults": _plain(self.method_defaults),
                 "method_options": _plain(self.method_options), "plugins": list(self.plugins)}
        if self.budget != 1.0:              # at its default it is not recorded: stores written
            study["budget"] = self.budget   # before the key existed resume unchanged
        if self.value_claims != "none":     # the same
            study["value_claims"] = self.value_claims
        designs = {d.name: _plain(d.identity()) for d in self.designs}
        return study, designs

    def conditions(self) -> list[tuple[Design, int, int]]:
        return [(d, J, n) for d in self.designs for J in self.J for n in self.n_j]

    @property
    def label(self) -> str:
        return point_label(self.point)

    def replicate_ids(self) -> range:
        lo, hi = self.replicates or (0, self.reps)
        return range(lo, hi)

    def planned(self) -> list[dict]:
        return [{"point": self.label, "design": d.name, "J": J, "n_j": n, "reps": self.reps}
                for d, J, n in self.conditions()]



def _value_claims(value) -> str:
    """The study key value_claims: none (also false / null) | site | estimated."""
    from .claims import VALUE_CLAIMS
    if value is None or value is False:
        return "none"
    if not isinstance(value, str) or value.strip().lower() not in VALUE_CLAIMS:
        raise ConfigError(f"value_claims={value!r}: allowed {', '.join(VALUE_CLAIMS)} (none: "
                          f"not computed; site / estimated: the AIPW value of each rule "
                          f"learned on half the training data, with that propensity)")
    return value.strip().lower()


def _check_sizes(designs, J: list[int], n_j: list[int], built, workers: int, remote: bool) -> None:
    """Before any work: equal site sizes not below min_site_size, and the largest condition's
    memory (BYTES_PER_ROW per training + test row, plus what a method needs: `memory_bytes`)
    times the workers within the machine's available memory (a remote cluster's is not ours
    to know)."""
    for d in designs:
        low = int(getattr(d, "min_site_size", 0) or 0)
        if getattr(d, "site_sizes", None) == "equal" and low > min(n_j):
            raise ConfigError(f"design.min_site_size={low} is above n_j={min(n_j)}: with "
                              f"equal site sizes every site has n_j individuals; lower "
                              f"min_site_size or raise n_j")
    cells = [(d, a, b) for d in designs for a in J for b in n_j]
    need = max((float(a) * b * (1 + getattr(d, "test_size", 1.0)) * BYTES_PER_ROW
                + max((m.memory_bytes(a, a * b) for m in built), default=0.0)
                for d, a, b in cells), default=0.0) * workers
    have = available_memory()
    if need > have and not remote:
        raise ConfigError(
            f"J x n_j up to {max(a * b for _, a, b in cells):,} rows per replicate (J up to "
            f"{max(J):,} sites) needs about {need / 2 ** 30:,.1f} GiB with {workers} worker(s); "
            f"this machine has {have / 2 ** 30:,.1f} GiB available: use smaller J / n_j or "
            f"fewer workers")

BACKENDS = ("loky", "dask", "threading", "multiprocessing", "sequential")
BYTES_PER_ROW = 3000        # peak memory of one replicate per training + test row, all methods
                            # (measured: ~1.5 KB at J = 500, n_j = 200; x2 for safety)


def _number(value, key: str, low: float, high: float = math.inf, open_low: bool = False) -> float:
    """A finite number in [low, high] (or (low, high]); the message gives the range."""
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    ok = math.isfinite(x) and (x > low if open_low else x >= low) and x <= high
    if not ok:
        rng = f"{'(' if open_low else '['}{low:g}, {high:g}]"
        raise ConfigError(f"{key}={value!r}: must be a finite number in {rng}")
    return x


def _auto(cfg: Mapping) -> dict[str, Any]:
    """reps=auto settings: target_mcse (required), target_metric, target_reference (the MC SE of
    the paired difference from that method instead), min_reps, max_reps, batch_reps."""
    from .metrics import METRICS
    if cfg.get("target_mcse") in (None, ""):
        raise ConfigError("reps=auto needs target_mcse, the Monte Carlo SE to reach, e.g. "
                          "reps=auto target_mcse=0.005 (see `simstudy plan` for what it costs)")
    target = _number(cfg["target_mcse"], "target_mcse", 0.0, 1e9, open_low=True)
    metric = str(cfg.get("target_metric") or "accuracy")
    if metric not in METRICS:
        raise ConfigError(f"target_metric={metric!r}: allowed {', '.join(METRICS)}")
    if cfg.get("replicates") not in (None, "all", ""):
        raise ConfigError(f"replicates={cfg.get('replicates')!r} with reps=auto: reps=auto grows "
                          f"each cell from replicate 0 until its target; drop replicates=... "
                          f"(or give reps=N to split a fixed number of replicates)")

    def given(key, default):
        return default if cfg.get(key) in (None, "") else cfg.get(key)
    lo = _int(given("min_reps", 20), "min_reps", 2)
    hi = _int(given("max_reps", 1000), "max_reps", lo)
    step = _int(given("batch_reps", lo), "batch_reps", 1)
    ref = cfg.get("target_reference")
    return {"target_mcse": target, "metric": metric, "min_reps": lo, "max_reps": hi,
            "batch_reps": step, "reference": str(ref) if ref else None}


@dataclass(frozen=True)
class Key:
    """One study key, declared once: its default (conf/config.yaml holds the same value for
    Hydra; a test keeps the two equal), a line of help (`simstudy run --help`, run_study's
    docstring), its rule where a generic one applies (FLAG: read by `run_flags`; the grid,
    methods and options have their own checks in `from_config`),
    whether a changed value is a sweep point (`point`: it changes WHAT is computed: seed,
    options, a design parameter) and whether it is part of the study's identity (`identity`:
    False for where and how it runs: n_jobs, out, progress, ...)."""
    default: Any
    help: str
    rule: Opt | None = None
    point: bool = False
    identity: bool = True


_POS = Opt("float", low=0.0, ends="()")
# every top-level key of conf/config.yaml, in its order (test_cli keeps the two in step)
STUDY_KEYS: dict[str, Key] = {
    "seed": Key(2024, "study seed; replicate r of (design, J, n_j) is seeded from (seed, "
                "design, J, n_j, r)", point=True),
    "J": Key([25, 150], "numbers of sites (clusters): a number or a list, crossed with n_j "
             "and design"),
    "n_j": Key([25, 150], "individuals per site: a number or a list"),
    "reps": Key(100, "replicates per condition, or auto: add replicates until target_mcse is "
                "met"),
    "target_mcse": Key(None, "reps=auto: the largest Monte Carlo SE allowed per cell"),
    "target_metric": Key("accuracy", "reps=auto: the metric whose MC SE is targeted"),
    "target_reference": Key(None, "reps=auto: target the MC SE of the paired difference from "
                            "this method"),
    "min_reps": Key(20, "reps=auto: replicates to start with"),
    "max_reps": Key(1000, "reps=auto: a cell stops here even if the target is not met"),
    "batch_reps": Key(None, "reps=auto: replicates added per round (null = min_reps)"),
    "aim": Key(None, "one line for the report's ADEMP protocol block (Aims)", identity=False),
    "reference": Key(None, "the method the report's paired comparisons are against (null: "
                     "Q-fe if run, else the first method)", identity=False),
    "methods": Key(["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base",
                    "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID", "PT",
                    "oracle", "treat-all", "treat-none"],
                   "registered method names (`simstudy methods`)"),
    "method_defaults": Key({"covariates": ["X1", "X2", "X3", "X4", "X5"],
                            "moderators": ["X3", "X4", "X5"]},
                           "options passed to every method that accepts them (covariates, "
                           "moderators); a design's `rules` fill the keys left at this default",
                           point=True),
    "method_options": Key({}, "per-method options: +method_options.NAME.KEY=VALUE", point=True),
    "plugins": Key([], "modules to import that register methods, designs or metrics"),
    "budget": Key(1.0, "the share q in (0, 1] a rule may treat for value_at_budget: the q with "
                  "the highest scores among those it would treat (1 = no cap)", point=True),
    "value_claims": Key("none", "the value each rule claims (docs/metrics.md): none, or the "
                        "propensity of its AIPW estimate on held-out training data: site (the "
                        "site's treated share) | estimated (logistic on X and site)", point=True),
    "n_jobs": Key(2, "cores the study uses (-1 = all, capped at the machine's); results do "
                  "not depend on it", identity=False),
    "backend": Key("loky", "loky | dask | multiprocessing | threading | sequential (same "
                   "results)", identity=False),
    "dask_address": Key(None, "backend=dask: scheduler address tcp://HOST:PORT; null = a "
                        "local cluster of n_jobs workers", identity=False),
    "dask_wait": Key(60, "backend=dask: seconds to wait for a worker, at the start and when "
                     "every worker is lost mid-run (then the run stops, its finished rows "
                     "saved)", identity=False),
    "replicates": Key("all", "all, or start:stop to run a share here and the rest elsewhere "
                      "(then `simstudy merge`)"),
    "batch_size": Key("auto", "replicates per task; auto keeps per-task overhead small",
                      identity=False),
    "flush_seconds": Key(5, "how often finished rows are written to the store",
                         identity=False),
    "out": Key("results/default", "the study store (metrics.parquet, congruence.parquet, "
               "config.yaml); without it the default study goes to results/default and any "
               "other study to results/<its name>", identity=False),
    "overwrite": Key(False, "true deletes the stored results of this study / sweep point if "
                     "its config differs", FLAG, identity=False),
    "retry_errors": Key(False, "true recomputes stored replicates in which a method failed",
                        FLAG, identity=False),
    "probe": Key(True, "fit every method on one replicate first; stop early if one fails",
                 FLAG, identity=False),
    "progress": Key(True, "show the progress line (replicates done, rate, time left)", FLAG,
                    identity=False),
    "figures": Key(True, "draw the report's figures (out/figures) at the end of the run",
                   FLAG, identity=False),
    "extend": Key(False, "without out=: add this study's cells to results/default instead of "
                  "its own folder results/<its name>", FLAG, identity=False),
    "dry_run": Key(False, "print the cells, methods, store action (create / resume / extend / "
                   "refuse) and the estimated time, then exit having written nothing", FLAG,
                   identity=False),
}
# keys whose change is not a sweep point: the store has columns for them (design, J, n_j), or
# they change how, not what, is computed
NOT_POINT = {"design", "design.name"} | {k for k, key in STUDY_KEYS.items() if not key.point}
# keys that change where or how a study runs, never what it computes: a run without out= that
# changes only these is the default study (the others name its own folder: cli.own_out)
NOT_IDENTITY = {"design.name"} | {k for k, key in STUDY_KEYS.items() if not key.identity}


def study_defaults() -> dict:
    """The study keys' defaults: conf/config.yaml (Hydra's, so the two cannot differ)."""
    from importlib import resources

    import yaml
    cfg = yaml.safe_load((resources.files("simstudy.conf") / "config.yaml").read_text()) or {}
    return {k: v for k, v in cfg.items() if k not in ("defaults", "hydra")}


def keys_help() -> str:
    """`simstudy run --help`: every study key with its default and a line of help, then the
    default design family's parameters (their help and rule declared on the family's fields)."""
    from .designs import DESIGNS, preset
    from .options import canonical
    defaults = study_defaults()
    lines = ["Study keys (KEY=VALUE; default in brackets):"]
    for k, key in STUDY_KEYS.items():
        rule = f" ({key.rule.describe()})" if key.rule is not None else ""
        lines.append(f"  {k:17s} {key.help}{rule} [{canonical(defaults.get(k))}]")
    lines += ["", "Design keys (design=PRESET picks conf/design/PRESET.yaml; design.KEY=VALUE "
              "changes one parameter; presets: `simstudy designs`), design1's:",
              f"  design.{'family':18s} the design family: {', '.join(sorted(DESIGNS))} "
              f"[multisite]"]
    values = preset("design1")
    lines += design_lines(DESIGNS["multisite"], values)
    return "\n".join(lines)


def design_lines(cls, values: Mapping) -> list[str]:
    """One line per parameter of a design family: help, rule, [value]."""
    from .designs import schema
    from .options import canonical
    out = []
    for name, (default, help, rule) in schema(cls).items():
        value = values.get(name, default)
        shown = canonical(value) if not isinstance(value, dict) else \
            "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
        allowed = f" ({rule.describe()})" if rule is not None else ""
        out.append(f"  design.{name:18s} {help}{allowed} [{shown}]")
    return out


# the run's switches and their defaults (conf/config.yaml), read strictly: `overwrite=no` is
# false, never "a non-empty string, so true" (issue 29, class 1)
RUN_FLAGS = {k: key.default for k, key in STUDY_KEYS.items() if key.rule is FLAG}


def run_flags(cfg: Mapping) -> dict[str, bool]:
    """The run's boolean switches from a config mapping (absent or null: the default)."""
    return {k: default if cfg.get(k) is None else parse_bool(cfg.get(k), k)
            for k, default in RUN_FLAGS.items()}


def check_output_dir(out, name: str, is_own, entry_ok=lambda n: False,
                     own_what: str = "output") -> Path:
    """An output directory before any work (`simstudy run`'s out=, apply's --out): not empty,
    no over-long name, not a dangling or looping link, not a file, a writable parent, and, if
    it holds anything, `is_own(path)` (a previous output) or only entries `entry_ok(name)`:
    never a directory of the user's own files."""
    if out is None or not str(out).strip():
        raise ConfigError(f"{name} is empty; give the output directory, e.g. "
                          f"{name}{'=' if name == 'out' else ' '}results/my_study")
    path = Path(str(out)).expanduser()
    where = f"{name}{'=' if name == 'out' else ' '}{out}"
    for part in path.parts:
        if len(part.encode()) > 200:
            raise ConfigError(f"{where[:60]}...: a path component has {len(part)} characters; "
                              f"the file system allows about 255 (figure names add to it): use "
                              f"a shorter name")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{where} is a symbolic link to nothing (dangling, or a loop); "
                          f"remove it or give another directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where} is a file; give a directory (created if missing)")
    parent = path.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{where}: {parent} is a file, so the directory cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{where}: {parent} is not writable; choose another directory")
    if path.is_dir() and not is_own(path):
        theirs = sorted(p.name for p in path.iterdir() if not entry_ok(p.name))
        if theirs:
            raise ConfigError(
                f"{where} holds other files ({', '.join(theirs[:4])}"
                f"{', ...' if len(theirs) > 4 else ''}) and no {own_what}, and the output would "
                f"be written over them: give a new or empty directory")
    return path


def check_out(out) -> Path:
    """`out` of a study: a new or empty directory, or a simstudy store (`check_output_dir`)."""
    return check_output_dir(out, "out", is_store, _ours, "simstudy study")


def _ours(name: str) -> bool:
    """Entries an empty store directory may hold before its config: hidden files (the lock,
    submitit's .submitit), Hydra's multirun.yaml, and the store's own folders."""
    return name.startswith(".") or name in ("multirun.yaml", "parts", "quarantine")


def is_store(path) -> bool:
    """Does `path` hold a simstudy study (its config.yaml, or result tables)?"""
    path = Path(path)
    if (path / "metrics.parquet").exists() or any((path / "parts").glob("metrics-*.parquet")):
        return True
    if not (path / "config.yaml").is_file():
        return False
    try:
        import yaml
        cfg = yaml.safe_load((path / "config.yaml").read_text())
    except Exception:                                              # noqa: BLE001
        return False
    return isinstance(cfg, dict) and ("points" in cfg or ("study" in cfg and "designs" in cfg))


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or the machine's total."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2 ** 40


def _replicate_range(value, reps: int) -> tuple[int, int] | None:
    """`replicates`: null/'all' = 0..reps-1, or 'start:stop' (Python slice, stop <= reps) to run
    a share of the replicates here and the rest elsewhere (then `simstudy merge`)."""
    if value in (None, "all", ""):
        return None
    try:
        lo, hi = (int(v) for v in str(value).split(":"))
    except ValueError:
        raise ConfigError(f"replicates={value!r}: use 'start:stop', e.g. replicates=0:250") from None
    if not 0 <= lo < hi <= reps:
        raise ConfigError(f"replicates={value!r}: need 0 <= start < stop <= reps={reps}")
    return lo, hi


def _workers(n_jobs: int, backend: str) -> int:
    """Worker processes on this machine: `resolve_n_jobs` (one for backend=sequential)."""
    return 1 if backend == "sequential" else resolve_n_jobs(n_jobs)


def check_dask_address(address) -> str | None:
    """None for a local cluster, else `scheme://host:port` (tcp, tls, ws, wss) or host:port."""
    import re
    if address in (None, "", "local"):
        return None
    text = str(address).strip()
    if not re.fullmatch(r"((tcp|tls|ws|wss|ucx)://)?(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):\d{1,5}",
                        text) or not 0 < int(text.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"dask_address={address!r}: use tcp://HOST:PORT of a dask scheduler "
                          f"(e.g. tcp://127.0.0.1:8786), or leave it empty for a local cluster")
    return text

def _config_dir() -> str:
    from importlib import resources
    return str(resources.files("simstudy.conf"))


def flat_defaults(design: str | None) -> dict[str, str]:
    """Canonical default of every key: conf/config.yaml and the chosen design preset, dotted."""
    import yaml

    from .options import canonical
    flat: dict[str, str] = {}

    def walk(obj, prefix):
        if isinstance(obj, dict):
            if prefix:                   # a mapping given whole: design.delta={...}
                flat[prefix.rstrip(".")] = canonical(obj)
            for k, v in obj.items():
                walk(v, f"{prefix}{k}.")
        else:
            flat[prefix.rstrip(".")] = canonical(obj)
    base = yaml.safe_load(Path(_config_dir(), "config.yaml").read_text()) or {}
    walk({k: v for k, v in base.items() if k not in ("defaults", "hydra")}, "")
    if design and Path(_config_dir(), "design", f"{design}.yaml").exists():
        from .designs import preset
        walk(preset(design), "design.")
    return flat


def point_of_keys(keys: Mapping[str, str], design: str | None) -> dict[str, str]:
    """The swept keys that name the sweep point: those not at their default value (the
    defaults of conf/config.yaml and of the design preset)."""
    defaults = flat_defaults(design)
    return {k: v for k, v in keys.items() if defaults.get(k) != v}
