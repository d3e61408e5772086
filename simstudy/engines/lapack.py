"""LAPACK's dpotrf and dgesv callable from compiled (numba) code, through SciPy's Cython LAPACK:
the same routines numpy.linalg.cholesky and numpy.linalg.solve call, so a compiled loop gives
the numbers the numpy code gave, without numba's np.linalg (whose first compile costs ~20 s)."""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

# bound by symbol name (not as ctypes pointers), so the compiled callers can be cached on disk
for _name in ("dpotrf", "dgesv"):
    llvm.add_symbol(f"simstudy_{_name}",
                    get_cython_function_address("scipy.linalg.cython_lapack", _name))
_P = types.voidptr
_dpotrf = types.ExternalFunction("simstudy_dpotrf", types.void(_P, _P, _P, _P, _P))
_dgesv = types.ExternalFunction("simstudy_dgesv", types.void(_P, _P, _P, _P, _P, _P, _P, _P))


@numba.njit(cache=True)
def _fortran(A):
    m = A.shape[0]
    a = np.empty((m, m))
    for i in range(m):
        for j in range(m):
            a[j, i] = A[i, j]          # C-order memory of a = A in Fortran order
    return a


@numba.njit(cache=True)
def cholesky(H):
    """(L, ok): the lower Cholesky factor of the symmetric H (numpy.linalg.cholesky's numbers);
    ok False when H is not positive definite."""
    m = H.shape[0]
    a = _fortran(H)
    uplo = np.array([ord("L")], dtype=np.uint8)
    n = np.array([m], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(uplo.ctypes, n.ctypes, a.ctypes, n.ctypes, info.ctypes)
    L = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            L[i, j] = a[j, i]
    return L, info[0] == 0


@numba.njit(cache=True)
def solve(A, b):
    """A^{-1} b by LU with partial pivoting (numpy.linalg.solve's numbers) for a nonsingular A."""
    m = A.shape[0]
    a = _fortran(A)
    x = b.copy()
    n = np.array([m], dtype=np.int32)
    one = np.array([1], dtype=np.int32)
    ipiv = np.zeros(m, dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dgesv(n.ctypes, one.ctypes, a.ctypes, n.ctypes, ipiv.ctypes, x.ctypes, n.ctypes, info.ctypes)
    return x
