"""Weighting estimators (Chen et al. 2017, R package `personalized`, squared loss + lasso) and
their multilevel modifications, Suk & Park Sections 3.3 and 4.2 (docs/estimators.md).

    min_{a0, a}  sum_i w_i (Y_i - m_hat(X_i) - T~_i (a0 + V_i'a))^2 + lambda sum_k pf_k |a_k|

T~ = 2T - 1, w_i = 1 / (T~_i p_i + (1 - T~_i) / 2); fitted with glmnet's conventions on the
columns T~ (1, V) without a glmnet intercept, a0 unpenalised, lambda = lambda.min of 5-fold CV.
Benefit score f(v) = a0 + v'a. personalized's refit loop (docs/estimators.md): while the fit at lambda.min
has no non-zero coefficient besides a0, draw new folds and refit (at most `max_fits` fits in all,
the last one kept); `fits_` records how many were made.

| name     | propensity p        | augmentation m_hat          | moderators V (penalty)                 |
|----------|---------------------|-----------------------------|----------------------------------------|
| W-base   | overall treated share | none                      | X3..X5 (1)                             |
| W-noaug  | site treated share p_j | none                     | X3..X5 (1)                             |
| W-aug    | p_j                 | OLS of Y on X               | X3..X5 (1)                             |
| W-augID  | p_j                 | OLS of Y on X + site dummies | X3..X5 (1)                            |
| WS-*     | p_j                 | as above                    | X3..X5 (0) + J-1 site dummies (1)      |
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engines.groups import group_means
from ..engines.lasso import SiteDummyDesign, cv_lasso
from ..engines.ols import aliased_as_zero, fixed_effects_ols, ols
from .qlearning import DEFAULT_COVARIATES, DEFAULT_MODERATORS
from .registry import FLAG, Method, _read, choice, integer, register


@register("W-base", family="Weighting",
          propensity="overall", augment="none", site_moderators=False,
          summary="weighted lasso, overall treated share as propensity, no augmentation (3.3)")
@register("W-noaug", family="Weighting",
          propensity="site", augment="none", site_moderators=False,
          summary="weighted lasso, the site's treated share as propensity, no augmentation")
@register("W-aug", family="Weighting",
          propensity="site", augment="covariates", site_moderators=False,
          summary="as W-noaug, augmented by OLS of Y on X1..X5")
@register("W-augID", family="Weighting",
          propensity="site", augment="covariates+site", site_moderators=False,
          summary="as W-noaug, augmented by OLS of Y on X1..X5 + site dummies")
@register("WS-noaug", family="Weighting",
          propensity="site", augment="none", site_moderators=True,
          summary="W-noaug plus the J - 1 site dummies as penalised moderators (4.2)")
@register("WS-aug", family="Weighting",
          propensity="site", augment="covariates", site_moderators=True,
          summary="W-aug plus the J - 1 site dummies as penalised moderators")
@register("WS-augID", family="Weighting",
          propensity="site", augment="covariates+site", site_moderators=True,
          summary="W-augID plus the J - 1 site dummies as penalised moderators")
class Weighting(Method):
    """Weighted squared-loss lasso for the benefit score (paper Sections 3.3, 4.2; docs/estimators.md)."""
    new_site_options = {"new_sites": "average"}
    compile_cost = 15.0         # the lasso path and cross-validations (CPU-s)
    OPTIONS = {"propensity": choice("overall", "site", "estimated"),
               "augment": choice("none", "covariates", "covariates+site"),
               "lambda_rule": choice("lambda.min", "lambda.1se"),
               "new_sites": choice("error", "reference", "average"),
               "nfolds": integer(3), "max_fits": integer(1), "site_moderators": FLAG}

    def __init__(self, propensity: str = "site", augment: str = "none",
                 site_moderators: bool = False, covariates=DEFAULT_COVARIATES,
                 moderators=DEFAULT_MODERATORS, nfolds: int = 5, lambda_rule: str = "lambda.min",
                 new_sites: str = "error", foldid=None, max_fits: int = 5, **kw):
        super().__init__(**kw)
        self.propensity, self.augment, self.site_moderators = propensity, augment, site_moderators
        self.covariates, self.moderators = list(covariates), list(moderators)
        self.nfolds, self.lambda_rule, self.new_sites, self.foldid = nfolds, lambda_rule, new_sites, foldid
        self.max_fits = max_fits

    def memory_bytes(self, J: int, n: int) -> float:
        """Peak bytes beyond the data: with site moderators (WS-*) the lasso's per-fold
        moments hold (nfolds + 1) Gram matrices of J + 1 + |moderators| columns."""
        if not self.site_moderators:
            return 0.0
        p = J + 1 + len(self.moderators)
        return 8.0 * (self.nfolds + 1) * p * p

    # ------------------------------------------------------------------ pieces
    # The pieces below depend on the data and the options, not on the method's seed: within
    # `shared_reads` (one replicate of the runner) they are computed once and shared by every
    # weighting rule that uses them (W-aug and WS-aug fit the same augmentation).
    def _weights(self, train, codes, labels) -> tuple[np.ndarray, np.ndarray]:
        """(T~, w): T~ = 2T - 1 and w = 1 / (T~ p + (1 - T~) / 2), p the overall treated share
        (W-base), the site's p_j, or e(x, site) estimated (propensity=estimated)."""
        def compute():
            T = self._column(train, self.treatment)
            if not ((T == 0) | (T == 1)).all():
                raise ValueError(f"treatment column {self.treatment!r} must be 0/1")
            if self.propensity == "overall":
                p = np.full(len(T), T.mean())
            elif self.propensity == "estimated":      # logistic on X and site (issue 41)
                p = self._propensity(train, codes, labels.size, "estimated")
            else:
                share = group_means(T, codes, labels.size)[:, 0]
                bad = labels[(share <= 0) | (share >= 1)]
                if bad.size:
                    raise ValueError(f"{bad.size} sites have everyone or no one treated (e.g. "
                                     f"site {bad[0]}); their propensity p_j is 0 or 1 and the "
                                     f"weights 1/p_j, 1/(1-p_j) are undefined. Drop those sites "
                                     f"first.")
                p = share[codes]
            Tt = 2 * T - 1
            return Tt, 1.0 / (Tt * p + (1 - Tt) / 2)
        return _read(train, ("weights", self.propensity, self.treatment, self.site)
                     + ((tuple(self.covariates),) if self.propensity == "estimated" else ()),
                     compute)

    def _augmentation(self, train, codes) -> np.ndarray:
        """m_hat: OLS fitted values of Y on X (W-aug) or on X + site dummies (W-augID, by the
        within transform: fitted = ybar_j + (X - xbar_j) b_within)."""
        def compute():
            y = self._column(train, self.outcome)
            X = self._matrix(train, self.covariates)
            if self.augment == "covariates":
                D = np.column_stack([np.ones(len(y)), X])
                return D @ aliased_as_zero(ols(D, y).coef)
            fit, alpha = fixed_effects_ols(X, y, codes)
            return alpha[codes] + X @ aliased_as_zero(fit.coef)
        return _read(train, ("augmentation", self.augment, self.outcome, tuple(self.covariates),
                             self.site), compute)

    def _design(self, frame, codes, J, Tt):
        """x~ = T~ (1, V, S): dense part and sparse site dummies (first site is the reference)."""
        dense = _read(frame, ("weighting design", self.treatment, tuple(self.moderators)),
                      lambda: Tt[:, None] * np.column_stack(
                          [np.ones(len(Tt)), self._matrix(frame, self.moderators)])).copy()
        if not self.site_moderators:
            return dense
        return SiteDummyDesign(dense, codes, Tt, J)

    # ------------------------------------------------------------------ fit / score
    def fit(self, train: pd.DataFrame) -> "Weighting":
        need = [self.site, self.treatment, self.outcome] + self.moderators
        if self.augment != "none":
            need += self.covariates
        self._require(train, dict.fromkeys(need), "the training frame")
        labels, codes = self._sites(train)
        J = labels.size
        # writable copies of the shared arrays: the compiled kernels see the argument types
        # they always saw (numba compiles a read-only array as another signature)
        Tt, w = (a.copy() for a in self._weights(train, codes, labels))
        y = self._column(train, self.outcome)
        y = y - self._augmentation(train, codes) if self.augment != "none" else y.copy()
        X = self._design(train, codes, J, Tt)
        k = len(self.moderators)
        pf = np.ones(1 + k + (J - 1 if self.site_moderators else 0))
        pf[0] = 0.0
        if self.site_moderators:
            pf[1:1 + k] = 0.0
        rng = np.random.default_rng(self.random_state)
        self._last_problem = (X, y, w, pf)          # the lasso problem, for diagnostics/tests
        self.cv_ = cv_lasso(X, y, w, pf, intercept=False, nfolds=self.nfolds, rng=rng,
                            foldid=self.foldid)
        self.fits_ = 1
        # personalized's loop `while (nsel == 0 & ct <= 4)`: new random folds from the same
        # stream (fold draw k+1 of the method's seed), the full path reused (fold-free);
        # with user-given folds a refit would be identical, so none is made
        while (self.foldid is None and self.fits_ < self.max_fits
               and not self.cv_.path.beta[1:, self.cv_.index_min].any()):
            self.cv_ = cv_lasso(X, y, w, pf, intercept=False, nfolds=self.nfolds, rng=rng,
                                path=self.cv_.path)
            self.fits_ += 1
        _, coef = self.cv_.coef(self.lambda_rule)
        self.a0_, self.a_ = float(coef[0]), coef[1:1 + k]
        self.site_labels_ = labels
        self.site_coef_ = np.r_[0.0, coef[1 + k:]] if self.site_moderators else None
        return self

    @property
    def site_effects_(self) -> pd.Series | None:
        """The site-dummy coefficients by site label (the reference site 0); None for W-*."""
        if self.site_coef_ is None:
            return None
        return pd.Series(self.site_coef_, index=self.site_labels_)

    def diagnostics(self) -> dict:
        out = {"fits": self.fits_}
        if not self.cv_.path.beta[1:, self.cv_.index_min].any():
            out["warning"] = (f"lasso selected no moderator in {self.fits_} fit(s): the rule is "
                              f"constant (treat all or none)")
        return out

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        """f(v) = a0 + v'a (+ the row's site-dummy coefficient for WS methods)."""
        self._require(frame, self.moderators, "the scored frame")
        score = self.a0_ + self._matrix(frame, self.moderators) @ self.a_
        if self.site_coef_ is None:
            return score
        fill = self.site_coef_.mean() if self.new_sites == "average" else 0.0
        return score + self._per_site(frame, self.site_labels_, self.site_coef_,
                                      self.new_sites == "error",
                                      "a WS method has no dummy coefficient for them",
                                      "Use new_sites='average' to score them as the average "
                                      "training site (mean site coefficient) or 'reference' as "
                                      "the reference site (coefficient 0).", fill)
