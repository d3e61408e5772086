"""The weighted-lasso engine against R glmnet (tests/fixtures/glmnet_reference.json, made by
scripts/make_glmnet_fixtures.R with thresh = 1e-14) and scikit-learn."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import Lasso

from simstudy.engines.lasso import cv_lasso, lasso_path, make_folds

REF = json.loads((Path(__file__).parent / "fixtures" / "glmnet_reference.json").read_text())
D = REF["data"]
X, y, w, pf, foldid = (np.array(D[k], float) for k in ("X", "y", "w", "pf", "foldid"))


def rel(a, b, floor):
    return np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.maximum(np.abs(b), floor))


@pytest.mark.parametrize("intercept", [True, False])
def test_path_and_cv_equal_glmnet_with_weights_and_zero_penalties(intercept):
    r = REF["intercept" if intercept else "nointercept"]
    fit = lasso_path(X, y, w, pf, intercept=intercept)
    assert fit.lambdas.size == len(r["lambda"])            # same early end of the path
    assert rel(fit.lambdas, r["lambda"], 0) < 1e-10
    beta = np.array(r["beta"])
    assert rel(fit.beta, beta, 1e-2 * np.abs(beta).max()) < 1e-6
    assert rel(fit.a0, r["a0"], 1e-2) < 1e-6
    assert rel(fit.dev_ratio, r["dev_ratio"], 1e-3) < 1e-6
    cv = cv_lasso(X, y, w, pf, foldid=foldid, intercept=intercept)
    assert rel(cv.cvm, r["cvm"], 0) < 1e-6 and rel(cv.cvsd, r["cvsd"], 0) < 1e-6
    assert cv.lambda_min == pytest.approx(r["lambda_min"], rel=1e-10)
    assert cv.lambda_1se == pytest.approx(r["lambda_1se"], rel=1e-10)
    a0, b = cv.coef("lambda.min")
    coef = np.array(r["coef_min"])
    assert rel(np.r_[a0, b], coef, 1e-2 * np.abs(coef).max()) < 1e-6


def test_sparse_input_gives_the_same_answer():
    a = cv_lasso(X, y, w, pf, foldid=foldid)
    b = cv_lasso(sp.csr_matrix(X), y, w, pf, foldid=foldid)
    np.testing.assert_allclose(a.cvm, b.cvm, rtol=1e-12)
    np.testing.assert_allclose(a.path.beta, b.path.beta, atol=1e-12)


def test_wide_problem_lambda_path_and_fit():
    """p > n: lambda.min.ratio 0.01; coefficients need not be unique there, fitted values are."""
    Xw, yw = np.array(D["Xw"]), np.array(D["yw"])
    r = REF["wide"]
    fit = lasso_path(Xw, yw)
    assert fit.lambdas.size == 100 and rel(fit.lambdas, r["lambda"], 0) < 1e-10
    ours = fit.predict(Xw)
    theirs = np.array(r["a0"])[None, :] + Xw @ np.array(r["beta"])
    assert np.max(np.abs(ours - theirs)) < 1e-4 * np.abs(yw).max()


def test_plain_problem_equals_sklearn_after_change_of_scale():
    """glmnet standardises X by its (population) SD and penalises the standardised
    coefficients: sklearn's Lasso(alpha = lambda) on X / sd gives beta * sd."""
    r = REF["plain"]
    fit = lasso_path(X, y)
    assert rel(fit.beta, np.array(r["beta"]), 1e-2) < 1e-6
    sd = X.std(axis=0)
    for k in (3, 10, 30):
        sk = Lasso(alpha=fit.lambdas[k], tol=1e-14, max_iter=100000).fit(X / sd, y)
        np.testing.assert_allclose(sk.coef_ / sd, fit.beta[:, k], atol=1e-8)
        assert sk.intercept_ == pytest.approx(fit.a0[k], abs=1e-8)


def test_folds_like_cv_glmnet_and_reproducible():
    f1 = make_folds(103, 5, np.random.default_rng(1))
    f2 = make_folds(103, 5, np.random.default_rng(1))
    assert np.array_equal(f1, f2) and sorted(np.bincount(f1)[1:]) == [20, 20, 21, 21, 21]
    with pytest.raises(ValueError, match="nfolds"):
        make_folds(10, 2, np.random.default_rng(0))


def test_bad_inputs():
    with pytest.raises(ValueError, match="penalty_factor has length"):
        lasso_path(X, y, w, pf[:3])
    with pytest.raises(ValueError, match="weights"):
        lasso_path(X, y, -w, pf)
    with pytest.raises(ValueError, match="no variation"):
        lasso_path(X, np.ones_like(y))


def test_site_dummy_design_equals_the_explicit_matrix():
    """The structured [D | signed site dummies] design gives the moments, the CV fit and the
    predictions of the same matrix written out (scipy.sparse), to rounding."""
    from simstudy.engines.lasso import Moments, SiteDummyDesign
    rng = np.random.default_rng(3)
    n, J = 300, 12
    codes = rng.integers(0, J, n)
    sign = rng.choice([-1.0, 1.0], n)
    D = sign[:, None] * np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    y, w = rng.standard_normal(n) + 0.3 * codes, rng.uniform(1, 3, n)
    Z = SiteDummyDesign(D, codes, sign, J)
    A = Z.toarray()
    assert A.shape == Z.shape == (n, 4 + J - 1)
    a, b = Moments.of(Z, y, w), Moments.of(sp.csr_matrix(A), y, w)
    for f in ("sx", "sxx", "sxy"):
        np.testing.assert_allclose(getattr(a, f), getattr(b, f), rtol=1e-12, atol=1e-12)
    pf = np.r_[0.0, 0, 0, 0, np.ones(J - 1)]
    folds = np.resize(np.arange(1, 6), n)
    c1 = cv_lasso(Z, y, w, pf, foldid=folds, intercept=False)
    c2 = cv_lasso(sp.csr_matrix(A), y, w, pf, foldid=folds, intercept=False)
    assert c1.index_min == c2.index_min
    np.testing.assert_allclose(c1.path.beta, c2.path.beta, rtol=1e-9, atol=1e-11)
    B = c1.path.beta
    np.testing.assert_allclose(Z[folds == 2] @ B, A[folds == 2] @ B, rtol=1e-12, atol=1e-12)


def test_every_path_point_meets_the_lasso_optimality_conditions():
    """The path's active-set solves keep one factor while the active set stays (engine
    `_active_solve`) and follow the solution's line in lambda between active-set changes
    (`_line_step`): every one of its solutions must still be THE lasso solution at its
    lambda. Checked by the KKT conditions on the original scale, computed here in numpy:
    g_j = sum w~ x_j (y - x'b), with |g_j| <= lambda pf~_j s_j where b_j = 0 and
    g_j = lambda pf~_j s_j sign(b_j) where not (s_j the weighted SD of x_j), on a WS-like problem
    (site dummies, unpenalised dense columns, no intercept) whose active set changes many times."""
    from simstudy.engines.lasso import SiteDummyDesign
    rng = np.random.default_rng(11)
    n, J = 600, 30
    codes = rng.integers(0, J, n)
    sign = rng.choice([-1.0, 1.0], n)
    D = sign[:, None] * np.column_stack([np.ones(n), rng.standard_normal((n, 3))])
    site_effect = rng.standard_normal(J) * (rng.uniform(size=J) < 0.5)
    y = D[:, 1] + sign * site_effect[codes] + rng.standard_normal(n)
    w = rng.uniform(1, 3, n)
    A = SiteDummyDesign(D, codes, sign, J).toarray()
    p = A.shape[1]
    pf = np.r_[0.0, 0, 0, 0, np.ones(J - 1)]
    path = lasso_path(SiteDummyDesign(D, codes, sign, J), y, w, pf, intercept=False)
    wt = w / w.sum()
    sd = np.sqrt(wt @ A ** 2 - (wt @ A) ** 2)
    pft = pf * p / pf.sum()
    sizes = []
    for m in range(1, path.lambdas.size):           # the first lambda is glmnet's extrapolation
        b, lam = path.beta[:, m], path.lambdas[m]
        g = A.T @ (wt * (y - A @ b))
        bound = lam * pft * sd
        on = b != 0
        sizes.append(on[4:].sum())
        assert np.all(np.abs(g[~on]) <= bound[~on] * (1 + 1e-9) + 1e-12), m
        np.testing.assert_allclose(g[on], bound[on] * np.sign(b[on]), rtol=1e-9, atol=1e-12)
    assert len(set(sizes)) >= 10             # the active set did change along the path
