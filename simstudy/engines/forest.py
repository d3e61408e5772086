"""Causal forest with site clusters (grf's algorithm; Athey, Tibshirani & Wager 2019, Section 6
with clusters as in grf's `causal_forest(..., clusters=)`) and the nuisance fits of the
machine-learning family (docs/estimators.md, "Machine-learning family").

Each tree: draw `sample_fraction` of the SITES without replacement, split the drawn sites in
half (honesty BY SITE), grow the splits on one half with grf's gradient ("het") criterion on the
centred data (w~ = T - e(site), y~ = Y - m(x, site)), and estimate on the other half. A
prediction averages over trees the estimation rows that share x's leaf (grf's forest weights
alpha_i(x)) and solves the local moment equation

    tau(x) = sum_i alpha_i(x) (w~_i - w~bar)(y~_i - y~bar) / sum_i alpha_i(x) (w~_i - w~bar)^2.

Out-of-bag (OOB) predictions for training rows use only the trees whose draw missed the row's
site, so nothing a row's site contributed is used to predict it.

The split search is econml's `GRFTree` (its Cython port of grf's tree, criterion 'het'); the
cluster subsampling, the honesty by site and the weighted estimate are here: econml's own
`CausalForest` subsamples and splits individuals, which would let a site's rows sit on both
sides of the honesty split (grf's clusters exist to prevent that).
"""
from __future__ import annotations

import numpy as np

ML_EXTRA = "pip install -e '.[ml]' (or pip install econml)"


def require_econml(who: str) -> None:
    """ImportError naming the extra to install when econml is missing."""
    try:
        import econml.grf  # noqa: F401
    except ImportError:
        raise ImportError(f"{who} needs the machine-learning extra: {ML_EXTRA}") from None


class ClusterCausalForest:
    """grf causal forest with clusters = sites (module docstring). Parameters follow grf's
    names: num_trees, sample_fraction (of sites), min_node_size, alpha (balance), mtry
    (features tried per split, None = grf's min(ceil(sqrt(p) + 20), p))."""

    def __init__(self, num_trees: int = 500, sample_fraction: float = 0.5,
                 min_node_size: int = 5, alpha: float = 0.05, mtry: int | None = None,
                 seed: int | None = None):
        self.num_trees, self.sample_fraction = int(num_trees), float(sample_fraction)
        self.min_node_size, self.alpha, self.mtry = int(min_node_size), float(alpha), mtry
        self.seed = seed

    def fit(self, X, w, y, codes, J: int) -> "ClusterCausalForest":
        """X (n, p); w, y the centred treatment and outcome; codes the site (0..J-1) of a row."""
        from econml.grf._base_grftree import GRFTree
        X = np.ascontiguousarray(X, dtype=np.float64)
        w = np.asarray(w, float)
        y = np.asarray(y, float)
        codes = np.asarray(codes)
        n, p = X.shape
        if J < 4:
            raise ValueError(f"a causal forest with site clusters needs at least 4 sites (has {J})")
        rng = np.random.default_rng(self.seed)
        mtry = self.mtry or min(int(np.ceil(np.sqrt(p) + 20)), p)
        # the local moment of grf's causal forest with an intercept: (y~ - tau w~ - c)(w~, 1)
        yaug = np.ascontiguousarray(np.column_stack(
            [y, y * w, y, w * w, w, w, np.ones(n)]), dtype=np.float64)
        by_site = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes, minlength=J))[:-1])
        n_draw = max(2, int(np.floor(self.sample_fraction * J)))
        self.trees_, self.est_, self.drawn_ = [], [], np.zeros((self.num_trees, J), bool)
        stats = np.column_stack([np.ones(n), w, y, w * y, w * w])
        self.leaf_stats_, self.offsets_ = [], []
        for b in range(self.num_trees):
            sites = rng.choice(J, n_draw, replace=False)
            self.drawn_[b, sites] = True
            half = n_draw // 2
            grow = np.concatenate([by_site[s] for s in sites[:half]])
            est = np.concatenate([by_site[s] for s in sites[half:]])
            tree = GRFTree(criterion="het", min_samples_leaf=self.min_node_size,
                           min_samples_split=2 * self.min_node_size, max_features=mtry,
                           min_balancedness_tol=0.5 - self.alpha, honest=False,
                           random_state=int(rng.integers(2 ** 31 - 1))).init()
            tree.fit(X[grow], yaug[grow], 1, 2, 1, check_input=False)
            leaf = tree.apply(X[est])
            size = tree.tree_.node_count
            count = np.bincount(leaf, minlength=size).astype(float)
            sums = np.vstack([np.bincount(leaf, weights=stats[est, k], minlength=size)
                              for k in range(stats.shape[1])]).T
            with np.errstate(invalid="ignore", divide="ignore"):
                self.leaf_stats_.append(sums / count[:, None])   # NaN: no estimation rows
            self.trees_.append(tree)
        return self

    def _moments(self, X, exclude_sites=None) -> np.ndarray:
        """(n, 5) forest-weighted means of (1, w~, y~, w~ y~, w~^2); a tree whose leaf holds no
        estimation row, or whose draw included the row's site (exclude_sites), is left out."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        total = np.zeros((X.shape[0], 5))
        used = np.zeros(X.shape[0])
        for b, tree in enumerate(self.trees_):
            m = self.leaf_stats_[b][tree.apply(X)]
            ok = ~np.isnan(m[:, 0])
            if exclude_sites is not None:
                ok &= ~self.drawn_[b, exclude_sites]
            total[ok] += m[ok]
            used += ok
        with np.errstate(invalid="ignore", divide="ignore"):
            return total / used[:, None]

    def predict(self, X, sites=None) -> np.ndarray:
        """tau(x) for new rows, or out-of-bag for training rows when their `sites` are given.
        A row no usable tree reaches gets the forest's average prediction."""
        M = self._moments(X, sites)
        cov = M[:, 3] - M[:, 1] * M[:, 2]
        var = M[:, 4] - M[:, 1] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = cov / var
        bad = ~np.isfinite(tau)
        if bad.all():
            raise ValueError("no tree of the causal forest reaches these rows; raise num_trees")
        tau[bad] = np.nanmean(tau[~bad])
        return tau


def boosting(seed, **kw):
    """The flexible nuisance regression: scikit-learn's histogram gradient boosting, with early
    stopping off (it would draw its own validation split) and a fixed seed."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    params = dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20,
                  early_stopping=False, random_state=seed)
    params.update(kw)
    return HistGradientBoostingRegressor(**params)


def site_folds(codes, J: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Fold (0..k-1) of each row, whole sites per fold (k <= J)."""
    k = min(int(k), J)
    of_site = rng.permutation(np.arange(J) % k)
    return of_site[codes]


def outcome_mean(X, y, codes, J: int, folds, seed) -> np.ndarray:
    """Cross-fitted m(x, site) = E[Y | x, site]: boosting on X fitted outside the row's fold, plus
    the site's mean residual over the site's rows outside the fold (row folds within sites)."""
    yhat = np.empty(len(y))
    for f in np.unique(folds):
        test = folds == f
        model = boosting(seed).fit(X[~test], y[~test])
        yhat[test] = model.predict(X[test])
        resid = y[~test] - model.predict(X[~test])
        s = np.bincount(codes[~test], weights=resid, minlength=J)
        c = np.bincount(codes[~test], minlength=J)
        site = np.divide(s, c, out=np.zeros(J), where=c > 0)
        yhat[test] += site[codes[test]]
    return yhat


def arm_means(X, T, y, folds, seed) -> np.ndarray:
    """(n, 2) cross-fitted mu_t(x) = E[Y | x, T = t]: one boosting fit per arm outside the row's
    fold (folds split by site: no row is predicted by a model that saw its site)."""
    mu = np.empty((len(y), 2))
    for f in np.unique(folds):
        test = folds == f
        for t in (0, 1):
            fit = ~test & (T == t)
            mu[test, t] = boosting(seed).fit(X[fit], y[fit]).predict(X[test])
    return mu


def cluster_ate(gamma, codes, J: int) -> tuple[float, float]:
    """Mean of doubly robust scores and its cluster-robust SE (grf's average_treatment_effect
    with clusters, units weighted equally): se^2 = J/(J-1) sum_j (sum_{i in j} (G_i - mean))^2 / n^2."""
    gamma = np.asarray(gamma, float)
    n = gamma.size
    est = gamma.mean()
    per_site = np.bincount(codes, weights=gamma - est, minlength=J)
    return float(est), float(np.sqrt(J / (J - 1) * np.sum(per_site ** 2)) / n)
