"""Q-learning (outcome regression) estimators of Suk & Park, Sections 3.2 and 4.1 (docs/estimators.md).

Working model  Y ~ X + T + T:V ; benefit score f(v) = b_T + v' b_{T:V} on the test row's
original moderators, plus the row's cluster slope u_1j for the random-slope models.

| name    | fit (as the authors' R code)                                              |
|---------|---------------------------------------------------------------------------|
| Q-base  | lm(Y ~ X + T + T:V)                                                       |
| Q-fe    | lm(Y ~ X + T + T:V + factor(site))       (computed by the within transform) |
| Q-ri    | lmer(Y ~ X + T + T:V + (1 | site))                                       |
| Q-rs    | lmer(Y ~ X + T + T:V + (T | site))                                       |
| Q-dm    | lm(Y~ ~ X~ + T~ + (TV)~), ~ = de-meaned within site                         |
| Q-dm-ri | lmer(Y ~ X~ + T~ + (TV)~ + (1 | site))    (ORIGINAL Y)                     |
| Q-dm-rs | lmer(Y ~ X~ + T~ + (TV)~ + (T~ | site))   (random slope on de-meaned T)    |
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engines.groups import demean
from ..engines.lmm import fit_lmm
from ..engines.ols import aliased_as_zero, ols
from .registry import FLAG, Method, choice, register

DEFAULT_COVARIATES = ("X1", "X2", "X3", "X4", "X5")
DEFAULT_MODERATORS = ("X3", "X4", "X5")


class OutcomeModel(Method):
    """Shared bookkeeping: covariate and moderator columns, score from (b_T, b_{T:V})."""

    def __init__(self, covariates=DEFAULT_COVARIATES, moderators=DEFAULT_MODERATORS, **kw):
        super().__init__(**kw)
        self.covariates = list(covariates)
        self.moderators = list(moderators)

    def _columns(self, frame: pd.DataFrame):
        cols = self.covariates + [c for c in self.moderators if c not in self.covariates]
        self._require(frame, cols + [self.treatment, self.outcome], "the training frame")
        X = self._matrix(frame, self.covariates)
        V = self._matrix(frame, self.moderators)
        T = self._column(frame, self.treatment)
        y = self._column(frame, self.outcome)
        return X, V, T, y

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        """f(v) = b_T + v' b_{T:V} (+ the row's cluster slope for random-slope models)."""
        self._require(frame, self.moderators, "the scored frame")
        V = self._matrix(frame, self.moderators)
        return self.b_treat_ + V @ self.b_interaction_

    def _set_effects(self, b_treat: float, b_interaction: np.ndarray) -> None:
        self.b_treat_ = float(aliased_as_zero(b_treat))
        self.b_interaction_ = aliased_as_zero(b_interaction)


@register("Q-base", family="Q-learning",
          summary="OLS of Y on X, T, T x V, ignoring the sites (Section 3.2)")
class QBase(OutcomeModel):
    """Q-base: OLS  Y ~ 1 + X + T + T:V  ignoring clusters (paper Section 3.2)."""

    def fit(self, train: pd.DataFrame) -> "QBase":
        X, V, T, y = self._columns(train)
        D = np.column_stack([np.ones(len(y)), X, T, T[:, None] * V])
        names = (["(Intercept)"] + self.covariates + [self.treatment]
                 + [f"{self.treatment}:{v}" for v in self.moderators])
        self.fit_ = ols(D, y, names)
        k = 1 + len(self.covariates)
        self._set_effects(self.fit_.coef[k], self.fit_.coef[k + 1:])
        return self


MODELS = {"fe": (False, False, False), "dm": (True, False, False),
          "ri": (False, True, False), "rs": (False, True, True),
          "dm-ri": (True, True, False), "dm-rs": (True, True, True)}


@register("Q-fe", family="Q-learning", model="fe",
          summary="Q-base plus site dummies (fixed site intercepts); OLS (Section 4.1)")
@register("Q-ri", family="Q-learning", model="ri",
          summary="linear mixed model, random intercept per site (REML); the fixed effects score")
@register("Q-rs", family="Q-learning", model="rs",
          summary="random intercept and random T slope per site (REML); score b_T + u_j + V'b_TV")
@register("Q-dm", family="Q-learning", model="dm",
          summary="every column centred within its site, then OLS (Q-fe's coefficients)")
@register("Q-dm-ri", family="Q-learning", model="dm-ri",
          summary="Y on the site-centred X, T, T x V with a random intercept (REML)")
@register("Q-dm-rs", family="Q-learning", model="dm-rs",
          summary="as Q-dm-ri plus a random slope on the centred T; score b_T + u_j + V'b_TV")
class MultilevelQ(OutcomeModel):
    """Multilevel Q-learning (paper Section 4.1): fixed effects, random intercept or random
    slope, with or without de-meaned predictors; f(v) = b_T (+ u_1j) + v' b_{T:V}.

    `new_sites`: a test row whose site was not in training gets u_1j = 0 (the population slope,
    lme4's allow.new.levels) with "population", or an error with "error"."""
    new_site_options = {"new_sites": "population"}
    compile_cost = 9.0          # the mixed models' deviance and Newton kernels (CPU-s)
    OPTIONS = {"model": choice(*sorted(MODELS)), "new_sites": choice("population", "error"),
               "reml": FLAG}

    def __init__(self, model: str = "ri", reml: bool = True, new_sites: str = "population", **kw):
        super().__init__(**kw)
        self.model, self.reml, self.new_sites = model, reml, new_sites

    def fit(self, train: pd.DataFrame) -> "MultilevelQ":
        demeaned, mixed, slope = MODELS[self.model]
        self._require(train, [self.site], "the training frame")
        X, V, T, y = self._columns(train)
        labels, codes = self._sites(train)
        P = np.column_stack([X, T, T[:, None] * V])                # predictors X, T, T*V
        names = (self.covariates + [self.treatment]
                 + [f"{self.treatment}:{v}" for v in self.moderators])
        k_treat = len(self.covariates)
        if demeaned or self.model == "fe":
            P = demean(P, codes)
        if not mixed:
            if self.model == "fe":        # lm with site dummies = OLS on within-transformed data
                fit = ols(P, demean(y, codes), names)
                coef = fit.coef
            else:                         # Q-dm: de-meaned Y on de-meaned predictors
                fit = ols(np.column_stack([np.ones(len(y)), P]), demean(y, codes),
                          ["(Intercept)"] + names)
                coef = fit.coef[1:]
            self.fit_, self.slope_values_ = fit, None
        else:
            Z = np.column_stack([np.ones(len(y)), P[:, k_treat]]) if slope else None
            fit = fit_lmm(np.column_stack([np.ones(len(y)), P]), y, codes, Z,
                          names=["(Intercept)"] + names, reml=self.reml,
                          re_names=["(Intercept)", self.treatment][:2 if slope else 1])
            coef = fit.beta[1:]
            self.fit_ = fit
            self.slope_values_ = fit.ranef_values[:, 1] if slope else None
        self.site_labels_ = labels
        self.aliased_ = list(self.fit_.aliased)
        self._set_effects(coef[k_treat], coef[k_treat + 1:])
        return self

    @property
    def slopes_(self) -> pd.Series | None:
        """The cluster slopes u_1j by site label (random-slope models; None otherwise)."""
        if self.slope_values_ is None:
            return None
        return pd.Series(self.slope_values_, index=self.site_labels_)

    def diagnostics(self) -> dict:
        """lme4's messages: a fit that did not converge, a boundary (singular) fit."""
        fit = self.fit_
        notes = []
        if getattr(fit, "converged", True) is False:
            notes.append(f"mixed model did not converge ({fit.message})")
        if hasattr(fit, "singular") and fit.singular:
            notes.append("boundary (singular) fit: a random-effect variance is 0")
        return {"warning": "; ".join(notes)} if notes else {}

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        score = super().benefit_score(frame)
        if self.slope_values_ is None:
            return score
        return score + self._per_site(frame, self.site_labels_, self.slope_values_,
                                      self.new_sites == "error",
                                      "their cluster slope is unknown",
                                      "Use new_sites='population' to give them u = 0.")
