"""The multisite family (docs/designs.md; Suk & Park Section 5): Designs 1-4 are its presets in
conf/design/*.yaml, with unequal site sizes and binary outcomes as options."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Mapping

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..options import FLAG, TEXT, Opt, choice, integer, number
from .base import (OUTCOME, SITE, TREAT, DesignBase, Replicate, data_path, frame_of, param,
                   register_design)

MAX_DRAWS = 10_000           # design.max_draws: redraws of one replicate before it is infeasible
INFEASIBLE = ("a design that needs more draws for one replicate is infeasible: raise n_j, lower "
              "R_sd or move prevalence towards 0.5")
SITE_SIZES = ("equal", "poisson", "uniform", "lognormal", "file")
RULE_KEYS = ("covariates", "moderators", "features")   # design.rules: the rules' inputs
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

    logit P(T=1) = logit(prevalence) + treat_R * R_j + confounding'X,  R_j ~ N(0, R_sd^2)
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
    name: str = param("design1", "the design's name in the store, tables and figures", TEXT)
    beta1: float = param(0.0, "coefficient of the unmeasured cluster moderator U_j in Delta",
                         number())
    nonlinear: float = param(0.0, "coefficient of exp(-0.6 X1 X2 + 0.3 X1) in m(X)", number())
    R_sd: float = param(0.9, "SD of the cluster prevalence effect R_j", number(0, None, "[)"))
    prevalence: float = param(0.5, "overall treatment prevalence: logit P(T=1) = "
                              "logit(prevalence) + treat_R R_j", number(0, 1, "()"))
    treat_R: float = param(0.8, "coefficient of R_j in the treatment logit", number())
    cluster_main: float = param(2.5, "coefficient of U_j in m(X)", number())
    noise_sd: float = param(1.0, "SD of the outcome noise e (continuous outcomes)",
                            number(0, None, "[)"))
    n_covariates: int = param(5, "X1..Xp, iid standard normal", integer(1))
    delta: Mapping[str, float] = param(
        {"intercept": 0.2, "X3": 0.5, "X4": -0.2, "X5": -0.2},
        "Delta = delta'(1, X, W) + effect_scale g(X) + beta1 U_j: terms intercept, X1..Xp, W")
    main: Mapping[str, float] = param(
        {"intercept": 0.7, "X1": 1.0, "X2": 1.0, "X3": -2.0, "X4": 1.0, "X5": 0.5},
        "m(X) = main'(1, X, W) + nonlinear exp(...) + cluster_main U_j")
    test_size: float = param(1.0, "test individuals per cluster as a multiple of n_j",
                             number(0, None, "()"))
    max_draws: int = param(1000, "redraws allowed while a training cluster has treated share "
                           "0 or 1", integer(1, MAX_DRAWS, why=INFEASIBLE))
    site_sizes: str = param("equal", "site sizes: equal (the paper), or drawn per replicate "
                            "with mean n_j, or a data file's", choice(*SITE_SIZES))
    site_size_spread: float = param(0.5, "uniform: half-width / n_j; lognormal: coefficient of "
                                    "variation", number(0, 10, "[)"))
    site_sizes_file: str | None = param(None, "site_sizes=file: a CSV (or the shipped star / "
                                        "thornton)", Opt("str", optional=True))
    site_sizes_column: str | None = param(None, "site_sizes=file: its site column",
                                          Opt("str", optional=True))
    min_site_size: int = param(2, "unequal sizes: at least this many per site (equal sizes: "
                               "must be <= n_j)", integer(2))
    outcome: str = param("continuous", "binary: a logistic outcome model, the truth on the "
                         "probability scale", choice("continuous", "binary"))
    effect: str = param("linear", "g(x) added to Delta (linear: none; docs/designs.md)",
                        choice(*EFFECTS))
    effect_scale: float = param(0.5, "its coefficient: Delta = delta'(1, X, W) + effect_scale "
                                "g(X) + beta1 U_j", number())
    site_covariate: bool = param(False, "true draws an OBSERVED site covariate W_j ~ N(0, 1) "
                                 "(column W; a term of delta/main)", FLAG)
    test_sites: str = param("same", "same: the test set's people come from the training sites "
                            "(the paper); new: from J new sites with freshly drawn site effects",
                            choice("same", "new"))
    confounding: Mapping[str, float] = param(
        {}, "gamma in logit P(T=1 | X, site) = logit(prevalence) + treat_R R_j + gamma'X: "
        "treatment that depends on X within sites (terms X1..Xp, W); {} = the paper")
    rules: Mapping[str, list] = param(
        {}, "method defaults on this design (covariates, moderators, features: the rules' "
        "inputs), used where the study leaves method_defaults at conf/config.yaml's")

    def __post_init__(self):
        for part in ("delta", "main", "rules", "confounding"):
            if isinstance(getattr(self, part), Mapping):
                object.__setattr__(self, part, dict(getattr(self, part)))
        self.validate()

    # ------------------------------------------------------------------ validation
    def check(self) -> None:
        """The rules that tie parameters together (each parameter's own rule is its field's)."""
        names = set(self.covariates) | {"intercept"} | (
            {SITE_COVARIATE} if self.site_covariate else set())
        for part in ("delta", "main", "confounding"):
            terms = getattr(self, part)
            if not isinstance(terms, Mapping):
                example = "{X1: 0.8}" if part == "confounding" else "{intercept: 0.2, X3: 0.5}"
                raise ConfigError(f"design.{part} must be a mapping of terms to numbers, e.g. "
                                  f"{example}")
            for k, v in terms.items():
                number().check(f"design.{part}.{k}", v)
            if part == "confounding" and "intercept" in terms:
                raise ConfigError("design.confounding has a term intercept; the treatment "
                                  "logit's intercept is logit(design.prevalence): set that")
            bad = sorted(set(terms) - names)
            if bad:
                hint = (" (W needs site_covariate: true)" if SITE_COVARIATE in bad
                        and not self.site_covariate else "")
                raise ConfigError(f"design.{part} has unknown terms {bad}; allowed: "
                                  + ("" if part == "confounding" else "intercept, ")
                                  + f"X1..X{self.n_covariates}"
                                  + (", W" if self.site_covariate else "") + hint)
        if not isinstance(self.rules, Mapping) or not set(self.rules) <= set(RULE_KEYS) or not all(
                isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v)
                for v in self.rules.values()):
            raise ConfigError(f"design.rules={self.rules!r}: must map some of "
                              f"{', '.join(RULE_KEYS)} to lists of columns, e.g. "
                              f"{{moderators: [X1, X2], features: [X1, X2]}}")
        if self.effect not in ("linear", "step", "smooth") and self.n_covariates < 2:
            raise ConfigError(f"design.effect={self.effect} needs n_covariates >= 2 (uses X1, X2)")
        if self.nonlinear and self.n_covariates < 2:
            raise ConfigError("design.nonlinear != 0 needs n_covariates >= 2 (uses X1, X2)")
        if self.site_sizes == "file":
            self._file_sizes()                              # a clear error now, not per replicate

    @property
    def covariates(self) -> list[str]:
        return [f"X{k}" for k in range(1, int(self.n_covariates) + 1)]

    def effect_covariates(self) -> list[str]:
        """The covariates with a nonzero term of `delta` (W included), and those of `effect`
        (step, smooth: X1; tree, interaction: X1, X2) when effect_scale != 0."""
        names = [k for k, v in self.delta.items() if k != "intercept" and v]
        if EFFECTS[self.effect] is not None and self.effect_scale:
            names += ["X1"] + (["X2"] if self.effect in ("tree", "interaction") else [])
        order = self.covariates + [SITE_COVARIATE]
        return sorted(set(names), key=lambda c: order.index(c) if c in order else len(order))

    def roles(self) -> dict:
        """DesignBase.roles, with the observed site covariate W among the covariates."""
        out = super().roles()
        out["covariates"] += [SITE_COVARIATE] if self.site_covariate else []
        return out

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
            col = pd.read_csv(path, usecols=[self.site_sizes_column],   # site codes as text: 01 != 1
                              dtype={self.site_sizes_column: str})[self.site_sizes_column]
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
                     U: np.ndarray, sites=None, W=None, truth: bool = True):
        n = site.size
        X = self._covariates(rng, site, sites)
        logit = np.log(self.prevalence / (1 - self.prevalence)) + self.treat_R * R[site]
        w = None if W is None else W[site]
        if self.confounding:                   # treatment that depends on X within sites
            logit = logit + self._linear({**self.confounding, "intercept": 0.0}, X, w)
        with np.errstate(over="ignore"):        # exp(-logit) = inf is P = 0, as it should be
            T = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
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
        frame = frame_of({**columns, TREAT: T, OUTCOME: Y})
        if not truth:                         # a training set: its truth is never used
            return frame, None
        return frame, frame_of({"Delta": delta, "Y0": Y0, "Y1": Y1,
                                "d_opt": (delta > 0).astype(np.int64)})

    def _new_sites(self, rng: np.random.Generator, J: int, n_j: int):
        """The test set of test_sites=new: J new sites (labels J..2J-1) with their own draws of
        everything a site has (a plasmode's real site, its size, R_j, U_j, W_j), drawn after
        the training set, so the training data are those of test_sites=same."""
        sites = self._sites(rng, J)
        sizes = self._sizes(rng, J, n_j, sites)
        n_test = np.maximum(1, np.rint(self.test_size * sizes)).astype(np.int64)
        R = self.R_sd * rng.standard_normal(J)
        U = rng.standard_normal(J)
        W = rng.standard_normal(J) if self.site_covariate else None
        test, truth = self._individuals(rng, np.repeat(np.arange(J), n_test), R, U, sites, W)
        test[SITE] = test[SITE].to_numpy() + J
        return test, truth

    def _more_people(self, rng: np.random.Generator, factor: int, *, sizes, R, U, sites, W):
        """Replicate.more: `factor` x n_j new people in each training site j (its R_j, U_j,
        W_j, real site), with their truth: the people a rule's true value is taken over."""
        site = np.repeat(np.arange(sizes.size), int(factor) * sizes)
        return self._individuals(rng, site, R, U, sites, W)

    def simulate(self, rng: np.random.Generator, J: int, n_j: int) -> Replicate:
        """Draw one replicate; redraw it whole while a training cluster has treated share 0 or 1."""
        for draw in range(1, int(self.max_draws) + 1):
            sites = self._sites(rng, J)
            sizes = self._sizes(rng, J, n_j, sites)
            n_test = np.maximum(1, np.rint(self.test_size * sizes)).astype(np.int64)
            R = self.R_sd * rng.standard_normal(J)
            U = rng.standard_normal(J)
            W = rng.standard_normal(J) if self.site_covariate else None  # after U: old draws unmoved
            train, _ = self._individuals(rng, np.repeat(np.arange(J), sizes), R, U, sites, W,
                                         truth=False)
            if self.test_sites == "new":     # J sites never seen in training (issue 41)
                test, truth = self._new_sites(rng, J, n_j)
            else:
                test, truth = self._individuals(rng, np.repeat(np.arange(J), n_test), R, U,
                                                sites, W)
            share = np.bincount(train[SITE].to_numpy(), weights=train[TREAT].to_numpy(float),
                                minlength=J) / sizes
            if np.all((share > 0) & (share < 1)):
                return Replicate(train, test, truth, draws=draw, more=partial(
                    self._more_people, sizes=sizes, R=R, U=U, sites=sites, W=W))
        raise RuntimeError(f"design {self.name}: every one of {self.max_draws} draws had a training "
                           f"cluster with all or no individuals treated (J={J}, n_j={n_j}); "
                           f"raise n_j or lower R_sd / move prevalence towards 0.5")

