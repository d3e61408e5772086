"""Q-learning (outcome regression) estimators of Suk & Park, Sections 3.2 and 4.1 (SPEC 3).

Working model  Y ~ X + T + T:V ; benefit score f(v) = b_T + v' b_{T:V} on the test row's
original moderators.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..engines.ols import ols
from .registry import Method, register

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
        X = frame[self.covariates].to_numpy(float)
        V = frame[self.moderators].to_numpy(float)
        T = frame[self.treatment].to_numpy(float)
        y = frame[self.outcome].to_numpy(float)
        return X, V, T, y

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        """f(v) = b_T + v' b_{T:V} (+ the row's cluster slope for random-slope models)."""
        self._require(frame, self.moderators, "the scored frame")
        V = frame[self.moderators].to_numpy(float)
        return self.b_treat_ + V @ self.b_interaction_

    def _set_effects(self, b_treat: float, b_interaction: np.ndarray) -> None:
        self.b_treat_ = float(np.nan_to_num(b_treat))
        self.b_interaction_ = np.nan_to_num(np.asarray(b_interaction, float))


@register("Q-base")
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
