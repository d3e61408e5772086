"""Group (site) bookkeeping shared by the estimators: codes, sums, means, the within transform."""
from __future__ import annotations

import numba
import numpy as np


def site_codes(site) -> tuple[np.ndarray, np.ndarray]:
    """(sorted labels, integer code per row) of a site column."""
    labels, codes = np.unique(np.asarray(site), return_inverse=True)
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


def group_means(A: np.ndarray, codes: np.ndarray, J: int | None = None) -> np.ndarray:
    """(J, k) site means of the columns of A."""
    A2 = np.ascontiguousarray(np.asarray(A, float).reshape(len(A), -1))
    J = int(codes.max()) + 1 if J is None else J
    counts = np.bincount(codes, minlength=J).astype(float)
    return _group_sums(A2, codes, J) / counts[:, None]


def demean(A: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A - (site mean of A), column by column (the within transformation)."""
    A = np.asarray(A, float)
    A2 = A.reshape(len(A), -1)
    return (A2 - group_means(A2, codes)[codes]).reshape(A.shape)
