"""The one runner: expand the condition grid, seed every replicate, run through joblib,
isolate failures, stream rows to the store, resume (ARCHITECTURE "Runner").

Replicate r of condition (design, J, n_j) uses
    SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, r, 0))            for the data,
    SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, r, 1, stable_id(method)))
for a method's own randomness, so results do not depend on n_jobs, order, batching or backend,
and one replicate can be re-run alone (`run_replicate`).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
import threading
import traceback
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .designs import ConfigError, Design, Replicate, check_replicate, make_design
from .metrics import DIAGNOSTICS, METRICS, average_ranks, extra_metrics, congruence, decisions, evaluate
from .methods import load_plugins, make
from .methods.registry import shared_reads, typed_options
from .options import parse_bool
from .workers import PROCESS_BACKENDS, watch_parent, watched
from .store import CONGRUENCE_COLUMNS, Store, point_label, read_metrics


def stable_id(name: str) -> int:
    """A platform- and session-independent integer for a name (Python's hash() is salted)."""
    return zlib.crc32(str(name).encode("utf-8"))


def _as_list(value, key: str) -> list:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        out = list(value)
    else:
        out = [value]
    if not out:
        raise ConfigError(f"{key} is empty; give at least one value")
    return out


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
        defaults = {k: v for k, v in dict(cfg.get("method_defaults") or {}).items()}
        options = {str(k): typed_options(str(k), v) for k, v in
                   dict(cfg.get("method_options") or {}).items()}
        unknown = sorted(set(options) - set(methods))
        if unknown:
            raise ConfigError(f"method_options names methods not in `methods`: {unknown}; "
                              f"methods are {methods}")
        built = [make(m, options.get(m), defaults) for m in methods]   # unknown names/options
        # fail here
        n_jobs = cfg.get("n_jobs", 1)
        n_jobs = _int(n_jobs, "n_jobs", -64) if n_jobs is not None else 1
        if n_jobs == 0:
            raise ConfigError("n_jobs=0: use a positive number of workers or -1 for all cores")
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
        for d in designs:
            low = int(getattr(d, "min_site_size", 0) or 0)
            if getattr(d, "site_sizes", None) == "equal" and low > min(n_j):
                raise ConfigError(f"design.min_site_size={low} is above n_j={min(n_j)}: with "
                                  f"equal site sizes every site has n_j individuals; lower "
                                  f"min_site_size or raise n_j")
        cells = [(d, a, b) for d in designs for a in J for b in n_j]
        need = max((float(a) * b * (1 + getattr(d, "test_size", 1.0)) * BYTES_PER_ROW
                    + max((m.memory_bytes(a, a * b) for m in built), default=0.0)
                    for d, a, b in cells), default=0.0) * _workers(n_jobs, backend)
        have = available_memory()
        remote = backend == "dask" and cfg.get("dask_address") not in (None, "", "local")
        if need > have and not remote:          # a remote cluster's memory is not ours to know
            raise ConfigError(
                f"J x n_j up to {max(a * b for _, a, b in cells):,} rows per replicate (J up to "
                f"{max(J):,} sites) needs about "
                f"{need / 2 ** 30:,.1f} GiB with {_workers(n_jobs, backend)} worker(s); this machine "
                f"has {have / 2 ** 30:,.1f} GiB available: use smaller J / n_j or fewer workers")
        return cls(designs, J, n_j, reps, methods, seed, defaults, options, plugins,
                   n_jobs, backend, batch_size, flush,
                   {str(k): str(v) for k, v in dict(point or {}).items()}, reps_range,
                   None if address in (None, "", "local") else str(address),
                   {str(k): str(v) for k, v in dict(point_keys or point or {}).items()},
                   auto)

    def identity(self) -> tuple[dict, dict]:
        """What makes two runs the same study (stored in config.yaml, checked on resume)."""
        study = {"seed": self.seed, "methods": list(self.methods),
                 "method_defaults": _plain(self.method_defaults),
                 "method_options": _plain(self.method_options), "plugins": list(self.plugins)}
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


# the run's switches and their defaults (conf/config.yaml), read strictly: `overwrite=no` is
# false, never "a non-empty string, so true" (issue 29, class 1)
RUN_FLAGS = {"overwrite": False, "retry_errors": False, "probe": True, "progress": True,
             "figures": True}


def run_flags(cfg: Mapping) -> dict[str, bool]:
    """The run's boolean switches from a config mapping (absent or null: the default)."""
    return {k: default if cfg.get(k) is None else parse_bool(cfg.get(k), k)
            for k, default in RUN_FLAGS.items()}


def check_out(out) -> Path:
    """`out` must name a directory we can create or write: not empty, not a file, names short
    enough for the file system."""
    if out is None or not str(out).strip():
        raise ConfigError("out is empty; give the study directory, e.g. out=results/my_study")
    path = Path(str(out)).expanduser()
    for part in path.parts:
        if len(part.encode()) > 200:
            raise ConfigError(f"out={str(out)[:60]}...: a path component has {len(part)} "
                              f"characters; the file system allows about 255 (figure names add "
                              f"to it): use a shorter name")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"out={out} is a symbolic link to nothing (dangling, or a loop); "
                          f"remove it or give another directory")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out={out} is a file; give a directory (created if missing)")
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"out={out}: {parent} is a file, so the directory cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"out={out}: {parent} is not writable; choose another out=...")
    if path.is_dir() and not is_store(path):
        theirs = sorted(p.name for p in path.iterdir() if not _ours(p.name))
        if theirs:
            raise ConfigError(
                f"out={out} is a directory that holds files of its own ({', '.join(theirs[:4])}"
                f"{', ...' if len(theirs) > 4 else ''}) and no simstudy study; a study would "
                f"write config.yaml, summary.md and figures/ there: give a new or empty "
                f"directory, e.g. out={path / 'study'}")
    return path


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


def _plain(obj):
    if isinstance(obj, Mapping) or type(obj).__name__ == "DictConfig":
        return {str(k): _plain(v) for k, v in dict(obj).items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ == "ListConfig":
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _workers(n_jobs: int, backend: str) -> int:
    """Worker processes on this machine: n_jobs capped at the cores (-1 = all cores)."""
    cores = max(1, os.cpu_count() or 1)
    if backend == "sequential" or n_jobs == 1:
        return 1
    return cores if n_jobs < 0 else min(n_jobs, cores)


# ---------------------------------------------------------------------- one replicate
def data_seed(seed: int, design: str, J: int, n_j: int, replicate: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, replicate, 0))


def named_seed(seed: int, *keys) -> int:
    """A seed from the study seed and a path of names and integers (names by `stable_id`), so a
    method's randomness follows its NAME, never its position in a list."""
    key = tuple(int(k) if isinstance(k, (int, np.integer)) else stable_id(k) for k in keys)
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint32)[0])


def method_seed(seed: int, design: str, J: int, n_j: int, replicate: int, method: str) -> int:
    """SeedSequence(seed, spawn_key=(design, J, n_j, replicate, 1, method)): a method's own
    randomness (CV folds, cross-fitting) in one replicate."""
    return named_seed(seed, design, J, n_j, replicate, 1, method)


@dataclass
class Fitted:
    """One method fitted and scored: the method, its benefit scores, or the error text."""
    name: str
    method: Any
    score: np.ndarray | None
    error: str | None
    seconds: float


def fit_and_score(name: str, train: pd.DataFrame, frame, random_state: int,
                  options: Mapping | None = None, defaults: Mapping | None = None) -> Fitted:
    """The one fit path of `simstudy run` and `simstudy apply`: build the registered method
    `name` with its options, seed it, fit on `train`, score `frame` (a DataFrame, or a callable
    method -> DataFrame for rules that read the truth). Never raises: a failure is returned."""
    t0 = time.perf_counter()
    method = None
    try:
        method = make(name, options, defaults)
        method.random_state = random_state
        method.fit(train)
        rows = frame(method) if callable(frame) else frame
        score = np.asarray(method.benefit_score(rows), dtype=float)
        return Fitted(name, method, score, None, time.perf_counter() - t0)
    except Exception as exc:                                       # noqa: BLE001
        return Fitted(name, method, None, _error_text(exc), time.perf_counter() - t0)


def simulate_replicate(cfg: StudyConfig, design: Design, J: int, n_j: int, replicate: int
                       ) -> Replicate:
    """The data of one replicate, exactly as the runner draws it."""
    return design.simulate(np.random.default_rng(data_seed(cfg.seed, design.name, J, n_j, replicate)),
                           J, n_j)


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]


def run_replicate(cfg: StudyConfig, design: Design, J: int, n_j: int, replicate: int
                  ) -> tuple[list[dict], list[tuple]]:
    """Fit every method on one replicate; a method that raises gives an error row."""
    key = {"point": cfg.label, "design": design.name, "J": J, "n_j": n_j, "replicate": replicate}
    nan_metrics = {m: np.nan for m in METRICS}
    try:
        rep = simulate_replicate(cfg, design, J, n_j, replicate)
    except Exception as exc:                                       # noqa: BLE001
        err = _error_text(exc)
        return ([{**key, "method": m, **nan_metrics, "seconds": 0.0, "status": "error",
                  "error": f"data: {err}"} for m in cfg.methods], [])
    check_replicate(rep, design, J, n_j)          # a design's output, checked once
    test_truth = None
    truth = {c: rep.truth[c].to_numpy() for c in rep.truth.columns}     # read once, not per method
    delta_ranks = average_ranks(truth["Delta"])
    rows, decided = [], {}
    def frame_for(method):
        nonlocal test_truth
        if not method.uses_truth:
            return rep.test
        test_truth = rep.test_with_truth() if test_truth is None else test_truth
        return test_truth

    with shared_reads():           # the methods share their reads of rep.train and rep.test
        for name in cfg.methods:
            t0 = time.perf_counter()
            fit = fit_and_score(name, rep.train, frame_for,
                                method_seed(cfg.seed, design.name, J, n_j, replicate, name),
                                cfg.method_options.get(name), cfg.method_defaults)
            values, status, error = nan_metrics, "error", fit.error
            if fit.error is None:
                try:
                    values = evaluate(fit.score, truth, delta_ranks)
                    values.update(extra_metrics(fit.score, rep.truth, rep.test, cfg.plugins))
                    values.update({k: (v if k == "warning" else float(v)) for k, v in
                                   fit.method.diagnostics().items() if k in DIAGNOSTICS})
                    status = "ok"
                    decided[name] = decisions(fit.score)
                except ConfigError:           # a plugin metric's fault: stop, naming it
                    raise
                except Exception as exc:                           # noqa: BLE001
                    values, error = nan_metrics, _error_text(exc)
            rows.append({**key, "method": name, **values, "seconds": time.perf_counter() - t0,
                         "status": status, "error": error})
    pairs = [(cfg.label, design.name, J, n_j, replicate, a, b, agree)
             for a, b, agree in congruence(decided)]
    return rows, pairs


def _run_batch(cfg: StudyConfig, design: Design, J: int, n_j: int, replicates: list[int],
               main_pid: int | None = None):
    load_plugins(cfg.plugins)                 # workers import user methods too
    if main_pid is not None and os.getpid() != main_pid:
        watch_parent()                        # a worker process: exit with its parent
        _one_thread_for_good()
    rows, pairs = [], []
    with one_thread():
        for r in replicates:
            rr, pp = run_replicate(cfg, design, J, n_j, r)
            rows += rr
            pairs += pp
    return len(replicates), rows, pairs


_ONE_THREAD = threading.local()      # .on: this thread already computes on one thread


@contextlib.contextmanager
def one_thread():
    """Every replicate is computed on one core, in the main process (n_jobs=1, the probe) as in
    the workers: n_jobs is the number of cores a study uses. One BLAS thread also keeps results
    independent of n_jobs: a product that OpenBLAS splits over threads sums in another order,
    and a mixed model's optimiser amplifies that to 1e-9 in the scores (seen at n = 22,500).
    numba's threads (the policy tree's root search) are set back afterwards. Inside an active
    limit (the run's, or a worker's) it costs nothing (setting one takes ~0.6 ms)."""
    if getattr(_ONE_THREAD, "on", False):
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    _ONE_THREAD.on = True
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        _ONE_THREAD.on = False
        numba.set_num_threads(before)


def _one_thread_for_good() -> None:
    """In a worker process: one BLAS and one numba thread for the rest of its life (set once,
    not per task)."""
    if getattr(_ONE_THREAD, "on", False):
        return
    import numba
    from threadpoolctl import threadpool_limits
    numba.set_num_threads(1)
    threadpool_limits(1, user_api="blas")
    _ONE_THREAD.on = True


# ---------------------------------------------------------------------- the study
def _batches(cfg: StudyConfig, done: set[tuple], limits: dict | None = None
             ) -> list[tuple[Design, int, int, list[int]]]:
    """The replicates still to do, in tasks; `limits[(design, J, n_j)] = n` runs only
    replicates < n of that cell (reps=auto)."""
    workers = cfg.n_jobs if cfg.n_jobs > 0 else max(1, os.cpu_count() or 1)
    out = []
    for design, J, n_j in cfg.conditions():
        ids = cfg.replicate_ids()
        if limits is not None:
            ids = range(ids.start, min(ids.stop, limits.get((design.name, J, n_j), 0)))
        todo = [r for r in ids if (cfg.label, design.name, J, n_j, r) not in done]
        if not todo:
            continue
        if cfg.batch_size:
            size = cfg.batch_size
        elif workers == 1 or cfg.backend == "sequential":
            size = 1        # no task overhead in-process; finest progress and flushing
        else:   # small conditions: larger tasks (overhead); large ones: one replicate per task
            size = max(1, min(math.ceil(len(todo) / (8 * workers)), 10000 // (J * n_j)))
        out += [(design, J, n_j, todo[i:i + size]) for i in range(0, len(todo), size)]
    return out


@contextlib.contextmanager
def _backend(cfg: StudyConfig):
    """joblib's backend for the run; backend=dask connects a distributed Client to
    `dask_address` or starts a LocalCluster of n_jobs single-threaded worker processes."""
    if cfg.backend != "dask":
        yield
        return
    import logging

    import joblib
    from distributed import Client, LocalCluster
    for name in ("distributed", "bokeh", "tornado"):     # Hydra's logging config says INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if cfg.dask_address:
            client = stack.enter_context(_connect(Client, cfg.dask_address, DASK_CONNECT_SECONDS))
        else:
            workers = cfg.n_jobs if cfg.n_jobs > 0 else max(1, os.cpu_count() or 1)
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1,
                                                       processes=True, dashboard_address=None,
                                                       silence_logs=logging.WARNING))
            client = stack.enter_context(Client(cluster))
        stack.enter_context(joblib.parallel_config(backend="dask"))
        yield client


class ProbeFailed(ConfigError):
    """A method failed on the probe replicate; nothing of the run was stored."""


def _probe_alone(cfg: StudyConfig) -> None:
    """The probe in this process, before the store is touched (for overwrite=true)."""
    design, J, n_j = cfg.conditions()[0]
    r = cfg.replicate_ids()[0]
    with one_thread():
        rows, _ = run_replicate(cfg, design, J, n_j, r)
    _check_probe(rows, (design.name, J, n_j, r))


DASK_CONNECT_SECONDS = 10.0


def _connect(Client, address: str, seconds: float):
    """A dask Client of the scheduler at `address`, or a ConfigError after `seconds`: a server
    that accepts the connection but does not speak dask's protocol (an HTTP server, say) would
    make Client wait forever, so the connection is made in a daemon thread with a deadline."""
    box: dict = {}

    def connect():
        try:
            box["client"] = Client(address, timeout=f"{seconds:g}s")
        except BaseException as exc:                                  # noqa: BLE001
            box["error"] = exc
    t = threading.Thread(target=connect, daemon=True, name="simstudy-dask-connect")
    t.start()
    t.join(seconds + 5.0)
    if "client" in box:
        return box["client"]
    why = type(box["error"]).__name__ if "error" in box else "no dask handshake"
    raise ConfigError(f"dask_address={address}: no dask scheduler answered within {seconds:g} s "
                      f"({why}); start one (`dask scheduler`) and give its tcp://HOST:PORT, or "
                      f"leave dask_address empty for a local cluster")


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


def _check_probe(rows: list[dict], at: tuple) -> None:
    """The probe: every method is fitted on the first replicate still to do (the run's first
    task) before anything is stored; a method that fails there (a bad option, a missing column,
    a degenerate design) stops the run with this ConfigError instead of filling the store with
    error rows. `at` = (design, J, n_j, replicate)."""
    bad = [r for r in rows if r["status"] != "ok"]
    if bad and all(str(r["error"]).startswith("data: ") for r in bad):
        raise ProbeFailed(f"design {at[0]} could not draw the probe replicate (J={at[1]}, "
                          f"n_j={at[2]}, replicate {at[3]}) -- {bad[0]['error'][6:]}; fix the "
                          f"design's parameters")
    if bad:
        detail = "; ".join(f"{r['method']}: {r['error']}" for r in bad[:4])
        raise ProbeFailed(
            f"the probe replicate ({at[0]}, J={at[1]}, n_j={at[2]}, replicate {at[3]}) failed "
            f"for {len(bad)} of {len(rows)} methods before the study started -- {detail}. Fix "
            f"the method options, or pass probe=false if these methods fail only sometimes")


def run_study(cfg: StudyConfig, out, overwrite: bool = False, progress: bool = True,
              run_config: dict | None = None, probe: bool = False,
              retry_errors: bool = False) -> Store:
    """Run (or resume) the study into `out`; returns the store. `probe`: fit every method on one
    replicate first and stop with a ConfigError if one fails; `retry_errors`: recompute the
    stored replicates in which a method failed (e.g. after fixing an option or adding memory)."""
    overwrite, progress = parse_bool(overwrite, "overwrite"), parse_bool(progress, "progress")
    probe, retry_errors = parse_bool(probe, "probe"), parse_bool(retry_errors, "retry_errors")
    out = check_out(out)
    study, designs = cfg.identity()
    with Store(out) as store:
        bad = store.repair()
        if bad:
            print(f"simstudy: {len(bad)} unreadable file(s) moved to {store.out / 'quarantine'} "
                  f"({', '.join(f.name for f in bad[:3])}); their replicates are recomputed")
        if overwrite and probe and store.conflicts(study, designs, cfg.point):
            _probe_alone(cfg)         # overwrite deletes only once the new study's probe passed
            probe = False
        before = store.config_bytes()
        store.prepare(study, designs, _plain(run_config or {}), overwrite=overwrite,
                      point=cfg.point, planned=cfg.planned(), keys=cfg.point_keys)
        after = store.config_bytes()
        redo: set[tuple] = set()      # retry_errors: recomputed, then replace the stored rows
        if retry_errors:
            redo = store.failed(cfg.label, {(d.name, J, n) for d, J, n in cfg.conditions()},
                                cfg.replicate_ids())
            if redo:
                print(f"simstudy: retry_errors: {len(redo)} replicates with failed fits are "
                      f"recomputed; their stored rows are replaced once the new ones are stored")
        try:
            with one_thread():    # also for threads of backend=threading (nested limits keep 1)
                if cfg.auto is None:
                    _execute(cfg, store, probe, progress, redo=redo)
                else:
                    _run_auto(cfg, store, probe, progress, redo=redo)
        except ProbeFailed:       # nothing stored: the config is as before, so the corrected
            store.restore_config(before, after)          # command is not "another study"
            raise
        store.consolidate()
    return store


def _execute(cfg: StudyConfig, store: Store, probe: bool, progress: bool,
             limits: dict | None = None, redo: set | None = None) -> None:
    """Compute every replicate still missing (below `limits` per cell), and those in `redo`
    (retry_errors: removed from it once scheduled), in parallel, streaming finished rows to
    the store."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm
    redo = set() if redo is None else redo
    batches = _batches(cfg, store.done() - redo, limits)
    redo -= {(cfg.label, b[0].name, b[1], b[2], r) for b in batches for r in b[3]}
    workers = min(_workers(cfg.n_jobs, cfg.backend), max(1, len(batches)))
    serial = cfg.backend != "dask" and (workers == 1 or cfg.backend == "sequential")
    probing = None          # the probe replicate: nothing is stored before it is back, clean
    if probe and batches:   # its own first task (in this process, or the workers' first)
        design, J, n_j, reps = batches[0]
        probing = (design.name, J, n_j, reps[0])
        batches = ([(design, J, n_j, reps[:1])] + [(design, J, n_j, reps[1:])] * (len(reps) > 1)
                   + batches[1:])
    if cfg.backend != "dask" and cfg.n_jobs > workers and batches:
        print(f"simstudy: n_jobs={cfg.n_jobs} capped at {workers} (the machine's "
              f"{os.cpu_count()} cores and {len(batches)} tasks to do)")
    total = sum(len(b[3]) for b in batches)
    n_all = (len(cfg.conditions()) * len(cfg.replicate_ids()) if limits is None
             else sum(limits.values()))
    bar = tqdm(total=total, disable=not progress, unit="rep", dynamic_ncols=True,
               desc=f"replicates ({n_all - total} of {n_all} already done)" if total < n_all
               else "replicates")
    buf_rows, buf_pairs, last = [], [], time.monotonic()
    errors = 0

    def flush():
        nonlocal buf_rows, buf_pairs, last
        if buf_rows:
            store.append(pd.DataFrame(buf_rows),
                         pd.DataFrame(buf_pairs, columns=CONGRUENCE_COLUMNS))
        buf_rows, buf_pairs, last = [], [], time.monotonic()

    stack, results = contextlib.ExitStack(), None
    try:
        if serial:
            results = (_run_batch(cfg, *b) for b in batches)
        else:
            stack.enter_context(_backend(cfg))
            stack.enter_context(watched(cfg.backend))
            results = Parallel(n_jobs=-1 if cfg.backend == "dask" else workers,
                               backend=None if cfg.backend in ("dask", *PROCESS_BACKENDS)
                               else cfg.backend,         # None: the context's (`watched`)
                               return_as="generator_unordered")(
                delayed(_run_batch)(cfg, *b, main_pid=os.getpid()) for b in batches)
        for n_done, rows, pairs in results:
            if probing is not None:
                first = [r for r in rows if (r["design"], r["J"], r["n_j"], r["replicate"])
                         == probing]
                if first:
                    at, probing = probing, None
                    try:
                        _check_probe(first, at)
                    except ProbeFailed:
                        buf_rows, buf_pairs = [], []     # nothing of this run is stored
                        raise
            buf_rows += rows
            buf_pairs += pairs
            errors += sum(r["status"] != "ok" for r in rows)
            bar.update(n_done)
            if errors:
                bar.set_postfix(errors=errors)
            if probing is None and time.monotonic() - last >= cfg.flush_seconds:
                flush()
    finally:
        flush()           # whatever finished is kept, also on Ctrl-C or an exception
        bar.close()
        if results is not None:        # stop queued tasks (joblib warns that it does)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                results.close()
        stack.close()


def cell_mcse(metrics: pd.DataFrame, label: str, cell: tuple, n: int, metric: str,
              reference: str | None = None) -> float:
    """Largest Monte Carlo SE over the cell's methods (reference rules excluded) of the mean of
    `metric` over replicates 0..n-1, or of its paired difference from `reference`."""
    design, J, n_j = cell
    m = metrics[(metrics["point"] == label) & (metrics["design"] == design) & (metrics["J"] == J)
                & (metrics["n_j"] == n_j) & (metrics["replicate"] < n)
                & (metrics["status"] == "ok")]
    w = m.pivot_table(index="replicate", columns="method", values=metric, observed=True)
    if reference is not None:         # paired: each method minus the reference, replicate-wise
        if reference not in w:
            return math.inf
        w = w.drop(columns=reference).sub(w[reference], axis=0)
    w = w.drop(columns=[c for c in ("oracle", "treat-all", "treat-none") if c in w])
    se = w.std(ddof=1) / np.sqrt(w.count())
    return float(se.max()) if len(se) and se.notna().any() else math.inf


def _run_auto(cfg: StudyConfig, store: Store, probe: bool, progress: bool,
              redo: set | None = None) -> None:
    """reps=auto: every cell starts with min_reps replicates and grows by `batch_reps` until
    the largest MC SE of its target metric is <= target_mcse or it has max_reps. Replicate r
    is always the same draw, so a cell's result does not depend on how the batches fell, and
    the first n in min_reps, min_reps + batch, ... that meets the target is where it stops."""
    a = cfg.auto
    cells = [(d.name, J, n) for d, J, n in cfg.conditions()]
    limits = {c: a["min_reps"] for c in cells}
    open_cells = set(cells)
    reasons = {}
    while open_cells:
        _execute(cfg, store, probe, progress, limits, redo)
        probe = False
        store.consolidate()
        metrics = read_metrics(store.out)
        for c in sorted(open_cells):
            se = cell_mcse(metrics, cfg.label, c, limits[c], a["metric"], a.get("reference"))
            if se <= a["target_mcse"]:
                reasons[c] = f"target met: MC SE {se:.5f} <= {a['target_mcse']} at {limits[c]} reps"
            elif limits[c] >= a["max_reps"]:
                reasons[c] = f"max_reps {a['max_reps']} reached: MC SE {se:.5f}"
            else:
                limits[c] = min(a["max_reps"], limits[c] + a["batch_reps"])
                continue
            open_cells.discard(c)
            if progress:
                print(f"simstudy: {c[0]} (J={c[1]}, n_j={c[2]}): {reasons[c]}")
    store.record_stops(cfg.label, {c: (limits[c], reasons[c]) for c in cells})
