"""grf's causal-forest trees, compiled (numba): the split rule, honesty and pruning of grf's C++
core (grf-labs/grf, core/src: InstrumentalRelabelingStrategy, InstrumentalSplittingRule,
TreeTrainer, Tree::honesty_prune_leaves, ForestTrainer::train_ci_group) with clusters = sites.
The whole forest grows in one call; `engines.forest.ClusterCausalForest` drives it.

Per group of `ci_group_size` trees: draw floor(J / 2) sites (floor(J sample_fraction) when
ci_group_size = 1); each tree of the group subsamples ceil(size 2 sample_fraction) of them,
grows on ceil(half) of its sites and estimates on the rest (honesty by site).

Growing, at a node with rows i (z = w~ the centred treatment, y~ the centred outcome):
  relabel    tau_P = sum (z - zbar)(y - ybar) / sum (z - zbar)^2 (stop if the denominator is 0),
             rho_i = (z_i - zbar)((y_i - ybar) - tau_P (z_i - zbar));
  split      on the first k ~ min(max(Poisson(mtry), 1), p) of a shuffle of the features, the
             threshold maximising sum_L(rho)^2 / n_L + sum_R(rho)^2 / n_R
             - imbalance_penalty (1/s_L + 1/s_R), s = sum (z - zbar_child)^2, among splits with
             (stabilize.splits) at least min_node_size rows with z below the node's mean z and
             min_node_size above it in each child, and s_L, s_R >= alpha s_node;
  stop       when the node has <= min_node_size rows, or no split gains.
Estimation: the other half's rows are dropped down the tree; a leaf with none of them is pruned
(its parent is replaced by the sibling subtree, grf's honesty.prune.leaves), and each leaf keeps
the means of (1, w~, y~, w~ y~, w~^2) over its estimation rows.
"""
from __future__ import annotations

import numba
import numpy as np

_STATS = 5      # per-leaf means of (1, w, y, w y, w w)
_LANES = 16      # rows that go down a tree together (independent chains keep the core busy)


@numba.njit(cache=True)
def _ensure(a, need):
    if need <= a.shape[0]:
        return a
    out = np.empty((max(need, 2 * a.shape[0]),) + a.shape[1:], a.dtype)
    out[:a.shape[0]] = a
    return out


@numba.njit(cache=True)
def _grow(Xl, wl, yl, m, mtry, min_node_size, alpha, penalty,
          S, tmp, P, goes, t_feat, t_thr, t_left, t_start, t_end):
    """Grow one tree on m rows: Xl (p, m) their features (a copy, by feature), wl, yl their
    centred treatment and outcome, S[f, :m] the rows sorted by feature f. Returns the node
    count; nodes in t_* (t_left = -1 for a leaf; children are consecutive)."""
    p = Xl.shape[0]
    feats = np.arange(p)
    count = 1
    t_start[0], t_end[0] = 0, m
    i = 0
    while i < count:
        t_left[i] = -1
        a, b = t_start[i], t_end[i]
        size = b - a
        if size <= min_node_size:
            i += 1
            continue
        seg = S[0, a:b]
        zbar, ybar = 0.0, 0.0
        for r in seg:
            zbar += wl[r]
            ybar += yl[r]
        zbar /= size
        ybar /= size
        num, den = 0.0, 0.0
        for r in seg:
            num += (wl[r] - zbar) * (yl[r] - ybar)
            den += (wl[r] - zbar) * (wl[r] - zbar)
        if abs(den) < 1e-10:
            i += 1
            continue
        tau = num / den
        if size < 4 * min_node_size:             # no split can hold min_node_size of each
            k = min(max(np.random.poisson(mtry), 1), p)    # kind in both children: a leaf,
            for j in range(k):                   # after the draws a search would make
                s = j + np.random.randint(p - j)
                feats[j], feats[s] = feats[s], feats[j]
            i += 1
            continue
        sum_node, sz, szz, n_small = 0.0, 0.0, 0.0, 0.0
        for r in seg:                            # P[r] = (rho, z, z^2, z < zbar): one line
            z = wl[r]
            rho = (z - zbar) * ((yl[r] - ybar) - tau * (z - zbar))
            P[r, 0] = rho
            P[r, 1] = z
            P[r, 2] = z * z
            P[r, 3] = 1.0 if z < zbar else 0.0
            sum_node += rho
            sz += z
            szz += z * z
            n_small += P[r, 3]
        min_child = alpha * (szz - sz * sz / size)
        k = min(max(np.random.poisson(mtry), 1), p)
        for j in range(k):                       # the first k of a shuffle of the features
            s = j + np.random.randint(p - j)
            feats[j], feats[s] = feats[s], feats[j]
        best, best_f, best_v = 0.0, -1, 0.0
        for j in range(k):
            f = feats[j]
            col = S[f]
            xf = Xl[f]
            nl, nl_small, sl, zl, zzl = 0, 0.0, 0.0, 0.0, 0.0
            x_next = xf[col[a]]
            for q in range(a, b - 1):
                r = col[q]
                nl += 1
                sl += P[r, 0]
                zl += P[r, 1]
                zzl += P[r, 2]
                nl_small += P[r, 3]           # branch-free: z < zbar is a coin flip
                x = x_next
                x_next = xf[col[q + 1]]
                if x == x_next:
                    continue
                if nl_small < min_node_size or nl - nl_small < min_node_size:
                    continue
                nr = size - nl
                nr_small = n_small - nl_small
                if nr_small < min_node_size or nr - nr_small < min_node_size:
                    break
                sr = sum_node - sl
                gain = sl * sl / nl + sr * sr / nr
                if gain <= best:                 # the penalty only lowers it: s_L, s_R are
                    continue                     # needed for a new best only
                s_l = zzl - zl * zl / nl
                if s_l < min_child or s_l == 0.0:     # (0: grf's gain is NaN or -inf)
                    continue
                zr = sz - zl
                s_r = (szz - zzl) - zr * zr / nr
                if s_r < min_child or s_r == 0.0:
                    continue
                gain -= penalty * (1.0 / s_l + 1.0 / s_r)
                if gain > best:
                    best, best_f, best_v = gain, f, x
        if best_f < 0:
            i += 1
            continue
        nl = 0
        xf = Xl[best_f]
        for r in seg:
            goes[r] = xf[r] <= best_v
            nl += goes[r]
        n_sorted = p if max(nl, size - nl) >= 4 * min_node_size else 1   # leaves need 1
        for f in range(n_sorted):                # stable partition of every sorted list,
            col = S[f]                           # branch-free: write to both, advance one;
            lo, hi = a, 0                        # the left rows in place (lo <= q)
            for q in range(a, b):
                r = col[q]
                g = np.int64(goes[r])
                col[lo] = r
                tmp[hi] = r
                lo += g
                hi += 1 - g
            col[a + nl:b] = tmp[:size - nl]
        t_feat[i], t_thr[i], t_left[i] = best_f, best_v, count
        t_start[count], t_end[count] = a, a + nl
        t_start[count + 1], t_end[count + 1] = a + nl, b
        count += 2
        i += 1
    return count


@numba.njit(cache=True)
def grow_forest(X, w, y, order, site_start, site_rows, J, num_trees, group_size, sample_fraction,
                mtry, min_node_size, alpha, penalty, seeds):
    """The forest: node arrays (feature, threshold, left child: the right one is next to it; a
    leaf is its own child with threshold +inf, so is a pruned node whose child is the non-empty
    one), leaf means (nodes, 5), non-empty flags, each tree's root and depth, and the sites each
    tree drew (trees, J)."""
    n, p = X.shape
    cap = 64 * num_trees
    feat = np.empty(cap, np.int32)
    thr = np.empty(cap)
    child = np.empty(cap, np.int64)
    height = np.empty(cap, np.int64)
    stats = np.zeros((cap, _STATS))
    full = np.zeros(cap, np.bool_)
    root = np.empty(num_trees, np.int64)
    depth = np.empty(num_trees, np.int64)
    drawn = np.zeros((num_trees, J), np.bool_)
    S = np.empty((p, n + 1), np.int32)   # +1: the dead write
    tmp = np.empty(n + 1, np.int32)      # +1: the dead write
    pos = np.full(n, -1, np.int32)
    P, goes = np.empty((n, 4)), np.zeros(n, np.uint8)
    Xl, wl, yl = np.empty((p, n)), np.empty(n), np.empty(n)
    t_feat, t_thr = np.empty(2 * n + 1, np.int32), np.empty(2 * n + 1)
    t_left, t_start, t_end = (np.empty(2 * n + 1, np.int64), np.empty(2 * n + 1, np.int64),
                              np.empty(2 * n + 1, np.int64))
    if group_size > 1:
        n_group = max(2, J // 2)
        n_tree = min(n_group, max(2, int(np.ceil(n_group * sample_fraction * 2))))
    else:
        n_group = max(2, int(J * sample_fraction))
        n_tree = n_group
    used = 0
    group = np.empty(n_group, np.int64)
    for b in range(num_trees):
        np.random.seed(seeds[b])
        if b % group_size == 0:
            group[:] = np.random.permutation(J)[:n_group]
        sites = group[np.random.permutation(n_group)[:n_tree]]
        n_grow = (n_tree + 1) // 2
        m = 0
        for s_i in range(n_tree):
            s = sites[s_i]
            drawn[b, s] = True
            if s_i < n_grow:
                for q in range(site_start[s], site_start[s + 1]):
                    r = site_rows[q]
                    pos[r] = m
                    wl[m], yl[m] = w[r], y[r]
                    for f in range(p):
                        Xl[f, m] = X[r, f]
                    m += 1
        for f in range(p):      # the growing rows sorted by each feature, from the global order
            k = 0
            for r in order[f]:                   # branch-free: a row is in or out by chance
                q = pos[r]
                S[f, k] = q
                k += q >= 0
        count = _grow(Xl, wl, yl, m, mtry, min_node_size, alpha, penalty,
                      S, tmp, P, goes, t_feat, t_thr, t_left, t_start, t_end)
        for s_i in range(n_grow):                # reset the growing flags
            s = sites[s_i]
            for q in range(site_start[s], site_start[s + 1]):
                pos[site_rows[q]] = -1
        need = used + count
        if need > feat.shape[0]:
            feat, thr, child = _ensure(feat, need), _ensure(thr, need), _ensure(child, need)
            height = _ensure(height, need)
            stats, full = _ensure(stats, need), _ensure(full, need)
        stats[used:need] = 0.0
        # honest estimation: the other half's rows, each down to its leaf
        for s_i in range(n_grow, n_tree):
            s = sites[s_i]
            for q in range(site_start[s], site_start[s + 1]):
                r = site_rows[q]
                node = 0
                while t_left[node] >= 0:
                    node = t_left[node] if X[r, t_feat[node]] <= t_thr[node] else t_left[node] + 1
                st = stats[used + node]
                st[0] += 1.0
                st[1] += w[r]
                st[2] += y[r]
                st[3] += w[r] * y[r]
                st[4] += w[r] * w[r]
        for node in range(count - 1, -1, -1):    # children after parents: bottom-up
            g = used + node
            lc = used + t_left[node]
            if t_left[node] < 0:                 # a leaf loops on itself
                feat[g], thr[g], child[g], height[g] = 0, np.inf, g, 0
                full[g] = stats[g, 0] > 0
                if full[g]:
                    c = stats[g, 0]
                    for k in range(_STATS):
                        stats[g, k] /= c
            elif full[lc] and full[lc + 1]:
                feat[g], thr[g], child[g] = t_feat[node], t_thr[node], lc
                height[g] = 1 + max(height[lc], height[lc + 1])
                full[g] = True
            else:                                # pruned: always on to the non-empty child
                keep = lc if full[lc] else lc + 1
                feat[g], thr[g], child[g], height[g] = 0, np.inf, keep, 1 + height[keep]
                full[g] = full[keep]
        root[b] = used
        depth[b] = height[used]
        used = need
    return feat[:used], thr[:used], child[:used], stats[:used], full[:used], root, depth, drawn




@numba.njit(cache=True)
def forest_moments(X, sites, feat, thr, child, stats, root, depth, drawn):
    """(n, 5) forest-weighted means of (1, w~, y~, w~ y~, w~^2) at each row of X and the number
    of trees used; with sites[i] >= 0 only trees whose draw missed that site (out of bag).
    Branch-free descent: node <- child + (x > thr) for depth[b] steps (a leaf loops on itself
    and a pruned node always goes on to its non-empty child: thr = +inf); X's NaN must be +inf
    (the right branch, as x <= thr is false). Trees in the outer loop: one tree's nodes stay in
    cache while every row goes down it, _LANES rows at a time."""
    n = X.shape[0]
    total = np.zeros((n, _STATS))
    used = np.zeros(n)
    nodes = np.empty(_LANES, np.int64)
    rows = np.arange(n)
    for b in range(root.shape[0]):
        m = 0                                    # the rows tree b may predict
        for i in range(n):
            rows[m] = i
            m += sites[i] < 0 or not drawn[b, sites[i]]
        for i0 in range(0, m, _LANES):
            lanes = min(_LANES, m - i0)
            for k in range(lanes):
                nodes[k] = root[b]
            for _ in range(depth[b]):
                for k in range(lanes):
                    nd = nodes[k]
                    nodes[k] = child[nd] + (X[rows[i0 + k], feat[nd]] > thr[nd])
            for k in range(lanes):
                i = rows[i0 + k]
                st = stats[nodes[k]]
                for s in range(_STATS):
                    total[i, s] += st[s]
                used[i] += 1.0
    return total, used
