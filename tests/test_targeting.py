"""The rule beyond its decision (issue 41, items 3-4), in a study: the budget key, the ranking's
AUTOC and Qini against the truth, the rule site by site."""
import numpy as np
import pytest
import yaml

from simstudy.store import read_metrics

from test_hostile import cli

ARGS = ["J=5", "n_j=12", "reps=3", "n_jobs=1", "progress=false", "figures=false",
        "methods=[Q-base,Q-fe,PT,oracle,treat-all,treat-none]"]


def test_the_targeting_metrics_in_a_study(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", *ARGS, f"out={out}")[0] == 0
    m = read_metrics(out)
    w = m.pivot_table(index="replicate", columns="method", values="autoc")
    q = m.pivot_table(index="replicate", columns="method", values="qini")
    # ranking by the true Delta maximises every prefix mean: the oracle's AUTOC and Qini are
    # the largest; a constant rule ranks nobody: 0
    assert (w["oracle"].to_numpy()[:, None] >= w.to_numpy() - 1e-12).all()
    assert (q["oracle"].to_numpy()[:, None] >= q.to_numpy() - 1e-12).all()
    assert np.allclose(w[["treat-all", "treat-none"]], 0) and np.allclose(
        q[["treat-all", "treat-none"]], 0)
    ok = m[m.status == "ok"]
    assert np.allclose(ok["value_at_budget"], ok["value"], atol=1e-12)     # budget 1: no cap
    assert (ok["worst_site_accuracy"] <= ok["accuracy"] + 1e-12).all()
    oracle = ok[ok.method == "oracle"]
    assert (oracle["worst_site_accuracy"] == 1).all() and (oracle["sites_below_constant"] == 0).all()
    # the budget at its default is not recorded: stores written before the key resume
    study = yaml.safe_load((out / "config.yaml").read_text())["points"][""]["study"]
    assert "budget" not in study
    text = (out / "summary.md").read_text()
    assert "## Beyond the decision: budget, ranking, sites" in text and "autoc" in text


def test_a_budget_caps_the_treated_and_is_a_sweep_point(tmp_path, capsys):
    out = tmp_path / "b"
    assert cli(capsys, "run", *ARGS, "budget=0.25", f"out={out}")[0] == 0
    m = read_metrics(out)
    assert set(m["point"]) == {"budget=0.25"}
    ok = m[m.status == "ok"].set_index(["replicate", "method"])
    full = ok["value"]
    # the oracle capped at a quarter keeps its best quarter: between treat-none and the oracle
    o = ok.xs("oracle", level="method")
    none = ok.xs("treat-none", level="method")
    assert (o["value_at_budget"] <= o["value"] + 1e-12).all()
    assert (o["value_at_budget"] >= none["value"] - 1e-12).all()
    assert not np.allclose(ok["value_at_budget"], full)
    for bad in ("0", "1.5", "abc"):
        code, _, err = cli(capsys, "run", *ARGS, f"budget={bad}", f"out={tmp_path / 'x'}")
        assert code == 2 and "budget=" in err
