"""Weighted squared-loss lasso with penalty factors, following R glmnet (family = "gaussian",
alpha = 1, type.gaussian = "covariance") exactly, and its K-fold cross-validation (cv.glmnet).

    minimise_{a0, b}  (1/2) sum_i w~_i (y_i - a0 - x_i'b)^2 + lambda sum_j pf~_j |b_j|

with w~ = w / sum(w), pf~ = pf * p / sum(pf) (0 = unpenalised), columns standardised by their
weighted SD (glmnet's standardize = TRUE; without an intercept x is not centred but still
scaled by its centred SD, as glmnet does), y scaled by its weighted SD for the convergence test,
the path lambda_max * r^(m-1), r = lambda.min.ratio^(1/(nlambda-1)), lambda.min.ratio = 1e-4
(1e-2 when n < p), and glmnet's early end of the path (after 5 values, when the explained
deviance rises by < 1e-5 relatively or exceeds 0.999). Coefficients on the original scale.
Coordinate descent runs on the weighted Gram matrix, built from weighted moments once; the
cross-validation folds reuse them (training moments = total minus the fold's).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import scipy.sparse as sp

FDEV, DEVMAX, MNLAM = 1e-5, 0.999, 5          # glmnet.control() defaults


@numba.njit(cache=True)
def _chol_solve(A, b):
    """Solve A x = b for symmetric positive definite A; ok = False if A is not (numerically) PD."""
    k = A.shape[0]
    L = np.zeros((k, k))
    for c in range(k):
        d = A[c, c]
        for t in range(c):
            d -= L[c, t] * L[c, t]
        if not d > 1e-13 * max(1.0, abs(A[c, c])):
            return b, False
        L[c, c] = np.sqrt(d)
        for r in range(c + 1, k):
            v = A[r, c]
            for t in range(c):
                v -= L[r, t] * L[c, t]
            L[r, c] = v / L[c, c]
    z = np.empty(k)
    for r in range(k):
        v = b[r]
        for t in range(r):
            v -= L[r, t] * z[t]
        z[r] = v / L[r, r]
    x = np.empty(k)
    for r in range(k - 1, -1, -1):
        v = z[r]
        for t in range(r + 1, k):
            v -= L[t, r] * x[t]
        x[r] = v / L[r, r]
    return x, True


@numba.njit(cache=True)
def _active_solve(G, indptr, indices, nnz, idx, rhs):
    """Solve G_AA x = rhs for the active set `idx`, eliminating first a set Q of columns with no
    non-zero G entries among themselves (site dummies: G_QQ is diagonal), so the dense part is
    only the Schur complement on the rest P: O(|P|^3 + |P|^2 |Q|) instead of O(|A|^3)."""
    p = G.shape[0]
    k = idx.size
    order = idx[np.argsort(nnz[idx], kind="mergesort")]
    in_q = np.zeros(p, np.bool_)
    blocked = np.zeros(p, np.bool_)
    in_a = np.zeros(p, np.bool_)
    for a in range(k):
        in_a[idx[a]] = True
    for j in order:
        if blocked[j]:
            continue
        in_q[j] = True
        for t in range(indptr[j], indptr[j + 1]):
            r = indices[t]
            if r != j:
                blocked[r] = True
    pos = np.full(p, -1, np.int64)
    for a in range(k):
        pos[idx[a]] = a
    P = np.array([j for j in idx if not in_q[j]], dtype=np.int64)
    Q = np.array([j for j in idx if in_q[j]], dtype=np.int64)
    nP = P.size
    S = np.empty((nP, nP))
    b = np.empty(nP)
    for u in range(nP):
        b[u] = rhs[pos[P[u]]]
        for v in range(nP):
            S[u, v] = G[P[u], P[v]]
    for j in Q:                               # S -= G_PQ D^-1 G_QP, b -= G_PQ D^-1 r_Q
        dj = G[j, j]
        rj = rhs[pos[j]] / dj
        for u in range(nP):
            gu = G[P[u], j]
            if gu == 0.0:
                continue
            b[u] -= gu * rj
            for v in range(nP):
                S[u, v] -= gu * G[j, P[v]] / dj
    xP, ok = _chol_solve(S, b) if nP > 0 else (b, True)
    x = np.empty(k)
    if not ok:
        return x, False
    for u in range(nP):
        x[pos[P[u]]] = xP[u]
    for j in Q:
        if not G[j, j] > 0:
            return x, False
        v = rhs[pos[j]]
        for u in range(nP):
            v -= G[j, P[u]] * xP[u]
        x[pos[j]] = v / G[j, j]
    return x, True


@numba.njit(cache=True)
def _gradient(G, indptr, indices, c, beta, g):
    """g = c - G beta, through the non-zero entries of G's columns."""
    g[:] = c
    for j in range(beta.size):
        if beta[j] != 0.0:
            for t in range(indptr[j], indptr[j + 1]):
                g[indices[t]] -= G[indices[t], j] * beta[j]


@numba.njit(cache=True)
def _polish(G, indptr, indices, nnz, c, vp, ju, beta, lam):
    """Exact lasso solution by an active-set method started from coordinate descent's active
    set and signs: solve G_AA b_A = c_A - lam vp_A s_A; drop a penalised variable whose sign
    flips, add the worst inactive KKT violator (|g_j| > lam vp_j), until the KKT conditions
    hold, which makes the result THE solution, to rounding. ok = False if it does not settle."""
    p = G.shape[0]
    active = np.zeros(p, np.bool_)
    sign = np.zeros(p)
    for j in range(p):
        if ju[j] and (beta[j] != 0.0 or vp[j] <= 0):
            active[j] = True
            sign[j] = 0.0 if vp[j] <= 0 else (1.0 if beta[j] > 0 else -1.0)
    new = np.zeros(p)
    g = np.empty(p)
    for step in range(2 * p + 10):
        idx = np.flatnonzero(active)
        k = idx.size
        rhs = np.empty(k)
        for a in range(k):
            ja = idx[a]
            rhs[a] = c[ja] - lam * vp[ja] * sign[ja] if vp[ja] > 0 else c[ja]
        x, ok = _active_solve(G, indptr, indices, nnz, idx, rhs)
        if not ok:
            return beta, False
        flipped = False
        for a in range(k):
            ja = idx[a]
            if vp[ja] > 0 and x[a] * sign[ja] <= 0:
                active[ja] = False
                sign[ja] = 0.0
                flipped = True
        if flipped:
            continue
        new[:] = 0.0
        for a in range(k):
            new[idx[a]] = x[a]
        _gradient(G, indptr, indices, c, new, g)
        worst, worst_j = 0.0, -1
        for j in range(p):
            if ju[j] and not active[j] and vp[j] > 0:
                excess = abs(g[j]) - lam * vp[j] * (1.0 + 1e-10) - 1e-15
                if excess > worst:
                    worst, worst_j = excess, j
        if worst_j < 0:
            return new, True
        active[worst_j] = True
        sign[worst_j] = 1.0 if g[worst_j] > 0 else -1.0
    return beta, False


@numba.njit(cache=True)
def _cd_path(G, indptr, indices, c, xv, vp, ju, lambdas, compute_path, flmin_ratio, nlam, thr,
             maxit):
    """Coordinate descent along the lambda path on the standardised, y-scaled problem, with an
    exact active-set solve (`_polish`) once the active set has settled: glmnet's fixed point,
    reached to rounding instead of to glmnet's tolerance, and fast when columns are strongly
    correlated (site dummies against T~). Updates touch only G's non-zeros (CSC indptr/indices).

    compute_path: lambdas[0] = infinity (unpenalised variables only), lambda_max from the
    gradient there, then lambda_max * r^(m-1) and glmnet's early stop. Otherwise the given
    lambdas are used in full (glmnet: user-supplied lambda never stops early)."""
    p = G.shape[0]
    nnz = np.diff(indptr)
    beta = np.zeros(p)
    g = c.copy()
    out = np.zeros((nlam, p))
    lam_out = np.zeros(nlam)
    rsq_out = np.zeros(nlam)
    alf = flmin_ratio ** (1.0 / (nlam - 1)) if nlam > 1 else 1.0
    rsq = 0.0
    lam = 0.0
    lam_max = 0.0
    fitted = 0
    for m in range(nlam):
        if compute_path:
            if m == 0:
                lam = np.inf
            elif m == 1:
                lam_max = 0.0
                for j in range(p):
                    if ju[j] and vp[j] > 0:
                        lam_max = max(lam_max, abs(g[j]) / vp[j])
                lam = alf * lam_max
            else:
                lam = lam * alf
        else:
            lam = lambdas[m]
        rsq0 = rsq
        for it in range(maxit):
            dlx = 0.0
            for j in range(p):
                if not ju[j]:
                    continue
                old = beta[j]
                u = g[j] + xv[j] * old
                thresh = lam * vp[j] if vp[j] > 0 else 0.0
                au = abs(u) - thresh
                new = 0.0 if au <= 0 else np.sign(u) * au / xv[j]
                if new != old:
                    d = new - old
                    beta[j] = new
                    for t in range(indptr[j], indptr[j + 1]):
                        g[indices[t]] -= G[indices[t], j] * d
                    dlx = max(dlx, xv[j] * d * d)
            if dlx < thr:
                break
            if it % 3 == 2:                    # try the exact active-set solution
                polished, ok = _polish(G, indptr, indices, nnz, c, vp, ju, beta, lam)
                if ok:
                    beta = polished
                    _gradient(G, indptr, indices, c, beta, g)
                    break
        rsq = 0.0                               # explained share: b'(2c - G b) = b'(c + g)
        for j in range(p):
            rsq += beta[j] * (c[j] + g[j])
        out[m] = beta
        lam_out[m] = lam
        rsq_out[m] = rsq
        fitted = m + 1
        if compute_path and m + 1 >= min(MNLAM, nlam):
            if rsq - rsq0 < FDEV * rsq or rsq > DEVMAX:
                break
    if compute_path and fitted > 2:      # R's fix.lam: first lambda from the next two
        lam_out[0] = np.exp(2 * np.log(lam_out[1]) - np.log(lam_out[2]))
    elif compute_path and fitted >= 2:
        lam_out[0] = lam_max
    return out[:fitted], lam_out[:fitted], rsq_out[:fitted]


class _Shape:
    """Stands in for X when a path is computed from moments only (cross-validation folds)."""
    def __init__(self, n, p):
        self.shape = (n, p)


class SiteDummyDesign:
    """The design [D | S] of dense columns D (n x k) and signed site dummies S (n x (J-1)):
    S[i, c_i - 1] = s_i for rows of site c_i > 0 (the first site is the reference). Its
    weighted moments take O(n k) per-site sums (np.bincount) instead of sparse products."""

    def __init__(self, dense, codes, sign, J: int):
        self.dense = np.asarray(dense, float)
        self.codes = np.asarray(codes, np.int64)
        self.sign = np.asarray(sign, float)
        self.J = int(J)
        self.shape = (self.dense.shape[0], self.dense.shape[1] + self.J - 1)

    def __getitem__(self, rows) -> "SiteDummyDesign":
        return SiteDummyDesign(self.dense[rows], self.codes[rows], self.sign[rows], self.J)

    def __matmul__(self, B):
        k = self.dense.shape[1]
        B = np.asarray(B, float)
        out = self.dense @ B[:k]
        full = np.vstack([np.zeros((1,) + B.shape[1:]), B[k:]])     # reference site: 0
        return out + (self.sign[:, None] * full[self.codes] if B.ndim == 2
                      else self.sign * full[self.codes])

    def toarray(self) -> np.ndarray:
        S = np.zeros((self.shape[0], self.J))
        S[np.arange(self.shape[0]), self.codes] = self.sign
        return np.column_stack([self.dense, S[:, 1:]])

    def moments(self, y, w) -> "Moments":
        D, c, J = self.dense, self.codes, self.J
        ws = w * self.sign
        Dw = D * w[:, None]
        k = D.shape[1]
        p = k + J - 1
        sxx = np.zeros((p, p))
        sxx[:k, :k] = D.T @ Dw
        cross = np.column_stack([np.bincount(c, weights=ws * D[:, j], minlength=J)[1:]
                                 for j in range(k)]) if k else np.zeros((J - 1, 0))
        sxx[k:, :k] = cross
        sxx[:k, k:] = cross.T
        sxx[np.arange(k, p), np.arange(k, p)] = np.bincount(c, weights=ws * self.sign,
                                                            minlength=J)[1:]
        sx = np.r_[Dw.sum(0), np.bincount(c, weights=ws, minlength=J)[1:]]
        sxy = np.r_[Dw.T @ y, np.bincount(c, weights=ws * y, minlength=J)[1:]]
        return Moments(float(w.sum()), sx, sxx, float(w @ y), sxy, float((w * y) @ y))


def _matrix(X):
    if isinstance(X, (_Shape, SiteDummyDesign)):
        return X
    return sp.csr_matrix(X, dtype=float) if sp.issparse(X) else np.asarray(X, float)


def _varies(M: "Moments") -> np.ndarray:
    """glmnet's exclusion of constant columns, from the weighted moments (all weights > 0)."""
    mean = M.sx / M.sw
    second = np.diag(M.sxx) / M.sw
    return second - mean * mean > 1e-13 * np.maximum(second, 1e-300)


@dataclass
class Moments:
    """Weighted raw moments: sum w, sum w x, sum w x x', sum w y, sum w x y, sum w y^2."""
    sw: float
    sx: np.ndarray
    sxx: np.ndarray
    sy: float
    sxy: np.ndarray
    syy: float

    @classmethod
    def of(cls, X, y, w):
        """X dense, scipy.sparse, or a SiteDummyDesign (signed site dummies, per-site sums)."""
        if isinstance(X, SiteDummyDesign):
            return X.moments(np.asarray(y, float), np.asarray(w, float))
        if sp.issparse(X):
            Xw = sp.csr_matrix(X.multiply(w[:, None]))
            sxx = np.asarray((X.T @ Xw).todense())
            sx = np.asarray(Xw.sum(0)).ravel()
            sxy = np.asarray(Xw.T @ y).ravel()
        else:
            Xw = X * w[:, None]
            sxx, sx, sxy = X.T @ Xw, Xw.sum(0), Xw.T @ y
        return cls(float(w.sum()), sx, sxx, float(w @ y), sxy, float((w * y) @ y))

    def __sub__(self, o: "Moments") -> "Moments":
        return Moments(self.sw - o.sw, self.sx - o.sx, self.sxx - o.sxx, self.sy - o.sy,
                       self.sxy - o.sxy, self.syy - o.syy)


@dataclass
class LassoPath:
    lambdas: np.ndarray          # (m,)
    a0: np.ndarray               # (m,)
    beta: np.ndarray             # (p, m), original scale
    dev_ratio: np.ndarray        # (m,)

    def predict(self, X: np.ndarray, s=None) -> np.ndarray:
        """(n, m) predictions at every lambda of the path, or at the lambdas `s` with glmnet's
        lambda.interp: coefficients linear in lambda between knots, constant beyond the ends."""
        a0, beta = (self.a0, self.beta) if s is None else self.coef_at(s)
        return a0[None, :] + np.asarray(_matrix(X) @ beta)

    def coef_at(self, s) -> tuple[np.ndarray, np.ndarray]:
        s = np.atleast_1d(np.asarray(s, float))
        lam = self.lambdas
        if lam.size == 1:
            return np.repeat(self.a0, s.size), np.repeat(self.beta, s.size, axis=1)
        s = np.clip(s, lam.min(), lam.max())
        pos = np.interp(s, lam[::-1], np.arange(lam.size)[::-1].astype(float))  # lam decreasing
        left = np.floor(pos).astype(int)
        right = np.minimum(left + 1, lam.size - 1)
        span = lam[left] - lam[right]
        frac = np.where(span > 0, (s - lam[right]) / np.where(span > 0, span, 1.0), 1.0)
        a0 = self.a0[left] * frac + self.a0[right] * (1 - frac)
        beta = self.beta[:, left] * frac + self.beta[:, right] * (1 - frac)
        return a0, beta


def _standardise(M: Moments, intercept: bool, standardize: bool, ju: np.ndarray):
    sw = M.sw
    xm = M.sx / sw if intercept else np.zeros_like(M.sx)
    ym = M.sy / sw if intercept else 0.0
    Sxx = M.sxx / sw
    mean = M.sx / sw
    var = np.diag(Sxx) - mean * mean                      # weighted (population) variance
    xs = np.sqrt(np.where(ju, var, 1.0)) if standardize else np.ones_like(var)
    xs[xs <= 0] = 1.0
    G = (Sxx - np.outer(xm, xm)) / np.outer(xs, xs)
    c = (M.sxy / sw - xm * ym) / xs
    yvar = M.syy / sw - ym * ym
    return G, c, xm, xs, ym, yvar


def lasso_path(X, y, weights=None, penalty_factor=None, *, intercept: bool = True,
               standardize: bool = True, lambdas=None, nlambda: int = 100,
               lambda_min_ratio: float | None = None, thresh: float = 1e-16, maxit: int = 100000,
               moments: Moments | None = None, exclude=None) -> LassoPath:
    """glmnet(x, y, weights, penalty.factor, intercept, standardize, lambda) for the gaussian lasso.

    `thresh` is glmnet's convergence threshold (glmnet's default is 1e-7; we solve tighter)."""
    X = _matrix(X)
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if moments is None:
        y = np.asarray(y, float)
    if w.shape != (n,) or np.any(w < 0) or not np.all(np.isfinite(w)) or w.sum() <= 0:
        raise ValueError("weights must be n non-negative finite numbers with a positive sum")
    if np.any(w == 0):
        raise ValueError("zero weights: drop those rows instead")
    pf = np.ones(p) if penalty_factor is None else np.maximum(np.asarray(penalty_factor, float), 0)
    if pf.shape != (p,):
        raise ValueError(f"penalty_factor has length {pf.size}, expected {p}")
    if pf.sum() <= 0:
        raise ValueError("at least one penalty factor must be positive")
    vp = pf * p / pf.sum()
    M = Moments.of(X, y, w) if moments is None else moments
    ju = _varies(M) if exclude is None else ~np.asarray(exclude, bool)
    G, c, xm, xs, ym, yvar = _standardise(M, intercept, standardize, ju)
    ys = np.sqrt(yvar)
    if not ys > 0:
        raise ValueError("y has no variation (weighted)")
    xv = np.diag(G).copy()
    xv[~ju] = 1.0
    # sparsity of G (site dummies) in CSC form: column j's non-zero rows, in row order
    cols, rows = np.nonzero(np.abs(G.T) > 0)
    indptr = np.r_[0, np.cumsum(np.bincount(cols, minlength=G.shape[1]))].astype(np.int64)
    indices = rows.astype(np.int64)
    G = np.ascontiguousarray(G)
    if lambdas is None:
        ratio = lambda_min_ratio if lambda_min_ratio is not None else (1e-2 if n < p else 1e-4)
        B, lam, rsq = _cd_path(G, indptr, indices, c / ys, xv, vp, ju, np.zeros(1), True, ratio,
                               int(nlambda), thresh, maxit)
    else:
        lam_user = np.sort(np.asarray(lambdas, float))[::-1]
        B, lam, rsq = _cd_path(G, indptr, indices, c / ys, xv, vp, ju, lam_user / ys, False, 1.0,
                               lam_user.size, thresh, maxit)
    beta = (B * ys / xs[None, :]).T                         # (p, m) original scale
    a0 = (ym - xm @ beta) if intercept else np.zeros(beta.shape[1])
    return LassoPath(lam * ys, a0, beta, rsq)


@dataclass
class CVLasso:
    path: LassoPath
    cvm: np.ndarray
    cvsd: np.ndarray
    foldid: np.ndarray
    index_min: int
    index_1se: int

    @property
    def lambda_min(self) -> float:
        return float(self.path.lambdas[self.index_min])

    @property
    def lambda_1se(self) -> float:
        return float(self.path.lambdas[self.index_1se])

    def coef(self, s: str = "lambda.min") -> tuple[float, np.ndarray]:
        """(intercept, coefficients) at lambda.min or lambda.1se."""
        k = {"lambda.min": self.index_min, "lambda.1se": self.index_1se}[s]
        return float(self.path.a0[k]), self.path.beta[:, k].copy()


def make_folds(n: int, nfolds: int, rng: np.random.Generator) -> np.ndarray:
    """cv.glmnet's assignment: a random permutation of rep(1:K, length = n)."""
    if not 3 <= nfolds <= n:
        raise ValueError(f"nfolds={nfolds}: need 3 <= nfolds <= n = {n}")
    return rng.permutation(np.resize(np.arange(1, nfolds + 1), n))


def cv_lasso(X, y, weights=None, penalty_factor=None, *, foldid=None, nfolds: int = 5,
             rng: np.random.Generator | None = None, intercept: bool = True,
             standardize: bool = True, thresh: float = 1e-16, path: LassoPath | None = None,
             **path_kw) -> CVLasso:
    """cv.glmnet(type.measure = "mse", grouped = TRUE): weighted MSE per fold, averaged with the
    folds' weight sums; cvsd from the fold spread; lambda.min and lambda.1se as R picks them.
    `path`: the full-data path of an earlier call on the same data (it does not depend on the
    folds), so a refit with new folds only redoes the folds (personalized's refit loop)."""
    X = _matrix(X)
    y = np.asarray(y, float)
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if foldid is None:
        foldid = make_folds(n, nfolds, rng if rng is not None else np.random.default_rng())
    foldid = np.asarray(foldid)
    total = Moments.of(X, y, w)
    ju = _varies(total)
    full = path if path is not None else lasso_path(
        X, y, w, penalty_factor, intercept=intercept, standardize=standardize, thresh=thresh,
        moments=total, exclude=~ju, **path_kw)
    folds = np.unique(foldid)
    K = folds.size
    fold_mse = np.empty((K, full.lambdas.size))
    fold_w = np.empty(K)
    for i, k in enumerate(folds):
        idx = foldid == k
        held = Moments.of(X[idx], y[idx], w[idx])
        train = total - held
        ju_k = ju & _varies(train)                    # constant in the fold's training part
        # as cv.glmnet: each fold fits its own lambda path (its own lambda_max and early stop)
        # and is predicted at the full data's lambdas by linear interpolation
        fit = lasso_path(_Shape(n - int(idx.sum()), p), None, w[~idx], penalty_factor,
                         intercept=intercept, standardize=standardize, thresh=thresh,
                         moments=train, exclude=~ju_k, **path_kw)
        a0, B = fit.coef_at(full.lambdas)
        # weighted squared error of the held-out rows from their moments:
        # sum w (y - a0 - x'b)^2 = Syy - 2 a0 Sy - 2 b'Sxy + a0^2 Sw + 2 a0 b'Sx + b'Sxx b
        sse = (held.syy - 2 * a0 * held.sy - 2 * held.sxy @ B + a0 * a0 * held.sw
               + 2 * a0 * (held.sx @ B) + np.sum(B * (held.sxx @ B), axis=0))
        fold_mse[i] = np.maximum(sse, 0.0) / held.sw
        fold_w[i] = held.sw
    cvm = fold_w @ fold_mse / fold_w.sum()
    cvsd = np.sqrt((fold_w @ (fold_mse - cvm) ** 2) / fold_w.sum() / (K - 1))
    lam = full.lambdas
    i_min = int(np.flatnonzero(cvm <= cvm.min())[np.argmax(lam[cvm <= cvm.min()])])
    i_1se = int(np.flatnonzero(cvm <= cvm[i_min] + cvsd[i_min])[0])
    return CVLasso(full, cvm, cvsd, foldid, i_min, i_1se)
