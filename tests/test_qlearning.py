"""The seven Q-learning estimators against R (lm / lme4 fits of the authors' formulas in
tests/fixtures/lme4_reference.json) and statsmodels."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from simstudy import Design, make

FIX = Path(__file__).parent / "fixtures"
REF = json.loads((FIX / "lme4_reference.json").read_text())
Q = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs"]
TV = {"Q-dm": ["TX3", "TX4", "TX5"], "Q-dm-ri": ["TX3", "TX4", "TX5"],
      "Q-dm-rs": ["TX3", "TX4", "TX5"]}


def r_score(name, method, d):
    """The benefit score from R's coefficients (and lme4's conditional modes)."""
    ref = REF[name][method.replace("-", "_")]
    coef = {k: float(v) for k, v in (ref.get("fixef") or ref["coef"]).items()}
    inter = TV.get(method, ["X3:T", "X4:T", "X5:T"])
    score = coef["T"] + d[["X3", "X4", "X5"]].to_numpy() @ np.array([coef[k] for k in inter])
    if method in ("Q-rs", "Q-dm-rs"):
        slopes = dict(zip(map(int, ref["ranef_groups"]), np.asarray(ref["ranef"])[:, 1]))
        score = score + d["site"].map(slopes).to_numpy()
    return score


@pytest.mark.parametrize("name", ["design2_25x25", "design1_25x25", "design2_12x40"])
@pytest.mark.parametrize("method", Q)
def test_scores_equal_R(name, method):
    d = pd.read_csv(FIX / f"{name}.csv")
    ours = make(method).fit(d).benefit_score(d)
    np.testing.assert_allclose(ours, r_score(name, method, d), rtol=1e-5, atol=1e-6)


def test_q_fe_and_q_dm_identical():
    rep = Design(name="d2", beta1=0.2).simulate(np.random.default_rng(8), 20, 30)
    fe, dm = make("Q-fe").fit(rep.train), make("Q-dm").fit(rep.train)
    assert fe.b_treat_ == pytest.approx(dm.b_treat_, rel=1e-10)
    np.testing.assert_allclose(fe.b_interaction_, dm.b_interaction_, rtol=1e-10)


def test_q_fe_with_custom_sets_equals_dummy_regression():
    rep = Design().simulate(np.random.default_rng(9), 8, 25)
    opts = {"covariates": ["X1", "X2"], "moderators": ["X2", "X4"]}
    m = make("Q-fe", opts).fit(rep.train)
    ref = smf.ols("Y ~ X1 + X2 + T + T:X2 + T:X4 + C(site)", rep.train).fit()
    np.testing.assert_allclose(m.benefit_score(rep.test), ref.params["T"]
                               + ref.params["T:X2"] * rep.test["X2"]
                               + ref.params["T:X4"] * rep.test["X4"], rtol=1e-8)


def test_random_slope_uses_each_sites_blup_and_handles_new_sites():
    rep = Design(name="d2", beta1=0.2).simulate(np.random.default_rng(10), 10, 30)
    m = make("Q-rs").fit(rep.train)
    test = rep.test.copy()
    base = m.b_treat_ + test[["X3", "X4", "X5"]].to_numpy() @ m.b_interaction_
    np.testing.assert_allclose(m.benefit_score(test) - base,
                               test["site"].map(m.fit_.ranef["T"]).to_numpy())
    test.loc[test.index[:3], "site"] = 99
    np.testing.assert_allclose(m.benefit_score(test)[:3], base[:3])     # population slope
    strict = make("Q-rs", {"new_sites": "error"}).fit(rep.train)
    with pytest.raises(ValueError, match="3 rows belong to sites not in the training data"):
        strict.benefit_score(test)


def test_aliased_moderator_is_reported_not_silent():
    rep = Design().simulate(np.random.default_rng(11), 6, 20)
    train = rep.train.assign(X6=2 * rep.train["X3"])
    m = make("Q-ri", {"moderators": ["X3", "X6"]}).fit(train)
    assert m.aliased_ == ["T:X6"]
    assert np.all(np.isfinite(m.benefit_score(train.head(5))))
