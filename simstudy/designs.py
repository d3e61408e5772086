"""Data-generating designs of Suk & Park (2024), Section 5 / SPEC section 2.

A `Design` is a frozen set of parameters; `simulate(rng)` draws one replicate: a training set,
a test set of NEW individuals in the SAME clusters, and the truth (Delta, Y0, Y1, d_opt).
Designs 1-4 are presets in conf/design/*.yaml, not subclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Mapping

import numpy as np
import pandas as pd

SITE, TREAT, OUTCOME = "site", "T", "Y"
TRUTH = ("Delta", "Y0", "Y1", "d_opt")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Replicate:
    """One simulated data set: train/test frames (site, X1..Xp, T, Y) and test-set truth."""
    train: pd.DataFrame
    test: pd.DataFrame
    truth: pd.DataFrame          # columns Delta, Y0, Y1, d_opt aligned with `test`
    draws: int = 1               # how many draws the rejection step needed

    def test_with_truth(self) -> pd.DataFrame:
        return pd.concat([self.test, self.truth], axis=1)


@dataclass(frozen=True)
class Design:
    """Multisite randomized trial (SPEC 2).

    logit P(T=1) = logit(prevalence) + treat_R * R_j,  R_j ~ N(0, R_sd^2)
    Delta = delta[intercept] + sum_k delta[Xk] Xk + beta1 U_j,  U_j ~ N(0, 1)
    m(X)  = main[intercept] + sum_k main[Xk] Xk + nonlinear exp(-0.6 X1 X2 + 0.3 X1) + cluster_main U_j
    Y(t)  = m(X) + t Delta + e,  e ~ N(0, noise_sd^2)
    """
    name: str = "design1"
    beta1: float = 0.0
    nonlinear: float = 0.0
    R_sd: float = 0.9
    prevalence: float = 0.5
    treat_R: float = 0.8
    cluster_main: float = 2.5
    noise_sd: float = 1.0
    n_covariates: int = 5
    delta: Mapping[str, float] = field(default_factory=lambda: {
        "intercept": 0.2, "X3": 0.5, "X4": -0.2, "X5": -0.2})
    main: Mapping[str, float] = field(default_factory=lambda: {
        "intercept": 0.7, "X1": 1.0, "X2": 1.0, "X3": -2.0, "X4": 1.0, "X5": 0.5})
    test_size: float = 1.0       # test individuals per cluster, as a multiple of n_j
    max_draws: int = 1000        # give up (error) after this many rejected draws

    def __post_init__(self):
        for part in ("delta", "main"):
            if isinstance(getattr(self, part), Mapping):
                object.__setattr__(self, part, dict(getattr(self, part)))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        import math
        numbers = {"beta1": self.beta1, "nonlinear": self.nonlinear, "R_sd": self.R_sd,
                   "prevalence": self.prevalence, "treat_R": self.treat_R,
                   "cluster_main": self.cluster_main, "noise_sd": self.noise_sd,
                   "n_covariates": self.n_covariates, "test_size": self.test_size,
                   "max_draws": self.max_draws}
        for part in ("delta", "main"):
            if not isinstance(getattr(self, part), Mapping):
                raise ConfigError(f"design.{part} must be a mapping of terms to numbers, e.g. "
                                  f"{{intercept: 0.2, X3: 0.5}}")
            numbers.update({f"{part}.{k}": v for k, v in getattr(self, part).items()})
        for key, v in numbers.items():
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            if not ok or not math.isfinite(float(v)):
                raise ConfigError(f"design.{key}={v!r}: must be a finite number")
        for key in ("n_covariates", "max_draws"):
            if float(numbers[key]) != int(numbers[key]) or int(numbers[key]) < 1:
                raise ConfigError(f"design.{key}={numbers[key]!r}: must be an integer >= 1")
        if not 0.0 < float(self.prevalence) < 1.0:
            raise ConfigError(f"design.prevalence={self.prevalence}: must lie strictly in (0, 1)")
        if self.R_sd < 0:
            raise ConfigError(f"design.R_sd={self.R_sd}: must be >= 0")
        if self.noise_sd < 0:
            raise ConfigError(f"design.noise_sd={self.noise_sd}: must be >= 0")
        if int(self.n_covariates) < 1:
            raise ConfigError(f"design.n_covariates={self.n_covariates}: must be >= 1")
        if self.test_size <= 0:
            raise ConfigError(f"design.test_size={self.test_size}: must be > 0")
        names = set(self.covariates) | {"intercept"}
        for part in ("delta", "main"):
            bad = sorted(set(getattr(self, part)) - names)
            if bad:
                raise ConfigError(f"design.{part} has unknown terms {bad}; allowed: "
                                  f"intercept, X1..X{self.n_covariates}")
        if self.nonlinear and self.n_covariates < 2:
            raise ConfigError("design.nonlinear != 0 needs n_covariates >= 2 (uses X1, X2)")

    @classmethod
    def from_config(cls, cfg: Mapping) -> "Design":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"design has unknown keys {unknown}; allowed: {sorted(known)}")
        return cls(**{k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()})

    @property
    def covariates(self) -> list[str]:
        return [f"X{k}" for k in range(1, int(self.n_covariates) + 1)]

    # ------------------------------------------------------------------ simulation
    def _linear(self, coef: Mapping[str, float], X: np.ndarray) -> np.ndarray:
        out = np.full(X.shape[0], float(coef.get("intercept", 0.0)))
        for k, name in enumerate(self.covariates):
            c = coef.get(name, 0.0)
            if c:
                out += c * X[:, k]
        return out

    def _individuals(self, rng: np.random.Generator, site: np.ndarray, R: np.ndarray,
                     U: np.ndarray):
        n = site.size
        X = rng.standard_normal((n, int(self.n_covariates)))
        logit = np.log(self.prevalence / (1 - self.prevalence)) + self.treat_R * R[site]
        T = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        delta = self._linear(self.delta, X) + self.beta1 * U[site]
        m = self._linear(self.main, X) + self.cluster_main * U[site]
        if self.nonlinear:
            m = m + self.nonlinear * np.exp(-0.6 * X[:, 0] * X[:, 1] + 0.3 * X[:, 0])
        e = self.noise_sd * rng.standard_normal(n)
        Y0 = m + e
        Y1 = Y0 + delta
        Y = np.where(T == 1, Y1, Y0)
        frame = pd.DataFrame(X, columns=self.covariates)
        frame.insert(0, SITE, site)
        frame[TREAT] = T
        frame[OUTCOME] = Y
        truth = pd.DataFrame({"Delta": delta, "Y0": Y0, "Y1": Y1,
                              "d_opt": (delta > 0).astype(np.int64)})
        return frame, truth

    def simulate(self, rng: np.random.Generator, J: int, n_j: int) -> Replicate:
        """Draw one replicate; redraw it whole while a training cluster has treated share 0 or 1."""
        n_test = max(1, int(round(self.test_size * n_j)))
        for draw in range(1, int(self.max_draws) + 1):
            R = self.R_sd * rng.standard_normal(J)
            U = rng.standard_normal(J)
            train, _ = self._individuals(rng, np.repeat(np.arange(J), n_j), R, U)
            test, truth = self._individuals(rng, np.repeat(np.arange(J), n_test), R, U)
            share = np.bincount(train[SITE], weights=train[TREAT], minlength=J) / n_j
            if np.all((share > 0) & (share < 1)):
                return Replicate(train, test, truth, draws=draw)
        raise RuntimeError(f"design {self.name}: every one of {self.max_draws} draws had a training "
                           f"cluster with all or no individuals treated (J={J}, n_j={n_j}); "
                           f"raise n_j or lower R_sd / move prevalence towards 0.5")
