"""Ordinary least squares as R's lm computes it: aliased (collinear) columns are detected in
column order, dropped and reported with coefficient NaN (R's NA), never a silent wrong answer.

A column is aliased when the residual of regressing it on the kept columns before it has
norm < tol * its own norm (LINPACK dqrdc2's rule, tol = 1e-7 as in lm.fit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.linalg as sla

from . import lapack


@dataclass
class OLSFit:
    coef: np.ndarray            # length p, NaN where aliased
    names: list[str]
    aliased: list[str]
    rank: int
    residuals: np.ndarray
    sigma: float                # residual SD, sqrt(RSS / (n - rank))

    def __getitem__(self, name: str) -> float:
        return float(self.coef[self.names.index(name)])

    def predict(self, X: np.ndarray) -> np.ndarray:
        """X @ coef with aliased coefficients as 0 (what R's predict.lm does)."""
        return np.asarray(X, float) @ aliased_as_zero(self.coef)


def aliased_as_zero(coef) -> np.ndarray:
    """A copy of the coefficients with NaN (aliased columns) as 0, as np.nan_to_num gives it
    (which it calls where anything is not finite; the common case skips its machinery)."""
    a = np.asarray(coef, float)
    return a.copy() if np.isfinite(a).all() else np.nan_to_num(a)


@numba.njit(cache=True)
def _kept(G, tol2):
    """Column j is kept when its squared residual on the kept columns before it, from the
    Cholesky factor L of their Gram block (forward substitution), exceeds tol^2 ||x_j||^2."""
    p = G.shape[0]
    keep = np.zeros(p, np.bool_)
    L = np.zeros((p, p))
    idx = np.empty(p, np.int64)
    k = 0
    z = np.empty(p)
    for j in range(p):
        norm2 = G[j, j]
        if norm2 <= 0:
            continue
        d = norm2
        for a in range(k):
            v = G[idx[a], j]
            for b in range(a):
                v -= L[a, b] * z[b]
            z[a] = v / L[a, a]
            d -= z[a] * z[a]
        if d > tol2 * norm2:
            for b in range(k):
                L[k, b] = z[b]
            L[k, k] = np.sqrt(d)
            idx[k] = j
            k += 1
            keep[j] = True
    return keep


def kept_columns(X: np.ndarray, tol: float = 1e-7, G: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of non-aliased columns, in column order (dqrdc2's limited pivoting)."""
    X = np.asarray(X, float)
    G = X.T @ X if G is None else G
    return _kept(np.ascontiguousarray(G, dtype=np.float64), float(tol) ** 2)


# LAPACK's Cholesky factorisation and solve, called as scipy's cho_factor / cho_solve call them
# (the same numbers, without their per-call argument checks: ~30 us of the ~60 us of a small fit)
_POTRF, _POTRS = sla.get_lapack_funcs(("potrf", "potrs"), (np.empty((1, 1)),))


def _cho_factor(A: np.ndarray) -> np.ndarray:
    """scipy.linalg.cho_factor(A)[0]: the upper Cholesky factor (LAPACK dpotrf)."""
    c, info = _POTRF(A, lower=False, overwrite_a=False, clean=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"{info}-th leading minor of X'X not positive definite")
    return c


def _cho_solve(c: np.ndarray, b: np.ndarray) -> np.ndarray:
    """scipy.linalg.cho_solve((c, False), b) (LAPACK dpotrs)."""
    x, info = _POTRS(c, b, lower=False)
    if info != 0:
        raise ValueError(f"dpotrs: illegal value in argument {-info}")
    return x


def ols(X: np.ndarray, y: np.ndarray, names: list[str] | None = None, tol: float = 1e-7) -> OLSFit:
    """Least squares y ~ X (X includes the intercept column if wanted), R's aliasing rule."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n, p = X.shape
    names = list(names) if names is not None else [f"x{k}" for k in range(p)]
    G = X.T @ X
    keep = kept_columns(X, tol, G)
    full = bool(keep.all())
    Xk = X[:, keep]          # a C-ordered copy even when every column is kept: X'y then sums
    # in the order it always did (np.column_stack may hand us an F-ordered X)
    # Cholesky of X'X with one step of iterative refinement (corrected semi-normal equations):
    # as accurate as a QR solve for the designs met here, without forming Q (n x p)
    c = _cho_factor(G if full else G[np.ix_(keep, keep)])
    b = _cho_solve(c, Xk.T @ y)
    b += _cho_solve(c, Xk.T @ (y - Xk @ b))
    coef = np.full(p, np.nan)
    coef[keep] = b
    resid = y - Xk @ b
    rank = int(keep.sum())
    sigma = float(np.sqrt(resid @ resid / (n - rank))) if n > rank else np.nan
    return OLSFit(coef, names, [nm for nm, k in zip(names, keep) if not k], rank, resid, sigma)


def fixed_effects_ols(X: np.ndarray, y: np.ndarray, codes: np.ndarray, J: int | None = None,
                      names: list[str] | None = None) -> tuple[OLSFit, np.ndarray]:
    """lm(y ~ X + factor(site)) by the within transformation (Frisch-Waugh-Lovell): slopes b from
    site-de-meaned data, site intercepts alpha_j = mean_j(y - X b) (NaN for a code with no rows).
    Fitted values are alpha[codes] + X b; columns constant within every site are aliased."""
    from .groups import demean
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    J = int(codes.max()) + 1 if J is None else J
    fit = ols(demean(X, codes), demean(y, codes), names)
    resid = y - X @ aliased_as_zero(fit.coef)
    counts = np.bincount(codes, minlength=J)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.bincount(codes, weights=resid, minlength=J) / counts
    return fit, alpha


@numba.njit(cache=True)
def _site_fold_sums(D, y, codes, J, folds, K):
    """One pass over the rows: per (site, fold) counts and sums of D and y; per fold the raw
    cross products D'D (lower triangle) and D'y."""
    n, p = D.shape
    cnt = np.zeros((J, K))
    sd = np.zeros((J, K, p))
    sy = np.zeros((J, K))
    raw = np.zeros((K, p, p))
    rxy = np.zeros((K, p))
    for i in range(n):
        j, f, yi = codes[i], folds[i], y[i]
        cnt[j, f] += 1
        sy[j, f] += yi
        for a in range(p):
            da = D[i, a]
            sd[j, f, a] += da
            rxy[f, a] += da * yi
            for b in range(a + 1):
                raw[f, a, b] += da * D[i, b]
    return cnt, sd, sy, raw, rxy


@numba.njit(cache=True)
def _crossfit_fe(cnt, sd, sy, raw, rxy, tol2):
    """For every fold k, lm(y ~ D + factor(site)) on the other folds' rows by the within
    transformation from their moments: W = sum D'D - sum_j n_j dbar_j dbar_j',
    v = sum D'y - sum_j n_j dbar_j ybar_j, slopes b = W^-1 v on the kept (non-aliased) columns
    (0 for aliased ones), site intercepts alpha_j = ybar_j - dbar_j'b (NaN: no rows of site j)."""
    J, K, p = sd.shape
    B = np.zeros((K, p))
    A = np.empty((K, J))
    for k in range(K):
        W = np.zeros((p, p))
        v = np.zeros(p)
        for f in range(K):
            if f != k:
                for a in range(p):
                    v[a] += rxy[f, a]
                    for b in range(p):
                        W[a, b] += raw[f, a, b]
        for a in range(p):
            for b in range(a):
                W[b, a] = W[a, b]
        nj = np.zeros(J)
        dj = np.zeros((J, p))
        yj = np.zeros(J)
        for j in range(J):
            for f in range(K):
                if f != k:
                    nj[j] += cnt[j, f]
                    yj[j] += sy[j, f]
                    for a in range(p):
                        dj[j, a] += sd[j, f, a]
            if nj[j] > 0:
                for a in range(p):
                    v[a] -= dj[j, a] * yj[j] / nj[j]
                    for b in range(p):
                        W[a, b] -= dj[j, a] * dj[j, b] / nj[j]
        keep = _kept(W, tol2)
        idx = np.flatnonzero(keep)
        if idx.size:
            Wk = np.empty((idx.size, idx.size))
            vk = np.empty(idx.size)
            for a in range(idx.size):
                vk[a] = v[idx[a]]
                for b in range(idx.size):
                    Wk[a, b] = W[idx[a], idx[b]]
            sol = lapack.solve_checked(Wk, vk)
            for t in range(idx.size):
                B[k, idx[t]] = sol[t]
        for j in range(J):
            A[k, j] = (yj[j] - lapack.dot(dj[j], B[k])) / nj[j] if nj[j] > 0 else np.nan
    return B, A


def crossfit_fixed_effects(D: np.ndarray, y: np.ndarray, codes: np.ndarray, J: int,
                           folds: np.ndarray, tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray]:
    """Cross-fitting of `fixed_effects_ols`: for each fold k (codes 0..K-1), the slopes b_k (K, p;
    0 where aliased) and site intercepts alpha_k (K, J; NaN for a site without rows outside
    fold k) of lm(y ~ D + factor(site)) fitted on the rows outside fold k, all from one pass
    over the rows (per site and fold sums) instead of K regressions on copied rows."""
    D = np.ascontiguousarray(D, float)
    folds = np.asarray(folds, np.int64)
    K = int(folds.max()) + 1
    sums = _site_fold_sums(D, np.asarray(y, float), np.asarray(codes, np.int64), int(J), folds, K)
    return _crossfit_fe(*sums, float(tol) ** 2)
