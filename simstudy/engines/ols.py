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
        return np.asarray(X, float) @ np.nan_to_num(self.coef, nan=0.0)


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


def ols(X: np.ndarray, y: np.ndarray, names: list[str] | None = None, tol: float = 1e-7) -> OLSFit:
    """Least squares y ~ X (X includes the intercept column if wanted), R's aliasing rule."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n, p = X.shape
    names = list(names) if names is not None else [f"x{k}" for k in range(p)]
    G = X.T @ X
    keep = kept_columns(X, tol, G)
    Xk = X[:, keep]
    # Cholesky of X'X with one step of iterative refinement (corrected semi-normal equations):
    # as accurate as a QR solve for the designs met here, without forming Q (n x p)
    cf = sla.cho_factor(G[np.ix_(keep, keep)])
    b = sla.cho_solve(cf, Xk.T @ y)
    b += sla.cho_solve(cf, Xk.T @ (y - Xk @ b))
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
    resid = y - X @ np.nan_to_num(fit.coef)
    counts = np.bincount(codes, minlength=J)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.bincount(codes, weights=resid, minlength=J) / counts
    return fit, alpha
