"""The machine-learning family (docs/estimators.md, "Machine-learning family"; issue 24): a causal
forest with site clusters (CF), a DR-learner with site-split cross-fitting (DR) and the policy
tree grown on the forest's doubly robust scores (PT-CF, the policytree / mcf pipeline).
The forest is simstudy's own compiled port of grf's trees (engines/grf.py); the boosting is
scikit-learn's: the family needs nothing beyond the core install.

Nuisances (all cross-fitted but e): e(site) = the site's treated share (randomisation within
sites), or e(x, site) by logistic regression (propensity=estimated, engines.propensity);
m(x, site) = E[Y | x, site] by gradient boosting plus the site's out-of-fold mean residual;
mu_t(x) = E[Y | x, T = t] by gradient boosting, folds of whole sites.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engines import forest as F
from ..engines.propensity import KINDS as PROPENSITIES
from .policytree import PolicyTree, aipw
from .qlearning import DEFAULT_COVARIATES
from .registry import Method, _read, choice, integer, number, register

ML = "Machine learning"


def _seeds(random_state) -> tuple[int, int, int]:
    """(folds seed, forest seed, boosting seed) drawn from the method's random_state."""
    a, b = np.random.SeedSequence(random_state).generate_state(2)
    return int(a), int(b), int(b) % (2 ** 31)


class _Forest(Method):
    """A causal forest with clusters = sites (engines.forest.ClusterCausalForest) fitted on the
    centred data (T - e(site), Y - m(x, site)); CF and PT-CF share it (one seed stream, one fit
    per replicate)."""
    seed_name = "causal forest"
    OPTIONS = {"num_trees": integer(10), "min_node_size": integer(1),
               "sample_fraction": number(0.0, 0.5), "crossfit_folds": integer(2),
               "propensity": choice(*PROPENSITIES)}

    def __init__(self, covariates=DEFAULT_COVARIATES, num_trees: int = 500,
                 min_node_size: int = 5, sample_fraction: float = 0.5, crossfit_folds: int = 5,
                 propensity: str = "site", **kw):
        super().__init__(**kw)
        self.propensity = propensity
        self.covariates, self.num_trees = list(covariates), num_trees
        self.min_node_size, self.sample_fraction = min_node_size, sample_fraction
        self.crossfit_folds = crossfit_folds

    def _key(self) -> tuple:
        return (self.site, self.treatment, self.outcome, tuple(self.covariates), self.num_trees,
                self.min_node_size, self.sample_fraction, self.crossfit_folds, self.propensity,
                self.random_state)

    def _forest(self, train: pd.DataFrame):
        """(forest, m, e) on the training rows, computed once per frame and options."""
        self._require(train, dict.fromkeys([self.site, self.treatment, self.outcome]
                                           + self.covariates), "the training frame")
        return _read(train, ("causal forest",) + self._key(), lambda: self._fit_forest(train))

    def _oob(self, train: pd.DataFrame):
        """(OOB tau, m, e): the forest's out-of-bag CATE of the training rows (only trees whose
        draw missed the row's site), computed once, and only for the rules that use it."""
        def compute():
            forest, m, e = self._forest(train)
            X = self._matrix(train, self.covariates)
            return forest.predict(X, self._sites(train)[1]), m, e
        return _read(train, ("causal forest OOB",) + self._key(), compute)

    def _fit_forest(self, train):
        labels, codes = self._sites(train)
        J = labels.size
        X = self._matrix(train, self.covariates)
        T, y = self._column(train, self.treatment), self._column(train, self.outcome)
        fold_seed, forest_seed, boost_seed = _seeds(self.random_state)
        rng = np.random.default_rng(fold_seed)
        e = self._propensity(train, codes, J, self.propensity)
        folds = rng.permutation(np.arange(len(y)) % self.crossfit_folds)
        m = F.outcome_mean(X, y, codes, J, folds, boost_seed)
        forest = F.ClusterCausalForest(self.num_trees, self.sample_fraction, self.min_node_size,
                                       seed=forest_seed).fit(X, T - e, y - m, codes, J)
        return forest, m, e


@register("CF", family=ML, summary="causal forest with site clusters (grf): honest trees on half "
          "the sites each; f(x) = its CATE tau(x)")
class CausalForest(_Forest):
    """f(x) = tau(x), the CATE of a causal forest with site clusters (grf; Athey, Tibshirani &
    Wager 2019): honest trees on half the sites each, split by site."""

    def fit(self, train: pd.DataFrame) -> "CausalForest":
        self.forest_ = self._forest(train)[0]
        return self

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        self._require(frame, self.covariates, "the scored frame")
        return self.forest_.predict(self._matrix(frame, self.covariates))


@register("PT-CF", family=ML, summary="optimal policy tree on the causal forest's doubly robust "
          "scores (policytree, mcf)")
class PolicyTreeCF(PolicyTree, _Forest):
    """Optimal policy tree on the causal forest's doubly robust scores (policytree's
    double_robust_scores(causal_forest); mcf's forest-based scores, Bodory et al. 2024):
    Gamma_i(t) = mu_t(x_i) + 1{T_i = t}(Y_i - mu_t(x_i)) / P(T_i = t), with
    mu_0 = m - e tau, mu_1 = m + (1 - e) tau and tau out of bag. Tree options as PT's."""
    OPTIONS = {**PolicyTree.OPTIONS, **_Forest.OPTIONS}

    def __init__(self, depth: int = 2, features=DEFAULT_COVARIATES, covariates=DEFAULT_COVARIATES,
                 min_leaf: int | None = None, split_points: int | None = 100,
                 site_feature: bool = False, num_trees: int = 500, min_node_size: int = 5,
                 sample_fraction: float = 0.5, crossfit_folds: int = 5, propensity: str = "site",
                 **kw):
        PolicyTree.__init__(self, depth, features, covariates, min_leaf, split_points,
                            site_feature, crossfit_folds, propensity, **kw)
        self.num_trees, self.min_node_size = num_trees, min_node_size
        self.sample_fraction = sample_fraction

    def _scores(self, train, codes, J):
        tau, m, e = self._oob(train)
        mu = np.column_stack([m - e * tau, m + (1 - e) * tau])
        return aipw(mu, self._column(train, self.treatment), self._column(train, self.outcome), e)


@register("DR", family=ML, summary="DR-learner (Kennedy 2023): boosted pseudo-outcomes cross-fitted "
          "over folds of sites")
class DRLearner(Method):
    """DR-learner (Kennedy 2023): cross-fitted pseudo-outcomes
    phi_i = mu_1(x_i) - mu_0(x_i) + T_i (Y_i - mu_1)/e - (1 - T_i)(Y_i - mu_0)/(1 - e)
    with boosted mu_t fitted on folds of whole SITES, e the site's treated share and Y centred by
    its site mean (the site effect leaves the scores: a site constant c_j changes phi by
    c_j (T/e - (1-T)/(1-e)), which sums to 0 over the site); f(x) = a regression of phi on x
    (boosting, or least squares with final=linear)."""
    OPTIONS = {"crossfit_folds": integer(2), "final": choice("boosting", "linear"),
               "propensity": choice(*PROPENSITIES)}

    def __init__(self, covariates=DEFAULT_COVARIATES, crossfit_folds: int = 5,
                 final: str = "boosting", propensity: str = "site", **kw):
        super().__init__(**kw)
        self.propensity = propensity
        self.covariates, self.crossfit_folds, self.final = list(covariates), crossfit_folds, final

    def fit(self, train: pd.DataFrame) -> "DRLearner":
        self._require(train, dict.fromkeys([self.site, self.treatment, self.outcome]
                                           + self.covariates), "the training frame")
        labels, codes = self._sites(train)
        J = labels.size
        if J < 2:
            raise ValueError("the DR-learner's site folds need at least 2 sites")
        X = self._matrix(train, self.covariates)
        T, y = self._column(train, self.treatment), self._column(train, self.outcome)
        y = y - (np.bincount(codes, weights=y) / np.bincount(codes))[codes]   # within-site
        fold_seed, _, boost_seed = _seeds(self.random_state)
        e = self._propensity(train, codes, J, self.propensity)
        folds = F.site_folds(codes, J, self.crossfit_folds, np.random.default_rng(fold_seed))
        G = aipw(F.arm_means(X, T, y, folds, boost_seed), T, y, e)
        phi = G[:, 1] - G[:, 0]
        if self.final == "linear":
            A = np.column_stack([np.ones(len(y)), X])
            self.coef_ = np.linalg.lstsq(A, phi, rcond=None)[0]
        else:
            self.model_ = F.boosting(boost_seed, min_samples_leaf=40,
                                     learning_rate=0.05).fit(X, phi)
        return self

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        self._require(frame, self.covariates, "the scored frame")
        X = self._matrix(frame, self.covariates)
        if self.final == "linear":
            return self.coef_[0] + X @ self.coef_[1:]
        return self.model_.predict(X)
