"""Method protocol and the registry mapping the paper's names to configured estimators.

A method follows the scikit-learn convention: the constructor stores parameters only,
`fit(train)` learns and returns self, `benefit_score(frame)` returns a float array whose sign
gives the decision d(x) = I{f(x) > 0} (paper Section 2.2). Register one with

    @register("my-method")            # or several names with preset parameters
    class MyMethod(Method): ...

and select it by name in config (`methods: [my-method]`, `plugins: [my_module]`).
"""
from __future__ import annotations

import importlib
import inspect
import threading
from contextlib import contextmanager
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..engines.groups import site_codes
from ..options import FLAG, Opt, choice, integer, number, parse_bool  # noqa: F401

_SHARED = threading.local()      # .reads: id(frame) -> (frame, {key: array}) inside shared_reads
_COLUMN_NAMES = object()         # the key of a frame's set of column names among its reads
                                 # (any string or tuple could be a column's or columns' key)


@contextmanager
def shared_reads():
    """Within the block, the reads of a frame by every method (`Method._column`, `_matrix`,
    `_sites`) are made once and shared as read-only arrays: the runner opens one per replicate,
    where 18 methods read the same train and test frames (a pandas column lookup costs ~30 us,
    np.unique of the sites ~1 ms at n = 22,500). Outside the block every read is fresh."""
    outer = getattr(_SHARED, "reads", None)
    _SHARED.reads = {}
    try:
        yield
    finally:
        _SHARED.reads = outer


def _read(frame: pd.DataFrame, key, compute):
    reads = getattr(_SHARED, "reads", None)
    if reads is None:
        return compute()
    entry = reads.get(id(frame))
    if entry is None or entry[0] is not frame:
        entry = reads[id(frame)] = (frame, {})
    done = entry[1]
    if key not in done:
        value = compute()
        for a in value if isinstance(value, tuple) else (value,):
            if isinstance(a, np.ndarray):
                a.flags.writeable = False      # shared: no method may change another's input
        done[key] = value
    return done[key]

REGISTRY: dict[str, tuple[type, dict[str, Any]]] = {}
FAMILIES: dict[str, str] = {}       # name -> family: the report's panel ("Q-learning", ...)
SUMMARIES: dict[str, str] = {}      # name -> the one line `simstudy methods` prints




class Method:
    """Base class: column names and parameters; subclasses implement `fit` and `benefit_score`
    and declare their options' constraints in OPTIONS (name -> Opt), checked by `make()`."""
    OPTIONS: dict[str, Opt] = {}
    # options that name columns, by role (checked against the design's `roles()` before the
    # probe: `outcome=T` would regress the treatment on itself); a subclass adds its own
    COLUMN_OPTIONS: dict[str, str] = {"site": "site", "treatment": "treatment",
                                      "outcome": "outcome", "covariates": "covariates",
                                      "moderators": "covariates", "features": "covariates"}
    uses_truth = False          # reference rules that read the true Delta (oracle) set this
    # options that let a fitted rule score people of sites it was not trained on (cross-fitting
    # over sites in `simstudy apply`); {} when the rule does not depend on the site
    new_site_options: dict[str, Any] = {}
    # modules the method imports that are not core dependencies, and how to install them:
    # `make()` refuses the method with that line before any work starts
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    # the name its random_state is drawn from (fitting.method_seed); methods that share a fit
    # (CF and PT-CF share one causal forest) share a stream, so the shared fit is the fit
    # either would make alone
    seed_name: str | None = None
    # CPU-seconds its own numerical kernels take to compile on a first run (this project's
    # 2-core reference machine, `scripts/compile_times.py --methods NAME`): a first run compiles
    # the costliest family first, so the workers finish compiling together, and says how long
    compile_cost: float = 1.0

    def __init__(self, site: str = "site", treatment: str = "T", outcome: str = "Y",
                 random_state: int | None = None):
        self.site, self.treatment, self.outcome = site, treatment, outcome
        self.random_state = random_state

    def fit(self, train: pd.DataFrame) -> "Method":
        return self

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def diagnostics(self) -> dict:
        """Per-fit facts stored beside the metrics (columns `metrics.DIAGNOSTICS`, e.g. the
        number of lasso fits of the weighting refit loop); {} when there are none."""
        return {}

    def decide(self, frame: pd.DataFrame) -> np.ndarray:
        """d(x) = I{f(x) > 0}."""
        return (np.asarray(self.benefit_score(frame)) > 0).astype(np.int64)

    @classmethod
    def param_names(cls) -> set[str]:
        if "_param_names" not in vars(cls):           # once per class (inspect is slow)
            names: set[str] = set()
            for klass in cls.__mro__:
                if "__init__" in vars(klass):
                    sig = inspect.signature(klass.__init__)
                    names |= {p for p in sig.parameters if p not in ("self", "args", "kwargs")}
            cls._param_names = frozenset(names)
        return set(cls._param_names)

    def memory_bytes(self, J: int, n: int) -> float:
        """Peak bytes a fit needs beyond BYTES_PER_ROW per row (J sites, n training rows):
        the runner refuses a study that cannot fit in memory before it starts."""
        return 0.0

    @classmethod
    def constraints(cls) -> dict[str, Opt]:
        """Every option's constraint, the base classes' first (collected once per class)."""
        if "_constraints" not in vars(cls):
            out: dict[str, Opt] = {}
            for klass in reversed(cls.__mro__):
                out.update(vars(klass).get("OPTIONS", {}))
            cls._constraints = out
        return dict(cls._constraints)

    @classmethod
    def check_options(cls, kwargs: dict) -> None:
        """ValueError naming the first option out of its declared range."""
        if "_constraints" not in vars(cls):
            cls.constraints()
        for key, opt in cls._constraints.items():
            if key in kwargs:
                opt.check(key, kwargs[key])

    @classmethod
    def _params_of(cls, attr: str, types) -> frozenset[str]:
        """Names of the parameters (of every __init__ in the MRO) whose default is of `types`,
        collected once per class into `attr`."""
        if attr not in vars(cls):
            names: set[str] = set()
            for klass in cls.__mro__:
                if "__init__" in vars(klass):
                    sig = inspect.signature(klass.__init__)
                    names |= {p.name for p in sig.parameters.values()
                              if isinstance(p.default, types)}
            setattr(cls, attr, frozenset(names))
        return vars(cls)[attr]

    @classmethod
    def list_params(cls) -> frozenset[str]:
        """Parameters whose default is a list or tuple (column names): a scalar is refused."""
        return cls._params_of("_list_params", (list, tuple))

    @classmethod
    def bool_params(cls) -> frozenset[str]:
        """Parameters whose default is a boolean: their values are read by `parse_bool`."""
        return cls._params_of("_bool_params", bool)

    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(self.param_names()) if hasattr(self, k)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # helpers shared by subclasses -------------------------------------------------
    @staticmethod
    def _column(frame: pd.DataFrame, name) -> np.ndarray:
        """One column as a float array (within `shared_reads` shared by the methods and
        read-only: copy it before changing it)."""
        return _read(frame, name, lambda: np.array(frame[name].to_numpy(float)))

    @staticmethod
    def _matrix(frame: pd.DataFrame, columns) -> np.ndarray:
        """The columns as a float (n, k) array, column by column (a list lookup in pandas
        costs ~4x more; the values are the same); shared and read-only within `shared_reads`."""
        columns = tuple(columns)
        return _read(frame, columns, lambda: np.column_stack(
            [Method._column(frame, c) for c in columns]) if columns
            else np.empty((len(frame), 0)))

    def _sites(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(sorted site labels, integer code per row) of the site column (`site_codes`)."""
        return _read(frame, ("site codes", self.site), lambda: site_codes(frame[self.site]))

    def _per_site(self, frame: pd.DataFrame, labels: np.ndarray, values: np.ndarray,
                  strict: bool, what: str, remedy: str, fill: float = 0.0) -> np.ndarray:
        """The training site's value (`values`, one per training site label `labels`) for each
        row of `frame` (`fill` for sites not seen in training, or an error naming the rows when
        `strict`)."""
        self._require(frame, [self.site], "the scored frame")
        scored, codes = self._sites(frame)
        if scored.shape == labels.shape and (scored == labels).all():
            per_label = np.asarray(values, float)   # the training sites (the runner's test sets)
        else:
            per_label = pd.Series(values, index=labels).reindex(scored).to_numpy(float)
        unseen = np.isnan(per_label)
        if unseen.any() and strict:
            rows = unseen[codes]
            raise ValueError(f"{int(rows.sum())} rows belong to sites not in the training data "
                             f"(e.g. {scored[unseen][0]}); {what}. {remedy}")
        return np.where(unseen, fill, per_label)[codes]

    def _propensity(self, train: pd.DataFrame, codes: np.ndarray, J: int,
                    kind: str) -> np.ndarray:
        """e(x, site) of the training rows by `kind` (site | estimated; engines.propensity) on
        the method's covariates: computed once per replicate and shared by its methods."""
        from ..engines import propensity as P
        covariates = tuple(getattr(self, "covariates", ()))
        return _read(train, ("propensity", kind, covariates, self.site, self.treatment),
                     lambda: P.propensity(kind, self._matrix(train, covariates),
                                          self._column(train, self.treatment), codes, J))

    def _require(self, frame: pd.DataFrame, columns, what: str) -> None:
        have = _read(frame, _COLUMN_NAMES, lambda: frozenset(frame.columns))
        missing = [c for c in columns if c not in have]
        if missing:
            raise KeyError(f"{type(self).__name__}: {what} is missing columns {missing}; "
                           f"available: {list(frame.columns)}")


def register(name: str, *, family: str = "Other", summary: str | None = None,
             **preset: Any) -> Callable[[type], type]:
    """Class decorator: make `cls(**preset, **options)` available under the paper's `name`;
    `family` groups it in the report's panels (Q-learning, Weighting, Policy tree, Reference,
    or a family of the user's own); `summary` is the one line that tells this registration
    from the others of its class (`simstudy methods`; default: the class docstring's first)."""
    def deco(cls: type) -> type:
        if name in REGISTRY and _origin(REGISTRY[name][0]) != _origin(cls):
            raise ConfigError(f"method name {name!r}: registered by {_origin(REGISTRY[name][0])} "
                              f"and again by {_origin(cls)}; rename one of them")
        REGISTRY[name] = (cls, dict(preset))
        FAMILIES[name] = str(family)
        SUMMARIES[name] = summary or _first_sentence(cls.__doc__ or "")
        return cls
    return deco


def _first_sentence(doc: str, width: int = 100) -> str:
    """A docstring's first sentence on one line, at most `width` characters."""
    text = " ".join(doc.split())
    end = text.find(". ")
    text = text[:end + 1] if end > 0 else text
    return text if len(text) <= width else text[:width - 3].rstrip() + "..."


def new_site_options(name: str) -> dict[str, Any]:
    """The options with which the registered method scores people of sites it was not trained
    on (`Method.new_site_options`): apply's held-out sites, a design's test_sites=new."""
    cls = REGISTRY.get(name, (None,))[0]
    return dict(getattr(cls, "new_site_options", {}) or {})


def describe(names) -> dict[str, dict]:
    """What a store records of each method for the report: {name: {"family": ...}}."""
    return {str(n): {"family": FAMILIES.get(n, "Other")} for n in names}


def seed_stream(name: str) -> str:
    """The name a method's random_state is drawn from: its `seed_name`, else its own name."""
    cls = REGISTRY.get(name, (None,))[0]
    return getattr(cls, "seed_name", None) or name


def available() -> list[str]:
    return sorted(REGISTRY)


def _origin(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', '?')}"


# plugin entries that are not Python modules, by prefix: {"r:": rmethod.register_r_plugin}
PLUGIN_LOADERS: dict[str, Callable[[str], None]] = {}


def load_plugins(modules) -> None:
    """Import user modules whose decorators register methods, designs and metrics, and register
    `r:PATH.R` entries as methods written in R (rmethod.py). A module that cannot be found,
    raises or has a syntax error is a ConfigError naming it and where."""
    import sys
    import traceback

    from ..metrics import PLUGIN_LOADING, claim_metrics
    for mod in modules or ():
        prefix = next((p for p in PLUGIN_LOADERS if str(mod).startswith(p)), None)
        if prefix is not None:                   # e.g. r:FILE.R, an estimator written in R
            PLUGIN_LOADERS[prefix](str(mod))
            continue
        if mod in sys.modules:
            claim_metrics(str(mod), sys.modules[mod])
            continue
        PLUGIN_LOADING.append(str(mod))
        try:
            module = importlib.import_module(mod)
        except ConfigError as exc:
            raise ConfigError(f"plugins: {mod!r}: {exc}") from None
        except ModuleNotFoundError as exc:
            if exc.name and str(mod).startswith(exc.name):
                raise ConfigError(f"plugins: cannot import {mod!r} ({exc}); put the module on "
                                  f"PYTHONPATH or install it") from None
            raise ConfigError(f"plugins: {mod!r} imports a missing module ({exc}); install "
                              f"it") from None
        except Exception as exc:                                   # noqa: BLE001
            tb = traceback.extract_tb(exc.__traceback__)
            where = ""
            if isinstance(exc, SyntaxError):
                where = f" at {exc.filename}:{exc.lineno}"
            elif tb:
                where = f" at {tb[-1].filename}:{tb[-1].lineno}"
            raise ConfigError(f"plugins: importing {mod!r} failed with {type(exc).__name__}: "
                              f"{getattr(exc, 'msg', None) or exc}{where}; fix the module"
                              ) from None
        finally:
            PLUGIN_LOADING.pop()
        claim_metrics(str(mod), module)


def typed_options(name: str, options: Mapping | None) -> dict[str, Any]:
    """A method's options with its boolean parameters read strictly (`reml=no` is False,
    `reml=maybe` an error naming method_options.NAME.reml), never by truthiness."""
    if options is not None and not isinstance(options, Mapping) \
            and type(options).__name__ != "DictConfig":
        raise ConfigError(f"method_options.{name}={options!r}: must be a mapping of option "
                          f"names to values, e.g. {{'nfolds': 10}} (`simstudy methods {name}` "
                          f"lists them)")
    options = dict(options or {})
    if name in REGISTRY:
        for key in REGISTRY[name][0].bool_params() & set(options):
            options[key] = parse_bool(options[key], f"method_options.{name}.{key}")
    return options


def check_columns(name: str, method: Method, roles: dict, design: str,
                  source=lambda key: None) -> None:
    """A method's column options against a design's columns by role (`Method.COLUMN_OPTIONS`,
    `DesignBase.roles`): the site, treatment and outcome options must name the design's own
    columns, and a list of covariates must hold covariates only (not Y, T or the site), each
    a column of the design. ConfigError naming the option (issue 45, class 9) as the user set
    it: `source(key)` names where a value came from (a design's rules, method_defaults), else
    method_options.NAME.KEY."""
    named = {roles[r]: r for r in ("site", "treatment", "outcome")}
    for key, role in type(method).COLUMN_OPTIONS.items():
        if not hasattr(method, key):
            continue
        value = getattr(method, key)
        where = source(key) or f"method_options.{name}.{key}"
        if role in ("site", "treatment", "outcome"):
            if value != roles[role]:
                what = f" (that is the design's {named[value]} column)" if value in named else ""
                raise ConfigError(f"{where}={value!r}{what}: design {design!r} keeps the "
                                  f"{role} in column {roles[role]!r}; drop the option or set it "
                                  f"to {roles[role]!r}")
            continue
        if value is None or isinstance(value, str):
            continue
        values = list(value)
        clash = [v for v in values if v in named]
        if clash:
            raise ConfigError(f"{where}={values}: {clash[0]!r} is the design's "
                              f"{named[clash[0]]} column, not a covariate; remove it")
        known = roles.get("covariates")
        unknown = [v for v in values if known is not None and v not in known]
        if unknown:
            raise ConfigError(f"{where}={values}: design {design!r} has no covariate(s) "
                              f"{unknown}; its covariates: {', '.join(known)}")


def make(name: str, options: dict[str, Any] | None = None, defaults: dict[str, Any] | None = None
         ) -> Method:
    """Build the method registered as `name`. `options` must be accepted parameters (checked);
    `defaults` (e.g. moderators for every method) are passed only where the class accepts them."""
    if name not in REGISTRY:
        import difflib
        lower = {n.lower(): n for n in REGISTRY}
        close = ([lower[name.lower()]] if name.lower() in lower else
                 difflib.get_close_matches(name, list(REGISTRY), n=1))
        raise ConfigError(f"unknown method {name!r}" + (f" (did you mean {close[0]!r}?)"
                                                        if close else "")
                          + f"; registered methods: {', '.join(available())}")
    cls, preset = REGISTRY[name]
    for module in cls.requires:
        try:
            importlib.import_module(module)
        except ImportError:
            raise ConfigError(f"method {name!r} needs {module!r}, which is not installed: "
                              f"{cls.install_hint or f'pip install {module}'}") from None
    accepted = cls.param_names()
    options = dict(options or {})
    bad = sorted(set(options) - accepted)
    if bad:
        raise ConfigError(f"method_options.{name} has unknown keys {bad}; "
                          f"{cls.__name__} accepts {sorted(accepted)}")
    kwargs = {k: v for k, v in (defaults or {}).items() if k in accepted}
    kwargs.update(preset)
    kwargs.update(typed_options(name, options))
    lists = cls.list_params()
    for k, v in kwargs.items():                    # OmegaConf lists -> plain lists
        if isinstance(v, (list, tuple)) or type(v).__name__ == "ListConfig":
            kwargs[k] = list(v)
        elif k in lists and v is not None:
            raise ConfigError(f"method_options.{name}.{k}={v!r}: must be a list of column "
                              f"names, e.g. [X1, X2]")
    try:
        cls.check_options(kwargs)
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method_options.{name}: {exc}") from None
