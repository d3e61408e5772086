"""Optimal policy tree as a registry method (docs/policy_tree.md; Bodory, Mascolo & Lechner 2024).

Doubly robust scores Gamma_i(t) = mu_t(X_i, j) + I(T_i = t)(Y_i - mu_t(X_i, j)) / P(T_i = t | j)
with mu_t from a cluster-aware outcome model (Y ~ X + T + T:X + site fixed effects) fitted by
K-fold cross-fitting and the site's treated share as propensity (or e(x, site) estimated:
propensity=estimated, engines.propensity); the tree maximises
sum_i Gamma_i(leaf action). Benefit score of a row: its leaf's mean of Gamma(1) - Gamma(0).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engines.groups import group_means
from ..engines.ols import crossfit_fixed_effects
from ..engines.propensity import KINDS as PROPENSITIES
from ..engines.treesearch import MAX_DEPTH, PolicyTreeSearch
from .qlearning import DEFAULT_COVARIATES, DEFAULT_MODERATORS
from .registry import FLAG, Method, choice, integer, register


def aipw_scores(X, T, y, codes, J, folds, p=None) -> np.ndarray:
    """(n, 2) cross-fitted AIPW scores with site fixed effects (`outcome_means`) and
    propensities p (default: the site treated shares)."""
    if p is None:
        p = group_means(T, codes, J)[:, 0][codes]
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("a site has everyone or no one treated; AIPW scores are undefined there")
    return aipw(outcome_means(X, T, y, codes, J, folds), T, y, p)


def outcome_means(X, T, y, codes, J, folds) -> np.ndarray:
    """(n, 2) mu_0, mu_1 of every row: mu_t(x, j) = alpha_j + (x, t, t x)'b from
    lm(y ~ X + T + T:X + factor(site)) on the rows outside the row's fold (a site absent there
    gets the mean intercept)."""
    fold = np.unique(folds, return_inverse=True)[1]
    B, A = crossfit_fixed_effects(np.column_stack([X, T, T[:, None] * X]), y, codes, J, fold)
    A = np.where(np.isnan(A), np.nanmean(A, axis=1, keepdims=True), A)
    k = X.shape[1]
    b = B[fold]                                               # each row's fold's slopes
    base = A[fold, codes] + np.einsum("ij,ij->i", X, b[:, :k])
    return np.column_stack([base, base + b[:, k] + np.einsum("ij,ij->i", X, b[:, k + 1:])])


def aipw(mu, T, y, p) -> np.ndarray:
    """(n, 2) doubly robust scores Gamma_i(t) = mu_t(x_i) + 1{T_i = t} (y_i - mu_t(x_i)) /
    P(T_i = t) from outcome predictions mu (n, 2) and propensities p (docs/policy_tree.md; Zhou et al.)."""
    G = mu.copy()
    G[:, 1] += T * (y - mu[:, 1]) / p
    G[:, 0] += (1 - T) * (y - mu[:, 0]) / (1 - p)
    return G


@register("PT", family="Policy tree", summary="optimal policy tree on cross-fitted doubly robust "
          "scores (Zhou et al. 2023; mcf, Bodory et al. 2024)")
class PolicyTree(Method):
    """Optimal policy tree on doubly robust scores (Zhou et al. 2023; mcf, Bodory et al. 2024)."""
    compile_cost = 18.0         # the tree search's kernels (CPU-s; registry.compile_seconds)
    OPTIONS = {"depth": integer(1, MAX_DEPTH), "min_leaf": integer(1, optional=True),
               "split_points": integer(2, optional=True), "crossfit_folds": integer(2),
               "site_feature": FLAG, "propensity": choice(*PROPENSITIES)}

    def __init__(self, depth: int = 2, features=DEFAULT_MODERATORS, covariates=DEFAULT_COVARIATES,
                 min_leaf: int | None = None, split_points: int | None = 100,
                 site_feature: bool = False, crossfit_folds: int = 5, propensity: str = "site",
                 **kw):
        super().__init__(**kw)
        self.propensity = propensity
        self.depth, self.features, self.covariates = depth, list(features), list(covariates)
        self.min_leaf, self.split_points, self.site_feature = min_leaf, split_points, site_feature
        self.crossfit_folds = crossfit_folds

    def _features(self, frame, labels):
        F = self._matrix(frame, self.features)
        if self.site_feature:
            code = pd.Series(np.arange(len(labels)), index=labels)
            F = np.column_stack([F, frame[self.site].map(code).fillna(-1).to_numpy(float)])
        return F

    def _scores(self, train: pd.DataFrame, codes: np.ndarray, J: int) -> np.ndarray:
        """(n, 2) doubly robust scores Gamma(0), Gamma(1) the tree is grown on (`aipw_scores`)."""
        rng = np.random.default_rng(self.random_state)
        folds = rng.permutation(np.arange(len(train)) % self.crossfit_folds)
        p = None if self.propensity == "site" else self._propensity(train, codes, J,
                                                                    self.propensity)
        return aipw_scores(self._matrix(train, self.covariates), self._column(train, self.treatment),
                           self._column(train, self.outcome), codes, J, folds, p)

    def fit(self, train: pd.DataFrame) -> "PolicyTree":
        self._require(train, dict.fromkeys([self.site, self.treatment, self.outcome]
                                           + self.covariates + self.features), "the training frame")
        labels, codes = self._sites(train)
        n = len(train)
        G = self._scores(train, codes, labels.size)
        min_leaf = self.min_leaf or max(1, int(0.1 * n / (2 * self.depth)))   # mcf's default
        F = self._features(train, labels)
        categorical = [F.shape[1] - 1] if self.site_feature else []
        self.tree_ = PolicyTreeSearch(self.depth, min_leaf, self.split_points, categorical).fit(F, G)
        self.labels_ = labels
        leaf = self.tree_.apply(F)
        contrast = G[:, 1] - G[:, 0]
        self.leaf_value_ = np.bincount(leaf, weights=contrast) / np.maximum(np.bincount(leaf), 1)
        self.scores_ = G
        return self

    @property
    def tree(self):
        """The fitted tree (engines.treesearch.PolicyTreeSearch: splits, leaves, actions)."""
        return self.tree_

    def rule_table(self, frame: pd.DataFrame, names, actions) -> pd.DataFrame:
        """One row per leaf of the fitted tree on `frame` (the training rows): its rule over the
        features (`names`), its action, its rows and its mean scores (treesearch.rules_table)."""
        from ..engines.treesearch import rules_table
        return rules_table(self.tree_, self._features(frame, self.labels_), self.scores_, names,
                           actions)

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        """The leaf's mean of Gamma(1) - Gamma(0) over the training rows in it."""
        self._require(frame, self.features, "the scored frame")
        return self.leaf_value_[self.tree_.apply(self._features(frame, self.labels_))]
