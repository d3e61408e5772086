"""`simstudy apply` on one multisite trial: end to end, bad data, and equality with the
simulation path (issue 8)."""
import numpy as np
import pandas as pd
import pytest
from test_cli import simstudy

from simstudy import Design, make
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


def test_values_are_the_mean_aipw_score_of_each_rule():
    df, spec = example("simulated")
    frame, cov, mod = prepare(df, **{k: spec[k] for k in COLS})
    res = analyse(frame, "Y", "T", "site", cov, mod, ["Q-fe"])
    G, n = res["G"], len(frame)
    v = res["values"].set_index("rule")
    assert v.loc["treat-all", "value"] == pytest.approx(G[:, 1].mean())
    d = res["decisions"]["Q-fe"]
    assert v.loc["Q-fe", "value"] == pytest.approx(G[np.arange(n), d].mean())
    assert v.loc["Q-fe", "value_se"] == pytest.approx(G[np.arange(n), d].std(ddof=1) / np.sqrt(n))


def test_apply_scores_equal_the_simulation_path():
    rep = Design(name="design1").simulate(np.random.default_rng(3), 12, 20)
    frame, cov, mod = prepare(rep.train, **COLS)
    methods = ["Q-base", "Q-ri", "Q-dm-rs", "W-aug", "WS-augID", "PT"]
    res = analyse(frame, "Y", "T", "site", cov, mod, methods, seed=10)
    for k, name in enumerate(methods):
        m = make(name, None, {"covariates": cov, "moderators": mod, "features": mod})
        m.random_state = 10 + k
        expect = m.fit(rep.train).benefit_score(rep.train)
        np.testing.assert_allclose(res["scores"][name], expect, rtol=1e-12, atol=1e-12)


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
