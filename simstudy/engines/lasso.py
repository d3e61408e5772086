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

from .groups import writable

FDEV, DEVMAX, MNLAM = 1e-5, 0.999, 5          # glmnet.control() defaults


@numba.njit(cache=True)
def _chol_factor(A, k, L):
    """Lower Cholesky factor of A[:k, :k] (symmetric positive definite) into L; False if A is
    not (numerically) positive definite."""
    for c in range(k):
        d = A[c, c]
        for t in range(c):
            d -= L[c, t] * L[c, t]
        if not d > 1e-13 * max(1.0, abs(A[c, c])):
            return False
        L[c, c] = np.sqrt(d)
        for r in range(c + 1, k):
            v = A[r, c]
            for t in range(c):
                v -= L[r, t] * L[c, t]
            L[r, c] = v / L[c, c]
    return True


@numba.njit(cache=True)
def _chol_solve(L, b, k, z, x):
    """Solve L L' x = b[:k] (into x) with the factor of `_chol_factor`."""
    for r in range(k):
        v = b[r]
        for t in range(r):
            v -= L[r, t] * z[t]
        z[r] = v / L[r, r]
    for r in range(k - 1, -1, -1):
        v = z[r]
        for t in range(r + 1, k):
            v -= L[t, r] * x[t]
        x[r] = v / L[r, r]


@numba.njit(cache=True)
def _active_solve(G, indptr, indices, order, idx, k, rhs, iw, bw, fw, S, L, state):
    """Solve G_AA x = rhs for the active set idx[:k] (x into fw[5]), eliminating first a set Q
    of columns with no non-zero G entries among themselves (site dummies: G_QQ is diagonal), so
    the dense part is only the Schur complement on the rest P: O(|P|^3 + |P|^2 |Q|) instead of
    O(|A|^3). `order`: all columns by their number of non-zeros (stable), the greedy order for
    Q. The split and the Cholesky factor of the Schur complement depend on the active set only,
    not on rhs (which moves with lambda): they are kept for the next call with the same set
    (state = [valid, k, nP, nQ]; the set in iw[4]), so a lambda whose active set did not change
    costs two triangular solves and O(|P| |Q|), with the same arithmetic as a fresh solve.
    No allocation: the work arrays are made once per path (`_cd_path`): iw (5, p) int: pos,
    P, Q, idx, the kept set; bw (3, p) bool: in_q, blocked, active; fw (7, p): sign, new, g,
    rhs, b, x, z."""
    pos, P, Q, kept = iw[0], iw[1], iw[2], iw[4]
    in_q, blocked = bw[0], bw[1]
    b, x, z = fw[4], fw[5], fw[6]
    same = state[0] == 1 and state[1] == k
    if same:
        for a in range(k):
            if kept[a] != idx[a]:
                same = False
                break
    if same:
        nP, nQ = state[2], state[3]
    else:
        state[0] = 0
        in_q[:] = False
        blocked[:] = False
        pos[:] = -1
        for a in range(k):
            pos[idx[a]] = a
        for j in order:
            if pos[j] < 0 or blocked[j]:
                continue
            in_q[j] = True
            for t in range(indptr[j], indptr[j + 1]):
                r = indices[t]
                if r != j:
                    blocked[r] = True
        nP = nQ = np.int64(0)       # np.int64: not a literal (numba would compile twice)
        for a in range(k):
            if in_q[idx[a]]:
                Q[nQ] = idx[a]
                nQ += 1
            else:
                P[nP] = idx[a]
                nP += 1
        for u in range(nP):
            for v in range(nP):
                S[u, v] = G[P[u], P[v]]
        for q in range(nQ):                   # S -= G_PQ D^-1 G_QP
            j = Q[q]
            dj = G[j, j]
            for u in range(nP):
                gu = G[j, P[u]]
                if gu == 0.0:
                    continue
                wu = gu / dj                  # one division per (q, u), not per (q, u, v)
                for v in range(nP):
                    S[u, v] -= wu * G[j, P[v]]
        if nP > 0 and not _chol_factor(S, nP, L):
            return False
        for a in range(k):
            kept[a] = idx[a]
        state[0], state[1], state[2], state[3] = 1, k, nP, nQ
    for u in range(nP):
        b[u] = rhs[pos[P[u]]]
    for q in range(nQ):                       # b -= G_PQ D^-1 r_Q
        j = Q[q]
        rj = rhs[pos[j]] / G[j, j]
        for u in range(nP):
            gu = G[j, P[u]]
            if gu == 0.0:
                continue
            b[u] -= gu * rj
    xP = fw[1]                                 # scratch: the P part of the solution
    if nP > 0:
        _chol_solve(L, b, nP, z, xP)
    else:
        xP = b
    for u in range(nP):
        x[pos[P[u]]] = xP[u]
    for q in range(nQ):
        j = Q[q]
        if not G[j, j] > 0:
            return False
        v = rhs[pos[j]]
        for u in range(nP):
            v -= G[j, P[u]] * xP[u]
        x[pos[j]] = v / G[j, j]
    return True


@numba.njit(cache=True)
def _copy(src, dst):
    """dst[:] = src for vectors, as a loop (numba's slice assignment compiles its broadcasting
    and error-message machinery: seconds of a first run)."""
    for i in range(src.shape[0]):
        dst[i] = src[i]


@numba.njit(cache=True)
def _by_count(indptr):
    """np.argsort(np.diff(indptr), kind="mergesort"): the columns by their number of non-zeros,
    ties in column order (a stable insertion sort; p is small)."""
    p = indptr.shape[0] - 1
    order = np.empty(p, np.int64)
    for j in range(p):
        n = indptr[j + 1] - indptr[j]
        i = j
        while i > 0 and indptr[order[i - 1] + 1] - indptr[order[i - 1]] > n:
            order[i] = order[i - 1]
            i -= 1
        order[i] = j
    return order


@numba.njit(cache=True)
def _gradient(G, indptr, indices, c, beta, g):
    """g = c - G beta, through the non-zero entries of G's columns."""
    _copy(c, g)
    for j in range(beta.size):
        if beta[j] != 0.0:
            for t in range(indptr[j], indptr[j + 1]):
                g[indices[t]] -= G[j, indices[t]] * beta[j]


@numba.njit(cache=True)
def _polish(G, indptr, indices, order, c, vp, ju, beta, g0, lam, steps, iw, bw, fw, S, L,
            state):
    """Exact lasso solution by an active-set method started from the active set and signs of
    `beta` (with gradient g0 = c - G beta) plus the variables that violate the KKT conditions
    there at this lambda: solve G_AA b_A = c_A - lam vp_A s_A; drop a penalised variable whose
    sign flips, add the inactive KKT violators (|g_j| > lam vp_j), until the KKT conditions
    hold, which makes the result THE solution, to rounding. True (solution in `beta`, gradient
    c - G beta in fw[2]) or False (beta unchanged) if it does not settle within `steps` solves."""
    p = G.shape[0]
    idx = iw[3]
    active = bw[2]
    sign, new, g, rhs, x = fw[0], fw[1], fw[2], fw[3], fw[5]
    for j in range(p):
        active[j] = False
        sign[j] = 0.0
        if ju[j] and (beta[j] != 0.0 or vp[j] <= 0):
            active[j] = True
            sign[j] = 0.0 if vp[j] <= 0 else (1.0 if beta[j] > 0 else -1.0)
        elif ju[j] and abs(g0[j]) - lam * vp[j] * (1.0 + 1e-13) - 1e-15 > 0:
            active[j] = True
            sign[j] = 1.0 if g0[j] > 0 else -1.0
    for step in range(steps):
        k = np.int64(0)
        for j in range(p):
            if active[j]:
                idx[k] = j
                k += 1
        for a in range(k):
            ja = idx[a]
            rhs[a] = c[ja] - lam * vp[ja] * sign[ja] if vp[ja] > 0 else c[ja]
        if not _active_solve(G, indptr, indices, order, idx, k, rhs, iw, bw, fw, S, L, state):
            return False
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
        violated = False                 # add every KKT violator at once
        for j in range(p):
            if ju[j] and not active[j] and vp[j] > 0:
                if abs(g[j]) - lam * vp[j] * (1.0 + 1e-13) - 1e-15 > 0:
                    active[j] = True
                    sign[j] = 1.0 if g[j] > 0 else -1.0
                    violated = True
        if not violated:
            _copy(new, beta)
            return True
    return False


@numba.njit(cache=True)
def _line_setup(G, indptr, indices, order, c, vp, iw, bw, fw, S, L, state, lw, lidx):
    """After an exact active-set solution (`_polish`): the solution on that active set and
    signs as a function of lambda, b(lambda) = u - lambda v with G_AA u = c_A and
    G_AA v = (pf s)_A, and the gradient c - G b(lambda) = gu - lambda gv (gu = c - G u,
    gv = -G v), into lw's rows 0-3 (u, v by active position; gu, gv by column) and the active
    columns into lidx. Two solves with the kept factor (`_active_solve`). Returns the size of
    the active set, or -1 if a solve fails (then no line)."""
    p = G.shape[0]
    active, sign = bw[2], fw[0]
    idx, rhs, x, full = iw[3], fw[3], fw[5], fw[1]
    k = np.int64(0)
    for j in range(p):
        if active[j]:
            idx[k] = j
            k += 1
    for which in range(2):
        for a in range(k):
            j = idx[a]
            rhs[a] = c[j] if which == 0 else (vp[j] * sign[j] if vp[j] > 0 else 0.0)
        if not _active_solve(G, indptr, indices, order, idx, k, rhs, iw, bw, fw, S, L, state):
            return -1
        full[:] = 0.0
        for a in range(k):
            lw[which, a] = x[a]
            full[idx[a]] = x[a]
        lw[4, :] = 0.0
        _gradient(G, indptr, indices, c if which == 0 else lw[4], full, lw[2 + which])
    for a in range(k):
        lidx[a] = idx[a]
    return k


@numba.njit(cache=True)
def _line_step(lam, vp, ju, lw, lidx, k, sign, active, beta, g):
    """The exact solution at lambda from the line of `_line_setup` when the active set and signs
    still hold there (no sign flip; no inactive column with |g_j| > lambda pf_j: the tests of
    `_polish`), into beta and g; False (nothing written) otherwise. O(p) instead of a solve."""
    for a in range(k):
        j = lidx[a]
        if vp[j] > 0 and (lw[0, a] - lam * lw[1, a]) * sign[j] <= 0:
            return False
    for j in range(g.size):
        if ju[j] and not active[j] and vp[j] > 0:
            if abs(lw[2, j] - lam * lw[3, j]) - lam * vp[j] * (1.0 + 1e-13) - 1e-15 > 0:
                return False
    beta[:] = 0.0
    for a in range(k):
        beta[lidx[a]] = lw[0, a] - lam * lw[1, a]
    for j in range(g.size):
        g[j] = lw[2, j] - lam * lw[3, j]
    return True


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
    order = _by_count(indptr)
    iw = np.empty((5, p), np.int64)            # work arrays of the active-set method
    bw = np.empty((3, p), np.bool_)
    fw = np.empty((7, p))
    S = np.empty((p, p))
    L = np.zeros((p, p))
    state = np.zeros(4, np.int64)              # the kept factor of `_active_solve`: none yet
    lw = np.empty((5, p))                      # the line of the last exact solve (`_line_setup`)
    lidx = np.empty(p, np.int64)
    line_k = np.int64(-1)                      # its active set's size; -1: no line
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
    warm_ok = False            # the last lambda ended with an exact active-set solution
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
        warm = m > 0 and warm_ok
        # the active set of the last exact solve still holds: its line gives the solution
        lined = warm and line_k >= 0 and _line_step(lam, vp, ju, lw, lidx, line_k, fw[0], bw[2],
                                                     beta, g)
        if not lined:                  # any other solve here changes the line (rebuilt below)
            line_k = np.int64(-1)
        if warm and not lined:  # the previous lambda's active set and signs, solved exactly at
            # this lambda: the active-set method for at most 5 solves (else coordinate descent)
            warm = _polish(G, indptr, indices, order, c, vp, ju, beta, g, lam, np.int64(5),
                           iw, bw, fw, S, L, state)
            if warm:
                _copy(fw[2], g)
        warm_ok = warm
        for it in range(0 if warm else maxit):
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
                        g[indices[t]] -= G[j, indices[t]] * d
                    dlx = max(dlx, xv[j] * d * d)
            if dlx < thr:
                break
            if it % 3 == 2:                    # try the exact active-set solution
                if _polish(G, indptr, indices, order, c, vp, ju, beta, g, lam, 2 * p + 10,
                           iw, bw, fw, S, L, state):
                    warm_ok = True
                    _copy(fw[2], g)
                    break
        if warm_ok and line_k < 0:   # a new exact solve: its line for the next lambdas
            line_k = _line_setup(G, indptr, indices, order, c, vp, iw, bw, fw, S, L, state,
                                 lw, lidx)
        rsq = 0.0                               # explained share: b'(2c - G b) = b'(c + g)
        for j in range(p):
            rsq += beta[j] * (c[j] + g[j])
        _copy(beta, out[m])
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


@numba.njit(cache=True)
def _fit_path(n, sw, sx, sxx, sy, sxy, syy, vp, ju, intercept, standardize, lambdas, nlam,
              ratio, thresh, maxit):
    """glmnet's path from weighted moments (n rows): standardise (weighted SD; without an
    intercept x is not centred but scaled by its centred SD), coordinate descent on the Gram
    matrix, back to the original scale. `lambdas`: user values (decreasing) or empty for
    glmnet's own path; ratio <= 0: glmnet's lambda.min.ratio (1e-2 if n < p, else 1e-4).
    Returns (lambdas, a0, beta (p, m), dev_ratio, ok); ok = False if y has no variation."""
    p = sx.size
    xm = np.zeros(p)
    ym = 0.0
    if intercept:
        xm = sx / sw
        ym = sy / sw
    xs = np.ones(p)
    if standardize:
        for j in range(p):
            if ju[j]:
                mean = sx[j] / sw
                var = sxx[j, j] / sw - mean * mean
                xs[j] = np.sqrt(var)
            if not xs[j] > 0:
                xs[j] = 1.0
    G = np.empty((p, p))
    for a in range(p):
        for b in range(p):
            G[a, b] = (sxx[a, b] / sw - xm[a] * xm[b]) / (xs[a] * xs[b])
    c = (sxy / sw - xm * ym) / xs
    yvar = syy / sw - ym * ym
    ys = np.sqrt(yvar) if yvar > 0 else 0.0
    if not ys > 0:
        return np.zeros(0), np.zeros(0), np.zeros((p, 0)), np.zeros(0), False
    xv = np.empty(p)
    for j in range(p):
        xv[j] = G[j, j] if ju[j] else 1.0
    nnz = np.zeros(p + 1, np.int64)            # G's sparsity (site dummies) in CSC form
    for j in range(p):
        for r in range(p):
            if G[r, j] != 0.0:
                nnz[j + 1] += 1
    indptr = np.cumsum(nnz)
    indices = np.empty(indptr[p], np.int64)
    t = 0
    for j in range(p):
        for r in range(p):
            if G[r, j] != 0.0:
                indices[t] = r
                t += 1
    compute = lambdas.size == 0
    if ratio <= 0:
        ratio = 1e-2 if n < p else 1e-4
    B, lam, rsq = _cd_path(G, indptr, indices, c / ys, xv, vp, ju,
                           np.zeros(1) if compute else lambdas / ys, compute, ratio,
                           nlam if compute else lambdas.size, thresh, maxit)
    m = lam.size
    beta = np.empty((p, m))
    a0 = np.zeros(m)
    for l in range(m):
        for j in range(p):
            beta[j, l] = B[l, j] * ys / xs[j]
        if intercept:
            v = ym
            for j in range(p):
                v -= xm[j] * beta[j, l]
            a0[l] = v
    return lam * ys, a0, beta, rsq, True


@numba.njit(cache=True)
def _varies_k(sw, sx, sxx, ju):
    """ju & (weighted variance > 0): glmnet's exclusion of constant columns (all weights > 0)."""
    out = ju.copy()
    for j in range(sx.size):
        mean = sx[j] / sw
        second = sxx[j, j] / sw
        if not second - mean * mean > 1e-13 * max(second, 1e-300):
            out[j] = False
    return out


@numba.njit(cache=True)
def _fold_moments(D, codes, sign, J, y, w, fold, K):
    """Weighted moments of each fold's rows of [D | S] in one pass over the rows; S are signed
    site dummies (column c - 1 holds sign_i for the rows of site c > 0; none when J <= 1).
    Returns (rows, sw, sx, sxx, sy, sxy, syy), each with a leading fold axis."""
    n, k = D.shape
    q = J - 1 if J > 1 else 0
    p = k + q
    cnt = np.zeros(K, np.int64)
    sw = np.zeros(K)
    sx = np.zeros((K, p))
    sxx = np.zeros((K, p, p))
    sy = np.zeros(K)
    sxy = np.zeros((K, p))
    syy = np.zeros(K)
    for i in range(n):
        f = fold[i]
        wi = w[i]
        yi = y[i]
        cnt[f] += 1
        sw[f] += wi
        sy[f] += wi * yi
        syy[f] += wi * yi * yi
        for a in range(k):
            xa = wi * D[i, a]
            sx[f, a] += xa
            sxy[f, a] += xa * yi
            for b in range(a + 1):
                sxx[f, a, b] += xa * D[i, b]
        if q > 0 and codes[i] > 0:
            s = k + codes[i] - 1
            ws = wi * sign[i]
            sx[f, s] += ws
            sxy[f, s] += ws * yi
            sxx[f, s, s] += ws * sign[i]
            for a in range(k):
                sxx[f, s, a] += ws * D[i, a]
    for f in range(K):
        for a in range(p):
            for b in range(a):
                sxx[f, b, a] = sxx[f, a, b]
    return cnt, sw, sx, sxx, sy, sxy, syy


@numba.njit(cache=True)
def _interpolate(lam, a0, beta, s):
    """glmnet's lambda.interp: coefficients at the values s, linear in lambda between the
    knots lam (decreasing), constant beyond the ends."""
    m = lam.size
    p = beta.shape[0]
    a0s = np.empty(s.size)
    bs = np.empty((p, s.size))
    for t in range(s.size):
        if m == 1:
            a0s[t] = a0[0]
            for j in range(p):
                bs[j, t] = beta[j, 0]
            continue
        v = min(max(s[t], lam[m - 1]), lam[0])
        left = 0
        while left + 1 < m and lam[left + 1] >= v:
            left += 1
        right = min(left + 1, m - 1)
        span = lam[left] - lam[right]
        frac = (v - lam[right]) / span if span > 0 else 1.0
        a0s[t] = a0[left] * frac + a0[right] * (1 - frac)
        for j in range(p):
            bs[j, t] = beta[j, left] * frac + beta[j, right] * (1 - frac)
    return a0s, bs


@numba.njit(cache=True)
def _cv_errors(cnt, sw, sx, sxx, sy, sxy, syy, psw, psy, psyy, vp, intercept, standardize,
               lambdas, nlam, ratio, thresh, maxit, compute_full, full_lam):
    """cv.glmnet in one compiled call: the full-data path from the folds' summed moments (when
    `compute_full`; else the given lambdas `full_lam`), with glmnet's exclusion of constant
    columns, then each fold's held-out weighted MSE at those lambdas: each fold fits its own
    path on the other folds' moments (total minus its own) and is predicted at the full lambdas
    by lambda.interp; sum w (y - a0 - x'b)^2 = Syy - 2 a0 Sy - 2 b'Sxy + a0^2 Sw + 2 a0 b'Sx +
    b'Sxx b from the fold's moments (Sxx's non-zeros only: the site block is diagonal).
    psw, psy, psyy: numpy's sums of sw, sy, syy (pairwise from 8 folds on) for the full path,
    as the full path always had them; the folds' training parts subtract from sequential sums.
    Returns (lambdas, a0, beta, dev_ratio, mse (K, m), ok: 0, 1 = y constant, 2 = constant in
    a fold's training part)."""
    K = sw.size
    p = sx.shape[1]
    tsx = sx[0].copy()
    tsxy = sxy[0].copy()
    tsxx = sxx[0].copy()
    for f in range(1, K):
        tsx += sx[f]
        tsxy += sxy[f]
        tsxx += sxx[f]
    n = cnt.sum()
    ju = _varies_k(psw, tsx, tsxx, np.ones(p, np.bool_))
    full_a0, full_beta, full_rsq = np.zeros(0), np.zeros((p, 0)), np.zeros(0)
    if compute_full:
        full_lam, full_a0, full_beta, full_rsq, ok = _fit_path(
            n, psw, tsx, tsxx, psy, tsxy, psyy, vp, ju, intercept, standardize, lambdas, nlam,
            ratio, thresh, maxit)
        if not ok:
            return full_lam, full_a0, full_beta, full_rsq, np.zeros((K, 0)), 1
    m = full_lam.size
    mse = np.empty((K, m))
    ok_all = True
    tsw, tsy, tsyy = sw.sum(), sy.sum(), syy.sum()
    for f in range(K):
        trx = tsxx - sxx[f]
        trsx = tsx - sx[f]
        trsw = tsw - sw[f]
        juk = _varies_k(trsw, trsx, trx, ju)
        lam, a0, beta, rsq, ok = _fit_path(n - cnt[f], trsw, trsx, trx, tsy - sy[f],
                                           tsxy - sxy[f], tsyy - syy[f], vp, juk, intercept,
                                           standardize, lambdas, nlam, ratio, thresh, maxit)
        if not ok:
            ok_all = False
            break
        a, B = _interpolate(lam, a0, beta, full_lam)
        H = sxx[f]
        ptr = np.zeros(p + 1, np.int64)          # the fold's Sxx non-zeros, row by row
        for u in range(p):
            ptr[u + 1] = ptr[u] + np.count_nonzero(H[u])
        col = np.empty(ptr[p], np.int64)
        val = np.empty(ptr[p])
        t = 0
        for u in range(p):
            for v in range(p):
                if H[u, v] != 0.0:
                    col[t] = v
                    val[t] = H[u, v]
                    t += 1
        for l in range(m):
            quad = 0.0
            lin = 0.0
            for u in range(p):
                bu = B[u, l]
                if bu == 0.0:
                    continue
                lin += bu * (2 * a[l] * sx[f, u] - 2 * sxy[f, u])
                row = 0.0
                for t in range(ptr[u], ptr[u + 1]):
                    row += val[t] * B[col[t], l]
                quad += bu * row
            sse = syy[f] - 2 * a[l] * sy[f] + a[l] * a[l] * sw[f] + lin + quad
            mse[f, l] = max(sse, 0.0) / sw[f]
    return full_lam, full_a0, full_beta, full_rsq, mse, 0 if ok_all else 2


class SiteDummyDesign:
    """The design [D | S] of dense columns D (n x k) and signed site dummies S (n x (J-1)):
    S[i, c_i - 1] = s_i for rows of site c_i > 0 (the first site is the reference). Its
    weighted moments take O(n k^2) per-site sums instead of sparse products."""

    def __init__(self, dense, codes, sign, J: int):
        self.dense = np.asarray(dense, float)
        self.codes = writable(np.asarray(codes, np.int64))    # one compiled signature
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
        """Weighted moments from per-site sums in one compiled pass (`_fold_moments`, one fold)."""
        one = _fold_moments(np.ascontiguousarray(self.dense), self.codes, self.sign, self.J,
                            np.asarray(y, float), np.asarray(w, float),
                            np.zeros(self.codes.size, np.int64), 1)
        return Moments(*(a[0] for a in one[1:]))


def _matrix(X):
    if isinstance(X, SiteDummyDesign):
        return X
    return sp.csr_matrix(X, dtype=float) if sp.issparse(X) else np.asarray(X, float)


def _varies(M: "Moments") -> np.ndarray:
    """glmnet's exclusion of constant columns, from the weighted moments (all weights > 0)."""
    return _varies_k(float(M.sw), np.asarray(M.sx, float), np.asarray(M.sxx, float),
                     np.ones(np.size(M.sx), np.bool_))


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
        """(a0, beta) at the lambdas s by lambda.interp (`_interpolate`)."""
        return _interpolate(self.lambdas, self.a0, np.ascontiguousarray(self.beta),
                            np.atleast_1d(np.asarray(s, float)))


def _path_options(penalty_factor, p: int, lambdas, lambda_min_ratio):
    """glmnet's penalty factors rescaled to sum to p (checked), user lambdas in decreasing
    order (empty: glmnet's own path) and lambda.min.ratio (-1: glmnet's default)."""
    pf = np.ones(p) if penalty_factor is None else np.maximum(np.asarray(penalty_factor, float), 0)
    if pf.shape != (p,):
        raise ValueError(f"penalty_factor has length {pf.size}, expected {p}")
    total = pf.sum()
    if total <= 0:
        raise ValueError("at least one penalty factor must be positive")
    lam_user = (np.zeros(0) if lambdas is None
                else np.sort(np.asarray(lambdas, float))[::-1].copy())
    return pf * p / total, lam_user, -1.0 if lambda_min_ratio is None else float(lambda_min_ratio)


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
    _check_weights(w, n)
    vp, lam_user, ratio = _path_options(penalty_factor, p, lambdas, lambda_min_ratio)
    M = Moments.of(X, y, w) if moments is None else moments
    ju = _varies(M) if exclude is None else ~np.asarray(exclude, bool)
    lam, a0, beta, rsq, ok = _fit_path(
        n, float(M.sw), np.asarray(M.sx, float), np.ascontiguousarray(M.sxx, float), float(M.sy),
        np.asarray(M.sxy, float), float(M.syy), vp, ju, intercept, standardize, lam_user,
        int(nlambda), ratio, thresh, maxit)
    if not ok:
        raise ValueError("y has no variation (weighted)")
    return LassoPath(lam, a0, beta, rsq)


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
    return rng.permutation(np.arange(n) % nfolds + 1)      # = R's rep(1:K, length = n)


def cv_lasso(X, y, weights=None, penalty_factor=None, *, foldid=None, nfolds: int = 5,
             rng: np.random.Generator | None = None, intercept: bool = True,
             standardize: bool = True, thresh: float = 1e-16, path: LassoPath | None = None,
             nlambda: int = 100, lambda_min_ratio: float | None = None, lambdas=None,
             maxit: int = 100000) -> CVLasso:
    """cv.glmnet(type.measure = "mse", grouped = TRUE): weighted MSE per fold, averaged with the
    folds' weight sums; cvsd from the fold spread; lambda.min and lambda.1se as R picks them.
    Each fold fits its own path (its own lambda_max and early stop) on the moments of the other
    folds and is predicted at the full data's lambdas by interpolation; the full-data path and
    the folds' errors are one compiled call (`_cv_errors`).
    `path`: the full-data path of an earlier call on the same data (it does not depend on the
    folds), so a refit with new folds only redoes the folds (personalized's refit loop)."""
    X = _matrix(X)
    y = np.asarray(y, float)
    n, p = X.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    if foldid is None:          # a permutation of rep(1:K, length = n): every fold is present
        foldid = make_folds(n, nfolds, rng if rng is not None else np.random.default_rng())
        fold, K = foldid - 1, int(nfolds)
    else:
        foldid = np.asarray(foldid)
        folds, fold = np.unique(foldid, return_inverse=True)
        K = folds.size
    if path is None:
        _check_weights(w, n)
    held = _fold_moments_of(X, y, w, fold.astype(np.int64), K)
    vp, lam_user, ratio = _path_options(penalty_factor, p, lambdas, lambda_min_ratio)
    given = path.lambdas if path is not None else np.zeros(0)
    lam, a0, beta, rsq, fold_mse, ok = _cv_errors(
        *held, held[1].sum(), held[4].sum(), held[6].sum(), vp, intercept, standardize,
        lam_user, int(nlambda), ratio, thresh, maxit, path is None, given)
    if ok == 1:
        raise ValueError("y has no variation (weighted)")
    if ok == 2:
        raise ValueError("y has no variation (weighted) in a cross-validation fold's training part")
    full = path if path is not None else LassoPath(lam, a0, beta, rsq)
    fold_w = held[1]
    cvm = fold_w @ fold_mse / fold_w.sum()
    cvsd = np.sqrt((fold_w @ (fold_mse - cvm) ** 2) / fold_w.sum() / (K - 1))
    # lambda.min: the largest lambda (the path decreases: the first index) of the smallest cvm
    i_min = int(np.argmin(cvm))
    i_1se = int(np.argmax(cvm <= cvm[i_min] + cvsd[i_min]))
    return CVLasso(full, cvm, cvsd, foldid, i_min, i_1se)


def _check_weights(w: np.ndarray, n: int) -> None:
    """glmnet's weights: n positive finite numbers (a zero weight: drop the row instead)."""
    if w.shape == (n,) and w.min() > 0 and np.isfinite(w.sum()):
        return                                  # the common case, in two passes
    if w.shape != (n,) or not np.isfinite(w).all() or w.sum() <= 0 or (w < 0).any():
        raise ValueError("weights must be n non-negative finite numbers with a positive sum")
    if not w.all():
        raise ValueError("zero weights: drop those rows instead")


def _fold_moments_of(X, y, w, fold, K):
    """Per-fold moments (rows, sw, sx, sxx, sy, sxy, syy): one compiled pass for a dense design
    of a few columns or a SiteDummyDesign; per fold with BLAS / scipy.sparse otherwise."""
    if isinstance(X, SiteDummyDesign) or (isinstance(X, np.ndarray) and X.shape[1] <= 32):
        D, codes, sign, J = ((X.dense, X.codes, X.sign, X.J) if isinstance(X, SiteDummyDesign)
                             else (X, np.zeros(len(y), np.int64), np.ones(len(y)), 0))
        return _fold_moments(np.ascontiguousarray(D, float), codes, sign, J, y, w, fold, K)
    parts = [Moments.of(X[fold == f], y[fold == f], w[fold == f]) for f in range(K)]
    return (np.bincount(fold, minlength=K), *(np.array([getattr(m, a) for m in parts])
                                              for a in ("sw", "sx", "sxx", "sy", "sxy", "syy")))
