"""`simstudy apply` on one multisite trial: end to end, bad data, and equality with the
simulation path (issue 8)."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import simstudy

from simstudy import Design
from simstudy.apply import DataError, analyse, example, prepare

COLS = dict(outcome="Y", treatment="T", site="site", covariates=["X1", "X2", "X3", "X4", "X5"],
            moderators=["X3", "X4", "X5"])


def test_end_to_end_on_the_example(tmp_path):
    out = tmp_path / "apply"
    res = simstudy("apply", "--example", "simulated", "--methods", "Q-base", "Q-rs", "W-aug",
                   "WS-augID", "--out", str(out))
    assert "NOT real data" in res.stdout
    for f in ["scores.parquet", "scores.csv", "values.csv", "congruence.csv",
              "tree_depth2_rules.csv", "tree_depth3_rules.csv", "shares_by_X4_group.csv",
              "figures/shares.png", "figures/congruence.png", "figures/shares_by_X4_group.png",
              "figures/scores_by_X4_group.png", "figures/tree_depth_2.png"]:
        assert (out / f).exists(), f
    values = pd.read_csv(out / "values.csv").set_index("rule")
    assert values["treated_share"].between(0, 1).all()
    assert values.loc["treat-all", "treated_share"] == 1 and values.loc["treat-none", "treated_share"] == 0
    M = pd.read_csv(out / "congruence.csv", index_col=0)
    assert np.allclose(M.to_numpy(), M.to_numpy().T) and np.allclose(np.diag(M), 1)
    scores = pd.read_parquet(out / "scores.parquet")
    assert (scores["decision_Q-rs"] == (scores["score_Q-rs"] > 0)).all()
    rules = pd.read_csv(out / "tree_depth2_rules.csv")
    assert rules["n"].sum() == len(scores)
    import re
    page = (out / "report.html").read_text()                 # one page, every figure on it
    imgs = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(imgs) == sorted(f"figures/{p.name}" for p in (out / "figures").glob("*.png"))
    assert all((out / i).exists() for i in imgs) and "Value of each rule" in page
    assert out.name in page and ".new-" not in page           # titled by --out, not the temp dir
    # the answer first (issue 40): the headline opens values.md and the page, its numbers are
    # values.csv's (the better constant rule's cross-fitted value, the best rule's gain)
    md = (out / "values.md").read_text()
    assert md.startswith("## Headline") and page.index('id="headline"') < page.index('id="values"')
    learnt = values.drop(index=["treat-all", "treat-none"])
    const = "treat-all" if values.loc["treat-all", "value_crossfit"] >= values.loc[
        "treat-none", "value_crossfit"] else "treat-none"
    assert f"the better constant rule is {const}" in md
    gain = (learnt["vs_treat_all_crossfit"] if const == "treat-all"
            else learnt["value_crossfit"] - values.loc["treat-none", "value_crossfit"])
    assert f"the best learnt rule, {gain.idxmax()}, is " in md
    assert "Unnamed" not in page


def _cluster_se_statsmodels(x, groups):
    """SE of a mean clustered by site, from statsmodels (intercept-only OLS, cluster-robust)."""
    import statsmodels.api as sm
    fit = sm.OLS(np.asarray(x, float), np.ones((len(x), 1))).fit(
        cov_type="cluster", cov_kwds={"groups": pd.factorize(np.asarray(groups))[0]})
    return float(fit.bse[0])


def test_values_are_the_mean_aipw_score_of_each_rule():
    df, spec = example("simulated")
    frame, cov, mod = prepare(df, **{k: spec[k] for k in COLS})
    res = analyse(frame, "Y", "T", "site", cov, mod, ["Q-fe"], depths=())
    G, n = res["G"], len(frame)
    v = res["values"].set_index("rule")
    assert v.loc["treat-all", "value_insample"] == pytest.approx(G[:, 1].mean())
    d = res["decisions"]["Q-fe"]
    assert v.loc["Q-fe", "value_insample"] == pytest.approx(G[np.arange(n), d].mean())
    assert v.loc["Q-fe", "se_insample"] == pytest.approx(
        _cluster_se_statsmodels(G[np.arange(n), d], frame["site"]), rel=1e-10)


def test_crossfitted_values_equal_a_direct_computation():
    """Small trial, K = 3 folds of sites: refit Q-base and the AIPW outcome model by hand on each
    fold's complement (statsmodels OLS), decide and value the held-out sites, compare."""
    import statsmodels.api as sm
    from simstudy.apply import site_folds
    rep = Design(name="design2").simulate(np.random.default_rng(8), 9, 14)
    frame, cov, mod = prepare(rep.train, **COLS)
    res = analyse(frame, "Y", "T", "site", cov, mod, ["Q-base"], depths=(), value_folds=3, seed=5)
    labels = np.sort(frame["site"].unique())
    fold = dict(zip(labels, site_folds(labels, 3, 5)))
    row_fold = frame["site"].map(fold).to_numpy()
    n = len(frame)
    G = np.empty((n, 2))
    d = np.empty(n, int)
    share = frame.groupby("site")["T"].mean()
    for k in range(3):
        tr, te = frame[row_fold != k], frame[row_fold == k]
        Xd = lambda f, t: np.column_stack([np.ones(len(f)), f[cov], t, np.asarray(t)[:, None] * f[cov]])
        b = sm.OLS(tr["Y"], Xd(tr, tr["T"].to_numpy())).fit().params.to_numpy()
        mu = [Xd(te, np.full(len(te), t)) @ b for t in (0, 1)]
        p = te["site"].map(share).to_numpy()
        Tt, yt = te["T"].to_numpy(), te["Y"].to_numpy()
        G[row_fold == k, 1] = mu[1] + Tt * (yt - mu[1]) / p
        G[row_fold == k, 0] = mu[0] + (1 - Tt) * (yt - mu[0]) / (1 - p)
        q = sm.OLS(tr["Y"], np.column_stack([np.ones(len(tr)), tr[cov], tr["T"],
                                               tr["T"].to_numpy()[:, None] * tr[mod]])).fit()
        c = q.params.to_numpy()[1 + len(cov):]
        d[row_fold == k] = (c[0] + te[mod].to_numpy() @ c[1:] > 0).astype(int)
    np.testing.assert_allclose(res["G_crossfit"], G, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res["decisions_crossfit"]["Q-base"], d)
    v = res["values"].set_index("rule")
    val = G[np.arange(n), d]
    assert v.loc["Q-base", "value_crossfit"] == pytest.approx(val.mean(), rel=1e-12)
    assert v.loc["Q-base", "se_crossfit"] == pytest.approx(
        _cluster_se_statsmodels(val, frame["site"]), rel=1e-10)
    diff = val - G[:, 1]
    assert v.loc["Q-base", "vs_treat_all_crossfit"] == pytest.approx(diff.mean(), rel=1e-10)
    assert v.loc["Q-base", "se_vs_treat_all"] == pytest.approx(
        _cluster_se_statsmodels(diff, frame["site"]), rel=1e-10)
    assert v.loc["treat-none", "value_crossfit"] == pytest.approx(G[:, 0].mean(), rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(J=st.integers(2, 60), K=st.integers(2, 12), seed=st.integers(0, 10**6))
def test_site_split_puts_each_site_in_exactly_one_fold(J, K, seed):
    from simstudy.apply import site_folds
    labels = np.arange(100, 100 + J)
    if K > J:
        with pytest.raises(DataError, match="number of sites"):
            site_folds(labels, K, seed)
        return
    f = site_folds(labels, K, seed)
    assert f.shape == (J,) and set(f) == set(range(K))
    sizes = np.bincount(f, minlength=K)
    assert sizes.max() - sizes.min() <= 1


def test_scores_do_not_depend_on_the_other_methods_listed():
    df, spec = example("simulated")
    frame, cov, mod = prepare(df, **{k: spec[k] for k in COLS})
    alone = analyse(frame, "Y", "T", "site", cov, mod, ["W-aug"], depths=(2,))
    many = analyse(frame, "Y", "T", "site", cov, mod, ["Q-base", "WS-aug", "W-noaug", "W-aug"],
                   depths=(3, 2))
    np.testing.assert_array_equal(alone["scores"]["W-aug"], many["scores"]["W-aug"])
    np.testing.assert_array_equal(alone["scores"]["tree depth 2"], many["scores"]["tree depth 2"])
    for k in ("W-aug", "tree depth 2"):
        np.testing.assert_array_equal(alone["decisions_crossfit"][k], many["decisions_crossfit"][k])
    pd.testing.assert_frame_equal(alone["values"].iloc[[0, 1, 2]].reset_index(drop=True),
                                  many["values"].set_index("rule").loc[
                                      ["treat-all", "treat-none", "W-aug"]].reset_index(), check_exact=True)


def test_categorical_columns_expand_as_model_matrix():
    rep = Design(name="design1").simulate(np.random.default_rng(4), 6, 10)
    df = rep.train.assign(region=np.resize(["north", "east", "south"], len(rep.train)))
    frame, cov, mod = prepare(df, "Y", "T", "site", ["X1", "region"], ["X3", "region"])
    ref = pd.get_dummies(df["region"], drop_first=True, dtype=float)   # levels sorted, first dropped
    assert cov == ["X1", "regionnorth", "regionsouth"] and mod == ["X3", "regionnorth", "regionsouth"]
    np.testing.assert_array_equal(frame[["regionnorth", "regionsouth"]].to_numpy(), ref.to_numpy())


def _trial():
    return Design(name="design1").simulate(np.random.default_rng(5), 6, 10).train


@pytest.mark.parametrize("change, kw, msg", [
    (lambda d: d.drop(columns="X4"), {}, r"column\(s\) \['X4'\] not in the data \(60 rows\)"),
    (lambda d: d.assign(T=d["T"] * 2 + (d.index % 3 == 0)), {}, "exactly two"),
    (lambda d: d.assign(T=np.where(d["T"] == 1, "tutoring", "control")), {}, "--treated"),
    (lambda d: d.assign(X1=d["X1"].where(d.index % 7 != 0)), {}, r"missing values in 9 of 60 rows \(X1: 9\)"),
    (lambda d: pd.concat([d, d.iloc[[0]].assign(site=99)]), {}, "one person"),
    (lambda d: d.assign(T=np.where(d["site"] == d["site"].iloc[0], 1, d["T"])), {}, "everyone treated"),
    (lambda d: d.assign(X5=1.0), {}, r"moderator\(s\) \['X5'\] constant"),
])
def test_bad_data_is_named(change, kw, msg):
    with pytest.raises(DataError, match=msg):
        prepare(change(_trial()), **COLS, **kw)


def test_bad_data_dropped_when_told_with_counts():
    d = _trial()
    log = []
    d = d.assign(X1=d["X1"].where(d.index % 7 != 0))
    d = pd.concat([d, d.iloc[[1]].assign(site=99)]).reset_index(drop=True)
    frame, _, _ = prepare(d, **COLS, dropna=True, drop_sites=True, log=log.append)
    assert len(frame) == 60 - 9 and "dropped 9 rows" in log[0] and "dropped 1 sites (1 rows)" in log[1]
    labelled = _trial().assign(T=lambda x: np.where(x["T"] == 1, "tutoring", "control"))
    frame, _, _ = prepare(labelled, **COLS, treated="tutoring")
    assert set(frame["T"]) == {0, 1} and frame["T"].sum() == (_trial()["T"] == 1).sum()


def test_cli_errors_before_any_work(tmp_path):
    p = tmp_path / "trial.csv"
    _trial().drop(columns="X2").to_csv(p, index=False)
    res = simstudy("apply", "--data", str(p), "--outcome", "Y", "--treatment", "T", "--site",
                   "site", "--covariates", "X1", "X2", "--moderators", "X3", "--out",
                   str(tmp_path / "o"), check=False)
    assert res.returncode == 2 and "['X2'] not in the data (60 rows)" in res.stderr
    assert not (tmp_path / "o").exists()


def test_config_file_gives_the_same_options(tmp_path):
    p = tmp_path / "trial.parquet"
    _trial().to_parquet(p)
    cfg = tmp_path / "apply.yaml"
    cfg.write_text(f"data: {p}\noutcome: Y\ntreatment: T\nsite: site\ncovariates: [X1, X2, X3]\n"
                   f"moderators: [X3, X4]\nmethods: [Q-fe]\nout: {tmp_path / 'o'}\n")
    simstudy("apply", "--config", str(cfg))
    scores = pd.read_csv(tmp_path / "o" / "scores.csv")
    assert "score_Q-fe" in scores and len(scores) == 60
    cfg.write_text("data: x.csv\nsites: school\n")
    res = simstudy("apply", "--config", str(cfg), "--out", str(tmp_path / "p"), check=False)
    assert res.returncode == 2 and "unknown keys ['sites']" in res.stderr


def test_simulated_example_is_design2_as_labelled():
    """The 'simulated' example says Design 2: it must draw with Design 2's beta1 = 0.2 (it drew
    with Design 1's beta1 = 0 before issue 25)."""
    df, _ = example("simulated")
    want = Design(name="design2", beta1=0.2).simulate(np.random.default_rng(1), 40, 60).train
    pd.testing.assert_frame_equal(df.drop(columns="X4_group"), want, check_exact=True)


def test_a_first_run_compiles_in_workers_and_fits_the_same(monkeypatch):
    """A first apply (kernels not on disk) compiles each family's kernels in a worker on a few
    sites' rows first (`warm_rules`), then fits: the rules' scores are those of a run with the
    kernels cached, bit for bit (the warm-up draws nothing from the fits' seeds)."""
    from simstudy import kernels as workers
    df, _ = example("simulated")
    df = df[df["site"].isin(df["site"].unique()[:20])]
    args = (df, "Y", "T", "site", COLS["covariates"], COLS["moderators"], ["Q-ri", "W-aug"])
    monkeypatch.setattr(workers, "kernels_cached", lambda *kernels: False)
    logs = []
    cold = analyse(*args, depths=(2,), value_folds=2, log=logs.append)
    assert "compiling the numerical kernels once" in logs[0] and " worker" in logs[0]
    assert logs[1].startswith("compiled in ")
    monkeypatch.setattr(workers, "kernels_cached", lambda *kernels: True)
    logs = []
    warm = analyse(*args, depths=(2,), value_folds=2, log=logs.append)
    assert not any("compil" in line for line in logs)
    assert set(cold.scores) == {"Q-ri", "W-aug", "tree depth 2"} == set(warm.scores)
    for label, score in cold.scores.items():
        np.testing.assert_array_equal(score, warm.scores[label])
    pd.testing.assert_frame_equal(cold.values, warm.values, check_exact=True)
    from simstudy.apply import warm_rules           # nothing to split: the fits compile
    assert not warm_rules(df, [("Q-ri", "Q-ri", None), ("Q-rs", "Q-rs", None)], {}, 1, 2)
    assert not warm_rules(df, [("Q-ri", "Q-ri", None), ("PT", "PT", None)], {}, 1, 1)


def test_a_first_run_says_it_compiles(tmp_path, monkeypatch):
    """apply's first fits compile the kernels (a minute or two on a new machine): the log says
    so before them, also when only the study's kernels are cached but not the depth-3 tree's
    (apply's default depths are 2 and 3); not when everything is on disk."""
    from simstudy import kernels as workers
    cache = tmp_path / "cache" / "engines"
    cache.mkdir(parents=True)
    for name in ("treebound._root2-1.py311.nbi", "lasso._fit_path-2.py311.nbi"):
        (cache / name).write_bytes(b"")
    real = workers.kernels_cached

    def on_this_cache(*kernels):          # numba itself keeps the cache it has
        with monkeypatch.context() as m:
            m.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
            return real(*kernels)
    monkeypatch.setattr(workers, "kernels_cached", on_this_cache)
    assert on_this_cache() and not on_this_cache("treebound._root34")
    df, spec = example("simulated")
    df = df[df["site"].isin(df["site"].unique()[:20])]
    args = (df, "Y", "T", "site", COLS["covariates"], COLS["moderators"], ["Q-base"])
    logs = []
    analyse(*args, depths=(2, 3), value_folds=2, log=logs.append)
    assert "compiling the numerical kernels once" in logs[0]
    logs = []
    analyse(*args, depths=(2,), value_folds=2, log=logs.append)      # depth 2 is cached
    assert not any("compiling" in line for line in logs)
    (cache / "treebound._root34-3.py311.nbi").write_bytes(b"")
    logs = []
    analyse(*args, depths=(2, 3), value_folds=2, log=logs.append)
    assert not any("compiling" in line for line in logs)
