"""Studies of your own (issue 15): the design registry with plugin designs, unequal site sizes,
binary outcomes, the plasmode design, plugin metrics, and contract tests over every registered
method, design and metric (a plugin gets them for free)."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simstudy import ConfigError, make
from simstudy.cli import main
from simstudy.designs import DESIGNS, design_defaults, make_design
from simstudy.methods import REGISTRY
from simstudy.metrics import EXTRA_METRICS
from simstudy.store import read_metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
sys.path.insert(0, str(ROOT / "scripts"))
import my_study  # noqa: E402,F401  (registers the example plugin design, method and metric)


def test_paper_designs_draw_the_replicates_they_drew_before():
    """Every column of 16 replicates of the paper designs: same length, sum, sum of squares and
    values (to 1e-12 relative: np.exp's last bit varies with numpy and the CPU; the draws may
    not change)."""
    from make_design_fingerprints import fingerprints
    want = json.loads((ROOT / "tests" / "fixtures" / "design_fingerprints.json").read_text())
    got = fingerprints()
    assert got.keys() == want.keys()
    for case in want:
        for part in want[case]:
            assert list(got[case][part]) == list(want[case][part]), (case, part)
            for col, values in want[case][part].items():
                assert got[case][part][col] == pytest.approx(values, rel=1e-12, abs=1e-12), \
                    (case, part, col)


def test_plugin_design_method_and_metric_from_the_command_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "mine"
    code = main(["run", "-m", "hydra.searchpath=[file://experiments/conf]", "design=threshold",
                 "design.site_sd=0,1", "plugins=[my_study]",
                 "methods=[Q-base,Q-rs,x3-rule,oracle]", "J=8", "n_j=20", "reps=4", "n_jobs=1",
                 "progress=false", f"out={out}"])
    assert code == 0, capsys.readouterr().err
    m = read_metrics(out)
    assert set(m["point"]) == {"design.site_sd=0", "design.site_sd=1"}
    assert m["top_decile_gain"].notna().all()
    # the plugin metric is the stored column a direct computation gives
    ora = m[(m.method == "x3-rule") & (m.point == "design.site_sd=0")]
    assert (ora["accuracy"] == 1.0).all()          # c_j = 0: X3 > 0 is the optimal rule
    summ = pd.read_csv(out / "summary.csv")
    assert "top_decile_gain_mean" in summ and (out / "figures" /
                                               "sweep_accuracy_vs_design.site_sd.png").exists()
    fig_names = [p.name for p in (out / "figures").glob("accuracy_*.png")]
    assert fig_names                                 # drawn with its own family panel
    import yaml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    ident = cfg["points"]["design.site_sd=1"]["designs"]["threshold"]
    assert ident["family"] == "threshold" and ident["site_sd"] == 1
    # its protocol speaks of its own design family, not the paper's designs
    protocol = (out / "summary.md").read_text().split("## Results")[0]
    assert "design families threshold" in protocol and "Suk & Park" not in protocol
    assert cfg["methods"]["x3-rule"]["family"] == "My rules"      # recorded for the report


def test_unknown_family_and_bad_site_size_options_are_named():
    with pytest.raises(ConfigError, match="design.family='nope': registered families"):
        make_design({"family": "nope"})
    with pytest.raises(ConfigError, match="site_sizes='huge'"):
        make_design({"site_sizes": "huge"})
    with pytest.raises(ConfigError, match="needs site_sizes_file"):
        make_design({"site_sizes": "file"})
    with pytest.raises(ConfigError, match="no column"):
        make_design({"family": "plasmode", "covariate_columns": ["female", "shoe_size"]})


@pytest.mark.parametrize("rule, spread", [("poisson", 0.5), ("uniform", 0.5), ("lognormal", 0.6),
                                          ("file", 0.5)])
def test_unequal_site_sizes_have_mean_n_j_and_respect_the_minimum(rule, spread):
    extra = {"site_sizes_file": "star", "site_sizes_column": "school"} if rule == "file" else {}
    d = make_design({"site_sizes": rule, "site_size_spread": spread, "min_site_size": 5, **extra})
    rng = np.random.default_rng(1)
    sizes = []
    for _ in range(40):
        rep = d.simulate(rng, 30, 40)
        s = rep.train.groupby("site").size()
        t = rep.test.groupby("site").size()
        assert (s >= 5).all() and list(t.index) == list(s.index)   # test follows the same sites
        np.testing.assert_array_equal(t.to_numpy(), np.maximum(1, np.rint(s.to_numpy())))
        share = rep.train.groupby("site")["T"].mean()
        assert ((share > 0) & (share < 1)).all()                    # rejection unchanged
        sizes.append(s.to_numpy())
    sizes = np.concatenate(sizes)
    assert abs(sizes.mean() - 40) < 2.5 and sizes.std() > 3
    if rule == "lognormal":
        assert abs(sizes.std() / sizes.mean() - 0.6) < 0.1


def test_binary_outcome_truth_is_on_the_probability_scale():
    d = make_design({"outcome": "binary", "cluster_main": 0.5, "noise_sd": 1.0})
    rep = d.simulate(np.random.default_rng(4), 40, 200)
    assert set(np.unique(rep.train["Y"])) == {0.0, 1.0}
    X = rep.test[[f"X{k}" for k in range(1, 6)]].to_numpy()
    lin = 0.2 + 0.5 * X[:, 2] - 0.2 * X[:, 3] - 0.2 * X[:, 4]     # Delta on the logit scale
    assert np.array_equal(rep.truth["d_opt"].to_numpy(), (lin > 0).astype(int))
    p0, p1 = rep.truth["Y0"].to_numpy(), rep.truth["Y1"].to_numpy()
    np.testing.assert_allclose(rep.truth["Delta"], p1 - p0)
    logit = lambda p: np.log(p / (1 - p))                         # noqa: E731
    np.testing.assert_allclose(logit(p1) - logit(p0), lin, atol=1e-9)
    # observed outcomes follow the probabilities (a binomial check over 8,000 test rows)
    y = rep.test["Y"].to_numpy()
    p = np.where(rep.test["T"] == 1, p1, p0)
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(np.mean(p * (1 - p)) / len(y))


def test_plasmode_keeps_real_covariates_and_sites():
    from simstudy import data
    d = make_design({"family": "plasmode", "name": "p"})
    star = data.load("star")
    cols = ["female", "black", "age", "free_lunch"]
    Z = star[cols].to_numpy(float)
    Z = np.column_stack([Z, (star["urbanicity"] == "rural").to_numpy(float)])
    Z = (Z - Z.mean(0)) / Z.std(0)
    real: dict = {}                       # covariate pattern -> the schools that have it
    for r, school in zip(Z, star["school"]):
        real.setdefault(tuple(np.round(r, 9)), set()).add(school)
    rep = d.simulate(np.random.default_rng(2), 12, 40)
    X = rep.train[[f"X{k}" for k in range(1, 6)]].to_numpy()
    schools = [real.get(tuple(np.round(r, 9))) for r in X]
    assert None not in schools                                  # every row is a real pupil
    sizes = star.groupby("school").size()
    for site, rows in pd.Series(schools).groupby(rep.train["site"].to_numpy()):
        common = set.intersection(*rows)                        # one school holds them all
        assert common, f"site {site} mixes pupils of different schools"
        assert len(rows) in set(sizes.loc[list(common)])        # and keeps its real size
    assert {"Delta", "Y0", "Y1", "d_opt"} <= set(rep.truth)


def test_stores_written_before_the_registry_resume(tmp_path, capsys):
    """A stored design identity without `family` and the new parameters is the same study."""
    import yaml
    out = tmp_path / "old"
    args = ["run", "J=3", "n_j=8", "reps=2", "n_jobs=1", "progress=false", "figures=false",
            "methods=[Q-base]", f"out={out}"]
    assert main(args) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    d = cfg["points"][""]["designs"]["design1"]
    for k in ("family", "site_sizes", "site_size_spread", "site_sizes_file",
              "site_sizes_column", "min_site_size", "outcome"):
        d.pop(k)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(args[:4] + ["reps=3"] + args[5:]) == 0, capsys.readouterr().err
    assert read_metrics(out)["replicate"].nunique() == 3
    assert design_defaults("multisite")["site_sizes"] == "equal"


# ---------------------------------------------------------------- contract tests
@pytest.fixture(scope="module")
def replicate():
    return make_design({}).simulate(np.random.default_rng(7), 8, 24)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_method_contract(name, replicate):
    """Every registered method: fit returns self, scores are finite and one per row, the same
    seed gives the same scores, inputs are not modified, an unknown option is a ConfigError."""
    train, test = replicate.train.copy(), replicate.test_with_truth()
    before = (train.copy(), test.copy())
    a = make(name, {"random_state": 3})
    assert a.fit(train) is a
    s = np.asarray(a.benefit_score(test), float)
    assert s.shape == (len(test),) and np.all(np.isfinite(s))
    b = make(name, {"random_state": 3}).fit(train)
    np.testing.assert_array_equal(s, b.benefit_score(test))
    pd.testing.assert_frame_equal(train, before[0], check_exact=True)
    pd.testing.assert_frame_equal(test, before[1], check_exact=True)
    with pytest.raises(ConfigError, match="unknown keys"):
        make(name, {"no_such_option": 1})


@pytest.mark.parametrize("family", sorted(DESIGNS))
def test_design_contract(family):
    """Every registered design: train/test/truth with the columns the methods need, one truth
    row per test row, d_opt = 1{Delta > 0}, the same seed gives the same draw, unknown keys
    are a ConfigError."""
    d = make_design({"family": family})
    a = d.simulate(np.random.default_rng(5), 6, 30)
    b = d.simulate(np.random.default_rng(5), 6, 30)
    for frame in (a.train, a.test):
        assert {"site", "T", "Y"} <= set(frame) and set(frame["T"]) <= {0, 1}
    assert len(a.truth) == len(a.test)
    assert np.array_equal(a.truth["d_opt"], (a.truth["Delta"] > 0).astype(int))
    pd.testing.assert_frame_equal(a.train, b.train, check_exact=True)
    pd.testing.assert_frame_equal(a.truth, b.truth, check_exact=True)
    with pytest.raises(ConfigError, match="unknown keys"):
        make_design({"family": family, "no_such_key": 1})


@pytest.mark.parametrize("name", sorted(EXTRA_METRICS))
def test_metric_contract(name, replicate):
    """Every registered metric returns a float for any scores, and is deterministic."""
    score = np.random.default_rng(0).standard_normal(len(replicate.test))
    v = EXTRA_METRICS[name](score, replicate.truth, replicate.test)
    assert isinstance(float(v), float)
    assert v == EXTRA_METRICS[name](score, replicate.truth, replicate.test)
