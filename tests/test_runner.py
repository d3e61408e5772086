import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simstudy import ConfigError
from simstudy.config import StudyConfig
from simstudy.runner import run_replicate, run_study
from simstudy.store import read_congruence, read_metrics

BASE = {"design": {"name": "design1"}, "J": [4, 6], "n_j": [8], "reps": 6, "seed": 7,
        "methods": ["Q-base", "oracle", "treat-all", "test-random"],
        "plugins": ["plugin_methods"], "progress": False}


def cfg(**kw):
    return StudyConfig.from_config({**BASE, **kw})


def comparable(df):
    return df.drop(columns=[c for c in ("seconds",) if c in df]).reset_index(drop=True)


def test_bit_identical_across_n_jobs_and_batching(tmp_path):
    # the probe replicate is computed in this process (n_jobs=1) or as the workers' first task
    a = run_study(cfg(n_jobs=1), tmp_path / "a", progress=False, probe=True)
    b = run_study(cfg(n_jobs=2, batch_size=1), tmp_path / "b", progress=False, probe=True)
    c = run_study(cfg(n_jobs=2, batch_size=4, backend="threading"), tmp_path / "c", progress=False)
    ma = comparable(read_metrics(a.out))
    assert len(ma) == 2 * 6 * 4 and (ma["status"] == "ok").all()
    for other in (b, c):
        pd.testing.assert_frame_equal(ma, comparable(read_metrics(other.out)), check_exact=True)
        pd.testing.assert_frame_equal(read_congruence(a.out), read_congruence(other.out),
                                      check_exact=True)


def test_bit_identical_across_n_jobs_at_a_size_where_blas_uses_threads(tmp_path):
    """At n = 22,500 OpenBLAS splits a product over its threads in the main process (n_jobs=1)
    but not in the workers (one thread each): the random-slope model's optimiser then moved at
    1e-9 with n_jobs. Every replicate is computed with one BLAS thread."""
    big = dict(J=[150], n_j=[150], reps=100, replicates="78:83", seed=2024, plugins=[],
               methods=["Q-rs", "Q-dm-rs"])            # replicates 78 and 82 moved
    a = run_study(cfg(**big, n_jobs=1), tmp_path / "a", progress=False)
    b = run_study(cfg(**big, n_jobs=2, batch_size=1), tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(comparable(read_metrics(a.out)), comparable(read_metrics(b.out)),
                                  check_exact=True)


def test_one_replicate_rerun_alone_matches_store(tmp_path):
    c = cfg()
    run_study(c, tmp_path, progress=False)
    stored = read_metrics(tmp_path)
    rows, pairs = run_replicate(c, c.designs[0], 6, 8, 4)
    again = pd.DataFrame(rows).set_index("method").sort_index()
    want = stored[(stored.J == 6) & (stored.replicate == 4)].set_index("method").sort_index()
    np.testing.assert_array_equal(again["accuracy"].to_numpy(), want["accuracy"].to_numpy())
    np.testing.assert_array_equal(again["spearman"].to_numpy(), want["spearman"].to_numpy())


def test_failing_method_is_recorded_and_study_goes_on(tmp_path):
    c = cfg(methods=["Q-base", "test-flaky"], reps=8)
    run_study(c, tmp_path, progress=False)
    m = read_metrics(tmp_path)
    flaky = m[m.method == "test-flaky"]
    assert (flaky.status == "error").any() and (flaky.status == "ok").any()
    assert flaky[flaky.status == "error"]["error"].str.contains("deliberate failure").all()
    assert flaky[flaky.status == "error"]["accuracy"].isna().all()
    assert (m[m.method == "Q-base"].status == "ok").all()
    # congruence only pairs methods that succeeded on that replicate
    cg = read_congruence(tmp_path)
    ok_reps = set(flaky[flaky.status == "ok"][["J", "replicate"]].itertuples(index=False))
    assert set(cg[["J", "replicate"]].itertuples(index=False)) == ok_reps


def test_resume_extends_without_duplicates(tmp_path):
    run_study(cfg(reps=3), tmp_path / "s", progress=False)
    run_study(cfg(reps=6), tmp_path / "s", progress=False)      # resumes: only reps 3..5 run
    run_study(cfg(reps=6), tmp_path / "s", progress=False)      # nothing to do
    run_study(cfg(reps=6), tmp_path / "fresh", progress=False)
    pd.testing.assert_frame_equal(comparable(read_metrics(tmp_path / "s")),
                                  comparable(read_metrics(tmp_path / "fresh")), check_exact=True)
    pd.testing.assert_frame_equal(read_congruence(tmp_path / "s"),
                                  read_congruence(tmp_path / "fresh"), check_exact=True)


def test_different_study_in_out_is_refused_unless_overwrite(tmp_path):
    run_study(cfg(reps=2), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"different config(.|\n)*seed: stored 7, requested 8"):
        run_study(cfg(reps=2, seed=8), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="design design1: R_sd"):
        run_study(cfg(reps=2, design={"name": "design1", "R_sd": 1.1}), tmp_path, progress=False)
    assert len(read_metrics(tmp_path)) == 2 * 2 * 4               # nothing lost by refusing
    run_study(cfg(reps=2, seed=8), tmp_path, overwrite=True, progress=False)
    assert len(read_metrics(tmp_path)) == 2 * 2 * 4


@pytest.mark.parametrize("kw,msg", [
    ({"J": [25, 1]}, "J=1: must be an integer >= 2"),
    ({"n_j": 1}, "n_j=1: must be an integer >= 2"),
    ({"reps": 0}, "reps=0: must be an integer >= 1"),
    ({"J": [2.5]}, "J=2.5"),
    ({"methods": ["Q-bse"]}, r"unknown method 'Q-bse' \(did you mean 'Q-base'\?\); registered methods: .*Q-base"),
    ({"design": {"name": "d", "prevalence": 1.2}}, r"prevalence=1.2: must be a finite number in \(0, 1\)"),
    ({"method_options": {"Q-base": {"moderator": ["X3"]}}}, "unknown keys \\['moderator'\\]"),
    ({"method_options": {"Q-rs": {}}}, "not in `methods`"),
    ({"n_jobs": 0}, "n_jobs=0"),
    ({"plugins": ["no_such_module_xyz"]}, "cannot import 'no_such_module_xyz'"),
])
def test_bad_config_fails_fast(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        cfg(**kw)


def test_refit_counts_stored_and_independent_of_workers(tmp_path):
    """The weighting refit loop draws its folds from the method's own seed: n_jobs does not
    change anything, and the number of fits is stored per row and summarised by the report."""
    from simstudy.report.tables import summary
    c = dict(methods=["W-noaug", "WS-aug", "Q-base"], J=[25], n_j=[25], reps=8, plugins=[])
    a = run_study(cfg(**c, n_jobs=1), tmp_path / "a", progress=False)
    b = run_study(cfg(**c, n_jobs=2, batch_size=1), tmp_path / "b", progress=False)
    ma, mb = comparable(read_metrics(a.out)), comparable(read_metrics(b.out))
    pd.testing.assert_frame_equal(ma, mb, check_exact=True)
    fits = ma.set_index("method")["fits"]
    assert fits["Q-base"].isna().all() and (fits["WS-aug"] == 1).all()
    assert fits["W-noaug"].between(1, 5).all() and (fits["W-noaug"] > 1).any()
    s = summary(ma).set_index("method")
    assert s.loc["W-noaug", "refit_share"] == pytest.approx(np.mean(fits["W-noaug"] > 1))
    assert np.isnan(s.loc["Q-base", "refit_share"])


def test_warnings_recorded_per_row_and_counted(tmp_path):
    """Non-convergence / singular mixed models and constant lasso rules are stored as warning
    text per row and counted per cell; the texts follow the fitted objects' own flags."""
    from simstudy import make
    from simstudy.report.tables import summary
    from simstudy.fitting import data_seed, method_seed
    c = cfg(methods=["Q-rs", "W-noaug"], J=[25], n_j=[25], reps=6, plugins=[])
    run_study(c, tmp_path, progress=False)
    m = read_metrics(tmp_path)
    for _, row in m.iterrows():
        r = int(row.replicate)
        rep = c.designs[0].simulate(np.random.default_rng(data_seed(c.seed, "design1", 25, 25, r)),
                                    25, 25)
        meth = make(row.method)
        meth.random_state = method_seed(c.seed, "design1", 25, 25, r, row.method)
        meth.fit(rep.train)
        if row.method == "Q-rs":
            assert ("singular" in str(row.warning)) == meth.fit_.singular
        else:
            constant = not np.any(meth.cv_.coef("lambda.min")[1][1:] != 0)
            assert ("no moderator" in str(row.warning)) == constant
    s = summary(m).set_index("method")
    for meth in ("Q-rs", "W-noaug"):
        assert s.loc[meth, "warnings"] == m[m.method == meth]["warning"].notna().sum()
    assert m["warning"].notna().any()


def test_cold_kernels_compile_once_per_family_with_identical_results(tmp_path,
                                                                              monkeypatch):
    """No compiled kernels on disk: each family's kernels are compiled once, by one worker,
    before the batches run; the store equals a run with warm kernels and n_jobs=1."""
    import simstudy.runner as runner
    from simstudy.store import read_metrics
    from simstudy.kernels import kernels_cached
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty"))
    assert not kernels_cached()
    for name in ("treebound.f-1.py311.nbi", "lasso.g-2.py311.nbi"):
        (tmp_path / "cache" / "x").mkdir(parents=True, exist_ok=True)
        (tmp_path / "cache" / "x" / name).write_bytes(b"")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cache"))
    assert kernels_cached()
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    base = {"design": {"name": "design1"}, "J": 3, "n_j": 8, "reps": 5,
            "methods": ["Q-base", "W-aug", "PT", "treat-all"]}
    run_study(StudyConfig.from_config({**base, "n_jobs": 1}), tmp_path / "one", progress=False)
    monkeypatch.setattr(runner, "kernels_cached", lambda: False)
    run_study(StudyConfig.from_config({**base, "n_jobs": 2}), tmp_path / "cold", progress=False,
              probe=True)
    a, b = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "cold")
    pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"),
                                  check_exact=True)


def test_cold_run_says_it_compiles_and_for_how_long(tmp_path, monkeypatch, capsys):
    """A first run's progress line says the kernels are compiling, with the estimate of
    `compile_seconds` (families to the worker free first, a fixed share per worker) in place of
    a rate and time left, then counts replicates again."""
    import simstudy.runner as runner
    from simstudy.kernels import COMPILE_BASE, compile_cost, compile_seconds
    pt, w, q = compile_cost("PT"), compile_cost("W-aug"), compile_cost("Q-ri")
    assert pt > w > q > compile_cost("treat-all")
    assert compile_seconds(["PT"], 2) == COMPILE_BASE + pt
    assert compile_seconds(["W-aug", "PT", "WS-aug"], 2) == COMPILE_BASE + pt
    assert compile_seconds(["Q-ri", "W-aug", "PT"], 2) == COMPILE_BASE + w + q
    assert compile_seconds(["Q-ri", "W-aug", "PT"], 1) == COMPILE_BASE + pt + w + q
    assert compile_seconds(["Q-ri", "W-aug", "PT"], 3) == COMPILE_BASE + pt
    monkeypatch.setattr(runner, "kernels_cached", lambda: False)
    cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": 3, "n_j": 8, "reps": 2,
                                   "methods": ["Q-ri", "treat-all"], "n_jobs": 1})
    run_study(cfg, tmp_path / "s", progress=True)
    err = capsys.readouterr().err
    secs = 5 * math.ceil(compile_seconds(["Q-ri", "treat-all"], 1) / 5)
    assert f"compiling the numerical kernels once (a first run, or the engines changed): " \
           f"~{secs} s" in err
    assert "2/2" in err.rsplit("compiling", 1)[1]          # then the replicates, counted


def test_named_seed_is_numpys_seed_sequence():
    """The compiled seed of a method (`named_seed`) is SeedSequence(seed, spawn_key=key)
    .generate_state(1)[0] exactly, for small and multi-word seeds and keys of any length."""
    from simstudy.fitting import named_seed
    rng = np.random.default_rng(3)
    for t in range(3000):
        seed = 0 if t % 97 == 0 else int(rng.integers(0, 2 ** 31 if t % 3 else 2 ** 62))
        key = tuple(int(k) for k in rng.integers(0, 2 ** 32 if t % 4 else 2 ** 40,
                                                 rng.integers(0, 8)))
        want = np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint32)[0]
        assert named_seed(seed, *key) == int(want), (seed, key)


def test_shared_reads_take_any_column_name():
    """Inside the runner's shared reads a column may be called anything, also a name the
    reads use for their own bookkeeping: the scores equal those of fresh reads."""
    from simstudy.methods import make
    from simstudy.methods.registry import shared_reads
    from simstudy.runner import simulate_replicate
    cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [6], "n_j": [10],
                                   "reps": 1, "methods": ["Q-base"]})
    rep = simulate_replicate(cfg, cfg.designs[0], 6, 10, 0)
    for odd in ("column names", "site codes", "weights"):
        train, test = (f.rename(columns={"X1": odd}) for f in (rep.train, rep.test))
        cov = [odd, "X2", "X3", "X4", "X5"]
        fresh = [make(m, {"covariates": cov, "random_state": 7}).fit(train).benefit_score(test)
                 for m in ("Q-base", "W-aug")]
        with shared_reads():
            shared = [make(m, {"covariates": cov, "random_state": 7}).fit(train).benefit_score(test)
                      for m in ("Q-base", "W-aug")]
        for a, b in zip(fresh, shared):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_every_kernel_compiles_once(tmp_path):
    """numba compiles a kernel once per argument signature, and a constant argument (a literal
    0 or -1) or a read-only array is a signature of its own: seconds of every first run for
    the same machine code. One replicate of the default study's rules from an empty cache
    (in a subprocess) must leave every simstudy kernel with one signature."""
    code = textwrap.dedent("""
        import inspect, sys, yaml, numba
        from simstudy.config import StudyConfig
        from simstudy.runner import run_replicate, one_thread
        M = yaml.safe_load(open("conf/config.yaml"))["methods"]
        cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [25], "n_j": [25],
                                       "reps": 1, "methods": M})
        with one_thread():
            run_replicate(cfg, cfg.designs[0], 25, 25, 0)
        for name, mod in list(sys.modules.items()):
            if name.startswith("simstudy"):
                for k, v in vars(mod).items():
                    if isinstance(v, numba.core.registry.CPUDispatcher) and len(v.overloads) > 1:
                        print(name, k, [str(s) for s in v.overloads])
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    ROOT = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout
