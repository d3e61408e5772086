"""Least-squares histogram gradient boosting, compiled (numba): the algorithm of scikit-learn's
HistGradientBoostingRegressor (loss='squared_error', no early stopping, no l2 penalty, no missing
values), whole fits in one call. Its per-iteration Python overhead dominated the ML family's
nuisances at a few hundred to a few thousand rows (issue 43); tests/test_boosting.py checks the
predictions against scikit-learn's on the same data.

Binning: per feature, the midpoints of the distinct values (<= max_bins of them) or the
"averaged_inverted_cdf" percentiles at 100 k / max_bins; a value goes to the bin of the first
threshold >= it. Boosting: raw_0 = mean(y); each iteration grows a tree on the gradients
g_i = raw_i - y_i (float32, as scikit-learn stores them), best-first (the leaf with the largest
gain splits next) up to max_leaf_nodes leaves, each child holding >= min_samples_leaf rows, with

    gain = G_L^2 / n_L + G_R^2 / n_R - G^2 / n    (the root: without the last term),

leaf value -lr G / (n + 1e-15); raw += the leaf's value.
"""
from __future__ import annotations

import numba
import numpy as np

ALMOST_INF = 1e300


def bin_thresholds(col: np.ndarray, max_bins: int = 255) -> np.ndarray:
    """scikit-learn's _find_binning_thresholds (no weights, no missing values)."""
    col = np.sort(col)
    distinct = np.unique(col)
    if distinct.size == 1:
        return np.empty(0)
    if distinct.size <= max_bins:
        out = (distinct[:-1] + distinct[1:]) / 2
    else:
        q = np.linspace(0, 100, num=max_bins + 1)[1:-1]
        out = np.unique(np.percentile(col, q, method="averaged_inverted_cdf"))
    return np.minimum(out, ALMOST_INF)


@numba.njit(cache=True)
def _best_split(hg, hc, nb, G, n, value, is_root, min_leaf, inv):
    """Best (gain, feature, bin, G_left, n_left) of a node from its histograms. inv[k] =
    1 / (k + 1e-15) screens the bins: the exact gain (two divisions) is computed only where the
    screened one is not below the best so far by more than its rounding."""
    loss = 0.0 if is_root else G * value
    best_gain, best_f, best_b, best_g, best_n = -1.0, -1, -1, 0.0, 0
    for f in range(hg.shape[0]):
        gl, nl = 0.0, 0
        fg, fb, fgl, fnl = -1.0, -1, 0.0, 0
        for b in range(nb[f] - 1):
            nl += hc[f, b]
            gl += hg[f, b]
            nr = n - nl
            if nl < min_leaf:
                continue
            if nr < min_leaf:
                break
            gr = G - gl
            s = gl * gl * inv[nl] + gr * gr * inv[nr]
            if loss + s * (1.0 + 1e-12) <= max(fg, 0.0):
                continue
            vl = -gl / (nl + 1e-15)
            vr = -gr / (nr + 1e-15)
            gain = loss - gl * vl - gr * vr
            if gain > fg and gain > 0.0:
                fg, fb, fgl, fnl = gain, b, gl, nl
        if fb >= 0 and fg > best_gain:
            best_gain, best_f, best_b, best_g, best_n = fg, f, fb, fgl, fnl
    return best_gain, best_f, best_b, best_g, best_n


@numba.njit(cache=True)
def _hist(B, g, idx, a, b, nbins, hg, hc):
    hg[:] = 0.0
    hc[:] = 0
    for q in range(a, b):
        i = idx[q]
        for f in range(B.shape[1]):
            c = B[i, f]
            hg[f, c] += g[i]
            hc[f, c] += 1


@numba.njit(cache=True)
def boost(B, y, nb, max_iter, lr, max_leaf_nodes, min_leaf):
    """Fit on bin codes B (n, p) uint8: (baseline, trees as (iter, nodes) arrays of feature,
    bin, left child (-1: leaf), value), and the fitted values raw (the same sums in the same
    order as predict_binned on B)."""
    n, p = B.shape
    nbins = 256
    M = 2 * max_leaf_nodes - 1
    feat = np.full((max_iter, M), -1, np.int64)
    thr = np.zeros((max_iter, M), np.int64)
    left = np.full((max_iter, M), -1, np.int64)
    val = np.zeros((max_iter, M))
    base = 0.0
    for i in range(n):
        base += y[i]
    base /= n
    raw = np.full(n, base)
    g = np.empty(n, np.float32)
    idx = np.empty(n, np.int64)
    tmp = np.empty(n, np.int64)
    hg = np.zeros((M, p, nbins))
    hc = np.zeros((M, p, nbins), np.int64)
    start, stop = np.empty(M, np.int64), np.empty(M, np.int64)
    G, cnt, value = np.empty(M), np.empty(M, np.int64), np.empty(M)
    s_gain, s_f, s_b = np.empty(M), np.empty(M, np.int64), np.empty(M, np.int64)
    s_g, s_n = np.empty(M), np.empty(M, np.int64)
    open_ = np.zeros(M, np.bool_)
    root_count = np.zeros((p, nbins), np.int64)
    for i in range(n):
        for f in range(p):
            root_count[f, B[i, f]] += 1
    inv = np.empty(n + 1)
    for k in range(n + 1):
        inv[k] = 1.0 / (k + 1e-15)
    for it in range(max_iter):
        for i in range(n):
            g[i] = np.float32(raw[i] - y[i])
            idx[i] = i
        hg[0] = 0.0                          # the root's counts are the same every time
        for i in range(n):
            for f in range(p):
                hg[0, f, B[i, f]] += g[i]
        hc[0] = root_count
        G0 = 0.0
        for b in range(nbins):
            G0 += hg[0, 0, b]
        start[0], stop[0], G[0], cnt[0], value[0] = 0, n, G0, n, 0.0
        count, leaves = 1, 0
        open_[:] = False
        if n >= 2 * min_leaf:
            s_gain[0], s_f[0], s_b[0], s_g[0], s_n[0] = _best_split(hg[0], hc[0], nb, G0, n, 0.0,
                                                                    True, min_leaf, inv)
            open_[0] = s_gain[0] > 0.0
        if not open_[0]:
            leaves = 1
        while True:
            node, best = -1, 0.0
            for k in range(count):
                if open_[k] and (node < 0 or s_gain[k] > best):
                    node, best = k, s_gain[k]
            if node < 0:
                break
            open_[node] = False
            a, b_, f, bb = start[node], stop[node], s_f[node], s_b[node]
            lo, hi = a, a
            for q in range(a, b_):                   # stable partition: left then right,
                i = idx[q]                           # branch-free (the left in place: lo <= q)
                go = np.int64(B[i, f] <= bb)
                idx[lo] = i
                tmp[hi] = i
                lo += go
                hi += 1 - go
            idx[lo:b_] = tmp[a:hi]
            L, R = count, count + 1
            count += 2
            feat[it, node], thr[it, node], left[it, node] = f, bb, L
            start[L], stop[L], start[R], stop[R] = a, lo, lo, b_
            G[L], cnt[L] = s_g[node], s_n[node]
            G[R], cnt[R] = G[node] - s_g[node], cnt[node] - s_n[node]
            value[L] = -G[L] / (cnt[L] + 1e-15)
            value[R] = -G[R] / (cnt[R] + 1e-15)
            n_open = 0
            for k in range(count):
                if open_[k]:
                    n_open += 1
            if leaves + n_open + 2 == max_leaf_nodes:
                open_[:] = False
                break
            split_l = cnt[L] >= 2 * min_leaf
            split_r = cnt[R] >= 2 * min_leaf
            if split_l or split_r:
                small, large = (L, R) if cnt[L] < cnt[R] else (R, L)
                _hist(B, g, idx, start[small], stop[small], nbins, hg[small], hc[small])
                hg[large] = hg[node] - hg[small]
                hc[large] = hc[node] - hc[small]
            for c, ok in ((L, split_l), (R, split_r)):
                if ok:
                    s_gain[c], s_f[c], s_b[c], s_g[c], s_n[c] = _best_split(
                        hg[c], hc[c], nb, G[c], cnt[c], value[c], False, min_leaf, inv)
                    open_[c] = s_gain[c] > 0.0
                if not open_[c]:
                    leaves += 1
        for k in range(count):                       # leaves: raw += lr * value
            if left[it, k] < 0:
                v = lr * value[k]
                val[it, k] = v
                for q in range(start[k], stop[k]):
                    raw[idx[q]] += v
    return base, feat, thr, left, val, raw


_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)   # lowest set bit -> its index (de Bruijn)
_BIT_INDEX = np.zeros(64, np.int64)
for _k in range(64):
    _BIT_INDEX[(((1 << _k) * int(_DEBRUIJN)) % 2 ** 64) >> 58] = _k


@numba.njit(cache=True)
def _leaf_masks(f_it, t_it, l_it, v_it, lut, leaf_val):
    """One tree as lookup tables (QuickScorer, Lucchese et al. 2015): its leaves numbered left to
    right; lut[f, b] has the bits of the leaves a row with bin b of feature f can still reach
    (going right at a node drops the node's left subtree). A row's leaf is the lowest bit of
    the AND of its p lookups. Fills leaf_val (value by leaf number)."""
    M = f_it.shape[0]
    n_leaves = np.zeros(M, np.int64)
    first = np.zeros(M, np.int64)
    reached = np.zeros(M, np.bool_)
    for k in range(M - 1, -1, -1):               # children come after their parent
        n_leaves[k] = 1 if l_it[k] < 0 else n_leaves[l_it[k]] + n_leaves[l_it[k] + 1]
    lut[:, :] = ~np.uint64(0)
    reached[0] = True
    for k in range(M):
        if not reached[k]:                       # a slot the tree did not use
            continue
        if l_it[k] < 0:
            leaf_val[first[k]] = v_it[k]
            continue
        L = l_it[k]
        reached[L] = reached[L + 1] = True
        first[L], first[L + 1] = first[k], first[k] + n_leaves[L]
        drop = ~(((np.uint64(1) << np.uint64(n_leaves[L])) - np.uint64(1))
                 << np.uint64(first[L]))
        for b in range(t_it[k] + 1, lut.shape[1]):
            lut[f_it[k], b] &= drop


@numba.njit(cache=True)
def _predict_lut(B, base, feat, thr, left, val, bit_index):
    n, p = B.shape
    out = np.full(n, base)
    lut = np.empty((p, 256), np.uint64)
    leaf_val = np.zeros(64)
    for it in range(feat.shape[0]):
        _leaf_masks(feat[it], thr[it], left[it], val[it], lut, leaf_val)
        for i in range(n):
            mask = lut[0, B[i, 0]]
            for f in range(1, p):
                mask &= lut[f, B[i, f]]
            low = mask & (~mask + np.uint64(1))
            out[i] += leaf_val[bit_index[(low * _DEBRUIJN) >> np.uint64(58)]]
    return out


@numba.njit(cache=True)
def _predict_walk(B, base, feat, thr, left, val):
    n = B.shape[0]
    out = np.full(n, base)
    for it in range(feat.shape[0]):
        for i in range(n):
            k = 0
            while left[it, k] >= 0:
                k = left[it, k] if B[i, feat[it, k]] <= thr[it, k] else left[it, k] + 1
            out[i] += val[it, k]
    return out


def predict_binned(B, base, feat, thr, left, val):
    """base + the sum over trees of the leaf value of each row of B (bin codes), tree by tree:
    by lookup tables when a tree has at most 64 leaves, else walking down."""
    if feat.shape[1] <= 2 * 64 - 1 and B.shape[1] > 0:
        return _predict_lut(B, base, feat, thr, left, val, _BIT_INDEX)
    return _predict_walk(B, base, feat, thr, left, val)


class Boosting:
    """HistGradientBoostingRegressor's least-squares fit, compiled (module docstring); the
    parameters keep scikit-learn's names."""

    def __init__(self, max_iter: int = 100, learning_rate: float = 0.1, max_leaf_nodes: int = 31,
                 min_samples_leaf: int = 20, max_bins: int = 255):
        self.max_iter, self.learning_rate = int(max_iter), float(learning_rate)
        self.max_leaf_nodes, self.min_samples_leaf = int(max_leaf_nodes), int(min_samples_leaf)
        self.max_bins = int(max_bins)

    def _bin(self, X) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        return np.column_stack([np.searchsorted(t, X[:, f], side="left")
                                for f, t in enumerate(self.thresholds_)]).astype(np.uint8)

    def fit(self, X, y) -> "Boosting":
        X = np.asarray(X, dtype=np.float64)
        self.thresholds_ = [bin_thresholds(X[:, f], self.max_bins) for f in range(X.shape[1])]
        nb = np.array([t.size + 1 for t in self.thresholds_], np.int64)
        B = np.ascontiguousarray(self._bin(X))
        *self.model_, self.fitted_ = boost(B, np.asarray(y, np.float64), nb, self.max_iter,
                                           self.learning_rate, self.max_leaf_nodes,
                                           self.min_samples_leaf)
        return self

    def predict(self, X) -> np.ndarray:
        return predict_binned(np.ascontiguousarray(self._bin(X)), *self.model_)
