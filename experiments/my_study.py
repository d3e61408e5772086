"""A study of your own: one design, one method, one metric, as simstudy plugins.

    PYTHONPATH=experiments simstudy run -m hydra.searchpath=[file://experiments/conf] \\
        design=threshold design.site_sd=0,0.5,1 plugins=[my_study] \\
        "methods=[Q-base,Q-rs,W-augID,x3-rule,oracle]" J=25 n_j=40 reps=50 out=results/my_study

The design has a site-specific threshold: Delta = effect (X3 - c_j); x3-rule ignores the sites;
top_decile_gain is the mean true effect among the 10% the method ranks highest.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simstudy import Method, Replicate, register
from simstudy.designs import DesignBase, register_design
from simstudy.metrics import register_metric


@register_design("threshold")
@dataclass(frozen=True)
class Threshold(DesignBase):
    """Sites with a site-specific threshold: Delta = effect * (X3 - c_j), c_j ~ N(0, site_sd^2)."""
    name: str = "threshold"
    effect: float = 1.0
    site_sd: float = 0.5

    def simulate(self, rng, J, n_j):
        c = self.site_sd * rng.standard_normal(J)

        def draw(n, rng=rng):
            site = np.repeat(np.arange(J), n)
            X = rng.standard_normal((site.size, 5))
            T = np.tile(np.r_[np.ones(n // 2), np.zeros(n - n // 2)], J).astype(int)
            delta = self.effect * (X[:, 2] - c[site])
            y0 = X[:, 1] + rng.standard_normal(site.size)
            frame = pd.DataFrame(X, columns=[f"X{k}" for k in range(1, 6)])
            frame.insert(0, "site", site)
            frame["T"], frame["Y"] = T, np.where(T == 1, y0 + delta, y0)
            truth = pd.DataFrame({"Delta": delta, "Y0": y0, "Y1": y0 + delta,
                                  "d_opt": (delta > 0).astype(int)})
            return frame, truth
        train, _ = draw(n_j)
        test, truth = draw(n_j)
        # more(rng, factor): factor x n_j new people in each training site with their truth,
        # what value_claims needs (the rule's true value); optional
        return Replicate(train, test, truth, more=lambda r, factor: draw(factor * n_j, r))


@register("x3-rule", family="My rules")
class X3Rule(Method):
    """Treat when X3 > 0 (ignores the sites)."""
    def benefit_score(self, frame):
        return frame["X3"].to_numpy()


@register_metric("top_decile_gain")
def top_decile_gain(score, truth, test):
    """Mean true effect among the 10% with the highest benefit score."""
    k = max(1, len(score) // 10)
    return float(np.asarray(truth["Delta"])[np.argsort(-np.asarray(score))[:k]].mean())
