"""The machine-learning family (issue 24): the causal forest with site clusters, the DR-learner and
the policy tree on forest scores, each checked against a closed form or an invariance that holds
only if the multisite structure is respected."""
import sys

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from simstudy import ConfigError
from simstudy.designs import make_design, preset
from simstudy.engines import forest as F
from simstudy.fitting import method_seed
from simstudy.methods import FAMILIES, make
from simstudy.methods.registry import shared_reads




def _sites(J, n_j, seed=0, p=5):
    rng = np.random.default_rng(seed)
    codes = np.repeat(np.arange(J), n_j)
    X = rng.standard_normal((J * n_j, p))
    T = np.tile(np.r_[np.ones(n_j // 2), np.zeros(n_j - n_j // 2)], J)
    return rng, codes, X, T


def test_constant_effect_is_recovered_exactly():
    """y~ = tau0 w~ exactly: every leaf's local moment, hence every prediction, is tau0."""
    rng, codes, X, T = _sites(20, 12)
    w = T - 0.5
    forest = F.ClusterCausalForest(num_trees=30, seed=1).fit(X, w, 0.7 * w, codes, 20)
    np.testing.assert_allclose(forest.predict(rng.standard_normal((50, 5))), 0.7, atol=1e-12)
    np.testing.assert_allclose(forest.predict(X, codes), 0.7, atol=1e-12)


def test_out_of_bag_prediction_never_uses_the_rows_own_site():
    """Out-of-bag, a row is predicted by trees whose draw missed its site, which never saw that
    site's data: changing site 0's outcomes leaves site 0's OOB predictions unchanged (and
    changes the in-bag ones). This holds only if sampling AND honesty are by site."""
    rng, codes, X, T = _sites(16, 10, seed=3)
    w = T - 0.5
    y = np.where(X[:, 0] > 0, 1.0, -1.0) * w + rng.standard_normal(len(T))
    y2 = y.copy()
    y2[codes == 0] += 5 * rng.standard_normal((codes == 0).sum())
    a = F.ClusterCausalForest(num_trees=60, seed=2).fit(X, w, y, codes, 16)
    b = F.ClusterCausalForest(num_trees=60, seed=2).fit(X, w, y2, codes, 16)
    rows = codes == 0
    np.testing.assert_array_equal(a.predict(X[rows], codes[rows]), b.predict(X[rows], codes[rows]))
    assert not np.allclose(a.predict(X[rows]), b.predict(X[rows]))


def test_forest_finds_a_step_effect():
    rng, codes, X, T = _sites(60, 20, seed=4)
    tau = np.where(X[:, 0] > 0, 1.0, -1.0)
    y = 2.5 * rng.standard_normal(60)[codes] + T * tau + rng.standard_normal(len(T))
    w, yc = T - 0.5, y - (np.bincount(codes, weights=y) / 20)[codes]
    forest = F.ClusterCausalForest(num_trees=100, seed=0).fit(X, w, yc, codes, 60)
    Xt = rng.standard_normal((500, 5))
    assert np.corrcoef(forest.predict(Xt), np.where(Xt[:, 0] > 0, 1, -1))[0, 1] > 0.8


def test_cluster_ate_matches_statsmodels_cluster_robust_mean():
    rng = np.random.default_rng(5)
    codes = np.repeat(np.arange(9), rng.integers(3, 8, 9))
    g = rng.standard_normal(codes.size) + rng.standard_normal(9)[codes]
    est, se = F.cluster_ate(g, codes, 9)
    fit = sm.OLS(g, np.ones(codes.size)).fit(cov_type="cluster", cov_kwds={"groups": codes})
    assert est == pytest.approx(fit.params[0], abs=1e-12)
    assert se == pytest.approx(fit.bse[0], rel=1e-10)


def test_site_folds_keep_sites_whole():
    codes = np.repeat(np.arange(13), 7)
    folds = F.site_folds(codes, 13, 5, np.random.default_rng(0))
    assert all(len(set(folds[codes == j])) == 1 for j in range(13))
    assert sorted(np.bincount(folds[::7])) == [2, 2, 3, 3, 3]


def test_dr_learner_linear_final_recovers_design1_delta():
    """DR with a linear final stage on Design 1 (Delta = 0.2 + 0.5 X3 - 0.2 X4 - 0.2 X5) at
    n = 12,000: the fitted coefficients are within 0.06 of the truth."""
    rep = make_design(preset("design1")).simulate(np.random.default_rng(8), 300, 40)
    dr = make("DR", {"final": "linear", "random_state": 1}).fit(rep.train)
    np.testing.assert_allclose(dr.coef_, [0.2, 0, 0, 0.5, -0.2, -0.2], atol=0.06)


def test_pt_cf_shares_the_forest_of_cf_and_sharing_changes_nothing():
    """CF and PT-CF draw from one seed stream (one forest per replicate); PT-CF fitted alone
    decides exactly as PT-CF fitted after CF within one replicate's shared reads."""
    assert method_seed(1, "d", 5, 5, 0, "CF") == method_seed(1, "d", 5, 5, 0, "PT-CF")
    assert method_seed(1, "d", 5, 5, 0, "CF") != method_seed(1, "d", 5, 5, 0, "DR")
    assert {FAMILIES[m] for m in ("CF", "DR", "PT-CF")} == {"Machine learning"}
    rep = make_design(preset("tree")).simulate(np.random.default_rng(2), 20, 20)
    opts = {"num_trees": 50, "random_state": 9}
    alone = make("PT-CF", opts).fit(rep.train).decide(rep.test)
    with shared_reads():
        cf = make("CF", opts).fit(rep.train)
        pt = make("PT-CF", opts).fit(rep.train)
        assert pt._forest(rep.train)[0] is cf.forest_
    np.testing.assert_array_equal(pt.decide(rep.test), alone)


def test_pt_cf_scores_are_doubly_robust_scores_of_the_forest():
    """PT-CF's scores: Gamma(t) = mu_t + 1{T=t}(Y - mu_t)/P(T=t) with mu_0 = m - e tau,
    mu_1 = m + (1 - e) tau (policytree's double_robust_scores of a causal forest)."""
    rep = make_design(preset("tree")).simulate(np.random.default_rng(4), 12, 20)
    pt = make("PT-CF", {"num_trees": 40, "random_state": 2}).fit(rep.train)
    forest, m, e = pt._forest(rep.train)
    codes = np.unique(rep.train["site"], return_inverse=True)[1]
    X = rep.train[pt.covariates].to_numpy(float)
    tau = forest.predict(X, codes)                  # out of bag: the trees that missed the site
    T, y = rep.train["T"].to_numpy(float), rep.train["Y"].to_numpy(float)
    g0 = m - e * tau + (1 - T) * (y - (m - e * tau)) / (1 - e)
    g1 = m + (1 - e) * tau + T * (y - (m + (1 - e) * tau)) / e
    np.testing.assert_allclose(pt.scores_, np.column_stack([g0, g1]), rtol=1e-12)


def test_ml_options_are_checked():
    with pytest.raises(ConfigError, match="sample_fraction=1.5"):
        make("CF", {"sample_fraction": 1.5})
    with pytest.raises(ConfigError, match="sample_fraction=0.8"):     # grf: <= 0.5 with ci groups
        make("PT-CF", {"sample_fraction": 0.8})
    with pytest.raises(ConfigError, match="num_trees=0"):
        make("PT-CF", {"num_trees": 0})
    with pytest.raises(ConfigError, match="final='forest'"):
        make("DR", {"final": "forest"})


def test_the_family_needs_no_extra(monkeypatch):
    """The forest is simstudy's own (engines/grf.py): with econml unimportable, CF, PT-CF and DR
    still fit and decide."""
    monkeypatch.setitem(sys.modules, "econml", None)          # import econml -> ImportError
    rep = make_design(preset("tree")).simulate(np.random.default_rng(1), 8, 12)
    for name in ("CF", "PT-CF", "DR"):
        opts = {"random_state": 1, **({"num_trees": 20} if name != "DR" else {})}
        assert make(name, opts).fit(rep.train).decide(rep.test).shape == (len(rep.test),)


def test_default_study_keeps_the_paper_methods():
    """The ML family is opt-in: the default `simstudy run` lists none of it."""
    from omegaconf import OmegaConf
    from simstudy.cli import config_dir
    methods = OmegaConf.load(f"{config_dir()}/config.yaml").methods
    assert not {"CF", "DR", "PT-CF"} & set(methods)


def test_tree_design_study_runs_with_the_ml_family(tmp_path):
    """The issue's command, small: every method fits on the tree design."""
    from simstudy.cli import main
    from simstudy.store import read_metrics
    out = tmp_path / "tree"
    code = main(["run", "design=tree", "J=12", "n_j=16", "reps=2", "n_jobs=1", "progress=false",
                 "figures=false", "methods=[Q-fe,PT,CF,DR,PT-CF,oracle]",
                 "+method_options.CF.num_trees=40", "+method_options.PT-CF.num_trees=40",
                 f"out={out}"])
    m = read_metrics(out)
    assert code == 0 and m["error"].isna().all() and len(m) == 12
    assert set(m["method"]) == {"Q-fe", "PT", "CF", "DR", "PT-CF", "oracle"}


def test_ml_family_has_its_own_panel_and_colour():
    from simstudy.methods.registry import describe
    from simstudy.report import figures
    names = ["Q-fe", "W-aug", "PT", "CF", "DR", "PT-CF", "oracle"]
    figures.use_families({m: v["family"] for m, v in describe(names).items()})
    try:
        assert figures.panels(names) == [("Q-learning", ["Q-fe"]), ("Weighting", ["W-aug"]),
                                         ("Policy tree", ["PT"]),
                                         ("Machine learning", ["CF", "DR", "PT-CF"])]
        colours = figures.FAMILY_COLOURS
        assert len({colours[f] for f, _ in figures.panels(names)}) == 4
    finally:
        figures.use_families({})


@pytest.mark.slow
def test_ml_family_is_independent_of_n_jobs_and_reading_table_is_written(tmp_path):
    """Same seed -> the same store with n_jobs=1 and 2 (boosting on one OpenMP thread), and
    scripts/beyond_reading.py writes READING.md from such a study's report (the README's table):
    its Q-fe and PT numbers equal summary.csv / comparison.csv."""
    import importlib.util
    from pathlib import Path
    from simstudy.cli import main
    from simstudy.store import read_metrics
    args = ["run", "design=tree", "J=8", "n_j=12", "reps=3", "progress=false", "figures=false",
            "methods=[Q-fe,PT,CF,DR,PT-CF]", "+method_options.CF.num_trees=30",
            "+method_options.PT-CF.num_trees=30"]
    for n in (1, 2):
        assert main(args + [f"n_jobs={n}", f"out={tmp_path / str(n)}"]) == 0
    a, b = read_metrics(tmp_path / "1"), read_metrics(tmp_path / "2")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"),
                                  check_exact=True)
    script = Path(__file__).resolve().parents[1] / "scripts" / "beyond_reading.py"
    spec = importlib.util.spec_from_file_location("beyond_reading", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = mod.main(tmp_path / "1")
    assert (tmp_path / "1" / "READING.md").read_text() == text
    summ = pd.read_csv(tmp_path / "1" / "summary.csv").set_index("method")
    diff = pd.read_csv(tmp_path / "1" / "comparison.csv").query(
        "metric == 'accuracy' and method == 'PT'")["mean_diff"].iloc[0]
    row = next(ln for ln in text.splitlines() if ln.startswith("| tree | (8, 12)"))
    assert f"| {summ.loc['Q-fe', 'accuracy_mean']:.3f} |" in row
    assert f"{summ.loc['PT', 'accuracy_mean']:.3f} ({diff:+.3f} +- " in row


def _grf_split(X, w, y, mns, alpha, penalty):
    """grf's InstrumentalRelabelingStrategy + InstrumentalSplittingRule, transcribed directly
    (brute force over every feature and distinct value): (feature, value) or None."""
    n = len(w)
    if n <= mns:
        return None
    zc, yc = w - w.mean(), y - y.mean()
    den = np.sum(zc * zc)
    if abs(den) < 1e-10:
        return None
    rho = zc * (yc - np.sum(zc * yc) / den * zc)
    small = w < w.mean()
    size = lambda z: np.sum(z * z) - np.sum(z) ** 2 / len(z)
    best, arg = 0.0, None
    for f in range(X.shape[1]):
        for v in np.unique(X[:, f])[:-1]:
            L = X[:, f] <= v
            R = ~L
            if min(np.sum(small & L), np.sum(~small & L), np.sum(small & R), np.sum(~small & R)) < mns:
                continue
            sl, sr = size(w[L]), size(w[R])
            if min(sl, sr) < alpha * size(w) or (penalty > 0 and min(sl, sr) == 0):
                continue
            gain = rho[L].sum() ** 2 / L.sum() + rho[R].sum() ** 2 / R.sum() \
                - penalty * (1 / sl + 1 / sr)
            if gain > best:
                best, arg = gain, (f, v)
    return arg


@pytest.mark.parametrize("mns, alpha, penalty", [(5, 0.05, 0.0), (3, 0.2, 0.5), (10, 0.0, 0.0)])
def test_every_split_is_grfs_split(mns, alpha, penalty):
    """Each node of a grown tree (all features tried) splits where grf's rule, transcribed
    from its C++ and searched by brute force, splits that node's rows; each leaf is a node
    where grf stops (too small, or no admissible split with a gain)."""
    from simstudy.engines import grf
    rng = np.random.default_rng(mns)
    m, p = 240, 3
    X = np.round(rng.standard_normal((m, p)), 1)                 # ties in the features
    w = (rng.random(m) < np.where(X[:, 0] > 0.5, 0.85, 0.4)) - 0.5   # treatment imbalance
    y = np.where(X[:, 1] > 0, 1.0, -0.5) * w + 0.3 * X[:, 2] + rng.standard_normal(m)
    S = np.ascontiguousarray(np.argsort(X, axis=0, kind="stable").T).astype(np.int32)
    k = 2 * m + 1
    nodes = [np.empty(k, np.int32), np.empty(k), np.empty(k, np.int64), np.empty(k, np.int64),
             np.empty(k, np.int64)]
    scratch = [np.empty(m + 1, np.int32), np.empty((m, 4)), np.zeros(m, np.uint8)]
    count = grf._grow(np.ascontiguousarray(X.T), w, y, m, 1e9, mns, alpha, penalty, S,
                      *scratch, *nodes)
    feat, thr, left = nodes[0][:count], nodes[1][:count], nodes[2][:count]
    rows = {0: np.arange(m)}
    splits = 0
    for node in range(count):
        r = rows[node]
        expect = _grf_split(X[r], w[r], y[r], mns, alpha, penalty)
        if left[node] < 0:
            assert expect is None, f"node {node} ({len(r)} rows) should have split at {expect}"
            continue
        assert (feat[node], thr[node]) == expect
        goes = X[r, feat[node]] <= thr[node]
        rows[left[node]], rows[left[node] + 1] = r[goes], r[~goes]
        splits += 1
    assert splits >= 3


def test_pruning_leaves_no_tree_out_and_groups_share_their_half():
    """With grf's pruning every tree reaches an estimation leaf (a prediction uses all trees);
    with ci_group_size = 2 and sample_fraction = 0.5 both trees of a group draw the same half
    of the sites (grf's train_ci_group), different halves across groups."""
    rng, codes, X, T = _sites(30, 8, seed=7)
    w = T - 0.5
    y = X[:, 0] * w + rng.standard_normal(len(T))
    forest = F.ClusterCausalForest(num_trees=40, seed=3, min_node_size=1).fit(X, w, y, codes, 30)
    total, used = F.grf.forest_moments(np.ascontiguousarray(X), np.full(len(T), -1),
                                       forest.feat_, forest.thr_, forest.child_, forest.stats_,
                                       forest.root_, forest.depth_, forest.drawn_)
    leaf = forest.child_ == np.arange(forest.child_.size)
    assert (~forest.full_[leaf]).sum() > 10                          # empty leaves were pruned
    assert np.all(used == 40) and np.all(total[:, 0] == 40)
    d = forest.drawn_
    assert np.all(d.sum(1) == 15)
    assert np.all(d[0::2] == d[1::2]) and not np.all(d[0] == d[2])
    alone = F.ClusterCausalForest(num_trees=40, seed=3, ci_group_size=1).fit(X, w, y, codes, 30)
    assert not np.all(alone.drawn_[0::2] == alone.drawn_[1::2])
