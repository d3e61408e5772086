"""The mixed-model engine against lme4 (published fits in tests/fixtures, made by
scripts/make_lme4_fixtures.R) and statsmodels MixedLM."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from simstudy import Design
from simstudy.engines.lmm import fit_lmm

FIX = Path(__file__).parent / "fixtures"
REF = json.loads((FIX / "lme4_reference.json").read_text())
RTOL = 1e-5          # 5 significant digits


def close(ours, ref, rtol=RTOL, atol=1e-6):
    np.testing.assert_allclose(np.asarray(ours, float), np.asarray(ref, float), rtol=rtol, atol=atol)


def check_against_lme4(fit, ref, n_re):
    close(fit.beta[~np.isnan(fit.beta)], list(ref["fixef"].values()))
    close(fit.se[~np.isnan(fit.se)], list(ref["se"].values()))
    close(fit.criterion, ref["criterion"])
    sd = np.asarray(ref["varcorr"]["sdcor"], float)
    ours = list(fit.re_sd) + ([fit.re_corr[1, 0]] if n_re == 2 else []) + [fit.sigma]
    if n_re == 2 and ref["singular"]:            # correlation is +-1 or undefined at the boundary
        close(ours[:2] + ours[3:], np.r_[sd[:2], sd[3:]], atol=1e-4)
    else:
        close(ours, sd, atol=1e-4)
    close(fit.ranef.to_numpy(), np.asarray(ref["ranef"], float), atol=1e-5 * np.abs(ref["ranef"]).max())
    assert fit.converged


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("model", ["ri", "rs"])
def test_sleepstudy(model, reml):
    s = pd.read_csv(FIX / "sleepstudy.csv")
    X = np.column_stack([np.ones(len(s)), s["Days"]])
    fit = fit_lmm(X, s["Reaction"], s["Subject"], X if model == "rs" else None,
                  names=["(Intercept)", "Days"], reml=reml)
    ref = REF[f"sleepstudy_{model}_{'REML' if reml else 'ML'}"]
    check_against_lme4(fit, ref, 2 if model == "rs" else 1)
    close(fit.theta, ref["theta"], atol=1e-5)


def design_matrix(d):
    V = d[["X3", "X4", "X5"]].to_numpy()
    return np.column_stack([np.ones(len(d)), d[["X1", "X2", "X3", "X4", "X5"]], d["T"],
                            d["T"].to_numpy()[:, None] * V])


@pytest.mark.parametrize("name", ["design2_25x25", "design1_25x25", "design2_12x40"])
def test_simulated_designs_ri_rs(name):
    d = pd.read_csv(FIX / f"{name}.csv")
    X = design_matrix(d)
    Z = np.column_stack([np.ones(len(d)), d["T"]])
    check_against_lme4(fit_lmm(X, d["Y"], d["site"]), REF[name]["Q_ri"], 1)
    rs = fit_lmm(X, d["Y"], d["site"], Z)
    check_against_lme4(rs, REF[name]["Q_rs"], 2)
    assert rs.singular == REF[name]["Q_rs"]["singular"]
    ml = fit_lmm(X, d["Y"], d["site"], Z, reml=False)
    check_against_lme4(ml, REF[name]["Q_rs_ML"], 2)


def test_rank_deficient_fixed_effects_dropped_like_lmer():
    d = pd.read_csv(FIX / "design2_12x40.csv")
    X = np.column_stack([np.ones(len(d)), d["X1"], 2 * d["X1"], d["X2"], d["T"]])
    fit = fit_lmm(X, d["Y"], d["site"], np.column_stack([np.ones(len(d)), d["T"]]),
                  names=["(Intercept)", "X1", "X1copy", "X2", "T"])
    assert fit.aliased == ["X1copy"] and np.isnan(fit["X1copy"])
    ref = REF["rankdef_lmer"]
    close(fit.beta[[0, 1, 3, 4]], list(ref["fixef"].values()))
    close(fit.criterion, ref["criterion"])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("slope", [False, True])
def test_agrees_with_statsmodels_mixedlm(seed, slope):
    """Where MixedLM converges cleanly, the same REML fit; where it does not, our REML
    log-likelihood is at least as high (we found a better optimum, never a worse one)."""
    import warnings
    rep = Design(name="d2", beta1=0.2).simulate(np.random.default_rng(seed), 30, 40)
    d = rep.train
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sm = smf.mixedlm("Y ~ X1 + X2 + T", d, groups=d["site"],
                         re_formula="~T" if slope else "~1").fit(reml=True)
    clean = sm.converged and not any("converge" in str(w.message).lower() or
                                     "boundary" in str(w.message).lower() for w in caught)
    X = np.column_stack([np.ones(len(d)), d[["X1", "X2"]], d["T"]])
    ours = fit_lmm(X, d["Y"], d["site"], np.column_stack([np.ones(len(d)), d["T"]]) if slope
                   else None)
    assert ours.loglik >= sm.llf - 1e-6
    if clean:
        close(ours.beta, sm.fe_params.to_numpy(), rtol=1e-4)
        close(ours.sigma ** 2, sm.scale, rtol=1e-4)
        close(ours.re_cov, sm.cov_re.to_numpy(), rtol=1e-3, atol=1e-4)
        close(ours.loglik, sm.llf, rtol=1e-7)
    else:
        assert slope, "the random-intercept fit should converge in statsmodels"


def test_bad_inputs():
    X = np.ones((10, 1))
    with pytest.raises(ValueError, match="at least 2 groups"):
        fit_lmm(X, np.arange(10.0), np.zeros(10))
    with pytest.raises(ValueError, match="finite"):
        fit_lmm(X, np.r_[np.nan, np.arange(9.0)], np.arange(10) % 2)


def test_random_slope_fit_near_the_boundary_reaches_the_optimum(monkeypatch):
    """A Q-rs fit (Design 2, J=25, n_j=150, replicate 2 of seed 2024) whose random-slope
    variance goes to 0: the Newton loop used to stop 80 REML units short of the optimum (theta
    1.34 instead of 3.34). Its criterion and theta must equal the minimum that an independent
    optimiser (scipy's L-BFGS-B, from our point and from lme4's start) finds for the same
    profiled criterion, and the fit must be singular (theta_3 = 0) as lmer reports it."""
    import scipy.optimize as so

    import simstudy.engines.lmm as lmm
    import simstudy.methods.qlearning as qlearning
    from simstudy.designs import make_design, preset
    from simstudy.fitting import data_seed, fit_and_score
    calls = []
    monkeypatch.setattr(qlearning, "fit_lmm", lambda *a, **k: calls.append((a, k)) or
                        fit_lmm(*a, **k))
    rep = make_design(preset("design2")).simulate(
        np.random.default_rng(data_seed(2024, "design2", 25, 150, 2)), 25, 150)
    fit_and_score("Q-rs", rep.train, rep.test, 1,
                  defaults={"covariates": ["X1", "X2", "X3", "X4", "X5"],
                            "moderators": ["X3", "X4", "X5"]})
    (X, y, groups, Z), kw = calls[0]
    fit = fit_lmm(X, y, groups, Z, **kw)
    labels, codes = lmm._codes(groups)
    cp = lmm._Crossprods(X[:, lmm.kept_columns(X, 1e-7)], y, np.asarray(Z, float), codes,
                         labels.size)
    fg = lambda th: cp.objective(np.asarray(th, float), True)          # noqa: E731
    best = min((so.minimize(lambda t: fg(t)[0], np.array(x0, float), jac=lambda t: fg(t)[1],
                            method="L-BFGS-B", bounds=[(0, None), (None, None), (0, None)],
                            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000})
                for x0 in (fit.theta, [1.0, 0.0, 1.0])), key=lambda r: r.fun)
    assert fit.criterion == pytest.approx(best.fun, rel=1e-9)
    np.testing.assert_allclose(fit.theta, best.x, atol=1e-4)
    assert fit.theta[2] == 0.0 and fit.singular and fit.theta[0] > 3.3


def test_lapack_calls_give_numbas_linalg_numbers():
    """The mixed model's deviance calls LAPACK/BLAS directly (engines/lapack.py: cholesky_c,
    inverse_t, gemv_t, dot) instead of numba's np.linalg.cholesky, inv and np.dot, promising the
    same numbers: compared bit for bit with numba's own, on SPD matrices of the sizes a mixed
    model has (2..14 fixed effects), and both raise on a matrix that is not positive definite."""
    import numba

    from simstudy.engines import lapack

    @numba.njit
    def numbas(A, x):
        C = np.linalg.inv(A)
        b = C @ x
        return np.linalg.cholesky(A), C, b, x @ b

    rng = np.random.default_rng(8)
    for p in (2, 5, 10, 14):
        M = rng.standard_normal((3 * p, p))
        A = M.T @ M + 0.1 * np.eye(p)
        A[0, 1] += 1e-13                     # as in the deviance: not exactly symmetric
        x = rng.standard_normal(p)
        L, C, b, r = numbas(A, x)
        L2, ok = lapack.cholesky_c(A)
        Ct = lapack.inverse_t(A)
        b2 = lapack.gemv_t(Ct, x)
        assert ok and np.array_equal(L, L2) and np.array_equal(C, Ct.T)
        assert np.array_equal(b, b2) and r == lapack.dot(x, b2)
    assert not lapack.cholesky_c(-np.eye(3))[1]


def test_lapack_solve_checked_is_numbas_solve():
    """`lapack.solve_checked` (the fixed-effects cross-fitting's solve, engines/ols.py) promises
    numba's np.linalg.solve: bit for bit on general square systems (not symmetric, pivoting
    needed), and the same LinAlgError on a NaN and on a singular matrix."""
    import numba

    from simstudy.engines import lapack

    @numba.njit
    def numbas(A, b):
        return np.linalg.solve(A, b)

    rng = np.random.default_rng(9)
    for p in (1, 3, 8, 13):
        A = rng.standard_normal((p, p))
        A[0, 0] = 1e-12                       # a pivot row swap on the first column
        b = rng.standard_normal(p)
        assert np.array_equal(numbas(A, b), lapack.solve_checked(A, b))
    for A, b in ((np.array([[1.0, np.nan], [0.0, 1.0]]), np.ones(2)),
                 (np.eye(2), np.array([1.0, np.inf])),
                 (np.array([[1.0, 2.0], [2.0, 4.0]]), np.ones(2))):
        with pytest.raises(np.linalg.LinAlgError) as ours:
            lapack.solve_checked(A, b)
        with pytest.raises(np.linalg.LinAlgError) as theirs:
            numbas(A, b)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("reml", [True, False])
def test_a_column_of_rounding_noise_is_fitted_as_lme4_fits_it(reml):
    """A kept column whose entries are ~1e-16 (a site-level covariate de-meaned within sites)
    used to make the profiled deviance undefined; lme4 fits it (checked by hand on a STAR
    replicate: criterion 5525.19108718, the noise coefficients ~1e15, the others sound). The
    same data with that column scaled by 1e16 is an ordinary fit: the rescaled fit must give
    the same theta, sigma and other coefficients, the noise column's coefficient times 1e16,
    and a REML criterion smaller by 2 log(1e16) (ML: equal). lme4 1.1.31 on these data (by
    hand): REMLcrit 984.149860176 and 1057.83258315, as here."""
    rng = np.random.default_rng(3)
    J, n_j = 12, 30
    site = np.repeat(np.arange(J), n_j)
    X = np.column_stack([np.ones(J * n_j), rng.standard_normal(J * n_j),
                         rng.integers(0, 2, J * n_j)])
    noise = rng.standard_normal(J * n_j) * 1e-16
    y = X @ [1.0, 0.5, 0.3] + rng.standard_normal(J)[site] + rng.standard_normal(J * n_j)
    tiny = fit_lmm(np.column_stack([X, noise]), y, site, reml=reml)
    big = fit_lmm(np.column_stack([X, noise * 1e16]), y, site, reml=reml)
    assert tiny.aliased == [] and np.isfinite(tiny.beta).all()
    np.testing.assert_allclose(tiny.theta, big.theta, rtol=1e-6)
    np.testing.assert_allclose(tiny.sigma, big.sigma, rtol=1e-8)
    np.testing.assert_allclose(tiny.beta[:3], big.beta[:3], rtol=1e-8)
    np.testing.assert_allclose(tiny.beta[3], big.beta[3] * 1e16, rtol=1e-6)
    shift = 2 * np.log(1e16) if reml else 0.0    # log|X'V^-1 X| loses 2 log c
    np.testing.assert_allclose(tiny.criterion, big.criterion - shift, rtol=1e-9)
