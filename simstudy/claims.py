"""The value a rule claims (issue 41, item 2; docs/metrics.md "Value claims").

A method's rule is learned on the LEARNING half of the training data (half of every site's
treated and half of its controls, drawn at random), and its value is estimated on the other,
HELD-OUT half by augmented inverse probability weighting (AIPW; Robins, Rotnitzky & Zhao 1994;
the policy-evaluation form of Athey & Wager 2021):

    psi_i = mu_d(X_i) + 1{T_i = d_i} (Y_i - mu_d(X_i)) / P(T_i = d_i | X_i, site),  d_i = d(X_i)
    value_hat = mean_i psi_i,   value_se^2 = sum_j sum_{i in j} (psi_i - psi_j)^2 / ((n - J) n)

mu_t from OLS on the learning half of Y on site intercepts, X, T and T:X (PT's cluster-aware
outcome model, policytree.outcome_means); the propensity is the site's treated share in the
training data (`site`: the paper's randomisation) or a logistic regression of T on X and site
fitted on the training data (`estimated`, engines.propensity). The SE is stratified by site: the trial's sites are
fixed and each contributes a fixed share of the held-out half, so only within-site variation is
sampling error. The estimand (`value_true`) is the learned rule's value for NEW people in the
trial's OWN sites, each site weighted by its size: the mean of Y(d(X)) over TRUTH_FACTOR x n
people drawn from the design (`Replicate.more`), TRUTH_FACTOR x n_j in site j. Rules that read
the truth (the oracle) have a true value but no claim (value_hat NaN).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .designs.base import OUTCOME, SITE, TREAT
from .engines import propensity as P
from .methods.policytree import aipw as gamma
from .methods.policytree import outcome_means
from .metrics import VALUE_METRICS

VALUE_CLAIMS = ("none", "site", "estimated")     # the study key value_claims
TRUTH_FACTOR = 20          # value_true over 20 x n new people: its MC SD ~1/9 of value_se's


def learning_half(site, t, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of the learning half: in every (site, arm) cell a random floor or ceil
    (at random, for odd cells) half of its rows; the rest is the held-out half. A cell of one
    (a site's only treated or only control person) is always learned from: a site keeps both
    arms in the learning half wherever the trial has them, so the methods that weight by the
    site's share (W-*, WS-*, PT, CF, DR) can be refitted there; that site's held-out scores
    for the missing arm then rest on the outcome model (mu_t), the propensity staying the
    trial's. (A coin there lost those methods' claims in 5-40% of replicates at (150, 25).)"""
    site, t = np.asarray(site), np.asarray(t)
    _, cell = np.unique(np.column_stack([pd.factorize(site)[0], t]), axis=0, return_inverse=True)
    cell = cell.ravel()
    key = rng.random(site.size)                      # a random order within each cell
    order = np.lexsort((key, cell))
    sizes = np.bincount(cell)
    take = sizes // 2 + (rng.random(sizes.size) < 0.5) * (sizes % 2)
    take[sizes == 1] = 1                  # after the draw: other cells keep their coins
    rank = np.empty(site.size, np.int64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    rank[order] = np.arange(site.size) - np.repeat(starts, sizes)
    return rank < take[cell]


def aipw(d, y, t, mu0, mu1, e1, site) -> tuple[float, float]:
    """(value_hat, value_se) of the rule d on held-out rows (module docstring): the mean of the
    AIPW scores psi_i = Gamma_i(d_i) (policytree.aipw) and its SE from their within-site
    variation."""
    y, t = np.asarray(y, float), np.asarray(t, float)
    G = gamma(np.column_stack([mu0, mu1]), t, y, np.asarray(e1, float))
    psi = np.where(np.asarray(d, bool), G[:, 1], G[:, 0])
    codes, _ = pd.factorize(np.asarray(site))
    n, J = psi.size, codes.max() + 1
    means = np.bincount(codes, weights=psi, minlength=J) / np.bincount(codes, minlength=J)
    resid = psi - means[codes]
    se = np.sqrt(np.dot(resid, resid) / max(n - J, 1) / n) if n > J else np.nan
    return float(psi.mean()), float(se)


def value_claims(rep, methods: list[str], fit, kind: str, covariates: list[str],
                 rng: np.random.Generator, uses_truth=lambda name: False) -> dict[str, dict]:
    """VALUE_METRICS per method of one replicate: `fit(name, learn, rows) -> scores | str` fits
    method `name` on the learning half and scores `rows` (an error text when it fails)."""
    train = rep.train
    mask = learning_half(train[SITE].to_numpy(), train[TREAT].to_numpy(), rng)
    learn, held = train[mask].reset_index(drop=True), train[~mask].reset_index(drop=True)
    people, truth = rep.more(rng, TRUTH_FACTOR)
    codes, sites = pd.factorize(train[SITE])
    X, T = train[covariates].to_numpy(float), train[TREAT].to_numpy(float)
    # mu_t of the held-out rows from the learning half (its fold: the held-out half is fold 0)
    mu = outcome_means(X, T, train[OUTCOME].to_numpy(float), codes, sites.size,
                       mask.astype(np.int64))[~mask]
    e1 = P.propensity(kind, X, T, codes, sites.size)[~mask]
    mu0, mu1 = mu[:, 0], mu[:, 1]
    y0, y1 = truth["Y0"].to_numpy(float), truth["Y1"].to_numpy(float)
    rows = pd.concat([held, people], ignore_index=True)
    rows_truth = pd.concat([rows, pd.concat([truth.iloc[:0].reindex(range(len(held))), truth],
                                            ignore_index=True)], axis=1)
    out = {}
    for name in methods:
        score = fit(name, learn, rows_truth if uses_truth(name) else rows)
        if isinstance(score, str):
            out[name] = {**dict.fromkeys(VALUE_METRICS, np.nan), "claim_error": score}
            continue
        s_held, s_people = score[:len(held)], score[len(held):]
        value_true = float(np.where(s_people > 0, y1, y0).mean())
        if uses_truth(name):              # the oracle: no claim from data
            out[name] = {"value_hat": np.nan, "value_se": np.nan, "value_true": value_true}
            continue
        v, se = aipw(s_held > 0, held[OUTCOME], held[TREAT], mu0, mu1, e1, held[SITE])
        out[name] = {"value_hat": v, "value_se": se, "value_true": value_true}
    return out
