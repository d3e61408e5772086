"""The one fit path, below both the simulation runner and `simstudy apply`: the seeds of a
replicate's data and of each method's own randomness, and fitting and scoring one registered
method with its options (a failure is returned, never raised).

Replicate r of condition (design, J, n_j) uses
    SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, r, 0))            for the data,
    SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, r, 1, stable_id(method)))
for a method's own randomness, so results do not depend on n_jobs, order, batching or backend.
"""
from __future__ import annotations

import time
import traceback
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .errors import environment_error
from .methods import make
from .methods.registry import seed_stream


def stable_id(name: str) -> int:
    """A platform- and session-independent integer for a name (Python's hash() is salted)."""
    return zlib.crc32(str(name).encode("utf-8"))


def data_seed(seed: int, design: str, J: int, n_j: int, replicate: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, replicate, 0))


def named_seed(seed: int, *keys) -> int:
    """A seed from the study seed and a path of names and integers (names by `stable_id`), so a
    method's randomness follows its NAME, never its position in a list."""
    key = tuple(int(k) if isinstance(k, (int, np.integer)) else stable_id(k) for k in keys)
    return int(np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint32)[0])


def method_seed(seed: int, design: str, J: int, n_j: int, replicate: int, method: str) -> int:
    """SeedSequence(seed, spawn_key=(design, J, n_j, replicate, 1, method)): a method's own
    randomness (CV folds, cross-fitting) in one replicate; methods that declare a shared
    `seed_name` (CF and PT-CF: one causal forest) draw from that name."""
    return named_seed(seed, design, J, n_j, replicate, 1, seed_stream(method))


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
    method -> DataFrame for rules that read the truth). A failure is returned, except one of the
    execution environment (errors.environment_error), which is raised."""
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
        if environment_error(exc):            # a job's time limit, a lost worker: not the fit's
            raise
        return Fitted(name, method, None, _error_text(exc), time.perf_counter() - t0)


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]
