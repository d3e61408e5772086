"""Your trial, your study (issue 42): the calibrated design, the calibration, `apply --simulate`."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simstudy.calibrate import calibrate, plan_table
from simstudy.designs import make_design
from simstudy.designs.calibrated import Calibrated

KNOWN = {"main": {"intercept": 1.0, "X1": 0.5, "X2": -0.3, "X3": 0.0},
         "delta": {"intercept": 0.4, "X1": 0.3, "X2": 0.0},
         "site_intercept_sd": 0.8, "site_slope_sd": 0.4, "site_corr": 0.5, "noise_sd": 1.0}


def _trial_file(tmp_path, J=150, seed=7):
    """A synthetic trial's covariates, sites (sizes 30-50) and treated shares (0.3-0.7)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(30, 51, J)
    site = np.repeat(np.arange(J), sizes)
    share = rng.uniform(0.3, 0.7, J)
    T = Calibrated._assign(rng, site, share)
    X = rng.standard_normal((site.size, 3))
    path = tmp_path / "trial.csv"
    pd.DataFrame({"site": [f"s{j:03d}" for j in site], "X1": X[:, 0], "X2": X[:, 1],
                  "X3": X[:, 2], "T": T}).to_csv(path, index=False)
    return path


def _design(path, **over):
    cfg = {"family": "calibrated", "name": "known", "data": str(path), "site_column": "site",
           "covariate_columns": ["X1", "X2", "X3"], "standardize": False,
           "treatment_column": "T", "site_sizes": "real", **KNOWN, **over}
    return make_design(cfg)


def test_complete_randomisation_within_sites_treats_round_share_n_clipped_to_both_arms():
    """Brute force: every site of n >= 2 has exactly clip(round(p n), 1, n - 1) treated."""
    rng = np.random.default_rng(0)
    n = np.array([2, 3, 10, 7, 1, 25])
    p = np.array([0.01, 0.99, 0.35, 0.5, 0.5, 0.8])
    site = np.repeat(np.arange(n.size), n)
    for _ in range(20):
        T = Calibrated._assign(rng, site, p)
        got = np.bincount(site, weights=T, minlength=n.size)
        want = [min(max(round(pj * nj), 1), nj - 1) if nj >= 2 else round(pj * nj)
                for pj, nj in zip(p, n)]
        assert got.tolist() == want


def test_calibration_recovers_the_parameters_of_a_trial_drawn_from_known_ones(tmp_path):
    """A trial drawn from the calibrated design with KNOWN parameters (150 sites of 30-50):
    the REML calibration recovers the fixed effects within 4 SE (mapped back from the
    standardised covariates), tau0 within 15%, tau1 within 25%, rho within 0.25 and the
    residual SD within 3%."""
    design = _design(_trial_file(tmp_path))
    tr = design.simulate(np.random.default_rng(11), 150, 40).train
    cal = calibrate(tr, "Y", "T", "site", ["X1", "X2", "X3"], ["X1", "X2"])
    X = tr[["X1", "X2", "X3"]].to_numpy(float)
    m, s = X.mean(axis=0), X.std(axis=0)
    fit, names = cal.fit, cal.fit.names
    se = dict(zip(names, fit.se))
    for part, prefix, cols in (("main", "", ["X1", "X2", "X3"]), ("delta", "T:", ["X1", "X2"])):
        raw = {c: cal.params[part][c] / s[int(c[1]) - 1] for c in cols}
        for c in cols:
            assert abs(raw[c] - KNOWN[part][c]) <= 4 * se[prefix + c] / s[int(c[1]) - 1], (part, c)
        icpt = cal.params[part]["intercept"] - sum(raw[c] * m[int(c[1]) - 1] for c in cols)
        assert abs(icpt - KNOWN[part]["intercept"]) <= 4 * se["intercept" if part == "main"
                                                             else "T"] + 0.05, part
    p = cal.params
    assert abs(p["site_intercept_sd"] / 0.8 - 1) < 0.15
    assert abs(p["site_slope_sd"] / 0.4 - 1) < 0.25
    assert abs(p["site_corr"] - 0.5) < 0.25
    assert abs(p["noise_sd"] - 1) < 0.03


def test_scenarios_tree_and_smooth_keep_the_sd_of_the_fitted_moderation(tmp_path):
    """tree / smooth: Delta's X part has, over the trial's people, the SD of delta'X (closed
    form on the file); none: Delta is the average effect for everyone; linear: the site part's
    SD is tau1 (site means of Delta - delta'X over many sites)."""
    path = _trial_file(tmp_path)
    file = pd.read_csv(path)
    X = file[["X1", "X2", "X3"]].to_numpy(float)
    target = np.std(0.3 * X[:, 0])
    for scenario in ("tree", "smooth"):
        d = _design(path, scenario=scenario, site_slope_sd=0.0)
        cols, centre, scale = d._moderation
        assert cols.tolist() == ([0, 1] if scenario == "tree" else [0])   # by |delta_k|
        from simstudy.designs.calibrated import smooth_effect, tree_effect
        g = (tree_effect if scenario == "tree" else smooth_effect)(X[:, cols])
        assert np.isclose(np.std(scale * (g - centre)), target)
        assert np.isclose(np.mean(scale * (g - centre)), 0, atol=1e-12)
    rep = _design(path, scenario="none").simulate(np.random.default_rng(1), 50, 40)
    assert np.allclose(rep.truth["Delta"], 0.4)
    rep = _design(path, site_slope_sd=0.4).simulate(np.random.default_rng(2), 400, 40)
    t = rep.test_with_truth()
    site_part = (t["Delta"] - 0.4 - 0.3 * t["X1"]).groupby(t["site"]).mean()
    assert abs(site_part.std() / 0.4 - 1) < 0.12


def test_calibrated_keys_that_do_nothing_are_refused(tmp_path):
    from simstudy.errors import ConfigError
    path = _trial_file(tmp_path, J=10)
    with pytest.raises(ConfigError, match="design.beta1 does nothing in the calibrated"):
        _design(path, beta1=0.2)
    with pytest.raises(ConfigError, match="treatment_column='Z' is not a column"):
        _design(path, treatment_column="Z")
    with pytest.raises(ConfigError, match="scenario"):
        _design(path, scenario="wiggly")


def test_plan_table_smallest_J_from_which_the_target_holds():
    """Brute force on a hand-made curve: J_reach is the smallest J from which every larger J
    reaches the target (a dip later resets it); J_sure uses the MC 95% lower bound."""
    rows = []
    for J, accs in ((10, [0.80, 0.82]), (25, [0.91, 0.93]), (50, [0.88, 0.90]),
                    (100, [0.95, 0.96])):
        for r, a in enumerate(accs):
            rows.append({"design": "linear", "method": "Q-rs", "J": J, "n_j": 40, "replicate": r,
                         "status": "ok", "accuracy": a})
    curve, reach = plan_table(pd.DataFrame(rows), 0.9)
    assert reach.iloc[0]["J_reach"] == 100          # 25 reaches 0.92, but 50 dips to 0.89
    assert reach.iloc[0]["J_sure"] == 100           # 100: 0.955 - 1.96 * 0.005 >= 0.9
    assert np.isclose(curve[curve["J"] == 25]["mcse"].iloc[0], np.std([0.91, 0.93], ddof=1)
                      / np.sqrt(2))


def _apply(argv, capsys=None):
    from simstudy.cli import main
    return main(["apply", *argv])


@pytest.mark.parametrize("argv, message", [
    (["--simulate", "--scenarios", "wiggly"], "--scenarios wiggly: choose distinct names"),
    (["--simulate", "--plan-sites", "1", "25"], "--plan-sites 1 25: distinct numbers of sites"),
    (["--simulate", "--sim-reps", "1"], "--sim-reps 1: at least 2"),
    (["--sim-reps", "3"], "--sim-reps is an option of --simulate"),
    (["--simulate", "--plan-target", "1.5"], "--plan-target 1.5"),
])
def test_bad_simulate_options_are_one_line_before_any_work(tmp_path, capsys, argv, message):
    code = _apply(["--example", "simulated", "--out", str(tmp_path / "a"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "a_simulate").exists()


def test_a_trial_with_one_site_is_refused_before_any_work(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pd.DataFrame({"school": "A", "x": rng.standard_normal(40), "t": np.tile([0, 1], 20),
                  "y": rng.standard_normal(40)}).to_csv(tmp_path / "one.csv", index=False)
    code = _apply(["--data", str(tmp_path / "one.csv"), "--outcome", "y", "--treatment", "t",
                   "--site", "school", "--covariates", "x", "--moderators", "x", "--simulate",
                   "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "1 usable site" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()


def test_apply_simulate_answers_as_the_study_of_the_design_that_made_the_trial(tmp_path):
    """`apply --example simulated` is a trial drawn from Design 2 (J = 40, n_j = 60): its
    calibrated simulation (linear scenario) and a study of Design 2 itself at that size agree:
    each one's leader is within 0.005 of the other's leader there, and the 15 rules rank alike
    (Spearman >= 0.8). The calibration
    check puts every statistic of the real trial inside the simulated range; the outputs the
    README promises are written; a rerun resumes the store and changes nothing."""
    from simstudy import run_study
    from simstudy.report.study import headline
    from simstudy.store import read_metrics
    out = tmp_path / "ap"
    argv = ["--example", "simulated", "--out", str(out), "--simulate", "--scenarios", "linear",
            "--sim-reps", "20", "--plan-sites", "10", "40", "--n-jobs", "2"]
    assert _apply(argv) == 0
    dest = tmp_path / "ap_simulate"
    for f in ("simulate.md", "answer.csv", "headline.csv", "calibration.csv",
              "calibration_parameters.csv", "covariates.csv", "plan_curve.csv",
              "plan_sites.csv", "figures/plan_sites.png", "figures/plan_sites.pdf",
              "store/report.html"):
        assert (dest / f).exists(), f
    for f in ("simulate.md", "simulate_answer.csv", "simulate_headline.csv",
              "simulate_calibration.csv", "simulate_plan_sites.csv", "figures/plan_sites.png"):
        assert (out / f).exists(), f
    html = (out / "report.html").read_text()
    assert "Which rule to trust on a trial like this" in html and "plan_sites.png" in html
    check = pd.read_csv(dest / "calibration.csv")
    assert check["inside"].all(), check
    calibrated = pd.read_csv(dest / "headline.csv").iloc[0]
    methods = pd.read_csv(dest / "answer.csv")["rule"].unique().tolist()
    direct = run_study("design2", J=40, n_j=60, reps=20, methods=methods, n_jobs=2,
                       out=tmp_path / "direct", progress=False,
                       method_defaults={"covariates": ["X1", "X2", "X3", "X4", "X5"],
                                        "moderators": ["X3", "X4", "X5"],
                                        "features": ["X3", "X4", "X5"]})
    d = headline(direct.metrics, "accuracy", methods).iloc[0]
    cal_acc = pd.read_csv(dest / "answer.csv").set_index("rule")["accuracy"]
    dir_acc = direct.metrics[direct.metrics["status"] == "ok"].groupby(
        "method", observed=True)["accuracy"].mean()
    # the leader of each is (practically) the leader of the other: within 0.005 of it
    assert dir_acc[calibrated["leader"]] >= d["leader_mean"] - 0.005
    assert cal_acc[d["leader"]] >= calibrated["leader_mean"] - 0.005
    rules = [m for m in methods if m not in ("oracle", "treat-all", "treat-none")]
    from scipy.stats import spearmanr       # and the 15 rules rank alike
    assert spearmanr(cal_acc[rules], dir_acc[rules])[0] >= 0.8
    before = read_metrics(dest / "store")
    assert _apply(argv) == 0                                    # resumes: nothing to redo
    after = read_metrics(dest / "store")
    pd.testing.assert_frame_equal(before.drop(columns="seconds"), after.drop(columns="seconds"))
    assert before["seconds"].equals(after["seconds"])           # not refitted
    assert _apply(argv[:-5] + argv[-2:]) == 0                   # no planning this time:
    assert not (dest / "plan_sites.csv").exists()               # no stale plan beside the text
    assert "### Planning" not in (dest / "simulate.md").read_text()
