"""The seven weighting estimators against R glmnet fits of the same objective (SPEC 4), with
the fold ids R used, and their behaviour on bad data."""
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simstudy import ConfigError, Design, make

FIX = Path(__file__).parent / "fixtures"
REF = json.loads((FIX / "glmnet_reference.json").read_text())["weighting"]
W = ["W-base", "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


@pytest.mark.parametrize("method", W)
def test_coefficients_equal_R(method):
    d = pd.read_csv(FIX / "design2_25x25.csv")
    m = make(method, {"foldid": REF["foldid"]}).fit(d)
    r = REF[method.replace("-", "_")]
    assert m.cv_.lambda_min == pytest.approx(r["lambda_min"], rel=1e-8)
    ours = np.r_[m.a0_, m.a_]
    if m.site_effects_ is not None:
        ours = np.r_[ours, m.site_effects_.to_numpy()[1:]]
    np.testing.assert_allclose(ours, r["coef"], rtol=1e-6, atol=1e-8)
    score = m.benefit_score(d)
    np.testing.assert_allclose(score[:5], (m.a0_ + d[["X3", "X4", "X5"]].to_numpy() @ m.a_
                                           + (d["site"].map(m.site_effects_).to_numpy()
                                              if m.site_effects_ is not None else 0))[:5])


def test_random_folds_come_from_the_methods_seed():
    rep = Design().simulate(np.random.default_rng(3), 8, 30)
    a = make("W-aug", {"random_state": 5}).fit(rep.train)
    b = make("W-aug", {"random_state": 5}).fit(rep.train)
    c = make("W-aug", {"random_state": 6}).fit(rep.train)
    assert np.array_equal(a.cv_.foldid, b.cv_.foldid) and not np.array_equal(a.cv_.foldid, c.cv_.foldid)
    np.testing.assert_array_equal(a.benefit_score(rep.test), b.benefit_score(rep.test))


def test_pure_site_and_unseen_site_errors():
    rep = Design().simulate(np.random.default_rng(4), 6, 20)
    train = rep.train.copy()
    train.loc[train["site"] == 2, "T"] = 1
    with pytest.raises(ValueError, match="1 sites have everyone or no one treated.*site 2"):
        make("W-noaug").fit(train)
    make("W-base").fit(train)                          # overall propensity: still defined
    test = rep.test.copy()
    test.loc[test.index[:4], "site"] = 77
    ws = make("WS-aug").fit(rep.train)
    with pytest.raises(ValueError, match="4 rows belong to sites not in the training data"):
        ws.benefit_score(test)
    lenient = make("WS-aug", {"new_sites": "reference"}).fit(rep.train)
    assert np.all(np.isfinite(lenient.benefit_score(test)))
    assert np.all(np.isfinite(make("W-aug").fit(rep.train).benefit_score(test)))


# ---------------------------------------------------------------- personalized's refit loop
def _first_fit_and_manual_loop(method, train, seed, max_fits=5):
    """An independent re-statement of SPEC 4a: fit with folds from the seed's stream; while no
    coefficient besides the contrast intercept is non-zero at lambda.min, draw the next folds
    from the same stream and refit; keep the last. Returns (first fit's nsel, fits, last coef)."""
    from simstudy.engines.lasso import cv_lasso, make_folds
    one = make(method, {"random_state": seed, "max_fits": 1}).fit(train)
    rng = np.random.default_rng(seed)
    cv = None
    fits, nsel0 = 0, None
    X, y, w, pf = one._last_problem
    while fits < max_fits:
        folds = make_folds(len(y), 5, rng)
        cv = cv_lasso(X, y, w, pf, intercept=False, foldid=folds)
        fits += 1
        nsel = int(np.sum(cv.coef("lambda.min")[1][1:] != 0))
        nsel0 = nsel if nsel0 is None else nsel0
        if nsel > 0:
            break
    return nsel0, fits, cv.coef("lambda.min")[1], one


@pytest.mark.parametrize("method", ["W-base", "W-noaug", "W-aug"])
def test_refit_loop_triggers_exactly_when_no_moderator_is_selected(method):
    seen = set()
    for seed in range(10):
        rep = Design().simulate(np.random.default_rng(seed), 25, 25)
        nsel0, fits, coef, one = _first_fit_and_manual_loop(method, rep.train, seed)
        m = make(method, {"random_state": seed}).fit(rep.train)
        assert m.fits_ == fits and one.fits_ == 1
        assert (m.fits_ > 1) == (nsel0 == 0)
        np.testing.assert_allclose(np.r_[m.a0_, m.a_], coef, rtol=1e-12, atol=1e-14)
        if m.fits_ == 1:                         # no refit: the single-fit scores, bit for bit
            np.testing.assert_array_equal(m.benefit_score(rep.test), one.benefit_score(rep.test))
        seen.add(m.fits_ > 1)
    assert seen == {True, False}                 # both branches were exercised


@pytest.mark.parametrize("method", ["WS-noaug", "WS-aug", "WS-augID"])
def test_refit_loop_never_fires_for_WS_methods(method):
    for seed in range(6):
        rep = Design().simulate(np.random.default_rng(seed), 25, 25)
        assert make(method, {"random_state": seed}).fit(rep.train).fits_ == 1


def test_refit_loop_skipped_with_given_folds_and_max_fits_validated():
    rep = Design().simulate(np.random.default_rng(11), 25, 25)
    folds = np.resize(np.arange(1, 6), len(rep.train))
    for seed in range(8):
        assert make("W-noaug", {"random_state": seed, "foldid": folds}).fit(rep.train).fits_ == 1
    from simstudy import ConfigError
    for bad in (0, -1, 2.5, "abc", True):
        with pytest.raises(ConfigError, match="max_fits"):
            make("W-aug", {"max_fits": bad})
    with pytest.raises(ConfigError, match="nfolds"):
        make("W-aug", {"nfolds": 1})


def test_method_options_are_checked_by_make_from_the_declared_constraints():
    """One declaration per option (Method.OPTIONS), checked by make(); constructors only store."""
    from simstudy.methods import REGISTRY
    cases = [("W-aug", {"nfolds": 2}, "nfolds=2: must be an integer >= 3"),
             ("W-aug", {"lambda_rule": "min"}, "lambda_rule='min': allowed"),
             ("Q-rs", {"reml": "yes please"}, "reml"),
             ("PT", {"depth": 5}, "depth=5: must be an integer 1..4"),
             ("PT", {"min_leaf": 0}, "min_leaf=0"),
             ("Q-ri", {"new_sites": "x"}, "new_sites='x': allowed")]
    for name, opts, says in cases:
        with pytest.raises(ConfigError, match=re.escape(says)):
            make(name, opts)
    make("PT", {"min_leaf": None, "split_points": None})           # optional: null allowed
    for name, (cls, preset) in REGISTRY.items():                  # every preset passes its own
        cls.check_options({**preset})
