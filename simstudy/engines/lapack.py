"""LAPACK's dpotrf, dgesv, dgetrf/dgetri and BLAS's dgemv, ddot callable from compiled (numba)
code, through SciPy's Cython LAPACK and BLAS: the same routines numpy.linalg.cholesky and
numpy.linalg.solve call (and numba's np.linalg.cholesky, inv and np.dot: `cholesky_c`,
`inverse_t`, `gemv_t`, `dot`), so a compiled loop gives the numbers the numpy (or numba) code
gave, without compiling numba's np.linalg (seconds of every first run)."""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import types
from numba.extending import get_cython_function_address

# bound by symbol name (not as ctypes pointers), so the compiled callers can be cached on disk
for _lib, _names in (("cython_lapack", ("dpotrf", "dgesv", "dgetrf", "dgetri")),
                     ("cython_blas", ("dgemv", "ddot"))):
    for _name in _names:
        llvm.add_symbol(f"simstudy_{_name}",
                        get_cython_function_address(f"scipy.linalg.{_lib}", _name))
_P = types.voidptr
_dpotrf = types.ExternalFunction("simstudy_dpotrf", types.void(_P, _P, _P, _P, _P))
_dgesv = types.ExternalFunction("simstudy_dgesv", types.void(_P, _P, _P, _P, _P, _P, _P, _P))
_dgetrf = types.ExternalFunction("simstudy_dgetrf", types.void(_P, _P, _P, _P, _P, _P))
_dgetri = types.ExternalFunction("simstudy_dgetri", types.void(_P, _P, _P, _P, _P, _P, _P))
_dgemv = types.ExternalFunction("simstudy_dgemv", types.void(*[_P] * 11))
_ddot = types.ExternalFunction("simstudy_ddot", types.float64(_P, _P, _P, _P, _P))


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
    uplo = np.array([76], dtype=np.uint8)        # "L"
    n = np.array([m], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(uplo.ctypes, n.ctypes, a.ctypes, n.ctypes, info.ctypes)
    L = np.zeros((m, m))
    for i in range(m):
        for j in range(i + 1):
            L[i, j] = a[j, i]
    return L, info[0] == 0


@numba.njit(cache=True)
def _gesv(A, b):
    """(x, info) of LAPACK dgesv on a Fortran copy of A and a copy of the vector b."""
    m = A.shape[0]
    a = _fortran(A)
    x = b.copy()
    n = np.array([m], dtype=np.int32)
    one = np.array([1], dtype=np.int32)
    ipiv = np.zeros(m, dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dgesv(n.ctypes, one.ctypes, a.ctypes, n.ctypes, ipiv.ctypes, x.ctypes, n.ctypes, info.ctypes)
    return x, info[0]


@numba.njit(cache=True)
def solve(A, b):
    """A^{-1} b by LU with partial pivoting (numpy.linalg.solve's numbers) for a nonsingular A."""
    return _gesv(A, b)[0]


# numba's own np.linalg.cholesky / np.linalg.inv / np.dot, call for call (numba/_lapack.c and
# numba/np/linalg.py): the same SciPy LAPACK and BLAS routines with the same arguments, so the
# same numbers, without compiling numba's np.linalg.

@numba.njit(cache=True)
def cholesky_c(A):
    """(L, ok): numba's np.linalg.cholesky(A) for C-ordered A: dpotrf('U') on a C-order copy
    (the lower factor in C order), the other triangle zeroed; ok False if A is not positive
    definite (where numba raises)."""
    n = A.shape[0]
    out = A.copy()
    up = np.array([85], dtype=np.uint8)          # "U"
    nn = np.array([n], dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dpotrf(up.ctypes, nn.ctypes, out.ctypes, nn.ctypes, info.ctypes)
    for col in range(n):
        for row in range(col):
            out[row, col] = 0.0
    return out, info[0] == 0


@numba.njit(cache=True)
def solve_checked(A, b):
    """numba's np.linalg.solve(A, b) for a vector b: dgesv, raising where numba raises (a
    NaN or inf in A or b, a singular A)."""
    for i in range(A.shape[0]):
        for j in range(A.shape[1]):
            if not np.isfinite(A[i, j]):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
    for i in range(b.size):
        if not np.isfinite(b[i]):
            raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
    x, info = _gesv(A, b)
    if info != 0:
        raise np.linalg.LinAlgError("Matrix is singular to machine precision.")
    return x


@numba.njit(cache=True)
def inverse_t(A):
    """numba's np.linalg.inv(A) (dgetrf, then dgetri with the workspace it asks for), returned
    as its memory: the C-ordered TRANSPOSE of inv(A) (inv(A)[i, j] = result[j, i]); `gemv_t`
    multiplies with it as numba's inv(A) @ x does. Raises where numba raises."""
    n = A.shape[0]
    for i in range(n):
        for j in range(n):
            if not np.isfinite(A[i, j]):
                raise np.linalg.LinAlgError("Array must not contain infs or NaNs.")
    a = _fortran(A)
    nn = np.array([n], dtype=np.int32)
    ipiv = np.empty(n, dtype=np.int32)
    info = np.zeros(1, dtype=np.int32)
    _dgetrf(nn.ctypes, nn.ctypes, a.ctypes, nn.ctypes, ipiv.ctypes, info.ctypes)
    if info[0] != 0:
        raise np.linalg.LinAlgError("Matrix is singular to machine precision.")
    query = np.empty(1)
    lwork = np.array([-1], dtype=np.int32)
    _dgetri(nn.ctypes, a.ctypes, nn.ctypes, ipiv.ctypes, query.ctypes, lwork.ctypes, info.ctypes)
    lwork[0] = np.int32(query[0])
    work = np.empty(max(1, lwork[0]))
    _dgetri(nn.ctypes, a.ctypes, nn.ctypes, ipiv.ctypes, work.ctypes, lwork.ctypes, info.ctypes)
    if info[0] != 0:
        raise np.linalg.LinAlgError("Matrix is singular to machine precision.")
    return a


@numba.njit(cache=True)
def gemv_t(At, x):
    """numba's np.dot(M, x) for the Fortran-ordered M whose memory is At (the C-ordered M'):
    dgemv('n', m, n, 1, M, m, x, 1, 0, y, 1)."""
    n = At.shape[0]
    m = At.shape[1]
    y = np.zeros(m)
    tr = np.array([110], dtype=np.uint8)        # "n"
    mm = np.array([m], dtype=np.int32)
    nn = np.array([n], dtype=np.int32)
    one = np.array([1], dtype=np.int32)
    alpha = np.ones(1)
    beta = np.zeros(1)
    xc = np.ascontiguousarray(x)
    _dgemv(tr.ctypes, mm.ctypes, nn.ctypes, alpha.ctypes, At.ctypes, mm.ctypes, xc.ctypes,
           one.ctypes, beta.ctypes, y.ctypes, one.ctypes)
    return y


@numba.njit(cache=True)
def dot(x, y):
    """numba's np.dot of two vectors: BLAS ddot."""
    nn = np.array([x.size], dtype=np.int32)
    one = np.array([1], dtype=np.int32)
    xc = np.ascontiguousarray(x)
    yc = np.ascontiguousarray(y)
    return _ddot(nn.ctypes, xc.ctypes, one.ctypes, yc.ctypes, one.ctypes)
