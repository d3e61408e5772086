"""Causal forest with site clusters (grf's algorithm; Athey, Tibshirani & Wager 2019, Section 6
with clusters as in grf's `causal_forest(..., clusters=)`) and the nuisance fits of the
machine-learning family (docs/estimators.md, "Machine-learning family").

Trees grow on the centred data (w~ = T - e(site), y~ = Y - m(x, site)) with grf's own rules
(engines/grf.py: gradient relabelling, stabilised splits, alpha, imbalance penalty, Poisson
mtry, honesty and subsampling BY SITE, pruning of empty leaves, groups of trees sharing a
half-sample). A prediction averages over trees the estimation rows that share x's leaf (grf's
forest weights alpha_i(x)) and solves the local moment equation

    tau(x) = sum_i alpha_i(x) (w~_i - w~bar)(y~_i - y~bar) / sum_i alpha_i(x) (w~_i - w~bar)^2.

Out-of-bag (OOB) predictions for training rows use only the trees whose draw missed the row's
site, so nothing a row's site contributed is used to predict it.
"""
from __future__ import annotations

import numpy as np

from . import grf


class ClusterCausalForest:
    """grf causal forest with clusters = sites (module docstring). Parameters follow grf's
    names and defaults: num_trees, sample_fraction (of sites), min_node_size, alpha,
    imbalance_penalty, mtry (None = grf's min(ceil(sqrt(p) + 20), p)), ci_group_size."""

    def __init__(self, num_trees: int = 500, sample_fraction: float = 0.5,
                 min_node_size: int = 5, alpha: float = 0.05, mtry: int | None = None,
                 seed: int | None = None, imbalance_penalty: float = 0.0, ci_group_size: int = 2):
        self.num_trees, self.sample_fraction = int(num_trees), float(sample_fraction)
        self.min_node_size, self.alpha, self.mtry = int(min_node_size), float(alpha), mtry
        self.imbalance_penalty, self.ci_group_size = float(imbalance_penalty), int(ci_group_size)
        self.seed = seed

    def fit(self, X, w, y, codes, J: int) -> "ClusterCausalForest":
        """X (n, p); w, y the centred treatment and outcome; codes the site (0..J-1) of a row."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        w = np.ascontiguousarray(w, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.float64)
        codes = np.asarray(codes, dtype=np.int64)
        n, p = X.shape
        if J < 4:
            raise ValueError(f"a causal forest with site clusters needs at least 4 sites (has {J})")
        if self.ci_group_size > 1 and self.sample_fraction > 0.5:
            raise ValueError("sample_fraction must be at most 0.5 with ci_group_size > 1 (grf's rule)")
        mtry = self.mtry or min(int(np.ceil(np.sqrt(p) + 20)), p)
        order = np.ascontiguousarray(np.argsort(X, axis=0, kind="stable").T)
        site_rows = np.argsort(codes, kind="stable")
        site_start = np.r_[0, np.cumsum(np.bincount(codes, minlength=J))].astype(np.int64)
        seeds = np.random.SeedSequence(self.seed).generate_state(self.num_trees) % (2 ** 31 - 1)
        (self.feat_, self.thr_, self.child_, self.stats_, self.full_, self.root_, self.depth_,
         self.drawn_) = grf.grow_forest(X, w, y, order, site_start, site_rows, J,
                                        self.num_trees, self.ci_group_size, self.sample_fraction,
                                        float(mtry), self.min_node_size, self.alpha,
                                        self.imbalance_penalty, seeds.astype(np.int64))
        return self

    def _moments(self, X, exclude_sites=None) -> np.ndarray:
        """(n, 5) forest-weighted means of (1, w~, y~, w~ y~, w~^2); out of bag (only trees
        whose draw missed the row's site) when exclude_sites gives the rows' sites."""
        X = np.ascontiguousarray(X, dtype=np.float64)
        if np.isnan(X).any():                    # NaN goes right (x <= thr is false)
            X = np.where(np.isnan(X), np.inf, X)
        sites = (np.full(X.shape[0], -1, np.int64) if exclude_sites is None
                 else np.asarray(exclude_sites, np.int64))
        total, used = grf.forest_moments(X, sites, self.feat_, self.thr_, self.child_,
                                         self.stats_, self.root_, self.depth_, self.drawn_)
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


def boosting(seed=None, **kw):
    """The flexible nuisance regression: least-squares histogram gradient boosting with
    scikit-learn's HistGradientBoostingRegressor's algorithm and results (engines/boosting.py,
    compiled; early stopping off). `seed` is kept for the call sites: the fit draws nothing."""
    from .boosting import Boosting
    params = dict(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20)
    params.update(kw)
    return Boosting(**params)


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
        resid = y[~test] - model.fitted_            # = model.predict(X[~test]), bit for bit
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
