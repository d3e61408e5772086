"""Reference rules that need no fitting: the oracle (true Delta), treat-all and treat-none."""
from __future__ import annotations

import numpy as np
import pandas as pd

from .registry import Method, register


@register("oracle", family="Reference",
          summary="f(x) = Delta(x), the true effect: accuracy 1 and regret 0 by construction")
class Oracle(Method):
    """f(x) = Delta(x), the true CATE: accuracy 1 and regret 0 by construction."""
    uses_truth = True

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        self._require(frame, ["Delta"], "the oracle's frame (needs the truth)")
        return self._column(frame, "Delta").copy()


@register("treat-all", family="Reference", constant=1.0,
          summary="f(x) = 1: treat everyone (a constant rule)")
@register("treat-none", family="Reference", constant=-1.0,
          summary="f(x) = -1: treat no one (a constant rule)")
class Constant(Method):
    """f(x) = constant: treat everyone (> 0) or no one (<= 0)."""

    def __init__(self, constant: float = 1.0, **kw):
        super().__init__(**kw)
        self.constant = constant

    def benefit_score(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), float(self.constant))
