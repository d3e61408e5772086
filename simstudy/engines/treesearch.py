"""Exact depth-limited policy-tree search (Zhou, Athey & Wager 2023) with the mcf changes of
Bodory, Mascolo & Lechner (2024), SPEC section 5.

Given features X (n x p) and a score matrix Gamma (n x D, larger is better), find the tree of
depth <= L maximising sum_i Gamma_i(action of i's leaf), every leaf one action:

    R(node, 0) = max_d sum_{i in node} Gamma_id
    R(node, l) = max( R(node, 0), max_{j, s} R(left_js, l - 1) + R(right_js, l - 1) )

over every feature j and candidate split s leaving at least `min_leaf` rows on each side.
Depth-1 subproblems run compiled: one sorted pass with prefix sums per feature. Candidate
splits: every distinct value (A = None) or, as mcf, about A evaluation points at the level
above the leaves, A/2 one level up, A/4 ... (quantiles of the node's values). Unordered
categorical features split a SET of categories: categories ordered by their mean score of
the best action against the rest (Gamma_best - mean over the other actions; D = 2: Gamma_1 -
Gamma_0), then split like an ordered feature (no one-hot).
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


@numba.njit(cache=True)
def _best_depth1(xs_sorted, G_sorted, cand_mask, min_leaf):
    """Best single split of one feature: rows sorted by x; a split after position i is allowed
    where x changes, cand_mask[i] is set and both sides hold >= min_leaf rows.
    Returns (reward, split position, left action, right action); position -1 = no split."""
    n, D = G_sorted.shape
    total = np.zeros(D)
    for i in range(n):
        for d in range(D):
            total[d] += G_sorted[i, d]
    left = np.zeros(D)
    best, best_i, best_l, best_r = -np.inf, -1, 0, 0
    for i in range(n - 1):
        for d in range(D):
            left[d] += G_sorted[i, d]
        if i + 1 < min_leaf or n - i - 1 < min_leaf:
            continue
        if xs_sorted[i] == xs_sorted[i + 1] or not cand_mask[i]:
            continue
        bl, al = -np.inf, 0
        br, ar = -np.inf, 0
        for d in range(D):
            if left[d] > bl:
                bl, al = left[d], d
            if total[d] - left[d] > br:
                br, ar = total[d] - left[d], d
        if bl + br > best:
            best, best_i, best_l, best_r = bl + br, i, al, ar
    return best, best_i, best_l, best_r


class PolicyTreeSearch:
    """Exact search over the candidate splits (module docstring)."""

    def __init__(self, depth: int = 2, min_leaf: int = 1, split_points: int | None = None,
                 categorical=()):
        if not 1 <= int(depth) <= 4:
            raise ValueError(f"depth={depth}: allowed 1..4")
        if int(min_leaf) < 1:
            raise ValueError(f"min_leaf={min_leaf}: must be >= 1")
        if split_points is not None and int(split_points) < 2:
            raise ValueError(f"split_points={split_points}: None (every value) or >= 2")
        self.depth, self.min_leaf = int(depth), int(min_leaf)
        self.split_points = split_points
        self.categorical = set(categorical)

    def fit(self, X, Gamma) -> Node:
        X = np.asarray(X, float)
        G = np.asarray(Gamma, float)
        if X.ndim != 2 or G.ndim != 2 or len(X) != len(G):
            raise ValueError(f"X {X.shape} and Gamma {G.shape} must be 2-D with the same rows")
        if G.shape[1] < 2:
            raise ValueError("Gamma needs one column per action, at least 2")
        if not (np.all(np.isfinite(X)) and np.all(np.isfinite(G))):
            raise ValueError("X and Gamma must be finite")
        self.X_, self.G_ = X, G
        return self._best(np.arange(len(X)), self.depth)

    # ------------------------------------------------------------------ search
    def _leaf(self, rows) -> Node:
        sums = self.G_[rows].sum(0)
        a = int(np.argmax(sums))
        return Node(float(sums[a]), len(rows), action=a)

    def _candidates(self, level: int) -> int | None:
        """A at the level above the leaves (level 1), A/2 at level 2, A/4 ..."""
        if self.split_points is None:
            return None
        return max(2, int(self.split_points) // 2 ** (level - 1))

    def _ordered(self, rows, j):
        """(sorted x, sorted rows, category order or None) of feature j within the node."""
        x = self.X_[rows, j]
        if j in self.categorical:
            G = self.G_[rows]
            cats = np.unique(x)
            best = int(np.argmax(G.sum(0)))
            contrast = G[:, best] - (G.sum(1) - G[:, best]) / (G.shape[1] - 1)
            mean = np.array([contrast[x == c].mean() for c in cats])
            order = cats[np.argsort(-mean, kind="stable")]
            rank = np.empty(len(x))
            for r, c in enumerate(order):
                rank[x == c] = r
            idx = np.argsort(rank, kind="stable")
            return rank[idx], rows[idx], order
        idx = np.argsort(x, kind="stable")
        return x[idx], rows[idx], None

    def _mask(self, xs, level):
        n = len(xs)
        A = self._candidates(level)
        mask = np.ones(max(n - 1, 0), np.bool_)
        if A is None or n <= A:
            return mask
        # about A evaluation points: split positions at the node's quantiles
        pos = np.unique(np.linspace(0, n - 1, A + 2)[1:-1].astype(int))
        mask[:] = False
        mask[np.minimum(pos, n - 2)] = True
        return mask

    def _split_node(self, rows, j, pos, xs, srows, order, reward, left, right) -> Node:
        if order is not None:
            cats = tuple(order[: int(xs[pos]) + 1].tolist())
            return Node(reward, len(rows), feature=j, categories=cats, left=left, right=right)
        thr = float(xs[pos])
        return Node(reward, len(rows), feature=j, threshold=thr, left=left, right=right)

    def _best(self, rows, level) -> Node:
        leaf = self._leaf(rows)
        if level == 0 or len(rows) < 2 * self.min_leaf:
            return leaf
        best = leaf
        for j in range(self.X_.shape[1]):
            xs, srows, order = self._ordered(rows, j)
            mask = self._mask(xs, level)
            if level == 1:
                r, pos, al, ar = _best_depth1(xs, self.G_[srows], mask, self.min_leaf)
                if pos >= 0 and r > best.reward + 1e-12 * max(1.0, abs(r)):
                    lsum = self.G_[srows[:pos + 1]].sum(0)
                    left = Node(float(lsum[al]), pos + 1, action=int(al))
                    right = Node(float(r - lsum[al]), len(rows) - pos - 1, action=int(ar))
                    best = self._split_node(rows, j, pos, xs, srows, order, float(r), left, right)
                continue
            n = len(xs)
            for pos in range(self.min_leaf - 1, n - self.min_leaf):
                if xs[pos] == xs[pos + 1] or not mask[pos]:
                    continue
                left = self._best(srows[:pos + 1], level - 1)
                right = self._best(srows[pos + 1:], level - 1)
                r = left.reward + right.reward
                if r > best.reward + 1e-12 * max(1.0, abs(r)):
                    best = self._split_node(rows, j, pos, xs, srows, order, r, left, right)
        return best


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
