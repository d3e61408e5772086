import numpy as np
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf

from simstudy import Design, make
from simstudy.engines.ols import kept_columns, ols


def test_ols_matches_statsmodels():
    rng = np.random.default_rng(0)
    X = sm.add_constant(rng.normal(size=(300, 6)))
    y = X @ rng.normal(size=7) + rng.normal(size=300)
    ref = sm.OLS(y, X).fit()
    fit = ols(X, y)
    assert np.allclose(fit.coef, ref.params, rtol=1e-10, atol=1e-12)
    assert fit.sigma == pytest.approx(np.sqrt(ref.scale), rel=1e-10)
    assert fit.aliased == [] and fit.rank == 7


def test_aliased_columns_dropped_in_order_like_lm():
    """lm drops the LATER of collinear columns and reports NA (R: coef(lm(y ~ a + b + c)))."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 50))
    c = 2 * a - b                           # aliased with (a, b)
    X = np.column_stack([np.ones(50), a, b, c, a * b])
    y = 1 + a - b + 0.5 * a * b + rng.normal(size=50)
    fit = ols(X, y, ["(Intercept)", "a", "b", "c", "a:b"])
    assert fit.aliased == ["c"] and np.isnan(fit["c"]) and fit.rank == 4
    ref = sm.OLS(y, X[:, [0, 1, 2, 4]]).fit()
    assert np.allclose(fit.coef[[0, 1, 2, 4]], ref.params, rtol=1e-10)
    assert np.allclose(fit.predict(X), ref.fittedvalues)
    assert list(kept_columns(np.column_stack([a, a, np.zeros(50), b]))) == [True, False, False, True]


def test_qbase_equals_statsmodels_formula():
    rep = Design().simulate(np.random.default_rng(2), J=10, n_j=30)
    m = make("Q-base").fit(rep.train)
    ref = smf.ols("Y ~ X1 + X2 + X3 + X4 + X5 + T + T:X3 + T:X4 + T:X5", rep.train).fit()
    expected = (ref.params["T"] + ref.params["T:X3"] * rep.test["X3"]
                + ref.params["T:X4"] * rep.test["X4"] + ref.params["T:X5"] * rep.test["X5"])
    assert np.allclose(m.benefit_score(rep.test), expected, rtol=1e-9)


def test_qbase_custom_moderators_and_missing_column():
    rep = Design().simulate(np.random.default_rng(3), J=5, n_j=20)
    m = make("Q-base", {"moderators": ["X3"], "covariates": ["X1", "X3"]}).fit(rep.train)
    ref = smf.ols("Y ~ X1 + X3 + T + T:X3", rep.train).fit()
    assert np.allclose(m.benefit_score(rep.test),
                       ref.params["T"] + ref.params["T:X3"] * rep.test["X3"])
    with pytest.raises(KeyError, match="missing columns.*X9"):
        make("Q-base", {"moderators": ["X9"]}).fit(rep.train)


def test_fixed_effects_ols_equals_dummy_regression():
    from simstudy.engines.ols import fixed_effects_ols
    rep = Design().simulate(np.random.default_rng(12), 7, 20)
    d = rep.train
    fit, alpha = fixed_effects_ols(d[["X1", "X2"]].to_numpy(), d["Y"].to_numpy(),
                                   d["site"].to_numpy())
    ref = smf.ols("Y ~ X1 + X2 + C(site)", d).fit()
    np.testing.assert_allclose(fit.coef, ref.params[["X1", "X2"]], rtol=1e-9)
    np.testing.assert_allclose(alpha[d["site"]] + d[["X1", "X2"]].to_numpy() @ fit.coef,
                               ref.fittedvalues, rtol=1e-9)


def test_crossfit_fixed_effects_equals_one_regression_per_fold():
    """Each fold's slopes and site intercepts from per-(site, fold) moments equal
    fixed_effects_ols on the rows outside the fold, including an aliased column (constant
    within sites: slope 0, as nan_to_num of lm's NA) and a site with no rows outside a fold."""
    from simstudy.engines.ols import crossfit_fixed_effects, fixed_effects_ols
    rng = np.random.default_rng(5)
    n, J, K = 400, 12, 4
    codes = rng.integers(0, J - 1, n)
    codes[:6] = J - 1                                 # site J-1 lives in fold 0 only
    folds = rng.integers(0, K, n)
    folds[:6] = 0
    X = rng.normal(size=(n, 3)) + rng.normal(size=(J, 3))[codes] * 3
    site_level = (codes % 3).astype(float)            # aliased with the site dummies
    D = np.column_stack([X, site_level])
    y = X @ [1.0, -2.0, 0.5] + rng.normal(size=J)[codes] * 4 + rng.normal(size=n)
    B, A = crossfit_fixed_effects(D, y, codes, J, folds)
    for k in range(K):
        out = folds != k
        fit, alpha = fixed_effects_ols(D[out], y[out], codes[out], J)
        assert fit.aliased == ["x3"]
        np.testing.assert_allclose(B[k], np.nan_to_num(fit.coef), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(A[k], alpha, rtol=1e-10, atol=1e-12)
    assert np.isnan(A[0, J - 1]) and not np.isnan(A[1:, J - 1]).any()
