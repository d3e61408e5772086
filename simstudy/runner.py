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
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from .designs import ConfigError, Design, Replicate
from .metrics import DIAGNOSTICS, METRICS, average_ranks, congruence, decisions, evaluate
from .methods import load_plugins, make
from .store import Store, point_label


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


def _int(value, key: str, minimum: int) -> int:
    try:
        iv = int(value)
        if iv != value and not (isinstance(value, str) and str(iv) == value.strip()):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r}: must be an integer >= {minimum}") from None
    if iv < minimum:
        raise ConfigError(f"{key}={iv}: must be an integer >= {minimum}")
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

    @classmethod
    def from_config(cls, cfg: Mapping, point: Mapping | None = None) -> "StudyConfig":
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
        designs = [Design.from_config(dict(d)) for d in raw_designs]
        names = [d.name for d in designs]
        if len(set(names)) != len(names):
            raise ConfigError(f"design names must be unique, got {names}")
        J = [_int(v, "J", 2) for v in _as_list(cfg.get("J", [25]), "J")]
        n_j = [_int(v, "n_j", 2) for v in _as_list(cfg.get("n_j", [25]), "n_j")]
        reps = _int(cfg.get("reps", 1), "reps", 1)
        methods = [str(m) for m in _as_list(cfg.get("methods", []), "methods")]
        if len(set(methods)) != len(methods):
            raise ConfigError(f"methods lists a name twice: {methods}")
        defaults = {k: v for k, v in dict(cfg.get("method_defaults") or {}).items()}
        options = {str(k): dict(v or {}) for k, v in dict(cfg.get("method_options") or {}).items()}
        unknown = sorted(set(options) - set(methods))
        if unknown:
            raise ConfigError(f"method_options names methods not in `methods`: {unknown}; "
                              f"methods are {methods}")
        for m in methods:                       # builds each once: unknown names/options fail here
            make(m, options.get(m), defaults)
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
        address = cfg.get("dask_address")
        return cls(designs, J, n_j, reps, methods, seed, defaults, options, plugins,
                   n_jobs, backend, batch_size, float(cfg.get("flush_seconds", 5.0)),
                   {str(k): str(v) for k, v in dict(point or {}).items()}, reps_range,
                   None if address in (None, "", "local") else str(address))

    def identity(self) -> tuple[dict, dict]:
        """What makes two runs the same study (stored in config.yaml, checked on resume)."""
        study = {"seed": self.seed, "methods": list(self.methods),
                 "method_defaults": _plain(self.method_defaults),
                 "method_options": _plain(self.method_options), "plugins": list(self.plugins)}
        designs = {d.name: _plain(vars(d)) for d in self.designs}
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
    test_truth = None
    delta_ranks = average_ranks(rep.truth["Delta"])
    rows, decided = [], {}
    def frame_for(method):
        nonlocal test_truth
        if not method.uses_truth:
            return rep.test
        test_truth = rep.test_with_truth() if test_truth is None else test_truth
        return test_truth

    for name in cfg.methods:
        t0 = time.perf_counter()
        fit = fit_and_score(name, rep.train, frame_for,
                            method_seed(cfg.seed, design.name, J, n_j, replicate, name),
                            cfg.method_options.get(name), cfg.method_defaults)
        values, status, error = nan_metrics, "error", fit.error
        if fit.error is None:
            try:
                values = evaluate(fit.score, rep.truth, delta_ranks)
                values.update({k: float(v) for k, v in fit.method.diagnostics().items()
                               if k in DIAGNOSTICS})
                status = "ok"
                decided[name] = decisions(fit.score)
            except Exception as exc:                               # noqa: BLE001
                values, error = nan_metrics, _error_text(exc)
        rows.append({**key, "method": name, **values, "seconds": time.perf_counter() - t0,
                     "status": status, "error": error})
    pairs = [(cfg.label, design.name, J, n_j, replicate, a, b, agree)
             for a, b, agree in congruence(decided)]
    return rows, pairs


def _run_batch(cfg: StudyConfig, design: Design, J: int, n_j: int, replicates: list[int]):
    load_plugins(cfg.plugins)                 # workers import user methods too
    if cfg.n_jobs != 1 and cfg.backend != "sequential":
        import numba
        numba.set_num_threads(1)              # the workers already use the cores
    rows, pairs = [], []
    for r in replicates:
        rr, pp = run_replicate(cfg, design, J, n_j, r)
        rows += rr
        pairs += pp
    return len(replicates), rows, pairs


# ---------------------------------------------------------------------- the study
def _batches(cfg: StudyConfig, done: set[tuple]) -> list[tuple[Design, int, int, list[int]]]:
    workers = cfg.n_jobs if cfg.n_jobs > 0 else max(1, os.cpu_count() or 1)
    out = []
    for design, J, n_j in cfg.conditions():
        todo = [r for r in cfg.replicate_ids() if (cfg.label, design.name, J, n_j, r) not in done]
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
            client = stack.enter_context(Client(cfg.dask_address))
        else:
            workers = cfg.n_jobs if cfg.n_jobs > 0 else max(1, os.cpu_count() or 1)
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1,
                                                       processes=True, dashboard_address=None,
                                                       silence_logs=logging.WARNING))
            client = stack.enter_context(Client(cluster))
        stack.enter_context(joblib.parallel_config(backend="dask"))
        yield client


def run_study(cfg: StudyConfig, out, overwrite: bool = False, progress: bool = True,
              run_config: dict | None = None) -> Store:
    """Run (or resume) the study into `out`; returns the store."""
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    study, designs = cfg.identity()
    with Store(out) as store:
        store.prepare(study, designs, _plain(run_config or {}), overwrite=overwrite,
                      point=cfg.point, planned=cfg.planned())
        done = store.done()
        batches = _batches(cfg, done)
        total = sum(len(b[3]) for b in batches)
        n_all = len(cfg.conditions()) * len(cfg.replicate_ids())
        bar = tqdm(total=total, disable=not progress, unit="rep", dynamic_ncols=True,
                   desc=f"replicates ({n_all - total} of {n_all} already done)" if total < n_all
                   else "replicates")
        buf_rows, buf_pairs, last = [], [], time.monotonic()
        errors = 0

        def flush():
            nonlocal buf_rows, buf_pairs, last
            if buf_rows:
                store.append(pd.DataFrame(buf_rows), pd.DataFrame(buf_pairs, columns=[
                    "point", "design", "J", "n_j", "replicate", "method_a", "method_b",
                    "agreement"]))
            buf_rows, buf_pairs, last = [], [], time.monotonic()

        stack = contextlib.ExitStack()
        try:
            if cfg.backend != "dask" and (cfg.n_jobs == 1 or cfg.backend == "sequential"):
                results: Iterable = (_run_batch(cfg, *b) for b in batches)
            else:
                stack.enter_context(_backend(cfg))
                results = Parallel(n_jobs=-1 if cfg.backend == "dask" else cfg.n_jobs,
                                   backend=None if cfg.backend == "dask" else cfg.backend,
                                   return_as="generator_unordered")(
                    delayed(_run_batch)(cfg, *b) for b in batches)
            for n_done, rows, pairs in results:
                buf_rows += rows
                buf_pairs += pairs
                errors += sum(r["status"] != "ok" for r in rows)
                bar.update(n_done)
                if errors:
                    bar.set_postfix(errors=errors)
                if time.monotonic() - last >= cfg.flush_seconds:
                    flush()
        finally:
            flush()           # whatever finished is kept, also on Ctrl-C or an exception
            bar.close()
            stack.close()
        store.consolidate()
    return store
