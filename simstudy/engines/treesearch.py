"""Exact depth-limited policy-tree search (Zhou, Athey & Wager 2023) with the mcf changes of
Bodory, Mascolo & Lechner (2024), docs/policy_tree.md.

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

The search itself is compiled: `treebound.py` (histograms, branch and bound, memo); this module
holds the trees, the candidate grids, the search's driver and the mcf extensions. Memory: the
bin codes, O(n p) per level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .treebound import _cat_order, _gather, _memo, _node1, root


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


MAX_DEPTH = 4        # the exact search's deepest tree (its cost grows as (n p)^depth)


class PolicyTreeSearch:
    """Exact search over the candidate splits (module docstring)."""

    def __init__(self, depth: int = 2, min_leaf: int = 1, split_points: int | None = None,
                 categorical=(), halve_split_points: bool = True, prune: bool = True):
        if not 1 <= int(depth) <= MAX_DEPTH:
            raise ValueError(f"depth={depth}: allowed 1..{MAX_DEPTH}")
        if int(min_leaf) < 1:
            raise ValueError(f"min_leaf={min_leaf}: must be >= 1")
        if split_points is not None and int(split_points) < 2:
            raise ValueError(f"split_points={split_points}: None (every value) or >= 2")
        self.depth, self.min_leaf = int(depth), int(min_leaf)
        self.split_points = None if split_points is None else int(split_points)
        self.categorical = set(int(c) for c in categorical)
        self.halve_split_points = bool(halve_split_points)
        self.prune = bool(prune)     # skip cuts and subtrees the bounds rule out

    def fit(self, X, Gamma) -> Node:
        X = np.asarray(X, float)
        G = np.ascontiguousarray(Gamma, float)
        if X.ndim != 2 or G.ndim != 2 or len(X) != len(G):
            raise ValueError(f"X {X.shape} and Gamma {G.shape} must be 2-D with the same rows")
        if G.shape[1] < 2:
            raise ValueError("Gamma needs one column per action, at least 2")
        if len(X) == 0 or X.shape[1] == 0:
            raise ValueError(f"X {X.shape} needs at least one row and one feature")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(G))):
            raise ValueError("X and Gamma must be finite")
        bad = [c for c in self.categorical if not 0 <= c < X.shape[1]]
        if bad:
            raise ValueError(f"categorical feature index {bad} outside 0..{X.shape[1] - 1}")
        self.X_, self.G_ = X, G
        self.keys_ = np.random.default_rng(20261123).integers(-2 ** 63, 2 ** 63 - 1, len(X))
        self._grids(X)
        return self._search(np.arange(len(X)), self.depth)

    # the subproblem memo is used when every feature has at most this many candidate bins
    # (discrete features: the same row sets recur along different paths)
    MEMO_BINS = 16

    # coarse grid (split points per feature) whose optimum seeds the exact search at each depth
    FLOOR_POINTS = {2: 256, 3: 64, 4: 32}

    def _floor(self, rows, level) -> float:
        """A reward some candidate tree reaches, from a quick search on a coarse grid (every
        grid threshold is a data value, so its tree is a candidate of the exact search): the
        exact search starts with it as incumbent and skips what cannot beat it."""
        A = self.FLOOR_POINTS.get(level)
        if not (self.prune and self.split_points is None and A and len(rows) > 4 * A
                and self.nbins_.max() > A + 1):      # else the coarse grid is the exact one
            return -np.inf
        coarse = PolicyTreeSearch(level, self.min_leaf, A, self.categorical,
                                  halve_split_points=False)
        coarse.X_, coarse.G_, coarse.keys_ = self.X_[rows], self.G_[rows], self.keys_[rows]
        coarse._grids(coarse.X_)
        return coarse._best(np.arange(len(rows)), level)[0]

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
        cache, sorted_ = {}, {}
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
                    if j not in sorted_:       # once per feature: order, sorted values, distinct
                        order = np.argsort(x)
                        xs = x[order]
                        sorted_[j] = order, xs, xs[np.r_[True, xs[1:] != xs[:-1]]]
                    order, xs, u = sorted_[j]
                    if A is None or len(u) - 1 <= A:
                        t = u[:-1]
                    else:                  # order statistics at A evenly spaced ranks (mcf)
                        half = n / A / 2
                        t = np.unique(xs[np.linspace(half, n - 1 - half, A).astype(np.int64)])
                        t = t[t < u[-1]]
                    thr.append(t)
                    codes[j, order] = np.searchsorted(t, xs, side="left")   # sorted keys: fast
                nb = np.array([len(t) if self.iscat_[j] else len(t) + 1
                               for j, t in enumerate(thr)], np.int64)
                cache[A] = (thr, codes, nb)
            self.thr_[level], self.codes_[level], self.nb_[level] = cache[A]
        levels = range(1, self.depth + 1)
        self.bins_ = np.stack([self.codes_[lev] for lev in levels])      # (depth, p, n)
        self.nbins_ = np.stack([self.nb_[lev] for lev in levels])
        # level l's shallower tree is one of its own candidates when the grids agree
        self.same_ = np.array([False, False] + [self._level_points(lev) == self._level_points(lev - 1)
                                                for lev in range(2, self.depth + 1)])

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
        order = _cat_order(H, C, K)
        pos = np.full(K, K, np.int64)
        pos[order] = np.arange(len(order))
        return order, pos[code]

    def _best(self, rows, level):
        """(reward, feature, cut) of the best tree of depth <= level on these rows; cut: the
        last bin (global code) going left, or for a categorical feature the last position in
        the node's category order."""
        if level == 0 or len(rows) < 2 * self.min_leaf:
            return float(self.G_[rows].sum(0).max()), -1, -1
        c, nb, g, z = _gather(self.bins_, self.nbins_, self.G_, self.keys_,
                              np.asarray(rows, np.int64), level, self.same_)
        use = bool(self.prune and self.nbins_.max() <= self.MEMO_BINS)
        memo = _memo(use)
        if level == 1:
            reward, j, i = _node1(c, nb, self.iscat_, g, self.min_leaf, -np.inf)
        else:
            args = (c, nb, self.iscat_, g, z, self.min_leaf, self.prune, self.same_,
                    self._floor(rows, level), memo, use)
            search = root(level, numba.get_num_threads())
            reward, j, i = search(*args) if level == 2 else search(level, *args)
        if j >= 0 and not self.iscat_[j]:
            i = int(np.unique(self.codes_[level][j, rows])[i])
        return float(reward), int(j), int(i)

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
    # a 0/1 feature split between its values reads as the tree figure draws it: = 0 / = 1
    binary = {j for j in range(X.shape[1]) if X.shape[0] and np.isin(X[:, j], (0.0, 1.0)).all()}
    rows = []
    for k, (path, node) in enumerate(tree.leaves()):
        conds = []
        for j, op, v in path:
            if op in ("in", "not in"):
                conds.append(f"{names[j]} {op} {{{', '.join(str(int(c)) if float(c).is_integer() else str(c) for c in v)}}}")
            elif j in binary and 0 <= v < 1 and op in ("<=", ">"):
                conds.append(f"{names[j]} = {0 if op == '<=' else 1}")
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
