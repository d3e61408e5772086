"""Reports from a small synthetic store: tables equal a direct pandas computation, figures and
congruence matrices render, partial stores are reported with their replicate counts."""
import numpy as np
import pandas as pd
import pytest

from simstudy.metrics import METRICS
from simstudy.report.figures import congruence_order
from simstudy.report.tables import write_report
from simstudy.store import Store, read_metrics

METHODS = ["Q-base", "Q-rs", "W-base", "WS-augID", "oracle"]


def synthetic_store(path, reps=6, drop=(), cells=((25, 25), (25, 150))):
    rng = np.random.default_rng(0)
    rows, pairs = [], []
    for J, n_j in cells:
        for r in range(reps):
            for k, m in enumerate(METHODS):
                if (J, n_j, r, m) in drop:
                    continue
                vals = {x: rng.uniform(0.5, 1.0) for x in METRICS}
                failed = m == "W-base" and r == 0
                rows.append({"design": "design1", "J": J, "n_j": n_j, "replicate": r, "method": m,
                             **({x: np.nan for x in METRICS} if failed else vals),
                             "seconds": 0.01, "status": "error" if failed else "ok",
                             "error": "ValueError: boom" if failed else None})
            for a in range(len(METHODS)):
                for b in range(a + 1, len(METHODS)):
                    pairs.append(("design1", J, n_j, r, METHODS[a], METHODS[b],
                                  0.8 + 0.01 * (a + b) + 0.001 * r))
    with Store(path) as st:
        st.prepare({"seed": 1, "methods": METHODS}, {"design1": {"name": "design1"}}, {})
        st.append(pd.DataFrame(rows), pd.DataFrame(pairs, columns=[
            "design", "J", "n_j", "replicate", "method_a", "method_b", "agreement"]))
    return pd.DataFrame(rows)


def test_tables_equal_direct_pandas(tmp_path):
    raw = synthetic_store(tmp_path)
    summ = write_report(tmp_path, figures=False)
    ok = raw[raw.status == "ok"]
    direct = ok.groupby(["J", "n_j", "method"])["f1"].agg(["mean", "std", "count"])
    for _, row in summ.iterrows():
        d = direct.loc[(row.J, row.n_j, row.method)]
        assert row.f1_mean == pytest.approx(d["mean"]) and row.f1_sd == pytest.approx(d["std"])
        assert row.f1_se == pytest.approx(d["std"] / np.sqrt(d["count"]))
        assert row.reps == d["count"]
    assert list(summ[summ.J == 25].method.unique()) == METHODS          # study's method order
    fails = pd.read_csv(tmp_path / "failures.csv")
    assert set(fails.method) == {"W-base"} and (fails.failures == 1).all()
    assert (fails.message == "ValueError: boom").all()
    M = pd.read_csv(tmp_path / "congruence" / "design1_J25_n150.csv", index_col=0)
    assert list(M.index) == congruence_order(METHODS) == ["Q-base", "Q-rs", "W-base", "WS-augID"]
    assert np.allclose(M.to_numpy(), M.to_numpy().T) and np.allclose(np.diag(M), 1)
    # Q-base (0) vs WS-augID (3): mean over r of 0.8 + 0.03 + 0.001 r
    assert M.loc["Q-base", "WS-augID"] == pytest.approx(0.83 + 0.001 * np.mean(range(6)))


def test_figures_render_with_expected_panels(tmp_path):
    synthetic_store(tmp_path)
    write_report(tmp_path, figures=True, n_jobs=2)          # figures drawn by two processes
    figs = tmp_path / "figures"
    stems = ["accuracy_design1", "regret_design1", "metrics_design1", "paired_accuracy_design1",
             "congruence_design1", "targeting_design1", "value_claims_design1"]   # every METRIC
    for stem in stems:
        assert (figs / f"{stem}.png").stat().st_size > 5000
        assert (figs / f"{stem}.pdf").exists()
    assert sorted(p.name for p in figs.iterdir()) == sorted(
        f"{stem}.{ext}" for stem in stems for ext in ("png", "pdf"))
    from simstudy.report.figures import boxplots
    from simstudy.store import read_metrics
    fig = boxplots(read_metrics(tmp_path), "design1")
    axes = fig.get_axes()
    assert len(axes) == 2 * 2                                      # 2 conditions x (Q | W)
    assert axes[0].get_title() == "Q-learning" and axes[1].get_title() == "Weighting"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["Q-base", "Q-rs"]
    means = [t.get_text() for t in axes[0].texts]
    ok = read_metrics(tmp_path).query("status == 'ok' and J == 25 and n_j == 25")
    assert means == [f"{ok[ok.method == m].accuracy.mean():.3f}" for m in ["Q-base", "Q-rs"]]
    ylims = {ax.get_ylim() for ax in axes}                         # one y-axis for every panel
    assert len(ylims) == 1


def test_partial_store_reports_replicate_counts(tmp_path):
    drop = {(25, 150, r, m) for r in (4, 5) for m in METHODS}
    synthetic_store(tmp_path, drop=drop)
    summ = write_report(tmp_path, figures=True)
    assert set(summ[(summ.n_j == 150)].reps.loc[lambda s: s > 0]) <= {4, 3}
    assert set(summ[(summ.n_j == 25) & (summ.method == "Q-base")].reps) == {6}
    from simstudy.report.figures import _reps_note
    from simstudy.store import read_metrics
    assert "partial store" in _reps_note(read_metrics(tmp_path).query("status == 'ok'"))


@pytest.mark.slow
def test_a_factorial_study_writes_its_nested_loop_figure(tmp_path):
    """The figure README embeds for the paper study (it was not saved for a while: the output
    path went into the title argument and no test noticed)."""
    synthetic_store(tmp_path, cells=((25, 25), (25, 150), (150, 25), (150, 150)))
    write_report(tmp_path, figures=True, n_jobs=1)
    for ext in ("png", "pdf"):
        assert (tmp_path / "figures" / f"nested_loop_accuracy.{ext}").stat().st_size > 5000
    assert (tmp_path / "nested_loop_accuracy.csv").exists()


def test_every_image_the_readme_embeds_exists():
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (root / "README.md").read_text())
    assert links
    missing = [p for p in links if not (root / p).is_file()]
    assert not missing, f"README embeds missing files: {missing}"


def test_report_reads_method_families_from_the_store_not_the_registry(tmp_path):
    """A plugin's family is recorded in the store at run time; the report groups by it without
    the plugin imported, and report/ imports nothing from methods/."""
    import ast
    from pathlib import Path

    import simstudy.report as report
    from simstudy.report.figures import panels
    with Store(tmp_path) as st:
        st.prepare({"seed": 1, "methods": ["Q-base", "my-rule"]}, {"design1": {"name": "design1"}},
                   {}, methods={"Q-base": {"family": "Q-learning"}, "my-rule": {"family": "Mine"}})
        rows = [{"design": "design1", "J": 25, "n_j": 25, "replicate": r, "method": m,
                 **{x: 0.5 for x in METRICS}, "seconds": 0.01, "status": "ok", "error": None}
                for r in range(3) for m in ("Q-base", "my-rule")]
        st.append(pd.DataFrame(rows), pd.DataFrame(columns=[
            "design", "J", "n_j", "replicate", "method_a", "method_b", "agreement"]))
    write_report(tmp_path, figures=False)
    assert panels(["Q-base", "my-rule"]) == [("Q-learning", ["Q-base"]), ("Mine", ["my-rule"])]
    for f in Path(report.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert "methods" not in (node.module or ""), f"{f.name} imports {node.module}"


def test_policy_tree_figure_names_a_binary_split_by_its_values():
    """A 0/1 feature's split reads "= 0" / "= 1", an ordered one "<= t" (issue 26)."""
    from simstudy.engines.treesearch import PolicyTreeSearch
    from simstudy.report.figures import _condition
    rng = np.random.default_rng(0)
    F = np.column_stack([rng.integers(0, 2, 400), rng.standard_normal(400)]).astype(float)
    G = np.column_stack([np.zeros(400), np.where(F[:, 0] == 1, 1.0, -1.0)])
    tree = PolicyTreeSearch(1, 5, None, []).fit(F, G)
    assert tree.feature == 0
    assert _condition(tree, ["female", "age"], True, binary=["female"]) == "female = 0"
    assert _condition(tree, ["female", "age"], False, binary=["female"]) == "female = 1"
    assert _condition(tree, ["female", "age"], True).startswith("female <= ")


def test_group_colours_are_one_per_group_across_figures():
    from simstudy.report.figures import group_colours
    a, b = group_colours(["rural", "urban", "inner-city"]), group_colours(["urban", "inner-city", "rural"])
    assert a == b and len(set(a.values())) == 3


def test_headline_leader_and_tied_set_equal_an_independent_computation(tmp_path):
    """The headline (issue 40) against pandas and scipy's t interval on the stored rows."""
    from scipy import stats

    from simstudy.report.study import headline
    raw = synthetic_store(tmp_path, reps=8)
    ok = raw[(raw.status == "ok") & ~raw.method.isin(["oracle", "treat-all", "treat-none"])]
    table = headline(read_metrics(tmp_path), order=METHODS)
    for r in table.itertuples():
        cell = ok[(ok.J == r.J) & (ok.n_j == r.n_j)]
        means = cell.groupby("method")["accuracy"].mean()
        assert r.leader == means.idxmax() and r.leader_mean == pytest.approx(means.max())
        wide = cell.pivot(index="replicate", columns="method", values="accuracy")
        tied = {r.leader}
        for m in wide.columns.drop(r.leader):
            d = (wide[m] - wide[r.leader]).dropna()
            lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=d.std(ddof=1) /
                                      np.sqrt(len(d)))
            if lo <= 0 <= hi:
                tied.add(m)
        assert set(r.indistinguishable.split()) == tied
        second = means.drop(r.leader).idxmax()
        d = (wide[r.leader] - wide[second]).dropna()
        assert r.runner_up == second and r.margin == pytest.approx(d.mean())
        assert r.margin_mcse == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)))


def test_warnings_are_named_by_kind_counted_per_cell_and_measured():
    """Issue 40, item 4: each warning text is given its kind, counted per cell and method, and
    the warned fits' mean accuracy is set against the method's other fits in the cell."""
    from simstudy.report.study import warning_kind, warnings_table, warnings_text
    rng = np.random.default_rng(1)
    rows = []
    for J in (10, 20):
        for r in range(10):
            for m, text in (("Q-rs", "boundary (singular) fit: a random-effect variance is 0"),
                            ("W-aug", "lasso selected no moderator in 5 fit(s): the rule is "
                                      "constant (treat all or none)")):
                warned = r < (3 if J == 10 else 5)
                rows.append({"point": "", "design": "d", "J": J, "n_j": 8, "replicate": r,
                             "method": m, "accuracy": rng.uniform(), "status": "ok",
                             "warning": text if warned else None})
    m = pd.DataFrame(rows)
    table = warnings_table(m)
    assert warning_kind("mixed model did not converge (x)") == "not converged"
    assert warning_kind("something new") == "other"
    for r in table.itertuples():
        cell = m[(m.J == r.J) & (m.method == r.method)]
        hit = cell.warning.notna()
        assert r.warned == hit.sum() and r.fits == len(cell)
        assert r.difference == pytest.approx(cell.accuracy[hit].mean() - cell.accuracy[~hit].mean())
    assert set(zip(table.method, table.kind)) == {("Q-rs", "singular fit"),
                                                  ("W-aug", "constant rule")}
    text = warnings_text(table)
    assert "**singular fit** (Q-rs; 8 of 20 fits)" in text and "**constant rule**" in text
