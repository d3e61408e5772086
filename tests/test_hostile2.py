"""Hostile use, round 2 (issue 29): every class of the red team's list, by class. A refused
command exits 2 with one line naming the key / file / plugin, and leaves the store as it was."""
import hashlib
import shutil
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simstudy.designs import ConfigError
from simstudy.options import parse_bool
from simstudy.runner import cell_mcse
from simstudy.store import read_congruence, read_metrics

from test_hostile import TINY, cli

HERE = Path(__file__).parent


def snapshot(out: Path) -> dict:
    """Every file of a store (but the lock) and its content hash."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != ".lock"}


def plugin(tmp_path, monkeypatch, body: str) -> str:
    """A plugin module of a fresh name on sys.path; returns its name."""
    name = f"plug_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


# ------------------------------------------------------------------ 1. booleans
@pytest.mark.parametrize("value", ["no", "false", "'false'", "NO", "Off", "0", "False"])
def test_overwrite_spelled_false_never_deletes(value, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    before = snapshot(out)
    code, _, err = cli(capsys, "run", *TINY[:-1], "methods=[Q-base]", f"overwrite={value}",
                       f"out={out}")
    assert code == 2 and "different config" in err
    assert snapshot(out) == before


@pytest.mark.parametrize("key", ["overwrite", "retry_errors", "probe", "progress", "figures"])
@pytest.mark.parametrize("value", ["maybe", "2", "'yes please'", "null_"])
def test_a_boolean_key_refuses_other_values(key, value, tmp_path, capsys):
    code, _, err = cli(capsys, "run", *TINY, f"{key}={value}", f"out={tmp_path / 'o'}")
    assert code == 2 and f"{key}=" in err and "true or false" in err
    assert not (tmp_path / "o").exists()


def test_retry_errors_no_does_not_retry(tmp_path, capsys, monkeypatch):
    from test_hostile import failed_study
    out, args = failed_study(tmp_path, capsys, monkeypatch)
    code, text, _ = cli(capsys, "run", *args, "retry_errors=no", f"out={out}")
    assert code == 0 and "are recomputed" not in text
    assert (read_metrics(out)["status"] == "error").sum() == 2


def test_method_and_design_booleans_are_strict(tmp_path, capsys):
    out = tmp_path / "b"
    code, _, _ = cli(capsys, "run", *TINY[:-1], "methods=[PT]", "+method_options.PT.site_feature=no",
                     f"out={out}")
    import yaml
    stored = yaml.safe_load((out / "config.yaml").read_text())
    (point,) = stored["points"].values()
    assert code == 0 and point["study"]["method_options"]["PT"]["site_feature"] is False
    code, _, err = cli(capsys, "run", *TINY[:-1], "methods=[PT]",
                       "+method_options.PT.site_feature=perhaps", f"out={tmp_path / 'c'}")
    assert code == 2 and "method_options.PT.site_feature" in err
    code, _, err = cli(capsys, "run", "design=plasmode_star", "design.standardize=sometimes",
                       *TINY, f"out={tmp_path / 'd'}")
    assert code == 2 and "design.standardize" in err


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=8), st.integers(-3, 3), st.floats(allow_nan=True),
                 st.booleans(), st.none()))
def test_fuzz_parse_bool(value):
    truth = {"true": True, "yes": True, "on": True, "1": True,
             "false": False, "no": False, "off": False, "0": False}
    if isinstance(value, bool):
        expected = value
    elif isinstance(value, str):
        expected = truth.get(value.strip().lower())
    elif isinstance(value, (int, float)) and value in (0, 1):
        expected = bool(value)
    else:
        expected = None
    if expected is None:
        with pytest.raises(ConfigError, match="flag="):
            parse_bool(value, "flag")
    else:
        assert parse_bool(value, "flag") is expected


# ------------------------------------------------------------------ 2. retry computes first
def test_retry_errors_keeps_failures_outside_the_run_and_on_a_failed_probe(tmp_path, capsys,
                                                                           monkeypatch):
    out = tmp_path / "r"
    monkeypatch.syspath_prepend(str(HERE))
    base = ["n_j=8", "reps=3", "n_jobs=1", "progress=false", "figures=false",
            "methods=[Q-base,test-envfail]", "plugins=[plugin_methods]", "probe=false"]
    monkeypatch.setenv("SIMSTUDY_TEST_FAIL", "1")
    assert cli(capsys, "run", "J=[3,4]", *base, f"out={out}")[0] == 0
    failed = read_metrics(out).query("status == 'error'")
    assert len(failed) == 6
    # the cause is not fixed: the probe fails and nothing stored changes
    before = snapshot(out)
    code, _, err = cli(capsys, "run", "J=[3,4]", *base[:-1], "retry_errors=true", f"out={out}")
    assert code == 2 and "probe" in err and snapshot(out) == before
    # fixed; the run covers J=3 and replicates 0:2 only: J=4 and replicate 2 keep their rows
    monkeypatch.delenv("SIMSTUDY_TEST_FAIL")
    code, text, _ = cli(capsys, "run", "J=3", *base, "replicates=0:2", "retry_errors=true",
                        f"out={out}")
    m = read_metrics(out)
    bad = m[m["status"] == "error"]
    assert code == 0 and "2 replicates with failed fits are recomputed" in text
    assert sorted(zip(bad["J"], bad["replicate"])) == [(3, 2), (4, 0), (4, 1), (4, 2)]
    assert len(m) == 2 * 6                                   # nothing lost, nothing duplicated
    # the recomputed replicates have their congruence pair now
    c = read_congruence(out)
    assert set(zip(c["J"], c["replicate"])) == {(3, 0), (3, 1)}


def test_newest_rows_of_a_replicate_win_when_two_files_hold_it(tmp_path, capsys):
    from simstudy.store import Store
    out = tmp_path / "n"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    m, c = read_metrics(out), read_congruence(out)
    newer = m[m["replicate"] == 1].assign(accuracy=0.123)
    with Store(out) as store:
        store.append(newer, c.iloc[:0])
    m2 = read_metrics(out)
    assert len(m2) == len(m)
    assert (m2.loc[m2["replicate"] == 1, "accuracy"] == 0.123).all()
    assert m2.loc[m2["replicate"] == 0, "accuracy"].equals(m.loc[m["replicate"] == 0, "accuracy"])


# ------------------------------------------------------------------ 3. out= not a store
def test_out_a_directory_of_other_files_is_refused(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("learning_rate: 0.1\n")
    (out / "summary.md").write_text("my notes\n")
    before = snapshot(out)
    code, _, err = cli(capsys, "run", *TINY, f"out={out}")
    assert code == 2 and "no simstudy study" in err and "config.yaml" in err
    assert snapshot(out) == before
    (tmp_path / "empty").mkdir()                      # an empty directory is fine
    assert cli(capsys, "run", *TINY, f"out={tmp_path / 'empty'}")[0] == 0


# ------------------------------------------------------------------ 4. plugin names
@pytest.mark.parametrize("name", ["replicate", "method", "point", "accuracy", "status", "J"])
def test_plugin_metric_with_a_reserved_name_is_refused(name, tmp_path, capsys, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, f"""
        from simstudy.metrics import register_metric
        @register_metric({name!r})
        def m(score, truth, test):
            return 1.0
    """)
    code, _, err = cli(capsys, "run", *TINY, f"plugins=[{mod}]", f"out={tmp_path / 'o'}")
    assert code == 2 and mod in err and repr(name) in err and "reserved" in err
    assert not (tmp_path / "o").exists()


def test_two_plugins_registering_one_metric_name_are_refused(tmp_path, capsys, monkeypatch):
    metric = f"m_{uuid.uuid4().hex[:6]}"
    body = f"""
        from simstudy.metrics import register_metric
        @register_metric({metric!r})
        def m(score, truth, test):
            return 1.0
    """
    a, b = plugin(tmp_path, monkeypatch, body), plugin(tmp_path, monkeypatch, body)
    code, _, err = cli(capsys, "run", *TINY, f"plugins=[{a},{b}]", f"out={tmp_path / 'o'}")
    assert code == 2 and a in err and b in err


def test_a_metric_registered_by_an_imported_module_is_the_plugins(tmp_path, capsys, monkeypatch):
    metric = f"m_{uuid.uuid4().hex[:6]}"
    helper = plugin(tmp_path, monkeypatch, f"""
        import numpy as np
        from simstudy.metrics import register_metric
        @register_metric({metric!r})
        def m(score, truth, test):
            return float(np.mean(np.asarray(score) > 0))
    """)
    main = plugin(tmp_path, monkeypatch, f"import {helper}  # noqa\n")
    out = tmp_path / "o"
    code, _, _ = cli(capsys, "run", *TINY, f"plugins=[{main}]", f"out={out}")
    m = read_metrics(out)
    assert code == 0 and metric in m and m[metric].notna().all()
    assert np.allclose(m[metric], m["treated_share"])      # an independent column: the same


@pytest.mark.parametrize("ret", ["'abc'", "None", "np.zeros(3)"])
def test_a_metric_returning_no_number_blames_the_metric(ret, tmp_path, capsys, monkeypatch):
    metric = f"m_{uuid.uuid4().hex[:6]}"
    mod = plugin(tmp_path, monkeypatch, f"""
        import numpy as np
        from simstudy.metrics import register_metric
        @register_metric({metric!r})
        def m(score, truth, test):
            return {ret}
    """)
    code, _, err = cli(capsys, "run", *TINY, f"plugins=[{mod}]", f"out={tmp_path / 'o'}")
    assert code == 2 and metric in err and "must return one number" in err
    assert "method_options" not in err


@pytest.mark.parametrize("body, says", [
    ("def f(:\n", "SyntaxError"),
    ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
    ("import simstudy\nfrom simstudy import Method, register\n"
     "@register('Q-base')\nclass Mine(Method):\n    pass\n", "'Q-base'"),
])
def test_a_broken_plugin_is_named(body, says, tmp_path, capsys, monkeypatch):
    mod = plugin(tmp_path, monkeypatch, body)
    code, _, err = cli(capsys, "run", *TINY, f"plugins=[{mod}]", f"out={tmp_path / 'o'}")
    assert code == 2 and mod in err and says in err and "internal error" not in err


# ------------------------------------------------------------------ 5. a design's output
BAD_DESIGN = """
    from dataclasses import dataclass
    import numpy as np
    import pandas as pd
    from simstudy.designs import DesignBase, Replicate, register_design, Design

    @register_design({family!r})
    @dataclass(frozen=True)
    class Bad(DesignBase):
        name: str = {family!r}
        def simulate(self, rng, J, n_j):
            rep = Design().simulate(rng, {J}, n_j)
            truth = rep.truth.copy()
            {change}
            return Replicate(rep.train, rep.test, truth)
"""


@pytest.mark.parametrize("J, change, says", [
    ("J", "truth.loc[0, 'Delta'] = np.nan", "missing or infinite"),
    ("5", "pass", "5 training sites (asked for J=3)"),
    ("J", "truth = truth.iloc[:-1]", "row-aligned"),
    ("J", "truth['d_opt'] = 1", "d_opt is not"),
])
def test_a_plugin_designs_output_is_checked(J, change, says, tmp_path, monkeypatch):
    from simstudy.config import StudyConfig
    from simstudy.runner import run_study
    family = f"bad{uuid.uuid4().hex[:6]}"
    mod = plugin(tmp_path, monkeypatch, BAD_DESIGN.format(family=family, J=J, change=change))
    cfg = StudyConfig.from_config({"design": {"family": family, "name": family}, "J": 3,
                                   "n_j": 8, "reps": 2, "methods": ["Q-base", "treat-all"],
                                   "plugins": [mod]})
    with pytest.raises(ConfigError) as info:
        run_study(cfg, tmp_path / "o", progress=False, probe=False)
    assert f"design {family!r}" in str(info.value) and says in str(info.value)
    assert not (tmp_path / "o" / "metrics.parquet").exists()
    assert not list((tmp_path / "o" / "parts").glob("metrics-*"))


# ------------------------------------------------------------------ 6. study identity
def test_a_parts_file_of_another_study_is_not_adopted(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli(capsys, "run", *TINY, f"out={a}")[0] == 0
    assert cli(capsys, "run", *TINY, "seed=7", "reps=3", f"out={b}")[0] == 0
    before = read_metrics(a)
    shutil.copy(b / "metrics.parquet", a / "parts" / "metrics-99999999999999999999-x.parquet")
    code, _, err = cli(capsys, "status", str(a))
    assert code == 2 and "unreadable" in err or "another study" in err
    code, text, _ = cli(capsys, "repair", str(a))
    assert code == 0 and "1 unreadable file(s) moved" in text
    pd.testing.assert_frame_equal(read_metrics(a), before)


def test_a_parquet_file_with_other_columns_is_quarantined(tmp_path, capsys):
    a = tmp_path / "a"
    assert cli(capsys, "run", *TINY, f"out={a}")[0] == 0
    pd.DataFrame({"replicate": [0], "x": [1.0]}).to_parquet(
        a / "parts" / "metrics-99999999999999999999-y.parquet")
    code, text, _ = cli(capsys, "repair", str(a))
    assert code == 0 and "1 unreadable file(s) moved" in text
    assert cli(capsys, "report", str(a))[0] == 0


def test_a_changed_data_file_is_a_different_study(tmp_path, capsys):
    from simstudy import data
    sizes = tmp_path / "sizes.csv"
    shutil.copy(data.path("star"), sizes)
    args = [*TINY, "design.site_sizes=file", f"design.site_sizes_file={sizes}",
            "design.site_sizes_column=school"]
    out = tmp_path / "f"
    assert cli(capsys, "run", *args, f"out={out}")[0] == 0
    before = snapshot(out)
    df = pd.read_csv(sizes)
    df.iloc[: len(df) // 2].to_csv(sizes, index=False)          # another file, same name
    code, _, err = cli(capsys, "run", *args, f"out={out}")
    assert code == 2 and "site_sizes_file_sha256" in err
    assert snapshot(out) == before


# ------------------------------------------------------------------ 11. numbers
def test_auto_target_reference_is_a_paired_se():
    rng = np.random.default_rng(1)
    n = 40
    common = rng.normal(0, 1, n)                  # a shared replicate effect: pairing matters
    rows = []
    for r in range(n):
        for method, shift in (("treat-all", 0.0), ("A", 0.1), ("B", 0.2)):
            rows.append(dict(point="", design="d", J=3, n_j=8, replicate=r, method=method,
                             status="ok", accuracy=common[r] + shift + rng.normal(0, 0.01)))
    m = pd.DataFrame(rows)
    w = m.pivot(index="replicate", columns="method", values="accuracy")
    paired = max(float((w[c] - w["treat-all"]).std(ddof=1) / np.sqrt(n)) for c in ("A", "B"))
    got = cell_mcse(m, "", ("d", 3, 8), n, "accuracy", reference="treat-all")
    assert got == pytest.approx(paired) and got < 0.01


def test_min_site_size_above_n_j_is_refused(tmp_path, capsys):
    code, _, err = cli(capsys, "run", *TINY, "design.min_site_size=30", f"out={tmp_path / 'o'}")
    assert code == 2 and "design.min_site_size=30" in err and "n_j=8" in err


@pytest.mark.parametrize("extra, says", [
    (["min_reps=0"], "min_reps"), (["max_reps=0"], "max_reps"), (["batch_reps=0"], "batch_reps"),
    (["replicates=0:2"], "replicates"),
])
def test_auto_settings_are_checked(extra, says, tmp_path, capsys):
    code, _, err = cli(capsys, "run", *TINY[:2], "reps=auto", "target_mcse=0.01", *TINY[3:],
                       *extra, f"out={tmp_path / 'o'}")
    assert code == 2 and says in err


def test_a_failed_probe_leaves_the_store_and_config_as_they_were(tmp_path, capsys):
    out = tmp_path / "p"
    bad = ["methods=[Q-base,test-broken]", "plugins=[plugin_methods]"]   # fails every fit
    # a new store: the failed probe writes no config, so the corrected command runs
    code, _, err = cli(capsys, "run", *TINY, *bad, f"out={out}")
    assert code == 2 and "probe" in err and not (out / "config.yaml").exists()
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    before = snapshot(out)
    # overwrite=true with a study whose probe fails deletes nothing
    code, _, err = cli(capsys, "run", *TINY, *bad, "overwrite=true", f"out={out}")
    assert code == 2 and "probe" in err and snapshot(out) == before


# ------------------------------------------------------------------ 7. apply
def apply_data(tmp_path, seed=3) -> Path:
    from simstudy import Design
    rep = Design(name="design2").simulate(np.random.default_rng(seed), 8, 20)
    path = tmp_path / "trial.csv"
    rep.train.to_csv(path, index=False)
    return path


def run_apply(capsys, data, out, *extra):
    return cli(capsys, "apply", "--data", str(data), "--outcome", "Y", "--treatment", "T",
               "--site", "site", "--covariates", "X1", "X2", "X3", "--moderators", "X3",
               "--methods", "Q-base", "--value-folds", "2", "--out", str(out), *extra)


def test_apply_output_is_replaced_whole_or_not_at_all(tmp_path, capsys, monkeypatch):
    data, out = apply_data(tmp_path), tmp_path / "out"
    assert run_apply(capsys, data, out, "--depths", "1", "2")[0] == 0
    assert (out / "tree_depth2_rules.csv").exists()
    before = snapshot(out)
    # a run that dies while writing (here: the congruence figure raises) leaves the old output
    from simstudy.report import figures
    monkeypatch.setattr(figures, "heatmap", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt()))
    code, _, _ = run_apply(capsys, data, out, "--depths", "1", "--seed", "5")
    assert code == 130 and snapshot(out) == before
    assert not list(tmp_path.glob(".out.*"))
    monkeypatch.undo()
    # fewer depths: the second output has no tree of the first
    assert run_apply(capsys, data, out, "--depths", "1")[0] == 0
    assert not (out / "tree_depth2_rules.csv").exists() and (out / "tree_depth1_rules.csv").exists()


def test_apply_recovers_an_output_left_between_the_two_renames(tmp_path, capsys):
    data, out = apply_data(tmp_path), tmp_path / "out"
    assert run_apply(capsys, data, out, "--depths")[0] == 0
    out.rename(tmp_path / ".out.old-12345678")        # killed after the first rename
    (tmp_path / ".out.new-12345678").mkdir()
    code, _, err = run_apply(capsys, data, out, "--depths", "--methods", "nope")
    assert code == 2 and (out / "values.csv").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_apply_out_checked_before_fitting(tmp_path, capsys):
    data, mine = apply_data(tmp_path), tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    code, out, err = run_apply(capsys, data, mine)
    assert code == 2 and "holds other files" in err and "[1/" not in out
    assert (mine / "notes.txt").read_text() == "mine"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    code, _, err = run_apply(capsys, data, tmp_path / "dangling")
    assert code == 2 and "dangling" in err
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    code, _, err = run_apply(capsys, data, tmp_path / "loop")
    assert code == 2 and "--out" in err and "internal" not in err


@pytest.mark.parametrize("yaml_text, says", [
    ("value_folds: abc\n", "value_folds"), ("methods: []\n", "methods: the list is empty"),
    ("seed: -3\n", "seed -3"), ("dropna: maybe\n", "dropna"), ("depths: [a]\n", "depths"),
    ("covariates: {a: 1}\n", "covariates"), ("outcome: [Y, Z]\n", "outcome"),
])
def test_apply_yaml_values_are_typed(yaml_text, says, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml_text)
    code, _, err = cli(capsys, "apply", "--example", "simulated", "--config", str(cfg),
                       "--out", str(tmp_path / "o"))
    assert code == 2 and says in err, err


def test_apply_yaml_booleans_and_scalar_depths(tmp_path, capsys):
    data = apply_data(tmp_path)
    df = pd.read_csv(data)
    df.loc[0, "X1"] = np.nan
    df.to_csv(data, index=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dropna: 'no'\ndepths: 1\n")
    code, _, err = run_apply(capsys, data, tmp_path / "o", "--config", str(cfg))
    assert code == 2 and "--dropna" in err                 # 'no' is false: nothing dropped
    cfg.write_text("dropna: yes\ndepths: 1\n")
    code, _, _ = run_apply(capsys, data, tmp_path / "o", "--config", str(cfg))
    assert code == 0 and (tmp_path / "o" / "tree_depth1_rules.csv").exists()


@pytest.mark.parametrize("change, says", [
    (lambda df: df.assign(grp="a"), "one level"),                         # a one-level category
    (lambda df: df.assign(grp=[f"id{i}" for i in range(len(df))]), "levels (an ID?)"),
    (lambda df: df.assign(Y=df["Y"] * 1e307), "rescale"),
])
def test_apply_degenerate_columns_are_named(change, says, tmp_path, capsys):
    data = apply_data(tmp_path)
    change(pd.read_csv(data)).to_csv(data, index=False)
    code, _, err = cli(capsys, "apply", "--data", str(data), "--outcome", "Y", "--treatment",
                       "T", "--site", "site", "--covariates", "X1", "grp" if "grp" in
                       pd.read_csv(data) else "X2", "--moderators", "X3",
                       "grp" if "grp" in pd.read_csv(data) else "X4", "--methods", "Q-base",
                       "--out", str(tmp_path / "o"))
    assert code == 2 and says in err, err


def test_apply_duplicate_csv_columns_are_refused(tmp_path, capsys):
    data = tmp_path / "d.csv"
    data.write_text("Y,T,site,X1,X1\n1,0,1,2,3\n")
    code, _, err = run_apply(capsys, data, tmp_path / "o")
    assert code == 2 and "more than once" in err and "X1" in err


# ------------------------------------------------------------------ 9. leaks
POOL = """
import os, sys, time
from joblib import Parallel, delayed
from simstudy.workers import watched
with watched("loky"):
    pids = Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(4))
print(" ".join(map(str, sorted(set(pids)))), flush=True)
time.sleep(120)           # idle workers, no task running: killed here
"""


def test_idle_pool_workers_exit_with_a_killed_parent(tmp_path):
    """Any pool (the report's figures too): a worker watches its parent from its start, not
    from a simstudy task, so a parent killed while its workers idle leaves none behind."""
    import signal
    import subprocess
    import sys
    psutil = pytest.importorskip("psutil")
    from test_hostile import assert_workers_exit
    p = subprocess.Popen([sys.executable, "-c", POOL], stdout=subprocess.PIPE, text=True)
    pids = [int(x) for x in p.stdout.readline().split()]
    kids = [psutil.Process(pid) for pid in pids]
    assert kids and all(k.is_running() for k in kids)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert_workers_exit(psutil, kids, seconds=30)


# ------------------------------------------------------------------ 8. hangs
def test_max_draws_is_bounded_and_infeasibility_blames_the_design(tmp_path, capsys):
    code, _, err = cli(capsys, "run", *TINY, "design.max_draws=1e8", f"out={tmp_path / 'a'}")
    assert code == 2 and "design.max_draws" in err and "an integer 1..10000" in err and "infeasible" in err
    code, _, err = cli(capsys, "run", *TINY, "design.R_sd=1000", "design.max_draws=200",
                       f"out={tmp_path / 'b'}")
    assert code == 2 and "could not draw the probe replicate" in err and "200 draws" in err
    assert "method options" not in err


@pytest.mark.slow
def test_dask_address_of_a_server_that_is_not_dask_times_out(tmp_path, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import socket
    import threading
    import time
    import simstudy.cluster as cluster
    monkeypatch.setattr(cluster, "DASK_CONNECT_SECONDS", 2.0)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)                         # accepts connections, never speaks dask
    port = server.getsockname()[1]
    conns = []
    threading.Thread(target=lambda: conns.append(server.accept()), daemon=True).start()
    t0 = time.time()
    code, _, err = cli(capsys, "run", *TINY, "backend=dask", f"dask_address=tcp://127.0.0.1:{port}",
                       f"out={tmp_path / 'o'}")
    server.close()
    assert code == 2 and "no dask scheduler answered" in err and time.time() - t0 < 30


@pytest.mark.parametrize("address", ["notaurl", "tcp://host", "http//x:1", "tcp://h:99999"])
def test_dask_address_is_checked(address, tmp_path, capsys):
    code, _, err = cli(capsys, "run", *TINY, "backend=dask", f"dask_address={address}",
                       f"out={tmp_path / 'o'}")
    assert code == 2 and "dask_address" in err and "tcp://HOST:PORT" in err


# ------------------------------------------------------------------ 10. unclear errors
def test_plan_errors_are_named(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    (tmp_path / "empty").mkdir()
    for args, says in [([str(tmp_path / "nowhere"), "--target", "0.01"], "no such directory"),
                       ([str(tmp_path / "empty"), "--target", "0.01"], "holds no study"),
                       ([str(out), "--target", "0.01", "--metric", "nope"], "--metric 'nope'"),
                       ([str(out), "--target", "1e-300"], "would need about"),
                       ([str(out), "--target", "inf"], "--target inf")]:
        code, _, err = cli(capsys, "plan", *args)
        assert code == 2 and says in err and "internal" not in err, (args, err)


def test_store_commands_name_bad_paths_and_never_create_before_failing(tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    (tmp_path / "afile").write_text("x")
    for cmd, args, says in [
            ("merge", [str(tmp_path / "nowhere"), str(tmp_path / "new" / "d")], "no such"),
            ("merge", [str(out), str(tmp_path / "afile")], "is a file"),
            ("status", [str(tmp_path / "afile")], "is a file"),
            ("repair", [str(tmp_path / "nowhere")], "holds no study")]:
        code, _, err = cli(capsys, cmd, *args)
        assert code == 2 and says in err and "internal" not in err, (cmd, err)
    assert not (tmp_path / "new").exists()
    for link, target in (("loop", "loop"), ("dangling", "nowhere")):
        (tmp_path / link).symlink_to(tmp_path / target)
        code, _, err = cli(capsys, "run", *TINY, f"out={tmp_path / link}")
        assert code == 2 and "symbolic link" in err


@pytest.mark.parametrize("name", ["parts", "quarantine"])
def test_store_folders_that_are_files_are_named(name, tmp_path, capsys):
    out = tmp_path / "s"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    shutil.rmtree(out / name, ignore_errors=True)
    (out / name).write_text("x")
    code, _, err = cli(capsys, "repair", str(out))
    assert code == 2 and f"{name} is a file" in err


def test_a_hand_edited_config_is_named(tmp_path, capsys):
    import yaml
    out = tmp_path / "s"
    assert cli(capsys, "run", *TINY, f"out={out}")[0] == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    cfg["planned"][0]["reps"] = "abc"
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    for cmd in ("status", "report"):
        code, _, err = cli(capsys, cmd, str(out))
        assert code == 2 and "planned[0].reps='abc'" in err, err


def test_a_study_that_cannot_fit_in_memory_is_refused_by_estimate(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "J=40000", "n_j=40", "reps=1", "n_jobs=1", "probe=false",
                       "methods=[WS-augID]", f"out={tmp_path / 'o'}")
    assert code == 2 and "GiB" in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ fuzzers
@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=12))
def test_fuzz_plugin_metric_names(name):
    """Any name: refused with a ConfigError naming it, or registered as a column that is none
    of the store's."""
    from simstudy.metrics import EXTRA_METRICS, METRIC_OWNERS, RESERVED
    from simstudy.store import CONGRUENCE_COLUMNS, METRIC_COLUMNS

    def fn(score, truth, test):
        return 0.0
    fresh = name not in EXTRA_METRICS
    try:
        from simstudy.metrics import register_metric
        register_metric(name)(fn)
    except ConfigError as exc:
        assert repr(name) in str(exc)
        return
    try:
        assert name.isidentifier() and name not in RESERVED
        assert name not in METRIC_COLUMNS and name not in CONGRUENCE_COLUMNS
    finally:
        if fresh:
            EXTRA_METRICS.pop(name, None)
            METRIC_OWNERS.pop(name, None)


YAML_KEYS = ["value_folds", "seed", "depths", "methods", "covariates", "moderators", "dropna",
             "drop_sites", "outcome", "site", "by", "treated"]
YAML_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 50), st.floats(-1, 1),
                        st.text(max_size=6), st.lists(st.integers(0, 6), max_size=3),
                        st.lists(st.text(max_size=4), max_size=3),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(YAML_KEYS), YAML_VALUES, min_size=1, max_size=4))
def test_fuzz_apply_yaml(tmp_path_factory, options):
    """Any values in apply's --config YAML: a DataError naming the file and key, or options of
    the types the command line gives (lists of names, integers, booleans)."""
    import yaml
    from simstudy.apply import DataError
    from types import SimpleNamespace

    from simstudy.apply import fill_options
    from simstudy.cli import apply_parser as parser
    path = tmp_path_factory.mktemp("yaml") / "c.yaml"
    path.write_text(yaml.safe_dump(options))
    args = parser().parse_args(["--example", "simulated", "--config", str(path)])
    try:
        args = SimpleNamespace(**fill_options(vars(args)))
    except ConfigError as exc:                 # DataError is one
        assert isinstance(exc, DataError) or "must be true or false" in str(exc)
        assert any(k in str(exc) for k in options) or "seed" in str(exc) \
            or "value_folds" in str(exc), str(exc)
        return
    for key in ("methods", "covariates", "moderators"):
        v = getattr(args, key)
        assert v is None or (isinstance(v, list) and v and all(isinstance(x, str) for x in v))
    assert isinstance(args.seed, int) and args.seed >= 0
    assert args.value_folds is None or (isinstance(args.value_folds, int)
                                        and args.value_folds >= 2)
    assert isinstance(args.dropna, bool) and isinstance(args.drop_sites, bool)
    assert args.depths is None or all(isinstance(d, int) for d in args.depths)
    for key in ("outcome", "site", "by", "treated"):
        assert getattr(args, key) is None or isinstance(getattr(args, key), str)


@pytest.mark.parametrize("arg", ["J=[3,3]", "n_j=[8,8.0]"])
def test_a_size_listed_twice_is_refused(arg, tmp_path, capsys):
    code, _, err = cli(capsys, "run", *[a for a in TINY if not a.startswith(arg[:2])], arg,
                       f"out={tmp_path / 'o'}")
    assert code == 2 and "lists a value twice" in err and not (tmp_path / "o").exists()
