"""Estimators written in R (issue 44; README "Your estimator in R"): a method defined by an R
file with two functions,

    fit <- function(train, options) ...     # any R object
    score <- function(fitted, frame) ...    # a numeric benefit score per row of `frame`

and optionally `defaults <- list(moderators = c("X3", "X4", "X5"), ...)`: its options and their
defaults (method_options.NAME.KEY and method_defaults reach it as a named list). Registered by
`register_r(name, path)` from a plugin module, or by `plugins=[r:path/to/NAME.R]` (the method
is named after the file). R runs embedded (rpy2, `pip install 'simstudy[r]'`; R itself from
the system), one R per process, the file sourced once per process into an environment of its
own. Data pass as an R data.frame of plain vectors; `set.seed(random_state mod (2^31 - 1))`
before each fit; R's warnings become the fit's `warning` (the store's column), an R error an
error row naming the method, and a score of the wrong length, NA or non-numeric is refused.
"""
from __future__ import annotations

import hashlib
import inspect
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .registry import PLUGIN_LOADERS, Method, register

INSTALL = ("R methods need R and rpy2: install R (Debian/Ubuntu: apt-get install r-base-core, "
           "and the R packages your file uses, e.g. r-cran-lme4), then pip install "
           "'simstudy[r]'")
LIST_OPTIONS = ("covariates", "moderators", "features")    # always lists, even of one column
_LOCK = threading.RLock()      # one embedded R per process, not thread-safe: one call at a time
_SOURCED: dict[tuple[str, str], Any] = {}                  # (path, sha256) -> its environment
_CALL = """
function(f, ...) {
  warns <- character(0)
  value <- withCallingHandlers(
    tryCatch(f(...), error = function(e)
      structure(list(message = conditionMessage(e)), class = "simstudy_error")),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  list(value = value, warnings = unique(warns))
}
"""


def _r():
    """rpy2's robjects with R started (once per process), R's console output kept out of the
    terminal, and this process's environment and signal handlers as they were (R installs its
    own handlers for SIGINT, SIGPIPE, ...: with R's SIGPIPE a write to a closed pipe would kill
    the process instead of raising); a ConfigError naming what to install when rpy2 or R is
    missing."""
    import signal
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGPIPE", "SIGUSR1", "SIGUSR2", "SIGCHLD")
    import logging
    import os
    logging.getLogger("rpy2").setLevel(logging.WARNING)   # "R is already initialized" and so on
    main = threading.current_thread() is threading.main_thread()
    library_path = os.environ.get("LD_LIBRARY_PATH")
    saved = {n: signal.getsignal(getattr(signal, n)) for n in names if hasattr(signal, n)} \
        if main else {}
    try:
        import rpy2.robjects as ro
        from rpy2.rinterface_lib import callbacks
    except Exception as exc:                                         # noqa: BLE001
        raise ConfigError(f"{INSTALL} ({type(exc).__name__}: {exc})") from None
    finally:
        # R's start-up puts its own and the system's library folders first on LD_LIBRARY_PATH:
        # a worker process started later (loky) would then load the system's libpython, not
        # this interpreter's, and find none of its packages
        if library_path is None:
            os.environ.pop("LD_LIBRARY_PATH", None)
        else:
            os.environ["LD_LIBRARY_PATH"] = library_path
        for n, handler in saved.items():     # again at the C level: R changed them there,
            if handler is not None:           # out of Python's sight
                signal.signal(getattr(signal, n), handler)
    callbacks.consolewrite_print = lambda text: None
    callbacks.consolewrite_warnerror = lambda text: None
    return ro


def _environment(path: str):
    """The R environment of the file at `path` (sourced once per process and content)."""
    text = Path(path).read_bytes()
    key = (path, hashlib.sha256(text).hexdigest())
    if key not in _SOURCED:
        ro = _r()
        with _LOCK:
            env = ro.r("new.env")()
            try:
                ro.r("function(path, env) sys.source(path, envir = env)")(path, env)
            except Exception as exc:                                 # noqa: BLE001
                raise ConfigError(f"R file {path}: sourcing it failed: "
                                  f"{' '.join(str(exc).split())}; fix the file") from None
            for fn in ("fit", "score"):
                if not ro.r("function(env, n) exists(n, envir = env, inherits = FALSE) && "
                            "is.function(get(n, envir = env))")(env, fn)[0]:
                    raise ConfigError(f"R file {path} defines no function {fn}(); an R method "
                                      f"needs fit(train, options) and score(fitted, frame)")
            _SOURCED[key] = (env, ro.r(_CALL))
    return _SOURCED[key]


def _to_python(value):
    """An R default (a vector of length 1 or more, NULL) as a Python value."""
    from rpy2.rinterface import NULLType
    if isinstance(value, NULLType):
        return None
    items = list(value)
    if not items:
        return []
    if len(items) == 1:
        v = items[0]
        return bool(v) if isinstance(v, (bool, np.bool_)) else v
    return items


def _defaults(path: str) -> dict[str, Any]:
    """The file's `defaults` list (names and Python values), {} when it has none."""
    ro = _r()
    env, _ = _environment(path)
    with _LOCK:
        if not ro.r("function(env) exists('defaults', envir = env, inherits = FALSE)")(env)[0]:
            return {}
        value = ro.r("function(env) get('defaults', envir = env)")(env)
        names = list(ro.r("names")(value) or [])
        if len(names) != len(value) or any(not n for n in names):
            raise ConfigError(f"R file {path}: `defaults` must be a named list, e.g. "
                              f"list(moderators = c('X3', 'X4'))")
        out = {}
        for name, v in zip(names, value):
            v = _to_python(v)
            if name in LIST_OPTIONS and isinstance(v, str):
                v = [v]
            out[str(name)] = list(v) if isinstance(v, tuple) else v
    return out


def _r_value(value):
    """A Python option value as an R value."""
    ro = _r()
    if value is None:
        return ro.NULL
    if isinstance(value, (list, tuple)):
        if all(isinstance(v, str) for v in value):
            return ro.StrVector(list(value))
        if all(isinstance(v, (bool, np.bool_)) for v in value):
            return ro.BoolVector(list(value))
        return ro.FloatVector([float(v) for v in value])
    if isinstance(value, (bool, np.bool_)):
        return ro.BoolVector([bool(value)])
    if isinstance(value, (int, np.integer)):
        return ro.IntVector([int(value)])
    if isinstance(value, (float, np.floating)):
        return ro.FloatVector([float(value)])
    return ro.StrVector([str(value)])


def _r_frame(frame: pd.DataFrame):
    """A pandas frame as an R data.frame of plain vectors (numbers, integers, text)."""
    ro = _r()
    from rpy2.robjects import numpy2ri
    columns = {}
    for name in frame.columns:
        x = frame[name].to_numpy()
        if x.dtype.kind in "iub":
            columns[str(name)] = ro.IntVector(x.astype(np.int64).tolist()) if x.dtype.kind != "b" \
                else ro.BoolVector(x.tolist())
        elif x.dtype.kind == "f":
            columns[str(name)] = numpy2ri.numpy2rpy(np.ascontiguousarray(x, float))
        else:
            columns[str(name)] = ro.StrVector([str(v) for v in x])
    return ro.DataFrame(columns)


class RMethod(Method):
    """A method whose fit and score are an R file's `fit` and `score` (module docstring)."""
    r_file: str = ""
    r_name: str = ""
    r_defaults: dict[str, Any] = {}
    requires = ()

    def __init__(self, site: str = "site", treatment: str = "T", outcome: str = "Y",
                 random_state: int | None = None, **kw):
        super().__init__(site, treatment, outcome, random_state)
        self.options = {**self.r_defaults, **kw}       # the R file's options, as given
        for key, value in self.options.items():
            setattr(self, key, value)
        self.warnings_: list[str] = []

    def _call(self, fn: str, *args):
        ro = _r()
        env, call = _environment(self.r_file)
        out = call(env.find(fn), *args)
        value, warns = out[0], [str(w) for w in out[1]]
        self.warnings_ += [w for w in warns if w not in self.warnings_]
        if "simstudy_error" in list(ro.r("class")(value)):
            raise RuntimeError(f"R method {self.r_name!r}: {fn}() stopped with: "
                               f"{str(value[0][0]).strip()}")
        return value

    def fit(self, train: pd.DataFrame) -> "RMethod":
        ro = _r()
        with _LOCK:
            if self.random_state is not None:
                ro.r["set.seed"](int(self.random_state) % 2147483647)
            options = ro.vectors.ListVector({k: _r_value(v) for k, v in self.options.items()})
            self.fitted_ = self._call("fit", _r_frame(train), options)
        return self

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        ro = _r()
        with _LOCK:
            value = self._call("score", self.fitted_, _r_frame(frame))
            kind = list(ro.r("class")(value))
            if not ro.r("is.numeric")(value)[0] and not ro.r("is.logical")(value)[0]:
                raise ValueError(f"R method {self.r_name!r}: score() returned an R "
                                 f"{'/'.join(kind)}, not a numeric vector")
            score = np.asarray(ro.r("as.numeric")(value), dtype=float)
        if score.shape != (len(frame),):
            raise ValueError(f"R method {self.r_name!r}: score() returned {score.size} values "
                             f"for {len(frame)} rows; it must return one number per row")
        if not np.all(np.isfinite(score)):
            raise ValueError(f"R method {self.r_name!r}: score() returned "
                             f"{int((~np.isfinite(score)).sum())} NA or infinite values; "
                             f"it must return a finite number per row")
        return score

    def diagnostics(self) -> dict:
        return {"warning": "; ".join(self.warnings_)[:2000]} if self.warnings_ else {}


def register_r(name: str, path, *, family: str = "R", summary: str | None = None) -> type:
    """Register the R file at `path` as method `name` (module docstring): its options are its
    `defaults` list's names; a ConfigError names what is missing (R, rpy2, the file, fit or
    score) before any study starts."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"R method {name!r}: no R file at {path}")
    path = str(path.resolve())
    defaults = _defaults(path)
    base = inspect.signature(RMethod.__init__)
    params = [p for p in base.parameters.values() if p.kind != p.VAR_KEYWORD] + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
        for k, v in defaults.items()]

    def __init__(self, *args, **kw):
        RMethod.__init__(self, *args, **kw)
    __init__.__signature__ = base.replace(parameters=params)
    cls = type(f"R_{''.join(c if c.isalnum() else '_' for c in name)}", (RMethod,),
               {"__init__": __init__, "r_file": path, "r_name": name, "r_defaults": defaults,
                "__doc__": f"The R method in {path}: its fit() and score().",
                "__module__": __name__})
    summary = summary or f"written in R: {Path(path).name} (fit, score)"
    return register(name, family=family, summary=summary)(cls)


def register_r_plugin(entry: str) -> None:
    """`plugins=[r:PATH]`: register the R file at PATH as the method named after its stem."""
    path = Path(entry[2:].strip()).expanduser()
    if path.suffix.lower() != ".r":
        raise ConfigError(f"plugins: {entry!r}: an R method is a file ending in .R, e.g. "
                          f"r:experiments/r/R-Q-rs.R")
    register_r(path.stem, path)


PLUGIN_LOADERS["r:"] = register_r_plugin
