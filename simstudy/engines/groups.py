"""Group (site) bookkeeping shared by the estimators: codes, sums, means, the within transform."""
from __future__ import annotations

import numba
import numpy as np


def site_codes(site) -> tuple[np.ndarray, np.ndarray]:
    """(sorted labels, integer code per row) of a site column; integer labels in a compact range
    by counting (what np.unique returns, without its sort)."""
    a = np.asarray(site)
    if a.dtype.kind in "iu" and a.size:
        lo, hi = int(a.min()), int(a.max())
        if hi - lo <= 4 * a.size:
            present = np.bincount(a - lo, minlength=hi - lo + 1) > 0
            labels = np.flatnonzero(present)
            lut = np.cumsum(present) - 1
            return (labels + lo).astype(a.dtype), lut[a - lo].astype(np.int64)
    labels, codes = np.unique(a, return_inverse=True)
    return labels, codes.astype(np.int64)


@numba.njit(cache=True)
def _group_sums(A, codes, J):
    n, k = A.shape
    out = np.zeros((J, k))
    for i in range(n):
        j = codes[i]
        for c in range(k):
            out[j, c] += A[i, c]
    return out


def writable(A: np.ndarray) -> np.ndarray:
    """A, or a copy of it if read-only (a shared read): numba compiles a kernel once per
    signature, and read-only is another signature (seconds of a first run)."""
    return A if A.flags.writeable else A.copy()


def group_means(A: np.ndarray, codes: np.ndarray, J: int | None = None) -> np.ndarray:
    """(J, k) site means of the columns of A."""
    A2 = writable(np.ascontiguousarray(np.asarray(A, float).reshape(len(A), -1)))
    J = int(codes.max()) + 1 if J is None else J
    counts = np.bincount(codes, minlength=J).astype(float)
    return _group_sums(A2, codes, J) / counts[:, None]


@numba.njit(cache=True)
def _minus_group(A, means, codes):
    out = np.empty_like(A)
    for i in range(A.shape[0]):
        j = codes[i]
        for c in range(A.shape[1]):
            out[i, c] = A[i, c] - means[j, c]
    return out


def demean(A: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A - (site mean of A), column by column (the within transformation); one compiled pass
    (the same subtraction per element as numpy's, without the (n, k) gather of the means)."""
    A = np.asarray(A, float)
    A2 = writable(np.ascontiguousarray(A.reshape(len(A), -1)))
    means = group_means(A2, codes)
    return _minus_group(A2, means, np.asarray(codes, np.int64)).reshape(A.shape)
