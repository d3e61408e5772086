"""The multisite family (docs/designs.md; Suk & Park Section 5): Designs 1-4 are its presets in
conf/design/*.yaml, with unequal site sizes and binary outcomes as options."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .base import OUTCOME, SITE, TREAT, DesignBase, Replicate, data_path, register_design

MAX_DRAWS = 10_000           # design.max_draws: redraws of one replicate before it is infeasible
SITE_SIZES = ("equal", "poisson", "uniform", "lognormal", "file")
SITE_COVARIATE = "W"         # the observed site-level covariate W_j (site_covariate: true)


def _step(X):
    """1{x1 > 0.5} - 1{x1 <= 0.5}: a threshold in one covariate."""
    return np.where(X[:, 0] > 0.5, 1.0, -1.0)


def _tree(X):
    """A depth-2 tree: split x1 at 0, then x2 at 0.5 (left) or -0.5 (right); +1 / -1 leaves."""
    x1, x2 = X[:, 0], X[:, 1]
    return np.where(x1 <= 0, np.where(x2 > 0.5, 1.0, -1.0), np.where(x2 > -0.5, 1.0, -1.0))


def _smooth(X):
    """1 - x1^2: smooth, not monotone (people near the mean of x1 benefit)."""
    return 1.0 - X[:, 0] ** 2


def _interaction(X):
    """x1 x2: the product of two covariates."""
    return X[:, 0] * X[:, 1]


# design.effect: g(x) in Delta = delta'(1, x, W) + effect_scale g(x) + beta1 U_j (docs/designs.md)
EFFECTS = {"linear": None, "step": _step, "tree": _tree, "smooth": _smooth,
           "interaction": _interaction}


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


@register_design("multisite")
@dataclass(frozen=True)
class Design(DesignBase):
    """Multisite randomized trial (docs/designs.md).

    logit P(T=1) = logit(prevalence) + treat_R * R_j,  R_j ~ N(0, R_sd^2)
    Delta = delta[intercept] + sum_k delta[Xk] Xk + delta[W] W_j + effect_scale g(X) + beta1 U_j,
            U_j ~ N(0, 1) unobserved, W_j ~ N(0, 1) observed (site_covariate), g by `effect`
            (linear: 0; step, tree, smooth, interaction: EFFECTS)
    m(X)  = main[intercept] + sum_k main[Xk] Xk + nonlinear exp(-0.6 X1 X2 + 0.3 X1) + cluster_main U_j
    Y(t)  = m(X) + t Delta + e,  e ~ N(0, noise_sd^2)                       (outcome=continuous)
    P(Y(t) = 1) = expit(m(X) + t Delta_lin), truth Delta = p1 - p0             (outcome=binary)
    site sizes: n_j each (equal), or drawn per replicate with mean n_j: Poisson, uniform on
    n_j (1 -+ site_size_spread), lognormal with CV site_size_spread, or a data file's sizes
    (site_sizes_file, site_sizes_column) scaled to mean n_j; at least min_site_size.
    """
    SIZE_RULES: ClassVar[tuple] = SITE_SIZES
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
    site_sizes: str = "equal"    # equal | poisson | uniform | lognormal | file
    site_size_spread: float = 0.5  # uniform: half-width / n_j; lognormal: coefficient of variation
    site_sizes_file: str | None = None   # site_sizes=file: a CSV (or shipped star / thornton)
    site_sizes_column: str | None = None  # its site column
    min_site_size: int = 2
    outcome: str = "continuous"  # continuous | binary (logistic outcome model)
    effect: str = "linear"       # g(x): linear (none) | step | tree | smooth | interaction
    effect_scale: float = 0.5    # its coefficient in Delta
    site_covariate: bool = False  # draw the observed site covariate W_j (column W)

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
                   "max_draws": self.max_draws, "effect_scale": self.effect_scale}
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
        if int(self.max_draws) > MAX_DRAWS:
            raise ConfigError(f"design.max_draws={self.max_draws!r}: at most {MAX_DRAWS:,} (a "
                              f"design that needs more draws for one replicate is infeasible: "
                              f"raise n_j, lower R_sd or move prevalence towards 0.5)")
        if not 0.0 < float(self.prevalence) < 1.0:
            raise ConfigError(f"design.prevalence={self.prevalence}: must lie strictly in (0, 1)")
        if self.R_sd < 0:
            raise ConfigError(f"design.R_sd={self.R_sd}: must be >= 0")
        if self.noise_sd < 0:
            raise ConfigError(f"design.noise_sd={self.noise_sd}: must be >= 0")
        if self.site_sizes not in self.SIZE_RULES:
            raise ConfigError(f"design.site_sizes={self.site_sizes!r}: allowed "
                              f"{', '.join(self.SIZE_RULES)}")
        if self.effect not in EFFECTS:
            raise ConfigError(f"design.effect={self.effect!r}: allowed {', '.join(EFFECTS)}")
        if self.effect not in ("linear", "step", "smooth") and self.n_covariates < 2:
            raise ConfigError(f"design.effect={self.effect} needs n_covariates >= 2 (uses X1, X2)")
        if not isinstance(self.site_covariate, bool):
            raise ConfigError(f"design.site_covariate={self.site_covariate!r}: true or false")
        if self.outcome not in ("continuous", "binary"):
            raise ConfigError(f"design.outcome={self.outcome!r}: allowed continuous, binary")
        if not (isinstance(self.site_size_spread, (int, float)) and 0 <= self.site_size_spread < 10):
            raise ConfigError(f"design.site_size_spread={self.site_size_spread!r}: must be in [0, 10)")
        if not isinstance(self.min_site_size, (int, np.integer)) or self.min_site_size < 2:
            raise ConfigError(f"design.min_site_size={self.min_site_size!r}: must be an integer >= 2")
        if self.site_sizes == "file":
            self._file_sizes()                              # a clear error now, not per replicate
        if int(self.n_covariates) < 1:
            raise ConfigError(f"design.n_covariates={self.n_covariates}: must be >= 1")
        if self.test_size <= 0:
            raise ConfigError(f"design.test_size={self.test_size}: must be > 0")
        names = set(self.covariates) | {"intercept"} | (
            {SITE_COVARIATE} if self.site_covariate else set())
        for part in ("delta", "main"):
            bad = sorted(set(getattr(self, part)) - names)
            if bad:
                hint = (" (W needs site_covariate: true)" if SITE_COVARIATE in bad
                        and not self.site_covariate else "")
                raise ConfigError(f"design.{part} has unknown terms {bad}; allowed: "
                                  f"intercept, X1..X{self.n_covariates}"
                                  + (", W" if self.site_covariate else "") + hint)
        if self.nonlinear and self.n_covariates < 2:
            raise ConfigError("design.nonlinear != 0 needs n_covariates >= 2 (uses X1, X2)")

    @property
    def covariates(self) -> list[str]:
        return [f"X{k}" for k in range(1, int(self.n_covariates) + 1)]

    # ------------------------------------------------------------------ simulation
    def _linear(self, coef: Mapping[str, float], X: np.ndarray, W=None) -> np.ndarray:
        out = np.full(X.shape[0], float(coef.get("intercept", 0.0)))
        for k, name in enumerate(self.covariates):
            c = coef.get(name, 0.0)
            if c:
                out += c * X[:, k]
        if W is not None and coef.get(SITE_COVARIATE, 0.0):
            out += coef[SITE_COVARIATE] * W
        return out

    def data_files(self) -> dict[str, str]:
        return {"site_sizes_file": data_path(self.site_sizes_file)} \
            if self.site_sizes == "file" else {}

    def _file_sizes(self) -> np.ndarray:
        """Per-site counts of the site_sizes_file."""
        if not self.site_sizes_file or not self.site_sizes_column:
            raise ConfigError("design.site_sizes=file needs site_sizes_file (a CSV, or star / "
                              "thornton) and site_sizes_column (its site column)")
        from .. import data
        path = (data.path(self.site_sizes_file) if self.site_sizes_file in data.FILES
                else self.site_sizes_file)
        try:
            col = pd.read_csv(path, usecols=[self.site_sizes_column])[self.site_sizes_column]
        except (OSError, ValueError) as exc:
            raise ConfigError(f"design.site_sizes_file={self.site_sizes_file!r}, column "
                              f"{self.site_sizes_column!r}: {exc}") from None
        return col.value_counts().to_numpy(float)

    def _sizes(self, rng: np.random.Generator, J: int, n_j: int, sites=None) -> np.ndarray:
        """Training individuals per site (no random draw for equal sizes: the paper's designs)."""
        if self.site_sizes == "equal":
            return np.full(J, n_j, dtype=np.int64)
        if self.site_sizes == "poisson":
            sizes = rng.poisson(n_j, J)
        elif self.site_sizes == "uniform":
            lo = max(self.min_site_size, int(np.floor(n_j * (1 - self.site_size_spread))))
            hi = max(lo, int(np.ceil(n_j * (1 + self.site_size_spread))))
            sizes = rng.integers(lo, hi + 1, J)
        elif self.site_sizes == "lognormal":
            s2 = np.log1p(self.site_size_spread ** 2)
            sizes = np.rint(rng.lognormal(np.log(n_j) - s2 / 2, np.sqrt(s2), J))
        else:
            real = self._file_sizes()
            sizes = np.rint(rng.choice(real, J) * n_j / real.mean())
        return np.maximum(sizes.astype(np.int64), int(self.min_site_size))

    def _covariates(self, rng: np.random.Generator, site: np.ndarray, sites) -> np.ndarray:
        """X of the individuals of `site` (codes 0..J-1): iid standard normal (docs/designs.md)."""
        return rng.standard_normal((site.size, int(self.n_covariates)))

    def _sites(self, rng: np.random.Generator, J: int):
        """Per-replicate site facts a family needs (the plasmode's real sites); none here."""
        return None

    def _individuals(self, rng: np.random.Generator, site: np.ndarray, R: np.ndarray,
                     U: np.ndarray, sites=None, W=None):
        n = site.size
        X = self._covariates(rng, site, sites)
        logit = np.log(self.prevalence / (1 - self.prevalence)) + self.treat_R * R[site]
        with np.errstate(over="ignore"):        # exp(-logit) = inf is P = 0, as it should be
            T = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
        w = None if W is None else W[site]
        delta = self._linear(self.delta, X, w) + self.beta1 * U[site]
        if EFFECTS[self.effect] is not None:
            delta = delta + self.effect_scale * EFFECTS[self.effect](X)
        m = self._linear(self.main, X, w) + self.cluster_main * U[site]
        if self.nonlinear:
            m = m + self.nonlinear * np.exp(-0.6 * X[:, 0] * X[:, 1] + 0.3 * X[:, 0])
        if self.outcome == "binary":           # logistic model; truth on the probability scale
            p0, p1 = _expit(m), _expit(m + delta)
            u = rng.random(n)
            Y = np.where(T == 1, u < p1, u < p0).astype(float)
            Y0, Y1, delta = p0, p1, p1 - p0
        else:
            e = self.noise_sd * rng.standard_normal(n)
            Y0 = m + e
            Y1 = Y0 + delta
            Y = np.where(T == 1, Y1, Y0)
        columns = {SITE: site, **{c: X[:, k] for k, c in enumerate(self.covariates)}}
        if w is not None:
            columns[SITE_COVARIATE] = w
        frame = pd.DataFrame({**columns, TREAT: T, OUTCOME: Y}, copy=False)
        truth = pd.DataFrame({"Delta": delta, "Y0": Y0, "Y1": Y1,
                              "d_opt": (delta > 0).astype(np.int64)})
        return frame, truth

    def simulate(self, rng: np.random.Generator, J: int, n_j: int) -> Replicate:
        """Draw one replicate; redraw it whole while a training cluster has treated share 0 or 1."""
        for draw in range(1, int(self.max_draws) + 1):
            sites = self._sites(rng, J)
            sizes = self._sizes(rng, J, n_j, sites)
            n_test = np.maximum(1, np.rint(self.test_size * sizes)).astype(np.int64)
            R = self.R_sd * rng.standard_normal(J)
            U = rng.standard_normal(J)
            W = rng.standard_normal(J) if self.site_covariate else None  # after U: old draws unmoved
            train, _ = self._individuals(rng, np.repeat(np.arange(J), sizes), R, U, sites, W)
            test, truth = self._individuals(rng, np.repeat(np.arange(J), n_test), R, U, sites, W)
            share = np.bincount(train[SITE], weights=train[TREAT], minlength=J) / sizes
            if np.all((share > 0) & (share < 1)):
                return Replicate(train, test, truth, draws=draw)
        raise RuntimeError(f"design {self.name}: every one of {self.max_draws} draws had a training "
                           f"cluster with all or no individuals treated (J={J}, n_j={n_j}); "
                           f"raise n_j or lower R_sd / move prevalence towards 0.5")

