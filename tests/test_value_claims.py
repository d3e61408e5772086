"""The value a rule claims, treatment that depends on X, and the propensity option (issue 41,
items 2 and 5): the learning half, AIPW and its SE by brute force, the true value against the
potential outcomes, the coverage calibration, `confounding` against a logistic fit, the
estimated propensity against statsmodels, and the report's tables and figure."""
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from simstudy import ConfigError, make
from simstudy.api import run_study
from simstudy.claims import aipw, learning_half, value_claims
from simstudy.designs import DesignBase, Replicate, make_design, register_design
from simstudy.engines import propensity as P
from simstudy.report.study import value_claims as claims_table
from simstudy.store import read_metrics


def test_the_learning_half_takes_half_of_every_site_and_arm():
    rng = np.random.default_rng(1)
    site = rng.integers(0, 7, 400)
    t = rng.integers(0, 2, 400)
    a = learning_half(site, t, np.random.default_rng(2))
    for s in range(7):
        for arm in (0, 1):
            cell = (site == s) & (t == arm)
            assert a[cell].sum() in (cell.sum() // 2, -(-cell.sum() // 2))
    assert not np.array_equal(a, learning_half(site, t, np.random.default_rng(3)))
    assert np.array_equal(a, learning_half(site, t, np.random.default_rng(2)))


def test_a_site_keeps_both_arms_in_the_learning_half():
    """A cell of one goes to the learning half (whatever the coin); the other cells are split
    exactly as before, draw for draw (the stored claims of replicates without such cells do
    not move)."""
    rng = np.random.default_rng(4)
    site = np.repeat(np.arange(6), 9)
    t = (rng.random(site.size) < 0.5).astype(int)
    t[site == 2] = [1] + [0] * 8                                   # one treated
    t[site == 4] = [0] + [1] * 8                                   # one control
    for seed in range(20):
        a = learning_half(site, t, np.random.default_rng(seed))
        for s in range(6):
            assert set(t[(site == s) & a]) == {0, 1}
        assert a[(site == 2) & (t == 1)].all() and a[(site == 4) & (t == 0)].all()
        # the same coins as the rule without the exception, cell by cell
        r = np.random.default_rng(seed)
        _, cell = np.unique(np.column_stack([site, t]), axis=0, return_inverse=True)
        cell = cell.ravel()
        key = r.random(site.size)
        sizes = np.bincount(cell)
        coin = r.random(sizes.size) < 0.5
        for c in np.flatnonzero(sizes > 1):
            rows = np.flatnonzero(cell == c)
            take = sizes[c] // 2 + coin[c] * (sizes[c] % 2)
            assert set(rows[a[rows]]) == set(rows[np.argsort(key[rows], kind="stable")][:take])


def test_propensity_rules_claim_a_value_where_a_site_has_one_treated_person(tmp_path):
    """Design 2 at J=150, n_j=25: replicates 0 and 5 (the default seed) hold a site with one
    person in an arm. Before the rule above, the coin put that person in the held-out half in
    about half of such replicates and W-augID's and PT's claims were lost there (a site's
    propensity 0)."""
    out = tmp_path / "o"
    run_study("design2", J=150, n_j=25, reps=6, methods=["PT", "W-augID", "Q-fe"],
              value_claims="site", out=out, progress=False, n_jobs=1)
    m = read_metrics(out)
    assert len(m) == 18 and m["value_hat"].notna().all() and m["value_se"].gt(0).all()
    assert not m["warning"].fillna("").str.contains("value claim").any()


def test_aipw_and_its_within_site_se_by_brute_force():
    rng = np.random.default_rng(5)
    n = 60
    site = np.repeat([10, 20, 30], 20)
    d, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y, mu0, mu1 = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    e1 = rng.uniform(0.2, 0.8, n)
    psi = []
    for i in range(n):                                   # the formula, one row at a time
        mu_d = mu1[i] if d[i] else mu0[i]
        e_d = e1[i] if d[i] else 1 - e1[i]
        psi.append(mu_d + (t[i] == d[i]) * (y[i] - mu_d) / e_d)
    psi = np.array(psi)
    ss = sum(((psi[site == s] - psi[site == s].mean()) ** 2).sum() for s in (10, 20, 30))
    v, se = aipw(d, y, t, mu0, mu1, e1, site)
    assert v == pytest.approx(psi.mean(), rel=1e-12)
    assert se == pytest.approx(math.sqrt(ss / (n - 3) / n), rel=1e-12)


def test_the_true_value_is_that_of_the_potential_outcomes_of_new_people_in_the_same_sites():
    design = make_design({"family": "multisite", "name": "d1"})
    rep = design.simulate(np.random.default_rng(7), 6, 10)
    scores = {"all": 1.0, "none": -1.0}

    def fit(name, learn, rows):
        if name == "oracle":
            return rows["Delta"].to_numpy(float)
        return np.full(len(rows), scores[name])
    got = value_claims(rep, ["all", "none", "oracle"], fit, "site", design.covariates,
                       np.random.default_rng(8), uses_truth=lambda m: m == "oracle")
    rng = np.random.default_rng(8)                       # the same draws, by hand
    learning_half(rep.train["site"].to_numpy(), rep.train["T"].to_numpy(), rng)
    people, truth = rep.more(rng, 20)
    assert len(people) == 20 * len(rep.train)
    assert (people["site"].value_counts() == 200).all()
    assert got["all"]["value_true"] == pytest.approx(truth["Y1"].mean(), rel=1e-12)
    assert got["none"]["value_true"] == pytest.approx(truth["Y0"].mean(), rel=1e-12)
    assert got["oracle"]["value_true"] == pytest.approx(
        np.maximum(truth["Y0"], truth["Y1"]).mean(), rel=1e-12)
    assert np.isnan(got["oracle"]["value_hat"]) and np.isfinite(got["all"]["value_hat"])


def test_more_people_come_from_the_training_sites_with_their_site_effects():
    """With no X terms and no noise, Y0 = 2.5 U_j: a new person's Y0 is that of the training
    people of the same site, exactly."""
    design = make_design({"family": "multisite", "name": "u", "main": {}, "delta": {},
                          "noise_sd": 0.0})
    rep = design.simulate(np.random.default_rng(3), 5, 8)
    people, truth = rep.more(np.random.default_rng(4), 3)
    controls = rep.train[rep.train["T"] == 0].groupby("site")["Y"].first()
    per_site = pd.Series(truth["Y0"].to_numpy(), index=people["site"]).groupby(level=0)
    assert per_site.nunique().eq(1).all()
    assert np.allclose(per_site.first().reindex(controls.index), controls, atol=1e-12)


@pytest.mark.slow
def test_the_aipw_interval_covers_the_true_value_of_fixed_rules_in_93_to_97_percent(tmp_path):
    """1,000 replicates of Design 1 at (25, 25): treat-all, treat-none and a fixed threshold
    rule (X3 > 0.3), each interval's coverage within [0.93, 0.97] (at 0.95, 2.9 binomial SEs)."""
    run_study("design1", J=25, n_j=25, reps=1000, methods=["treat-all", "treat-none",
              "test-threshold"], plugins=["plugin_methods"], value_claims="site", n_jobs=2,
              out=tmp_path / "cal", progress=False, figures=False)
    table = claims_table(read_metrics(tmp_path / "cal"))
    assert len(table) == 3 and (table["reps"] == 1000).all()
    assert table["coverage"].between(0.93, 0.97).all(), table
    assert (table["bias"].abs() < 3 * table["bias_mcse"]).all(), table


def test_confounding_moves_the_treatment_logit_by_gamma_x_and_nothing_else():
    """A logistic fit of T on X1 and site (statsmodels, unpenalised) recovers gamma; the
    outcomes' model and the truth are those of the design without it."""
    import statsmodels.api as sm
    base = {"family": "multisite", "name": "c", "R_sd": 0.5}
    design = make_design({**base, "confounding": {"X1": 0.8}})
    rep = design.simulate(np.random.default_rng(11), 20, 300)
    X = pd.get_dummies(rep.train["site"], prefix="s", dtype=float)
    X["X1"], X["X2"] = rep.train["X1"], rep.train["X2"]
    fit = sm.Logit(rep.train["T"].to_numpy(float), X).fit(disp=0)
    assert fit.params["X1"] == pytest.approx(0.8, abs=3 * fit.bse["X1"])
    assert abs(fit.params["X2"]) < 3 * fit.bse["X2"]
    plain = make_design(base).simulate(np.random.default_rng(11), 20, 300)
    for c in ("X1", "X2", "X3"):          # the same people; only who is treated moved
        assert np.array_equal(plain.train[c], rep.train[c])
    assert np.array_equal(plain.truth["Delta"], rep.truth["Delta"])
    with pytest.raises(ConfigError, match="prevalence"):
        make_design({**base, "confounding": {"intercept": 1.0}})
    with pytest.raises(ConfigError, match=r"confounding has unknown terms \['X9'\]; allowed: "
                                          r"X1..X5$"):
        make_design({**base, "confounding": {"X9": 1.0}})
    with pytest.raises(ConfigError, match=r"e.g. \{X1: 0.8\}"):
        make_design({**base, "confounding": 3})


def test_the_estimated_propensity_is_the_logistic_fit_of_t_on_x_and_site():
    """Against statsmodels' unpenalised logistic regression on a large sample (the ridge's
    C = 1 on standardised X moves the probabilities by less than 0.01 there)."""
    import statsmodels.api as sm
    design = make_design({"family": "multisite", "name": "c", "confounding": {"X1": 0.7}})
    rep = design.simulate(np.random.default_rng(2), 8, 400)
    codes = rep.train["site"].to_numpy()
    X = rep.train[["X1", "X2"]].to_numpy()
    e = P.propensity("estimated", X, rep.train["T"], codes, 8)
    D = np.column_stack([np.eye(8)[codes], X])
    ref = sm.Logit(rep.train["T"].to_numpy(float), D).fit(disp=0).predict(D)
    assert np.abs(e - ref).max() < 0.01
    share = P.propensity("site", X, rep.train["T"], codes, 8)
    assert np.allclose(share, rep.train.groupby("site")["T"].transform("mean"))
    with pytest.raises(ValueError, match="allowed site, estimated"):
        P.propensity("guess", X, rep.train["T"], codes, 8)


def test_every_propensity_rule_takes_the_option_and_refuses_a_wrong_value():
    for name in ("W-aug", "WS-augID", "PT", "DR"):
        assert make(name, {"propensity": "estimated"}).propensity == "estimated"
        with pytest.raises(ConfigError, match="estimated"):
            make(name, {"propensity": "estimatd"})


def test_the_weighting_weights_use_the_estimated_propensity():
    design = make_design({"family": "multisite", "name": "c", "confounding": {"X3": 1.0}})
    rep = design.simulate(np.random.default_rng(4), 10, 40)
    m = make("W-aug", {"propensity": "estimated"})
    labels, codes = m._sites(rep.train)
    Tt, w = m._weights(rep.train, codes, labels)
    e = P.propensity("estimated", rep.train[m.covariates].to_numpy(), rep.train["T"], codes,
                     labels.size)
    assert np.allclose(w, np.where(Tt == 1, 1 / e, 1 / (1 - e)))


def test_value_claims_in_a_study_its_report_and_its_refusals(tmp_path):
    out = tmp_path / "vc"
    run_study("design1", J=6, n_j=20, reps=6, methods=["Q-fe", "PT", "oracle", "treat-all"],
              value_claims="estimated", n_jobs=1, out=out, progress=False, figures=True)
    m = read_metrics(out)
    learned = m[m.method != "oracle"]            # a half that lacks an arm in a site: said so
    assert (learned["value_hat"].notna() | learned["warning"].str.startswith(
        "value claim: ValueError: a site has everyone or no one treated")).all()
    assert learned["value_hat"].notna().mean() > 0.9
    assert m["value_true"].notna().mean() > 0.9 and m.loc[m.method == "oracle", "value_hat"].isna().all()
    table = pd.read_csv(out / "value_claims.csv")
    assert set(table["method"]) == {"Q-fe", "PT", "treat-all"}
    assert {"bias", "bias_mcse", "emp_se", "model_se", "coverage", "coverage_mcse"} <= set(table)
    assert "## The value each rule claims" in (out / "summary.md").read_text()
    page = (out / "report.html").read_text()
    assert 'id="claims"' in page and "value_claims_" in page
    assert list((out / "figures").glob("value_claims_*.png"))
    # the same study without value claims stores the same decisions (a stream of their own)
    run_study("design1", J=6, n_j=20, reps=6, methods=["Q-fe", "PT", "oracle", "treat-all"],
              n_jobs=1, out=tmp_path / "plain", progress=False, figures=False)
    plain = read_metrics(tmp_path / "plain").sort_values(["replicate", "method"])
    both = m.sort_values(["replicate", "method"])
    assert np.array_equal(plain["accuracy"].to_numpy(), both["accuracy"].to_numpy())
    assert plain["value_hat"].isna().all()
    # two workers store what one stores, claims included
    run_study("design1", J=6, n_j=20, reps=6, methods=["Q-fe", "PT", "oracle", "treat-all"],
              value_claims="estimated", n_jobs=2, out=tmp_path / "two", progress=False,
              figures=False)
    two = read_metrics(tmp_path / "two").sort_values(["replicate", "method"])
    pd.testing.assert_frame_equal(two.drop(columns="seconds").reset_index(drop=True),
                                  both.drop(columns="seconds").reset_index(drop=True))
    with pytest.raises(ConfigError, match="value_claims='maybe'"):
        run_study("design1", J=6, n_j=20, reps=2, methods=["Q-fe"], value_claims="maybe",
                  out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


@register_design("no-more")
@dataclass(frozen=True)
class NoMore(DesignBase):
    """A plugin design without Replicate.more."""
    name: str = "no-more"

    def simulate(self, rng, J, n_j):
        def draw():
            site = np.repeat(np.arange(J), n_j)
            X = rng.standard_normal((site.size, 5))
            T = np.tile(np.r_[np.ones(n_j // 2), np.zeros(n_j - n_j // 2)], J).astype(int)
            y0 = X[:, 0] + rng.standard_normal(site.size)
            frame = pd.DataFrame(X, columns=[f"X{k}" for k in range(1, 6)])
            frame.insert(0, "site", site)
            frame["T"], frame["Y"] = T, np.where(T == 1, y0 + X[:, 2], y0)
            return frame, pd.DataFrame({"Delta": X[:, 2], "Y0": y0, "Y1": y0 + X[:, 2],
                                        "d_opt": (X[:, 2] > 0).astype(int)})
        train, _ = draw()
        test, truth = draw()
        return Replicate(train, test, truth)


def test_a_design_without_more_people_is_refused_before_the_first_replicate(tmp_path):
    from simstudy.config import StudyConfig
    from simstudy.runner import run_study as run
    cfg = StudyConfig.from_config({"design": {"family": "no-more", "name": "no-more"}, "J": 4,
                                   "n_j": 10, "reps": 3, "methods": ["Q-fe"],
                                   "value_claims": "site", "n_jobs": 1})
    with pytest.raises(ConfigError, match="no-more.*Replicate.more"):
        run(cfg, tmp_path / "nm", progress=False)
    assert not (tmp_path / "nm" / "metrics.parquet").exists()


def test_the_confounding_check_writes_its_reading(tmp_path):
    """scripts/confounding_check.py (results/confounding/README.md), at a tiny size."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import confounding_check
    confounding_check.main(["--reps", "4", "--J", "6", "--n_j", "30", "--n_jobs", "1",
                            "--out", str(tmp_path / "cc")])
    text = (tmp_path / "cc" / "README.md").read_text()
    assert "## Accuracy" in text and "## The value each rule claims" in text
    for study in ("none", "site", "estimated"):
        assert f"| {study} | PT |" in text


def test_a_text_key_swept_in_some_points_only_draws_its_sweep_figure(tmp_path):
    """Points that set value_claims=site, value_claims=none (with new test sites) and nothing
    (as scripts/run_beyond2.sh's): the key's column is text with a gap; its sweep figure labels
    the gap '(not set)' (it crashed on the float NaN in matplotlib's categorical axis)."""
    from simstudy.report.tables import write_report
    for params, claims in ((None, None), (None, "site"), ({"test_sites": "new"}, "none")):
        run_study("design1", J=4, n_j=10, reps=2, methods=["Q-fe", "treat-all"],
                  design_params=params, n_jobs=1, out=tmp_path / "s", progress=False,
                  **({"value_claims": claims} if claims else {}))
    write_report(tmp_path / "s", figures=True)
    assert (tmp_path / "s" / "figures" / "sweep_accuracy_vs_value_claims.png").exists()


@pytest.mark.slow
def test_the_round_two_study_script_writes_its_five_answers(tmp_path):
    """scripts/run_beyond2.sh (its four sweep points, report and READING.md) at a tiny size."""
    import os
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["bash", str(root / "scripts" / "run_beyond2.sh"), "J=[6]", "n_j=[20]",
                    "reps=2", "n_jobs=2", "progress=false", "figures=false"], check=True,
                   env={**os.environ, "BEYOND2_OUT": str(tmp_path / "b2")},
                   capture_output=True)
    text = (tmp_path / "b2" / "READING.md").read_text()
    for section in ("## Headline: the five answers", "## 1. New sites", "## 2. The value each rule claims", "## 3. A budget",
                    "## 4. Across sites", "## 5. Treatment that depends on X1"):
        assert section in text
    assert "| tree | 6 | 20 | PT |" in text
    assert (tmp_path / "b2" / "report.html").exists()
