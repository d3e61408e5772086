"""Linear mixed model with one grouping factor, fitted as lme4's lmer does (Bates et al. 2015).

    y = X beta + Z b + e,   b_j = T_theta u_j,  u_j ~ N(0, sigma^2 I_q),  e ~ N(0, sigma^2 I)

T_theta is the q x q lower-triangular relative covariance factor (theta = its lower triangle in
column order, diagonal >= 0, so singular fits are allowed). beta and sigma are profiled out:

    REML: d(theta) = log|L|^2 + log|R_X|^2 + (n - p) [1 + log(2 pi r^2 / (n - p))]
    ML:   d(theta) = log|L|^2 + n [1 + log(2 pi r^2 / n)]

with L_j L_j' = T' Z_j'Z_j T + I per group and r^2 the penalised residual sum of squares.
Per-group cross-products are formed once, so each evaluation costs O(J q^3 + p^3), not O(n).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from . import lapack
from .groups import site_codes
from .ols import kept_columns

LOG2PI = np.log(2 * np.pi)


@dataclass
class LMMFit:
    beta: np.ndarray                 # fixed effects (NaN where aliased)
    se: np.ndarray
    names: list[str]
    aliased: list[str]
    sigma: float                     # residual SD
    theta: np.ndarray
    re_cov: np.ndarray               # q x q covariance of the random effects, sigma^2 T T'
    re_names: list[str]
    ranef_values: np.ndarray         # conditional modes (BLUPs) b_j, (groups, q)
    group_labels: np.ndarray         # the groups' labels, sorted (the rows of ranef_values)
    criterion: float                 # REML criterion (REML) or deviance (ML) at the optimum
    reml: bool
    converged: bool
    message: str
    n: int
    n_groups: int

    @property
    def ranef(self) -> pd.DataFrame:
        """The conditional modes b_j as a frame: one row per group label, one column per
        random effect (lme4's ranef)."""
        return pd.DataFrame(self.ranef_values, index=self.group_labels, columns=self.re_names)

    @property
    def re_sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.re_cov))

    @property
    def re_corr(self) -> np.ndarray:
        sd = self.re_sd
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.re_cov / np.outer(sd, sd)

    @property
    def singular(self) -> bool:
        """A boundary fit: some diagonal element of T_theta is (numerically) zero."""
        q = len(self.re_names)
        return bool(np.any(self.theta[_diag_positions(q)] < 1e-4))

    @property
    def loglik(self) -> float:
        return -0.5 * self.criterion

    def __getitem__(self, name: str) -> float:
        return float(self.beta[self.names.index(name)])


def _diag_positions(q: int) -> np.ndarray:
    """Positions of T's diagonal in theta (lower triangle, column order, as lme4)."""
    pos, k = [], 0
    for j in range(q):
        pos.append(k)
        k += q - j
    return np.array(pos)


@functools.lru_cache(maxsize=None)
def _lower_positions(q: int):
    """(rows, cols) of theta's elements: T's lower triangle in column-major order (lme4)."""
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return rows[order], cols[order]


def _theta_to_T(theta: np.ndarray, q: int) -> np.ndarray:
    T = np.zeros((q, q))
    rows, cols = _lower_positions(q)
    T[rows, cols] = theta
    return T


NEWTON_MESSAGES = ("projected gradient below tolerance", "line search found no decrease",
                   "converged (no further change)", "iteration limit reached",
                   "deviance not finite at the starting value")


@numba.njit(cache=True)
def _objective(theta, data):
    """d(theta) and its gradient; (inf, 0) where the deviance is undefined. `data`: the
    cross-products (`_Crossprods.data`)."""
    q, rows, cols, ZtZ, ZtX, Zty, XtX, Xty, yty, n, reml = data
    T = np.zeros((q, q))
    for k in range(theta.size):
        T[rows[k], cols[k]] = theta[k]
    dev, grad, beta, r2, RX, b, ok = _profiled_deviance(T, rows, cols, ZtZ, ZtX, Zty, XtX, Xty,
                                                        yty, n, reml)
    if not ok:
        return np.inf, np.zeros(theta.size)
    return dev, grad


@numba.njit(cache=True)
def _damped_cholesky(H):
    """Lower Cholesky factor of H + lam I with the smallest lam of 0, 1e-6 s, 2e-6 s, ...
    (s = max(1, max |H_ii|)) for which it exists (Levenberg damping)."""
    m = H.shape[0]
    lam = 0.0
    scale = 1.0
    for i in range(m):
        scale = max(scale, abs(H[i, i]))
    L = np.zeros((m, m))
    for _ in range(60):
        A = H.copy()
        for i in range(m):
            A[i, i] += lam
        L, ok = lapack.cholesky(A)
        if ok:
            break
        lam = max(2 * lam, 1e-6 * scale)
    return L


@numba.njit(cache=True)
def _free(x, g, lower, held):
    """The free coordinates (not held, not at the bound with g_i > 0) and max |g_i| over them."""
    idx = np.array([i for i in range(x.size)
                    if not (held[i] or (x[i] <= lower[i] and g[i] > 0))], dtype=np.int64)
    out = 0.0
    for i in idx:
        out = max(out, abs(g[i]))
    return idx, out


@numba.njit(cache=True)
def _bounded_newton(x0, lower, gtol, maxiter, data):
    """Minimise d(theta) subject to theta >= lower, for the few parameters of theta: Newton
    steps on the free coordinates with a Hessian from finite differences of the analytic
    gradient, Levenberg damping when it is not positive definite, projected backtracking. A
    coordinate at its bound whose gradient pushes outward is held there (a boundary fit). A
    coordinate creeping towards its bound scales the whole step down (at most a tenth of its
    value per step), which can stall the others far from the optimum: where the iteration stops
    with a projected gradient that is not small, coordinates within 1e-4 of their bound are put
    on it and held there, and the others go on (without this, 3 of the 256 mixed-model fits of
    the paper sample stopped 50-110 REML units short of lme4's optimum). Compiled; the Cholesky
    and solves are numpy's LAPACK routines (engines/lapack.py).
    Returns (x, f, converged, iterations, message: an index of NEWTON_MESSAGES)."""
    k = x0.size
    x = np.empty(k)
    for i in range(k):
        x[i] = max(x0[i], lower[i])
    f, g = _objective(x, data)
    if not np.isfinite(f):
        return x, f, False, 0, 4
    held = np.zeros(k, dtype=np.bool_)
    for it in range(1, maxiter + 1):
        idx, pgmax = _free(x, g, lower, held)
        if pgmax < gtol * max(1.0, abs(f)) * 1e-3 or idx.size == 0:
            return x, f, True, it, 0
        m = idx.size
        H = np.empty((m, m))
        for c in range(m):
            h = 1e-6 * max(1.0, abs(x[idx[c]]))
            xe = x.copy()
            xe[idx[c]] += h
            ge = _objective(xe, data)[1]
            for r in range(m):
                H[r, c] = (ge[idx[r]] - g[idx[r]]) / h
        Hs = np.empty((m, m))
        gi = np.empty(m)
        for r in range(m):
            gi[r] = g[idx[r]]
            for c in range(m):
                Hs[r, c] = 0.5 * (H[r, c] + H[c, r])
        Lh = _damped_cholesky(Hs)
        d = lapack.solve(Lh.T.copy(), lapack.solve(Lh, gi))
        step = np.zeros(k)
        for r in range(m):
            step[idx[r]] = -d[r]
        # a bounded coordinate may fall to at most a tenth of its value per step: the boundary
        # theta_k = 0 is a stationary point in its own direction, so landing there early stalls
        room = np.inf
        for i in range(k):
            if np.isfinite(lower[i]) and step[i] < 0 and x[i] > lower[i]:
                room = min(room, (x[i] - lower[i]) * 0.9 / -step[i])
        if room < 1.0:
            for i in range(k):
                step[i] = step[i] * room
        t, improved = 1.0, False
        fn, gn, xn = f, g, x
        while t > 1e-12:
            xn = np.empty(k)
            slope = 0.0
            for i in range(k):
                xn[i] = max(x[i] + t * step[i], lower[i])
                slope += g[i] * (xn[i] - x[i])
            fn, gn = _objective(xn, data)
            if fn <= f + 1e-4 * slope:
                improved = True
                break
            t *= 0.5
        if improved:
            moved = 0.0
            for i in range(k):
                moved = max(moved, abs(xn[i] - x[i]))
            done = abs(f - fn) <= 1e-14 * max(1.0, abs(f)) and moved < 1e-10
            x, f, g = xn, fn, gn
            if not done:
                continue
            pgmax = _free(x, g, lower, held)[1]
        if pgmax >= 1e-3 * max(1.0, abs(f)) * 1e-3:
            # stalled away from a stationary point: a coordinate creeping to its bound scales
            # every step down (the rule above); hold such coordinates on the bound, go on
            near = False
            for i in range(k):
                if np.isfinite(lower[i]) and not held[i] and lower[i] < x[i] < lower[i] + 1e-4:
                    held[i], near = True, True
                    x[i] = lower[i]
            if near:
                f, g = _objective(x, data)
                continue
        if not improved:
            return x, f, pgmax < 1e-3 * max(1.0, abs(f)) * 1e-3, it, 1
        return x, f, True, it, 2
    return x, f, False, maxiter, 3


def _snap_to_boundary(fg, x, f, lower, scale=1e-4):
    """Set bounded coordinates that ended within `scale` of their bound exactly onto it when the
    deviance does not rise (lme4 reports such singular fits with theta_k = 0)."""
    for i in np.flatnonzero(np.isfinite(lower) & (x - lower < scale) & (x > lower)):
        xs = x.copy()
        xs[i] = lower[i]
        fs = fg(xs)[0]
        if fs <= f + 1e-10 * max(1.0, abs(f)):
            x, f = xs, fs
    return x, f


@numba.njit(cache=True)
def _small_inverse_logdet(A, L, Li, inv):
    """Inverse (into `inv`) and log-determinant of a small SPD matrix by an explicit Cholesky,
    using the caller's work arrays L, Li (no allocation, no LAPACK call)."""
    q = A.shape[0]
    L[:] = 0.0
    Li[:] = 0.0
    logdet = 0.0
    for c in range(q):
        d = A[c, c]
        for k in range(c):
            d -= L[c, k] * L[c, k]
        if not d > 0:
            return L, -np.inf, False
        L[c, c] = np.sqrt(d)
        logdet += 2.0 * np.log(L[c, c])
        for r in range(c + 1, q):
            v = A[r, c]
            for k in range(c):
                v -= L[r, k] * L[c, k]
            L[r, c] = v / L[c, c]
    for c in range(q):                      # L^{-1}, lower triangular
        Li[c, c] = 1.0 / L[c, c]
        for r in range(c + 1, q):
            v = 0.0
            for k in range(c, r):
                v -= L[r, k] * Li[k, c]
            Li[r, c] = v / L[r, r]
    for a in range(q):                      # A^{-1} = L^{-T} L^{-1}
        for b in range(q):
            v = 0.0
            for k in range(max(a, b), q):
                v += Li[k, a] * Li[k, b]
            inv[a, b] = v
    return inv, logdet, True


@numba.njit(cache=True)
def _profiled_deviance(T, rows, cols, ZtZ, ZtX, Zty, XtX, Xty, yty, n, reml):
    """d(theta) and its gradient from per-group cross-products (module docstring).

    With A_j = T'Z_j'Z_j T + I and K_j = T A_j^{-1} T', V_j^{-1} = I - Z_j K_j Z_j', hence
    X'V^{-1}X = X'X - sum_j X_j'Z_j K_j Z_j'X_j, log|V| = sum_j log|A_j|, b_j = K_j Z_j'(y_j - X_j beta).
    Gradient: d'_k = tr(S D_k) - nu g'D_k g / r^2 with D_k = d(TT')/d theta_k,
    S = sum_j Z_j'P Z_j (REML) or Z_j'V^{-1}Z_j (ML), g = Z'V^{-1}(y - X beta)."""
    J, q, p = ZtX.shape
    K = np.empty((J, q, q))
    KZX = np.empty((J, q, p))
    XVX = XtX.copy()
    XVy = Xty.copy()
    yVy = yty
    logdetA = 0.0
    grad = np.zeros(rows.size)
    b = np.zeros((J, q))
    MT = np.empty((q, q))
    A = np.empty((q, q))
    TAi = np.empty((q, q))
    KZy = np.empty(q)
    Lw = np.empty((q, q))
    Liw = np.empty((q, q))
    Aiw = np.empty((q, q))
    for j in range(J):
        M = ZtZ[j]
        for a in range(q):                                  # A = T'M T + I
            for c in range(q):
                v = 0.0
                for k in range(q):
                    v += M[a, k] * T[k, c]
                MT[a, c] = v
        for a in range(q):
            for c in range(q):
                v = 1.0 if a == c else 0.0
                for k in range(q):
                    v += T[k, a] * MT[k, c]
                A[a, c] = v
        Ai, ld, ok = _small_inverse_logdet(A, Lw, Liw, Aiw)
        if not ok:
            return np.inf, grad, np.zeros(p), 0.0, XVX, b, False
        logdetA += ld
        for a in range(q):                                  # K = T A^{-1} T'
            for c in range(q):
                v = 0.0
                for k in range(q):
                    v += T[a, k] * Ai[k, c]
                TAi[a, c] = v
        for a in range(q):
            for c in range(q):
                v = 0.0
                for k in range(q):
                    v += TAi[a, k] * T[c, k]
                K[j, a, c] = v
        for a in range(q):
            KZy[a] = 0.0
            for k in range(q):
                KZy[a] += K[j, a, k] * Zty[j, k]
            for c in range(p):
                v = 0.0
                for k in range(q):
                    v += K[j, a, k] * ZtX[j, k, c]
                KZX[j, a, c] = v
        for r in range(p):
            for c in range(p):
                v = 0.0
                for k in range(q):
                    v += ZtX[j, k, r] * KZX[j, k, c]
                XVX[r, c] -= v
            v = 0.0
            for k in range(q):
                v += ZtX[j, k, r] * KZy[k]
            XVy[r] -= v
        for k in range(q):
            yVy -= Zty[j, k] * KZy[k]
    for a in range(p):
        if not XVX[a, a] > 0:
            return np.inf, grad, np.zeros(p), 0.0, XVX, b, False
    RX, pd = lapack.cholesky_c(XVX)            # np.linalg.cholesky / inv / @, as numba does
    if not pd:
        raise np.linalg.LinAlgError("Matrix is not positive definite.")
    Ct = lapack.inverse_t(XVX)                 # (X'V^-1 X)^-1, transposed: C[k, c] = Ct[c, k]
    beta = lapack.gemv_t(Ct, XVy)
    r2 = yVy - lapack.dot(XVy, beta)
    if not r2 > 0:
        return np.inf, grad, beta, r2, RX, b, False
    nu = n - p if reml else n
    dev = logdetA + nu * (1.0 + np.log(2.0 * np.pi) + np.log(r2 / nu))
    if reml:
        for a in range(p):
            dev += 2.0 * np.log(RX[a, a])
    S = np.zeros((q, q))
    G = np.zeros((q, q))
    rz = np.empty(q)
    g = np.empty(q)
    MK = np.empty((q, q))
    ZVX = np.empty((q, p))
    ZVXC = np.empty((q, p))
    for j in range(J):
        M = ZtZ[j]
        for a in range(q):
            v = Zty[j, a]
            for c in range(p):
                v -= ZtX[j, a, c] * beta[c]
            rz[a] = v
        for a in range(q):
            v = 0.0
            for k in range(q):
                v += K[j, a, k] * rz[k]
            b[j, a] = v
        for a in range(q):                                  # MK = M K
            for c in range(q):
                v = 0.0
                for k in range(q):
                    v += M[a, k] * K[j, k, c]
                MK[a, c] = v
        for a in range(q):                                  # g = rz - M K rz = rz - M b_j
            v = rz[a]
            for k in range(q):
                v -= M[a, k] * b[j, k]
            g[a] = v
        for a in range(q):                                  # S += M - M K M
            for c in range(q):
                v = M[a, c]
                for k in range(q):
                    v -= MK[a, k] * M[k, c]
                S[a, c] += v
                G[a, c] += g[a] * g[c]
        if reml:                                            # S -= ZVX C ZVX', ZVX = Z'V^-1 X
            for a in range(q):
                for c in range(p):
                    v = ZtX[j, a, c]
                    for k in range(q):
                        v -= M[a, k] * KZX[j, k, c]
                    ZVX[a, c] = v
            for a in range(q):
                for c in range(p):
                    v = 0.0
                    for k in range(p):
                        v += ZVX[a, k] * Ct[c, k]
                    ZVXC[a, c] = v
            for a in range(q):
                for c in range(q):
                    v = 0.0
                    for k in range(p):
                        v += ZVXC[a, k] * ZVX[c, k]
                    S[a, c] -= v
    for kk in range(rows.size):                         # D = E T' + T E'
        rr, cc = rows[kk], cols[kk]
        tr = 0.0
        quad = 0.0
        for a in range(q):
            for c in range(q):
                d = 0.0
                if a == rr:
                    d += T[c, cc]
                if c == rr:
                    d += T[a, cc]
                tr += S[a, c] * d
                quad += G[a, c] * d
        grad[kk] = tr - nu * quad / r2
    return dev, grad, beta, r2, RX, b, True


@numba.njit(cache=True)
def _group_crossprods(X, y, Z, codes, J):
    """One pass over the rows: Z_j'Z_j, Z_j'X_j, Z_j'y_j for every group j."""
    n, p = X.shape
    q = Z.shape[1]
    ZtZ = np.zeros((J, q, q))
    ZtX = np.zeros((J, q, p))
    Zty = np.zeros((J, q))
    for i in range(n):
        j = codes[i]
        for a in range(q):
            za = Z[i, a]
            if za == 0.0:
                continue
            for b in range(q):
                ZtZ[j, a, b] += za * Z[i, b]
            for c in range(p):
                ZtX[j, a, c] += za * X[i, c]
            Zty[j, a] += za * y[i]
    return ZtZ, ZtX, Zty


class _Crossprods:
    """Per-group Z_j'Z_j, Z_j'X_j, Z_j'y_j and totals X'X, X'y, y'y, formed once."""

    def __init__(self, X, y, Z, codes, J):
        n, p = X.shape
        q = Z.shape[1]
        self.ZtZ, self.ZtX, self.Zty = _group_crossprods(
            np.ascontiguousarray(X), np.ascontiguousarray(y), np.ascontiguousarray(Z),
            np.ascontiguousarray(codes, dtype=np.int64), J)
        self.XtX, self.Xty, self.yty = X.T @ X, X.T @ y, float(y @ y)
        self.n, self.p, self.q, self.J = n, p, q, J

    def evaluate(self, theta: np.ndarray, reml: bool):
        """Profiled deviance d(theta), its gradient, beta, r^2, R_X and the modes b_j
        (compiled kernel `_profiled_deviance`)."""
        T = _theta_to_T(theta, self.q)
        rows, cols = _lower_positions(self.q)
        dev, grad, beta, r2, RX, b, ok = _profiled_deviance(
            T, rows, cols, self.ZtZ, self.ZtX, self.Zty, self.XtX, self.Xty, self.yty,
            self.n, reml)
        if not ok:
            raise np.linalg.LinAlgError("profiled deviance undefined at this theta")
        return dev, grad, beta, r2, RX, b, T

    def data(self, reml: bool) -> tuple:
        """The compiled objective's arguments after theta (`_objective`, `_bounded_newton`)."""
        rows, cols = _lower_positions(self.q)
        return (self.q, rows, cols, self.ZtZ, self.ZtX, self.Zty, self.XtX, self.Xty,
                float(self.yty), int(self.n), bool(reml))

    def objective(self, theta: np.ndarray, reml: bool):
        return _objective(np.asarray(theta, float), self.data(reml))


def _codes(groups):
    """(sorted labels, code per row), as np.unique(return_inverse=True) (`site_codes`)."""
    return site_codes(groups)


def fit_lmm(X, y, groups, Z=None, *, names=None, re_names=None, reml: bool = True,
            tol: float = 1e-7) -> LMMFit:
    """Fit y ~ X + (Z | groups) by REML (default) or ML; Z defaults to a random intercept.

    Aliased fixed-effect columns are dropped in column order (as lm and lmer) and reported."""
    X = np.asarray(X, float)
    y = np.asarray(y, float)
    n, p_all = X.shape
    names = list(names) if names is not None else [f"x{k}" for k in range(p_all)]
    Z = np.ones((n, 1)) if Z is None else np.asarray(Z, float).reshape(n, -1)
    q = Z.shape[1]
    re_names = list(re_names) if re_names is not None else [f"z{k}" for k in range(q)]
    if y.shape != (n,) or Z.shape[0] != n or len(groups) != n:
        raise ValueError(f"lengths differ: X {n} rows, y {y.shape}, Z {Z.shape[0]}, groups {len(groups)}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y)) and np.all(np.isfinite(Z))):
        raise ValueError("X, y and Z must be finite (no missing values)")
    labels, codes = _codes(groups)
    J = labels.size
    if J < 2:
        raise ValueError(f"a mixed model needs at least 2 groups, got {J}")
    keep = kept_columns(X, tol)
    Xk = X[:, keep]
    if n <= keep.sum():
        raise ValueError(f"n = {n} observations do not exceed p = {keep.sum()} fixed effects")
    try:
        fit = _fit_kept(Xk, y, Z, codes, J, reml)
        scale = np.ones(Xk.shape[1])
    except np.linalg.LinAlgError:
        # a kept column of rounding noise (a site-level covariate de-meaned within sites: |x| ~
        # 1e-16) makes x'V^-1 x = x'x - ... lose every digit; lme4 still fits (absurd
        # coefficients on such columns, the others sound). Refit on columns scaled to unit
        # norm, X D^-1: the same theta and fitted model; beta = D^-1 beta_s, and the REML
        # criterion's log|X'V^-1X| gains 2 sum log D. Fits that succeed above never come here.
        scale = np.sqrt(np.einsum("ij,ij->j", Xk, Xk))
        scale[scale == 0] = 1.0
        fit = _fit_kept(Xk / scale, y, Z, codes, J, reml)
    theta, dev, beta_k, se_k, sigma2, b, T, converged, iterations, message = fit
    if reml:
        dev = dev + 2.0 * np.log(scale).sum()
    beta = np.full(p_all, np.nan)
    se = np.full(p_all, np.nan)
    beta[keep], se[keep] = beta_k / scale, se_k / scale
    return LMMFit(beta=beta, se=se, names=names, aliased=[nm for nm, kk in zip(names, keep) if not kk],
                  sigma=float(np.sqrt(sigma2)), theta=theta, re_cov=sigma2 * T @ T.T,
                  re_names=re_names, ranef_values=b, group_labels=labels,
                  criterion=float(dev), reml=reml, converged=bool(converged),
                  message=f"{message} after {iterations} Newton steps",
                  n=n, n_groups=J)


def _fit_kept(Xk, y, Z, codes, J, reml):
    """The REML / ML fit on full-rank fixed effects: (theta, criterion, beta, se, sigma^2, modes
    b, T_theta, converged, Newton steps, message); LinAlgError where the profiled deviance is
    undefined at the optimum."""
    n, q = Z.shape
    cp = _Crossprods(Xk, y, Z, codes, J)
    k = q * (q + 1) // 2
    theta0 = np.zeros(k)
    theta0[_diag_positions(q)] = 1.0
    lower = np.full(k, -np.inf)
    lower[_diag_positions(q)] = 0.0
    theta, dev0, converged, iterations, message = _bounded_newton(
        theta0, lower, 1e-7, 200, cp.data(reml))
    message = NEWTON_MESSAGES[message]
    theta, dev0 = _snap_to_boundary(lambda th: cp.objective(th, reml), theta, dev0, lower)
    theta[_diag_positions(q)] = np.maximum(theta[_diag_positions(q)], 0.0)
    dev, grad, beta_k, r2, RX, b, T = cp.evaluate(theta, reml)
    sigma2 = r2 / (n - Xk.shape[1] if reml else n)
    RXinv = np.linalg.inv(RX)
    se_k = np.sqrt(sigma2 * np.sum(RXinv * RXinv, axis=0))
    return theta, dev, beta_k, se_k, sigma2, b, T, converged, iterations, message
