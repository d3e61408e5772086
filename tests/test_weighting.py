"""The seven weighting estimators against R glmnet fits of the same objective (SPEC 4), with
the fold ids R used, and their behaviour on bad data."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simstudy import Design, make

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
