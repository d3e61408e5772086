"""Calibrated plasmode (issue 42): a trial's REAL covariates, sites, site sizes and treated shares,
with outcomes from the multilevel model FITTED to that trial and a KNOWN effect.

Each replicate resamples J of the trial's sites with replacement and people within each (as the
plasmode family), randomises within each resampled site with its real treated share (complete
randomisation: round(share_j n_j) treated), and draws

    u_j = (u0_j, u1_j) ~ N(0, [[tau0^2, rho tau0 tau1], [rho tau0 tau1, tau1^2]])
    m(X)      = main'(1, X) + u0_j
    Delta     = delta_0 + h(X) + u1_j
    Y(t)      = m(X) + t Delta + e,  e ~ N(0, noise_sd^2)                     (continuous)
    P(Y(t)=1) = clip(m(X) + t Delta, 0, 1), truth Delta = p1 - p0             (binary)

where main, delta, tau0, tau1, rho and noise_sd are the REML estimates of the trial's
Y ~ X + T + T:X + (1 + T | site) (simstudy.calibrate), and h, by `scenario`:
  linear:  delta'X, the fitted moderation;
  tree:    a depth-2 tree of the two covariates with the largest fitted |delta_k| (split the
           first at 0, then the second at +0.5 / -0.5), centred and scaled so that its SD over
           the trial's people equals the SD of the fitted delta'X;
  smooth:  1 - x^2 of the covariate with the largest |delta_k|, centred and scaled the same way;
  none:    0, and u1_j = 0: everyone has the trial's average effect delta_0.
u1_j = tau1 (rho U_j + sqrt(1 - rho^2) V_j), u0_j = tau0 U_j, U_j, V_j ~ N(0, 1) iid (V_j is the
site draw the multisite family calls R_j; here treatment does not use it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..options import TEXT, choice, number
from .base import OUTCOME, SITE, TREAT, frame_of, param, register_design
from .plasmode import Plasmode

SCENARIOS = ("linear", "tree", "smooth", "none")


@lru_cache(maxsize=8)
def _shares(data: str, site: str, treatment: str) -> np.ndarray:
    """Treated share of each site of a trial file, in the order of the plasmode's site codes."""
    from .. import data as shipped
    path = shipped.path(data) if data in shipped.FILES else data
    try:
        from ..data import codes_as_read
        df = codes_as_read(pd.read_csv(path, dtype={site: str}), [site])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"design.data={data!r}: cannot read it ({exc})") from None
    if treatment not in df.columns:
        raise ConfigError(f"design.treatment_column={treatment!r} is not a column of {data!r}; "
                          f"it has {list(df.columns)}")
    t = pd.to_numeric(df[treatment], errors="coerce")
    keep = df[site].notna() & t.notna()
    if not set(pd.unique(t[keep])) <= {0, 1}:
        raise ConfigError(f"design.treatment_column={treatment!r} must be 0/1")
    codes = pd.factorize(df.loc[keep, site], sort=True)[0]
    return np.bincount(codes, weights=t[keep].to_numpy(float)) / np.bincount(codes)


def tree_effect(X: np.ndarray) -> np.ndarray:
    """The design's depth-2 tree of two columns (multisite's `tree` effect)."""
    x1, x2 = X[:, 0], X[:, 1]
    return np.where(x1 <= 0, np.where(x2 > 0.5, 1.0, -1.0), np.where(x2 > -0.5, 1.0, -1.0))


def smooth_effect(X: np.ndarray) -> np.ndarray:
    """1 - x^2 of one column (multisite's `smooth` effect)."""
    return 1.0 - X[:, 0] ** 2


@register_design("calibrated")
@dataclass(frozen=True)
class Calibrated(Plasmode):
    """A trial's covariates, sites and treated shares; outcomes from the model fitted to it
    (see the module doc; `simstudy apply --simulate` fits and writes these parameters)."""
    name: str = param("calibrated", "the design's name in the store, tables and figures", TEXT)
    data: str = param("star", "the trial: a CSV path, or a shipped trial (star, thornton)", TEXT)
    treatment_column: str = param("small", "its 0/1 treatment column: each resampled site keeps "
                                  "its real treated share", TEXT)
    scenario: str = param("linear", "the effect: linear (fitted), tree, smooth (same SD of the "
                          "X part), none (the average effect for everyone)", choice(*SCENARIOS))
    site_intercept_sd: float = param(0.0, "tau0: SD of the site intercepts u0_j",
                                     number(0, None, "[)"))
    site_slope_sd: float = param(0.0, "tau1: SD of the site effects u1_j (site-varying effect)",
                                 number(0, None, "[)"))
    site_corr: float = param(0.0, "rho: correlation of u0_j and u1_j", number(-1, 1, "[]"))

    R_sd: float = param(1.0, "SD of V_j (u1_j = tau1 (rho U_j + sqrt(1 - rho^2) V_j / R_sd))",
                        number(0, None, "()"))

    UNUSED = {"beta1": 0.0, "nonlinear": 0.0, "effect": "linear", "confounding": {},
              "site_covariate": False}     # multisite keys this model replaces

    def check(self) -> None:
        super().check()
        moved = [k for k, v in self.UNUSED.items() if getattr(self, k) != v]
        if moved:
            raise ConfigError(f"design.{moved[0]} does nothing in the calibrated family (the "
                              f"effect is design.scenario, the site effects site_intercept_sd, "
                              f"site_slope_sd, site_corr); leave it at {self.UNUSED[moved[0]]!r}")
        self._shares()                               # the treatment column, checked first
        if self.scenario in ("tree", "smooth"):
            self._moderation                       # its columns, checked now

    def _shares(self) -> np.ndarray:
        shares = _shares(str(self.data), str(self.site_column), str(self.treatment_column))
        X, _, counts = self._real()
        if shares.size != counts.size:
            raise ConfigError(f"design.data={self.data!r}: {shares.size} sites with a treatment "
                              f"but {counts.size} with covariates; drop rows with missing "
                              f"values first")
        return shares

    @property
    def ordered(self) -> list[str]:
        """The covariates by decreasing |fitted delta_k| (ties: in column order)."""
        return sorted(self.covariates, key=lambda c: -abs(float(self.delta.get(c, 0.0))))

    @cached_property
    def _moderation(self) -> tuple[np.ndarray, float, float]:
        """(columns of g, centre, scale) so that scale (g - centre) has the SD of delta'X over
        the trial's people (the `tree` and `smooth` scenarios)."""
        X, _, _ = self._real()
        target = float(np.std(self._linear({**self.delta, "intercept": 0.0}, X)))
        need = 2 if self.scenario == "tree" else 1
        if len(self.covariates) < need:
            raise ConfigError(f"design.scenario={self.scenario} needs {need} covariates")
        cols = [self.covariates.index(c) for c in self.ordered[:need]]
        g = (tree_effect if self.scenario == "tree" else smooth_effect)(X[:, cols])
        sd = float(np.std(g))
        return np.array(cols), float(g.mean()), (target / sd if sd > 0 else 0.0)

    @staticmethod
    def _assign(rng, site: np.ndarray, share: np.ndarray) -> np.ndarray:
        """Complete randomisation within sites, as a multisite trial assigns: in a site of n
        people exactly round(share_j n) are treated, kept within [1, n - 1] (a site of two or
        more has both arms, so no replicate is redrawn for an all-treated site), the treated
        chosen uniformly at random. `site` holds codes 0..J-1."""
        n_site = np.bincount(site, minlength=share.size)
        k = np.rint(share * n_site)
        k = np.where(n_site >= 2, np.clip(k, 1, n_site - 1), k)
        order = np.lexsort((rng.random(site.size), site))
        start = np.r_[0, np.cumsum(n_site)[:-1]]
        pos = np.arange(site.size) - start[site[order]]
        T = np.empty(site.size, np.int64)
        T[order] = pos < k[site[order]]
        return T

    def _individuals(self, rng, site, R, U, sites=None, W=None, truth: bool = True):
        n = site.size
        X = self._covariates(rng, site, sites)
        T = self._assign(rng, site, self._shares()[sites])
        V = R / self.R_sd
        m = self._linear(self.main, X) + self.site_intercept_sd * U[site]
        if self.scenario == "none":
            delta = np.full(n, float(self.delta.get("intercept", 0.0)))
        else:
            rho = float(self.site_corr)
            u1 = self.site_slope_sd * (rho * U + np.sqrt(max(0.0, 1 - rho * rho)) * V)
            if self.scenario == "linear":
                delta = self._linear(self.delta, X)
            else:
                cols, centre, scale = self._moderation
                g = (tree_effect if self.scenario == "tree" else smooth_effect)(X[:, cols])
                delta = float(self.delta.get("intercept", 0.0)) + scale * (g - centre)
            delta = delta + u1[site]
        if self.outcome == "binary":            # linear-probability model, clipped to [0, 1]
            p0, p1 = np.clip(m, 0.0, 1.0), np.clip(m + delta, 0.0, 1.0)
            u = rng.random(n)
            Y = np.where(T == 1, u < p1, u < p0).astype(float)
            Y0, Y1, delta = p0, p1, p1 - p0
        else:
            Y0 = m + self.noise_sd * rng.standard_normal(n)
            Y1 = Y0 + delta
            Y = np.where(T == 1, Y1, Y0)
        frame = frame_of({SITE: site, **{c: X[:, k] for k, c in enumerate(self.covariates)},
                          TREAT: T, OUTCOME: Y})
        if not truth:
            return frame, None
        return frame, frame_of({"Delta": delta, "Y0": Y0, "Y1": Y1,
                                "d_opt": (delta > 0).astype(np.int64)})


__all__ = ["Calibrated", "SCENARIOS"]
