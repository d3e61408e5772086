"""Exact depth-limited policy-tree search (Zhou, Athey & Wager 2023) with the mcf changes of
Bodory, Mascolo & Lechner (2024), SPEC section 5.

Given features X (n x p) and a score matrix Gamma (n x D, larger is better), find the tree of
depth <= L maximising sum_i Gamma_i(action of i's leaf), every leaf one action:

    R(node, 0) = max_d sum_{i in node} Gamma_id
    R(node, l) = max( R(node, 0), max_{j, s in S_l(j)} R(left_js, l - 1) + R(right_js, l - 1) )

over every feature j and candidate split s in the level's candidate set S_l(j), leaving at least
`min_leaf` rows on each side. Candidate splits (mcf's approximation): at the level above the
leaves (l = 1) about A thresholds per feature, at l = 2 A/2, at l = 3 A/4 ... -- order statistics
of the training values at evenly spaced ranks (so monotone transforms of a feature change
nothing); A = None means every distinct value (the exact search of policytree). Unordered
categorical features split a SET of categories: within the node the categories are ordered by
their mean contrast of the node's best action against the others (D = 2: Gamma_1 - Gamma_0)
and then split like an ordered feature (no one-hot).

The search is compiled (numba) and works on per-feature histograms of the scores over the
candidate bins: a depth-1 search of a node is one prefix-sum pass over p x B bins; a depth-2
search adds the node's rows bucket by bucket (in the order of the top feature) to left-hand
histograms and runs both children's depth-1 searches at every top candidate, so it costs
O(p (n p + B_2 p B_1) D) instead of re-sorting every child. Levels above 2 recurse over the
depth-2 kernel. Memory: the bin codes, O(n p) per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np


@dataclass
class Node:
    """A leaf (action set) or a split: x[feature] <= threshold (ordered) or x[feature] in
    categories (unordered) goes left."""
    reward: float
    n: int
    action: int | None = None
    feature: int | None = None
    threshold: float | None = None
    categories: tuple | None = None
    left: "Node | None" = None
    right: "Node | None" = None

    @property
    def is_leaf(self) -> bool:
        return self.left is None

    def goes_left(self, x: np.ndarray) -> np.ndarray:
        col = x[:, self.feature]
        if self.categories is not None:
            return np.isin(col, self.categories)
        return col <= self.threshold

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, float)
        out = np.empty(len(X), np.int64)
        self._fill(X, np.arange(len(X)), out)
        return out

    def apply(self, X: np.ndarray) -> np.ndarray:
        """Index of each row's leaf, in the order of `leaves()`."""
        X = np.asarray(X, float)
        out = np.empty(len(X), np.int64)
        self._fill(X, np.arange(len(X)), out, leaf_ids=iter(range(10 ** 6)))
        return out

    def _fill(self, X, rows, out, leaf_ids=None):
        if self.is_leaf:
            out[rows] = self.action if leaf_ids is None else next(leaf_ids)
            return
        left = self.goes_left(X[rows])
        self.left._fill(X, rows[left], out, leaf_ids)
        self.right._fill(X, rows[~left], out, leaf_ids)

    def leaves(self, path=()):
        if self.is_leaf:
            yield path, self
            return
        name = self.feature
        if self.categories is not None:
            yield from self.left.leaves(path + ((name, "in", self.categories),))
            yield from self.right.leaves(path + ((name, "not in", self.categories),))
        else:
            yield from self.left.leaves(path + ((name, "<=", self.threshold),))
            yield from self.right.leaves(path + ((name, ">", self.threshold),))


_TOL = 1e-12


@numba.njit(cache=True)
def _better(r, best):
    return r > best + _TOL * max(1.0, abs(r))


@numba.njit(cache=True)
def _cat_order(H, C, B, best):
    """Categories present in a node (H: (B, D) score sums, C: counts) ordered by decreasing
    mean contrast of action `best` against the mean of the other actions (stable)."""
    D = H.shape[1]
    m = 0
    for c in range(B):
        if C[c] > 0:
            m += 1
    keys = np.empty(m)
    cats = np.empty(m, np.int64)
    i = 0
    for c in range(B):
        if C[c] > 0:
            s = 0.0
            for d in range(D):
                s += H[c, d]
            contrast = (H[c, best] - (s - H[c, best]) / (D - 1)) / C[c]
            keys[i] = -contrast
            cats[i] = c
            i += 1
    return cats[np.argsort(keys, kind="mergesort")]


@numba.njit(cache=True)
def _argmax(v):
    a = 0
    for d in range(1, v.shape[0]):
        if v[d] > v[a]:
            a = d
    return a


@numba.njit(cache=True)
def _hist(rows, codes, nb, G):
    """Per-feature histograms of a node: H[k, b, d] = sum of Gamma_d over the node's rows in
    bin b of feature k, C[k, b] their count, and the node's totals."""
    p = codes.shape[0]
    D = G.shape[1]
    H = np.zeros((p, nb.max(), D))
    C = np.zeros((p, nb.max()), np.int64)
    tot = np.zeros(D)
    for r in rows:
        _add_row(H, C, tot, codes, G, r)
    return H, C, tot


@numba.njit(cache=True, inline="always")
def _add_row(H, C, tot, codes, G, r):
    """Add row r's scores to the node totals and to every feature's histogram bin."""
    D = G.shape[1]
    for d in range(D):
        tot[d] += G[r, d]
    for k in range(codes.shape[0]):
        b = codes[k, r]
        C[k, b] += 1
        for d in range(D):
            H[k, b, d] += G[r, d]


@numba.njit(cache=True)
def _best1(Ha, Ca, Hb, Cb, nb, iscat, tot, n, min_leaf):
    """Best tree of depth <= 1 from a node's histograms H = Ha - Hb, C = Ca - Cb (a right-hand
    child is node minus left; Hb = 0 otherwise): one prefix-sum pass per feature.
    Returns (reward, feature, cut) -- cut i: the first i + 1 bins of the feature's order go
    left (ordered: bins 0..i; categorical: the node's category order); feature -1 = a leaf."""
    p = Ha.shape[0]
    D = Ha.shape[2]
    abest = _argmax(tot)
    best, bk, bi = tot[abest], -1, -1
    left = np.empty(D)
    for k in range(p):
        if iscat[k]:
            order = _cat_order(Ha[k] - Hb[k], Ca[k] - Cb[k], nb[k], abest)
            m = order.shape[0]
        else:
            order = np.empty(0, np.int64)
            m = nb[k]
        left[:] = 0.0
        cl = 0
        for i in range(m - 1):
            b = order[i] if iscat[k] else i
            c = Ca[k, b] - Cb[k, b]
            if c == 0:
                continue
            for d in range(D):
                left[d] += Ha[k, b, d] - Hb[k, b, d]
            cl += c
            if cl < min_leaf:
                continue
            if n - cl < min_leaf:
                break
            bl, br = -np.inf, -np.inf
            for d in range(D):
                if left[d] > bl:
                    bl = left[d]
                if tot[d] - left[d] > br:
                    br = tot[d] - left[d]
            if _better(bl + br, best):
                best, bk, bi = bl + br, k, i
    return best, bk, bi


@numba.njit(cache=True)
def _spread(G):
    """max_d Gamma_rd - min_d Gamma_rd per row: moving row r from one child to the other raises
    the sum of the two children's best rewards by at most this much (the pruning bound)."""
    out = np.empty(G.shape[0])
    for r in range(G.shape[0]):
        lo, hi = G[r, 0], G[r, 0]
        for d in range(1, G.shape[1]):
            lo = min(lo, G[r, d])
            hi = max(hi, G[r, d])
        out[r] = hi - lo
    return out


@numba.njit(cache=True, parallel=True)
def _best2(rows, top, bot, nbt, nbb, iscat, G, min_leaf, spread, allow_prune):
    """Best tree of depth <= 2 of a node: for every top feature j (in parallel) the node's rows
    are added bucket by bucket (top bins in order) to left-hand histograms over the bottom bins,
    and at every top candidate both children's depth-1 searches run on histograms (right =
    node - left). Pruning (min_leaf = 1): after an exact evaluation R at a cut, moving rows from
    right to left raises R by at most the moved rows' `spread` (the children's optimal trees,
    restricted or extended to the new rows, stay feasible), so a cut whose bound R + sum(spread)
    cannot beat the feature's incumbent (or the unsplit node) is skipped: exact, and the same
    result (ties included). Returns (reward, feature, cut) as `_best1`; the same for any thread count."""
    p = top.shape[0]
    D = G.shape[1]
    m = rows.shape[0]
    Ht, Ct, tot = _hist(rows, bot, nbb, G)
    abest = _argmax(tot)
    leaf = tot[abest]
    prune = allow_prune and min_leaf == 1   # the bound needs restricted trees to stay feasible
    rj = np.full(p, -np.inf)
    ij = np.full(p, -1, np.int64)
    for j in numba.prange(p):
        B = nbt[j]
        if iscat[j]:                      # categorical: top bins = bottom bins = categories
            order = _cat_order(Ht[j], Ct[j], B, abest)
            mo = order.shape[0]
        else:
            order = np.empty(0, np.int64)
            mo = B
        start = np.zeros(B + 1, np.int64)  # counting sort of the rows by top bin
        for r in rows:
            start[top[j, r] + 1] += 1
        for b in range(B):
            start[b + 1] += start[b]
        fill = start[:-1].copy()
        srt = np.empty(m, np.int64)
        for r in rows:
            b = top[j, r]
            srt[fill[b]] = r
            fill[b] += 1
        HL = np.zeros_like(Ht)
        CL = np.zeros_like(Ct)
        Z = np.zeros_like(Ht)
        Zc = np.zeros_like(Ct)
        totL = np.zeros(D)
        totR = np.empty(D)
        nl = 0
        anchor, slack = np.inf, 0.0          # last exact reward, spread moved since then
        for i in range(mo - 1):
            b = order[i] if iscat[j] else i
            if start[b + 1] == start[b]:
                continue
            for q in range(start[b], start[b + 1]):
                _add_row(HL, CL, totL, bot, G, srt[q])
                slack += spread[srt[q]]
            nl += start[b + 1] - start[b]
            if nl < min_leaf:
                continue
            if m - nl < min_leaf:
                break
            incumbent = max(rj[j], leaf)
            if prune and anchor < np.inf and not _better(anchor + slack, incumbent):
                continue                      # cannot beat the incumbent: skip exactly
            for d in range(D):
                totR[d] = tot[d] - totL[d]
            r = (_best1(HL, CL, Z, Zc, nbb, iscat, totL, nl, min_leaf)[0]
                 + _best1(Ht, Ct, HL, CL, nbb, iscat, totR, m - nl, min_leaf)[0])
            anchor, slack = r, 0.0
            if _better(r, rj[j]):
                rj[j], ij[j] = r, i
    best, bj, bi = tot[abest], -1, -1
    for j in range(p):                    # merge in feature order: independent of threads
        if ij[j] >= 0 and _better(rj[j], best):
            best, bj, bi = rj[j], j, ij[j]
    return best, bj, bi


class PolicyTreeSearch:
    """Exact search over the candidate splits (module docstring)."""

    def __init__(self, depth: int = 2, min_leaf: int = 1, split_points: int | None = None,
                 categorical=(), halve_split_points: bool = True, prune: bool = True):
        if not 1 <= int(depth) <= 4:
            raise ValueError(f"depth={depth}: allowed 1..4")
        if int(min_leaf) < 1:
            raise ValueError(f"min_leaf={min_leaf}: must be >= 1")
        if split_points is not None and int(split_points) < 2:
            raise ValueError(f"split_points={split_points}: None (every value) or >= 2")
        self.depth, self.min_leaf = int(depth), int(min_leaf)
        self.split_points = None if split_points is None else int(split_points)
        self.categorical = set(int(c) for c in categorical)
        self.halve_split_points = bool(halve_split_points)
        self.prune = bool(prune)     # skip cuts the incremental bound rules out (min_leaf = 1)

    def fit(self, X, Gamma) -> Node:
        X = np.asarray(X, float)
        G = np.ascontiguousarray(Gamma, float)
        if X.ndim != 2 or G.ndim != 2 or len(X) != len(G):
            raise ValueError(f"X {X.shape} and Gamma {G.shape} must be 2-D with the same rows")
        if G.shape[1] < 2:
            raise ValueError("Gamma needs one column per action, at least 2")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(G))):
            raise ValueError("X and Gamma must be finite")
        bad = [c for c in self.categorical if not 0 <= c < X.shape[1]]
        if bad:
            raise ValueError(f"categorical feature index {bad} outside 0..{X.shape[1] - 1}")
        self.G_ = G
        self.spread_ = _spread(np.ascontiguousarray(G, dtype=np.float64))
        self._grids(X)
        return self._search(np.arange(len(X)), self.depth)

    # ------------------------------------------------------------------ candidates
    def _level_points(self, level: int) -> int | None:
        """A at the level above the leaves (level 1), A/2 at level 2, A/4 ... (the paper's
        approximation); A at every level with halve_split_points=False (mcf 0.9's code)."""
        if self.split_points is None:
            return None
        if not self.halve_split_points:
            return self.split_points
        return max(2, self.split_points // 2 ** (level - 1))

    def _grids(self, X):
        """Per level: thresholds of every ordered feature (x <= t goes left), the bin codes of
        the rows (number of thresholds below x; categorical: the category's index) and the
        number of bins."""
        n, p = X.shape
        self.iscat_ = np.array([j in self.categorical for j in range(p)])
        self.cats_ = {j: np.unique(X[:, j]) for j in self.categorical}
        self.thr_, self.codes_, self.nb_ = {}, {}, {}
        cache = {}
        for level in range(1, self.depth + 1):
            A = self._level_points(level)
            if A not in cache:
                thr, codes = [], np.empty((p, n), np.int64)
                for j in range(p):
                    x = X[:, j]
                    if self.iscat_[j]:
                        thr.append(self.cats_[j])
                        codes[j] = np.searchsorted(self.cats_[j], x)
                        continue
                    xs = np.sort(x)
                    u = np.unique(xs)
                    if A is None or len(u) - 1 <= A:
                        t = u[:-1]
                    else:                  # order statistics at A evenly spaced ranks (mcf)
                        half = n / A / 2
                        t = np.unique(xs[np.linspace(half, n - 1 - half, A).astype(np.int64)])
                        t = t[t < u[-1]]
                    thr.append(t)
                    codes[j] = np.searchsorted(t, x, side="left")
                nb = np.array([len(t) if self.iscat_[j] else len(t) + 1
                               for j, t in enumerate(thr)], np.int64)
                cache[A] = (thr, codes, nb)
            self.thr_[level], self.codes_[level], self.nb_[level] = cache[A]

    # ------------------------------------------------------------------ search
    def _order(self, rows, level, j):
        """The node's bins of feature j in split order and each row's position in it."""
        code = self.codes_[level][j, rows]
        if not self.iscat_[j]:
            return None, code
        K = self.nb_[level][j]
        G = self.G_[rows]
        H = np.stack([np.bincount(code, weights=G[:, d], minlength=K)
                      for d in range(G.shape[1])], axis=1)
        C = np.bincount(code, minlength=K)
        order = _cat_order(H, C, K, _argmax(G.sum(0)))
        pos = np.full(K, K, np.int64)
        pos[order] = np.arange(len(order))
        return order, pos[code]

    def _best(self, rows, level):
        """(reward, feature, cut) of the best tree of depth <= level on these rows."""
        if level == 0:
            tot = self.G_[rows].sum(0)
            return float(tot.max()), -1, -1
        if level == 1 or len(rows) < 2 * self.min_leaf:
            H, C, tot = _hist(rows, self.codes_[1], self.nb_[1], self.G_)
            if level == 1:
                return _best1(H, C, np.zeros_like(H), np.zeros_like(C), self.nb_[1],
                              self.iscat_, tot, len(rows), self.min_leaf)
            return float(tot.max()), -1, -1
        if level == 2:
            return _best2(rows, self.codes_[2], self.codes_[1], self.nb_[2], self.nb_[1],
                          self.iscat_, self.G_, self.min_leaf, self.spread_, self.prune)
        tot = self.G_[rows].sum(0)
        best, bj, bi = float(tot.max()), -1, -1
        m = len(rows)
        for j in range(len(self.iscat_)):
            _, pos = self._order(rows, level, j)
            idx = np.argsort(pos, kind="stable")
            srows, spos = rows[idx], pos[idx]
            cuts = np.flatnonzero(np.diff(spos)) + 1      # a cut after each present bin
            moved = np.r_[0.0, np.cumsum(self.spread_[srows])]   # the same bound as _best2
            anchor, at = np.inf, 0
            for c in cuts:
                if c < self.min_leaf:
                    continue
                if m - c < self.min_leaf:
                    break
                bound = anchor + (moved[c] - moved[at])
                if (self.prune and self.min_leaf == 1 and anchor < np.inf
                        and not bound > best + _TOL * max(1.0, abs(bound))):
                    continue
                r = (self._best(srows[:c], level - 1)[0]
                     + self._best(srows[c:], level - 1)[0])
                anchor, at = r, c
                if r > best + _TOL * max(1.0, abs(r)):
                    best, bj, bi = r, j, int(spos[c - 1])
        return best, bj, bi

    def _search(self, rows, level) -> Node:
        reward, j, i = self._best(rows, level)
        if j < 0:
            sums = self.G_[rows].sum(0)
            a = int(np.argmax(sums))
            return Node(float(sums[a]), len(rows), action=a)
        order, pos = self._order(rows, level, j)
        go = pos <= i
        left = self._search(rows[go], level - 1)
        right = self._search(rows[~go], level - 1)
        if order is None:
            return Node(float(reward), len(rows), feature=j, threshold=float(self.thr_[level][j][i]),
                        left=left, right=right)
        cats = tuple(self.cats_[j][np.sort(order[: i + 1])].tolist())
        return Node(float(reward), len(rows), feature=j, categories=cats, left=left, right=right)


# ---------------------------------------------------------------------- mcf extensions
def sequential_tree(X, Gamma, first: int, second: int, **search) -> Node:
    """Sequentially optimal tree "a+b" (mcf): an optimal depth-a tree, then an optimal depth-b
    tree inside each of its leaves (on the leaf's rows)."""
    X = np.asarray(X, float)
    G = np.asarray(Gamma, float)
    root = PolicyTreeSearch(first, **search).fit(X, G)
    leaf_of = root.apply(X)

    def graft(node: Node, counter=iter(range(10 ** 6))):
        if node.is_leaf:
            rows = np.flatnonzero(leaf_of == next(counter))
            if len(rows) == 0 or second == 0:
                return node
            return PolicyTreeSearch(second, **search).fit(X[rows], G[rows])
        node.left = graft(node.left, counter)
        node.right = graft(node.right, counter)
        node.reward = node.left.reward + node.right.reward
        return node
    return graft(root)


def constrained_tree(X, Gamma, depth: int, max_share, rounds: int = 30, **search):
    """Tree respecting maximum shares per treatment (mcf): costs c_d >= 0 are subtracted from the
    scores, Gamma_id - c_d, and raised by bisection (treatment by treatment, repeated) until
    every share on the training data is <= max_share[d]. Returns (tree, costs, shares)."""
    X = np.asarray(X, float)
    G = np.asarray(Gamma, float)
    D = G.shape[1]
    cap = np.asarray(max_share, float)
    if cap.shape != (D,) or np.any(cap <= 0) or np.any(cap > 1) or cap.sum() < 1:
        raise ValueError(f"max_share must give D = {D} shares in (0, 1] summing to >= 1")
    cost = np.zeros(D)

    def fit(c):
        tree = PolicyTreeSearch(depth, **search).fit(X, G - c)
        share = np.bincount(tree.predict(X), minlength=D) / len(X)
        return tree, share

    tree, share = fit(cost)
    span = np.abs(G).max() * 2 + 1.0
    for _ in range(3):
        for d in np.flatnonzero(share > cap + 1e-12):
            lo, hi = cost[d], cost[d] + span
            for _ in range(rounds):
                mid = (lo + hi) / 2
                c = cost.copy()
                c[d] = mid
                if fit(c)[1][d] <= cap[d] + 1e-12:
                    hi = mid
                else:
                    lo = mid
            cost[d] = hi
            tree, share = fit(cost)
        if np.all(share <= cap + 1e-12):
            break
    # the reported reward is on the original scores
    leaf_action = tree.predict(X)
    tree.reward = float(G[np.arange(len(G)), leaf_action].sum())
    return tree, cost, share


def rules_table(tree: Node, X, Gamma, feature_names=None, action_names=None):
    """One row per leaf (paper Appendix A.4): conditions, action, n, share, mean scores."""
    import pandas as pd
    X = np.asarray(X, float)
    G = np.asarray(Gamma, float)
    names = feature_names or [f"x{j}" for j in range(X.shape[1])]
    acts = action_names or list(range(G.shape[1]))
    leaf = tree.apply(X)
    rows = []
    for k, (path, node) in enumerate(tree.leaves()):
        conds = []
        for j, op, v in path:
            if op in ("in", "not in"):
                conds.append(f"{names[j]} {op} {{{', '.join(str(int(c)) if float(c).is_integer() else str(c) for c in v)}}}")
            else:
                conds.append(f"{names[j]} {op} {v:.4g}")
        idx = leaf == k
        row = {"leaf": k, "rule": " & ".join(conds) or "(all)", "action": acts[node.action],
               "n": int(idx.sum()), "share": float(idx.mean())}
        for d, a in enumerate(acts):
            row[f"mean_score_{a}"] = float(G[idx, d].mean()) if idx.any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def welfare_table(tree: Node, X, Gamma, observed, action_names=None):
    """Welfare (mean score of the allocation) and treatment shares for the observed, a random
    (observed shares, independent of X) and the tree allocation (paper Tables 1-3)."""
    import pandas as pd
    G = np.asarray(Gamma, float)
    D = G.shape[1]
    acts = action_names or list(range(D))
    obs = np.asarray(observed, int)
    share_obs = np.bincount(obs, minlength=D) / len(obs)
    tree_a = tree.predict(X)
    share_tree = np.bincount(tree_a, minlength=D) / len(tree_a)
    rows = [("observed", G[np.arange(len(G)), obs].mean(), share_obs),
            ("random", float(G.mean(0) @ share_obs), share_obs),
            ("tree", G[np.arange(len(G)), tree_a].mean(), share_tree)]
    return pd.DataFrame([{"policy": p, "welfare": w, **{f"share_{a}": s[d] for d, a in enumerate(acts)}}
                         for p, w, s in rows])
