"""The statistics of the study itself (issue 17): paired comparisons, performance measures with
MC SEs, reps=auto, planning, the nested-loop plot and the ADEMP block, each checked against a
direct computation on the stored rows."""
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from simstudy.report.study import ademp, measures, nested_loop_data, paired, plan
from simstudy.report.tables import summary, write_report
from simstudy.config import StudyConfig
from simstudy.runner import run_study
from simstudy.store import read_config, read_metrics

METHODS = ["Q-base", "Q-fe", "W-noaug", "oracle", "treat-all", "treat-none"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("stats")
    cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [6, 10], "n_j": [12],
                                   "reps": 12, "methods": METHODS, "seed": 3})
    run_study(cfg, out, progress=False)
    return out


def test_paired_difference_and_its_mcse_equal_a_direct_computation(store):
    m = read_metrics(store)
    comp = paired(m, "Q-fe")
    row = comp[(comp.J == 6) & (comp.metric == "accuracy") & (comp.method == "W-noaug")].iloc[0]
    a = m[(m.J == 6) & (m.method == "W-noaug")].set_index("replicate")["accuracy"]
    b = m[(m.J == 6) & (m.method == "Q-fe")].set_index("replicate")["accuracy"]
    d = (a - b).to_numpy()
    assert row.pairs == 12 and row.mean_diff == pytest.approx(d.mean(), abs=1e-15)
    assert row.mcse == pytest.approx(np.std(d, ddof=1) / math.sqrt(12), rel=1e-12)
    from scipy.stats import ttest_1samp           # the t interval at 12 pairs (2.20 SE, not 1.96)
    ci = ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert (row.ci_low, row.ci_high) == (pytest.approx(ci.low, rel=1e-12),
                                         pytest.approx(ci.high, rel=1e-12))
    assert (row.wins, row.ties, row.losses) == ((d > 1e-12).sum(), (abs(d) <= 1e-12).sum(),
                                                (d < -1e-12).sum())
    reg = comp[(comp.J == 6) & (comp.metric == "regret") & (comp.method == "W-noaug")].iloc[0]
    r = (m[(m.J == 6) & (m.method == "W-noaug")].set_index("replicate")["regret"]
         - m[(m.J == 6) & (m.method == "Q-fe")].set_index("replicate")["regret"]).to_numpy()
    assert reg.wins == (r < -1e-12).sum()          # lower regret is a win
    # paired SE is far smaller than the unpaired one when methods share the replicate
    q = comp[(comp.J == 10) & (comp.metric == "accuracy") & (comp.method == "Q-base")].iloc[0]
    s = summary(m).set_index(["J", "method"])
    unpaired = math.hypot(s.loc[(10, "Q-base"), "accuracy_se"], s.loc[(10, "Q-fe"), "accuracy_se"])
    assert q.mcse < unpaired


def test_measures_sd_mcse_constant_rules_and_relative_regret(store):
    m = read_metrics(store)
    meas = measures(m).set_index(["J", "method"])
    g = m[(m.J == 6) & (m.method == "W-noaug")]
    sd = g["accuracy"].std(ddof=1)
    assert meas.loc[(6, "W-noaug"), "accuracy_sd"] == pytest.approx(sd)
    assert meas.loc[(6, "W-noaug"), "accuracy_sd_mcse"] == pytest.approx(sd / math.sqrt(2 * 11))
    assert meas.loc[(6, "W-noaug"), "constant_rule_share"] == pytest.approx(
        g["treated_share"].isin([0, 1]).mean())
    assert meas.loc[(6, "treat-all"), "constant_rule_share"] == 1.0
    v = m[m.J == 6].pivot_table(index="replicate", columns="method", values="value")
    gain = v["oracle"] - np.maximum(v["treat-all"], v["treat-none"])
    rel = (g.set_index("replicate")["regret"] / gain).mean()
    assert meas.loc[(6, "W-noaug"), "relative_regret"] == pytest.approx(rel)
    assert meas.loc[(6, "oracle"), "relative_regret"] == pytest.approx(0.0)


def _grid_stop(m, cell_J, target, lo, step, hi):
    """Independent statement of the stopping rule: the first n in lo, lo+step, ... whose
    largest MC SE (methods other than the reference rules) is <= target, else hi."""
    n = lo
    while True:
        sub = m[(m.J == cell_J) & (m.replicate < n) & ~m.method.isin(["oracle", "treat-all",
                                                                       "treat-none"])]
        se = sub.groupby("method")["accuracy"].agg(lambda x: x.std(ddof=1) / math.sqrt(len(x)))
        if se.max() <= target or n >= hi:
            return n
        n = min(hi, n + step)


def test_reps_auto_stops_exactly_when_the_target_is_met(tmp_path):
    base = {"design": {"name": "design1"}, "J": [8, 25], "n_j": [25], "seed": 5,
            "methods": ["Q-base", "Q-fe", "W-noaug"]}
    fixed = StudyConfig.from_config({**base, "reps": 10})
    run_study(fixed, tmp_path / "a", progress=False)
    before = read_metrics(tmp_path / "a")
    auto = StudyConfig.from_config({**base, "reps": "auto", "target_mcse": 0.02, "min_reps": 10,
                                    "max_reps": 60, "batch_reps": 10})
    run_study(auto, tmp_path / "a", progress=False)       # same store: extends, never recomputes
    after = read_metrics(tmp_path / "a")
    kept = after[after.replicate < 10].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before, check_exact=True)
    cfg = read_config(tmp_path / "a")
    stops = {c["J"]: (c["reps"], c["stopped"]) for c in cfg["planned"]}
    for J in (8, 25):
        n = _grid_stop(after, J, 0.02, 10, 10, 60)
        assert after[after.J == J]["replicate"].nunique() == n == stops[J][0]
        assert ("target met" in stops[J][1]) if n < 60 else ("max_reps" in stops[J][1]
                                                             or "target met" in stops[J][1])
    assert max(s[0] for s in stops.values()) > 10, "no cell grew: the test would prove nothing"
    # interrupted (here: stopped early by a lower max_reps) and resumed == one run
    small = StudyConfig.from_config({**base, "reps": "auto", "target_mcse": 0.02, "min_reps": 10,
                                     "max_reps": 20, "batch_reps": 10})
    run_study(small, tmp_path / "b", progress=False)
    run_study(auto, tmp_path / "b", progress=False)
    cols = ["J", "replicate", "method", "accuracy", "regret"]
    pd.testing.assert_frame_equal(read_metrics(tmp_path / "b")[cols], after[cols], check_exact=True)


def test_plan_estimates_replicates_from_the_pilot(store):
    m = read_metrics(store)
    p = plan(m, 0.01, "accuracy", n_jobs=2).set_index("J")
    sd = m[m.J == 6].groupby("method")["accuracy"].std(ddof=1)
    assert p.loc[6, "reps_needed"] == math.ceil((sd.max() / 0.01) ** 2)
    assert p.loc[6, "worst_method"] == sd.idxmax()
    per_rep = m[m.J == 6].groupby("replicate")["seconds"].sum().median()   # start-up aside
    assert p.loc[6, "wall_minutes"] == pytest.approx(max(0, p.loc[6, "reps_needed"] - 12)
                                                     * per_rep / 2 / 60)


def test_nested_loop_plot_has_one_point_per_condition_and_a_step_line_per_factor(tmp_path):
    from simstudy.report.figures import nested_loop
    rows = []
    for d in ("design1", "design2"):
        for J in (25, 150):
            for n in (25, 150):
                for meth in ("Q-fe", "W-aug"):
                    rows.append({"point": "", "design": d, "J": J, "n_j": n, "method": meth,
                                 "accuracy_mean": 0.5 + 0.001 * J + 0.0001 * n
                                 + (d == "design2") * 0.1 + (meth == "Q-fe") * 0.05})
    summ = pd.DataFrame(rows)
    data, factors = nested_loop_data(summ)
    assert factors == ["design", "J", "n_j"] and len(data) == 8
    assert list(data["design"]) == ["design1"] * 4 + ["design2"] * 4   # first factor slowest
    assert list(data["n_j"]) == [25, 150] * 4
    fig = nested_loop(data, factors)
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 + 3                            # a line per method + per factor
    for line in lines:
        assert len(line.get_xdata()) == 8
    np.testing.assert_allclose(lines[0].get_ydata(), data["Q-fe"])


def test_ademp_block_lists_every_design_parameter(store):
    from dataclasses import fields

    from simstudy import Design
    text = ademp(read_config(store), read_metrics(store))
    for f in fields(Design):
        if f.name == "name":
            continue
        if f.name in ("delta", "main"):
            for k in getattr(Design(), f.name):
                assert f"{f.name}.{k}=" in text
        else:
            assert f"{f.name}=" in text
    for word in ("Aims", "Data-generating", "Estimand", "Methods", "Performance", "Replicates"):
        assert word in text
    write_report(store, figures=True, reference="Q-fe")
    md = (store / "summary.md").read_text()          # the headline first, then the protocol
    assert md.startswith("## Headline (accuracy") and "\n## Protocol (ADEMP)\n" in md
    comp = pd.read_csv(store / "comparison.csv")
    assert set(comp["reference"]) == {"Q-fe"} and (store / "measures.csv").exists()
    assert (store / "figures" / "paired_accuracy_design1.png").exists()
    with pytest.raises(ValueError, match="not a method"):
        write_report(store, reference="nope")
    assert yaml.safe_load((store / "config.yaml").read_text())["points"]


def test_default_reference_is_q_fe_then_the_study_key(tmp_path):
    """Paired comparisons: against Q-fe when it runs (README's numbers), else the first method;
    the study key `reference` chooses another; one not among the methods is refused up front."""
    from simstudy.cli import main
    base = ["run", "J=4", "n_j=8", "reps=2", "n_jobs=1", "progress=false", "figures=false"]
    for methods, extra, expect in (("[Q-base,Q-fe,W-aug]", [], "Q-fe"),
                                   ("[Q-base,W-aug]", [], "Q-base"),
                                   ("[Q-base,Q-fe,W-aug]", ["reference=W-aug"], "W-aug")):
        out = tmp_path / f"{expect}{len(extra)}"
        assert main(base + [f"methods={methods}", *extra, f"out={out}"]) == 0
        assert set(pd.read_csv(out / "comparison.csv")["reference"]) == {expect}
    assert main(base + ["methods=[Q-base]", "reference=PT", f"out={tmp_path / 'bad'}"]) == 2
    assert not (tmp_path / "bad").exists()


def test_the_protocol_shows_each_design_as_its_differences(store):
    """Issue 40, item 2: a design is its family plus the parameters that differ from the
    family's defaults (every parameter folded below), replicates as 'N per cell'."""
    from simstudy.designs import design_defaults, make_design, preset
    cfg = read_config(store)
    params = make_design(preset("design2")).identity()
    cfg["points"][""]["designs"] = {"design2": params}
    text = ademp(cfg, read_metrics(store))
    line = next(ln for ln in text.splitlines() if ln.startswith("  - `design2`"))
    base = design_defaults("multisite")
    differ = [k for k, v in params.items() if k in base and k != "name" and v != base[k]]
    assert differ and line.startswith("  - `design2`: multisite family; differs from its "
                                      "defaults in: ")
    for k in differ:
        assert f"{k}=" in line or f"{k}." in line
    assert "noise_sd=" not in line and "every parameter" in text
    assert "- **Replicates**: 12 per cell (12 planned per cell)" in text
