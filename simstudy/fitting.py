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

import numba
import numpy as np
import pandas as pd

from .errors import stop_if_environment
from .methods import make
from .methods.registry import seed_stream


def stable_id(name: str) -> int:
    """A platform- and session-independent integer for a name (Python's hash() is salted)."""
    return zlib.crc32(str(name).encode("utf-8"))


def data_seed(seed: int, design: str, J: int, n_j: int, replicate: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, replicate, 0))


def claims_seed(seed: int, design: str, J: int, n_j: int, replicate: int
                ) -> np.random.SeedSequence:
    """value_claims' own draws (the learning half, the people of the true value): a stream of
    their own, so the data and the methods' seeds are those of a study without them."""
    return np.random.SeedSequence(seed, spawn_key=(stable_id(design), J, n_j, replicate, 2))


def named_seed(seed: int, *keys) -> int:
    """A seed from the study seed and a path of names and integers (names by `stable_id`), so a
    method's randomness follows its NAME, never its position in a list:
    SeedSequence(seed, spawn_key=key).generate_state(1)[0], computed by `_seed_state`."""
    key = tuple(int(k) if isinstance(k, (int, np.integer)) else stable_id(k) for k in keys)
    words = _words(seed)
    if key:
        words += [0] * (4 - len(words)) + [w for k in key for w in _words(k)]
    return int(_seed_state(np.array(words, np.int64)))


def _words(n) -> list[int]:
    """numpy's _int_to_uint32_array: a non-negative integer as 32-bit words, low word first."""
    n = int(n)
    if n < 0:
        raise ValueError(f"seeds and seed keys must be non-negative integers, got {n}")
    out = [n & 0xFFFFFFFF]
    n >>= 32
    while n:
        out.append(n & 0xFFFFFFFF)
        n >>= 32
    return out


_M32 = 0xFFFFFFFF


@numba.njit(cache=True)
def _hashmix(value, hash_const):
    value = (value ^ hash_const) & _M32
    hash_const = (hash_const * 0x931e8875) & _M32
    value = (value * hash_const) & _M32
    return value ^ (value >> 16), hash_const


@numba.njit(cache=True)
def _mix(x, y):
    r = (0xca01f9dd * x - 0x4973f715 * y) & _M32
    return r ^ (r >> 16)


@numba.njit(cache=True)
def _seed_state(entropy):
    """numpy's SeedSequence(entropy words).generate_state(1, uint32)[0] (pool size 4: mix the
    entropy into the pool, then hash its first word), in 32-bit arithmetic on int64 (the low
    32 bits of a wrapped product are exact)."""
    pool = np.zeros(4, np.int64)
    h = np.int64(0x43b0d7e5)           # np.int64: not a literal (numba would compile twice)
    for i in range(4):
        v, h = _hashmix(entropy[i] if i < entropy.size else 0, h)
        pool[i] = v
    for i_src in range(4):
        for i_dst in range(4):
            if i_src != i_dst:
                v, h = _hashmix(pool[i_src], h)
                pool[i_dst] = _mix(pool[i_dst], v)
    for i_src in range(4, entropy.size):
        for i_dst in range(4):
            v, h = _hashmix(entropy[i_src], h)
            pool[i_dst] = _mix(pool[i_dst], v)
    h = 0x8b51f9dd
    v = (pool[0] ^ h) & _M32
    h = (h * 0x58f38ded) & _M32
    v = (v * h) & _M32
    return v ^ (v >> 16)


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
        stop_if_environment(exc)      # a job's time limit, a lost worker, Ctrl-C: not the fit's
        return Fitted(name, method, None, _error_text(exc), time.perf_counter() - t0)


def _error_text(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"[:2000]
