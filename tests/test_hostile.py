"""Hostile use (issue 16): every case of the red-team list as a test, by class. Through the CLI
a user reaches a one-line message and exit code 2 (or 0), never a traceback, a silent wrong
number or lost rows. Most cases run the CLI in-process (fast); signals need a subprocess."""
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simstudy.cli import main
from simstudy.errors import report
from simstudy.store import read_metrics

TINY = ["J=3", "n_j=8", "reps=2", "n_jobs=1", "progress=false", "figures=false",
        "methods=[Q-base,treat-all]"]
HERE = Path(__file__).parent


def cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return code, out, err


# ------------------------------------------------------------------ data loss
@pytest.mark.slow
def test_sweep_with_overwrite_keeps_every_point_and_identical_studies(tmp_path, capsys):
    out = tmp_path / "s"
    code, _, _ = cli(capsys, "run", "-m", "design.beta1=0,0.1,0.2", "overwrite=true", *TINY,
                     f"out={out}")
    m = read_metrics(out)
    assert code == 0 and sorted(m["point"].unique()) == ["", "design.beta1=0.1",
                                                         "design.beta1=0.2"]
    seconds = m["seconds"].to_numpy()
    code, _, _ = cli(capsys, "run", "overwrite=true", *TINY, f"out={out}")   # identical: kept
    m2 = read_metrics(out)
    assert code == 0 and len(m2) == len(m) and np.array_equal(m2["seconds"], seconds)
    # a point whose study changed is replaced; the other points stay
    code, _, _ = cli(capsys, "run", "design.beta1=0.1", "overwrite=true", *TINY[:-1],
                     "methods=[Q-base]", f"out={out}")
    m3 = read_metrics(out)
    assert code == 0 and set(m3[m3.point == "design.beta1=0.1"]["method"]) == {"Q-base"}
    assert set(m3[m3.point == "design.beta1=0.2"]["method"]) == {"Q-base", "treat-all"}


@pytest.mark.parametrize("value", ["nan", "inf", "abc", "0", "-1"])
def test_flush_seconds_must_be_a_positive_finite_number(value, tmp_path, capsys):
    code, _, err = cli(capsys, "run", f"flush_seconds={value}", *TINY, f"out={tmp_path / 'o'}")
    assert code == 2 and "flush_seconds" in err and not (tmp_path / "o").exists()


# ------------------------------------------------------------------ silent wrong results
@pytest.mark.parametrize("key", ["design.beta1", "design.R_sd", "design.noise_sd",
                                 "design.treat_R", "design.delta.X3", "design.main.X1",
                                 "design.prevalence"])
@pytest.mark.parametrize("value", ["nan", "inf", "abc"])
def test_design_numbers_must_be_finite(key, value, tmp_path, capsys):
    code, _, err = cli(capsys, "run", f"{key}={value}", *TINY, f"out={tmp_path / 'o'}")
    assert code == 2 and key in err and "finite" in err


def test_a_key_at_its_default_is_the_plain_study(tmp_path, capsys):
    out = tmp_path / "d"
    cli(capsys, "run", *TINY, f"out={out}")
    seconds = read_metrics(out)["seconds"].to_numpy()
    for extra in (["seed=2024"], ["design.beta1=0.0"], ["design.beta1=0", "seed=2024.0"]):
        code, _, _ = cli(capsys, "run", "-m", *extra, *TINY, f"out={out}")
        m = read_metrics(out)
        assert code == 0 and list(m["point"].unique()) == [""]
        assert np.array_equal(m["seconds"], seconds)           # nothing recomputed
    cli(capsys, "run", "-m", "design.beta1=0.10", *TINY, f"out={out}")
    cli(capsys, "run", "-m", "design.beta1=0.1", *TINY, f"out={out}")
    assert sorted(read_metrics(out)["point"].unique()) == ["", "design.beta1=0.1"]


def test_deleted_config_is_not_a_fresh_store(tmp_path, capsys):
    out = tmp_path / "c"
    cli(capsys, "run", *TINY, f"out={out}")
    (out / "config.yaml").unlink()
    code, _, err = cli(capsys, "run", *TINY[:-1], "methods=[Q-fe]", f"out={out}")
    assert code == 2 and "no config.yaml" in err
    code, _, err = cli(capsys, "status", str(out))
    assert code == 2 and "holds results but no config.yaml" in err


def test_apply_roles_and_dummy_names_cannot_collide():
    from simstudy import Design
    from simstudy.apply import DataError, prepare
    d = Design().simulate(np.random.default_rng(1), 6, 10).train
    with pytest.raises(DataError, match="'Y' is the outcome and cannot also be in --moderators"):
        prepare(d, "Y", "T", "site", ["X1"], ["X3", "Y"])
    with pytest.raises(DataError, match="'T' is the treatment and cannot also be in --covariates"):
        prepare(d, "Y", "T", "site", ["X1", "T"], ["X3"])
    g = d.assign(G=np.resize(["a", "b"], len(d)), Gb=1.5)
    with pytest.raises(DataError, match="would create the dummy 'Gb'.*already has a column 'Gb'"):
        prepare(g, "Y", "T", "site", ["G", "Gb"], ["X3"])


# ------------------------------------------------------------------ hangs
def test_huge_n_jobs_is_capped(tmp_path, capsys):
    code, out, _ = cli(capsys, "run", *TINY[:3], "n_jobs=100000", *TINY[4:], f"out={tmp_path}")
    assert code == 0 and "n_jobs=100000 capped at" in out


# ------------------------------------------------------------------ messages, not tracebacks
@pytest.mark.parametrize("override, msg", [
    ("J=inf", "J=inf: must be an integer"), ("reps=inf", "reps=inf: must be an integer"),
    ("reps=nan", "reps=nan"), ("design.prevalence=abc", "design.prevalence='abc'"),
    ("flush_seconds=abc", "flush_seconds='abc'"), ("out=", "out is empty"),
    ("out=" + "x" * 300, "a path component has 300 characters"),
    ("+method_options.PT.depth=abc", "depth='abc': must be an integer 1..4"),
    ("+method_options.PT.depth=-1", "depth=-1"), ("+method_options.PT.depth=9", "depth=9"),
    ("+method_options.W-aug.nfolds=0", "nfolds=0: must be an integer >= 3"),
    ("+method_options.Q-ri.new_sites=nope", "new_sites='nope'"),
    ("J=100000", "GiB"),
])
def test_bad_values_are_named_before_any_work(override, msg, tmp_path, capsys):
    methods = "methods=[Q-base,PT,W-aug,Q-ri]"
    args = [a for a in TINY if not a.startswith("methods")] + [methods]
    if not override.startswith("out="):
        args.append(f"out={tmp_path / 'o'}")
    if override.startswith("J="):
        args = [a for a in args if not a.startswith("J=")] + ["n_j=100000"]
    code, _, err = cli(capsys, "run", *args, override)
    assert code == 2 and msg in err, err
    assert not (tmp_path / "o" / "metrics.parquet").exists()


@pytest.mark.parametrize("n_jobs", ["n_jobs=1", "n_jobs=2"])
def test_a_method_that_always_fails_is_stopped_by_the_probe(tmp_path, capsys, n_jobs):
    # n_jobs=2: the probe is the workers' first task; what the other worker finished is dropped
    code, _, err = cli(capsys, "run", *TINY[:2], "reps=6", n_jobs, *TINY[4:-1],
                       "methods=[Q-base,test-broken]", "plugins=[plugin_methods]",
                       f"out={tmp_path / 'o'}")
    assert code == 2 and "probe replicate (design1, J=3, n_j=8, replicate 0)" in err
    assert "X9" in err and "Warning" not in err
    assert not list((tmp_path / "o").glob("**/*.parquet"))
    # a moderator the design does not have is refused before the probe (issue 45, class 9)
    code, _, err = cli(capsys, "run", *TINY, "method_defaults.moderators=[X9]",
                       f"out={tmp_path / 'p'}")
    assert code == 2 and "has no covariate(s) ['X9']" in err and not (tmp_path / "p").exists()


def test_out_pointing_at_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = cli(capsys, "run", *TINY, f"out={f}")
    assert code == 2 and "is a file" in err
    code, _, err = cli(capsys, "run", *TINY, f"out={f}/sub")
    assert code == 2 and "is a file" in err
    cli(capsys, "run", *TINY, f"out={tmp_path / 'ok'}")
    code, _, err = cli(capsys, "merge", str(tmp_path / "ok"), str(f))
    assert code == 2 and "not a directory" in err or "file" in err


def test_unquoted_space_gets_the_quoting_hint(capsys):
    code, _, err = cli(capsys, "run", "out=my", "results")
    assert code == 2 and "must be quoted" in err


def test_damaged_store_is_diagnosed_and_repaired(tmp_path, capsys):
    out = tmp_path / "dmg"
    cli(capsys, "run", *TINY, "flush_seconds=0.001", f"out={out}")
    good = read_metrics(out)
    main_file = out / "metrics.parquet"
    main_file.write_bytes(main_file.read_bytes()[:100])           # truncated by a crash
    code, _, err = cli(capsys, "status", str(out))
    assert code == 2 and "unreadable" in err and "simstudy repair" in err
    code, out_text, _ = cli(capsys, "run", *TINY, f"out={out}")   # the run repairs, recomputes
    assert code == 0 and "moved to" in out_text
    again = read_metrics(out)
    cols = ["replicate", "method", "accuracy", "auc", "value"]
    pd.testing.assert_frame_equal(good[cols], again[cols], check_exact=True)
    assert any((out / "quarantine").iterdir())
    (out / "config.yaml").write_text("points: [unclosed")
    code, _, err = cli(capsys, "report", str(out))
    assert code == 2 and "not valid YAML" in err
    (out / "config.yaml").write_text("- a list\n- not a mapping\n")
    code, _, err = cli(capsys, "status", str(out))
    assert code == 2 and "not a mapping" in err


def test_stale_temp_files_are_removed(tmp_path, capsys):
    out = tmp_path / "t"
    cli(capsys, "run", *TINY, f"out={out}")
    stale = out / ".metrics.parquet.deadbeef.tmp"
    stale.write_bytes(b"")
    cli(capsys, "run", *TINY, f"out={out}")
    assert not stale.exists()


def test_errors_map_to_messages():
    import io
    from contextlib import redirect_stderr
    for exc, code, text in [(OSError(errno.ENOSPC, "No space left on device", "/x/y"), 2,
                             "the disk is full"),
                            (OSError(errno.EROFS, "Read-only file system", "/x"), 2, "read-only"),
                            (MemoryError(), 2, "out of memory"),
                            (KeyboardInterrupt(), 130, "interrupted"),
                            (RuntimeError("boom"), 1, "internal error")]:
        buf = io.StringIO()
        with redirect_stderr(buf):
            assert report(exc, "simstudy run", "resume hint") == code
        assert text in buf.getvalue() and "Traceback" not in buf.getvalue()


@pytest.mark.slow
def test_unreachable_dask_scheduler(tmp_path, capsys):
    pytest.importorskip("distributed")
    t0 = time.time()
    code, _, err = cli(capsys, "run", *TINY[:3], "n_jobs=2", *TINY[4:], "backend=dask",
                       "dask_address=tcp://127.0.0.1:9", "probe=false", f"out={tmp_path}")
    assert code == 2 and "no dask scheduler answered" in err and time.time() - t0 < 40


# ------------------------------------------------------------------ errors are not done
def failed_study(tmp_path, capsys, monkeypatch):
    """A study whose test-envfail fits failed (a transient cause, fixed afterwards): (out, args)."""
    out = tmp_path / "r"
    monkeypatch.syspath_prepend(str(HERE))
    args = [*TINY[:-1], "methods=[Q-base,test-envfail]", "plugins=[plugin_methods]", "probe=false"]
    monkeypatch.setenv("SIMSTUDY_TEST_FAIL", "1")
    cli(capsys, "run", *args, f"out={out}")
    assert (read_metrics(out).query("method == 'test-envfail'")["status"] == "error").all()
    monkeypatch.delenv("SIMSTUDY_TEST_FAIL")
    return out, args


def test_retry_errors_recomputes_failed_replicates(tmp_path, capsys, monkeypatch):
    out, args = failed_study(tmp_path, capsys, monkeypatch)
    cli(capsys, "run", *args, f"out={out}")              # a resume alone keeps the error rows
    assert (read_metrics(out)["status"] == "error").sum() == 2
    code, text, _ = cli(capsys, "run", *args, "retry_errors=true", f"out={out}")
    m = read_metrics(out)
    assert code == 0 and (m["status"] == "ok").all() and len(m) == 2 * 2
    assert "2 replicates with failed fits are recomputed" in text


# ------------------------------------------------------------------ apply
@pytest.mark.parametrize("content, msg", [
    ("", "is empty"), ("a,b,c\n", "no rows"),
    ("Y,T,site,X1\n1,0,1,2\n1,1,1,2,3,4\n", "not a well-formed CSV"),
])
def test_apply_unreadable_csv(content, msg, tmp_path, capsys):
    p = tmp_path / "d.csv"
    p.write_text(content)
    code, _, err = cli(capsys, "apply", "--data", str(p), "--outcome", "Y", "--treatment", "T",
                       "--site", "site", "--covariates", "X1", "--moderators", "X1", "--out",
                       str(tmp_path / "o"))
    assert code == 2 and msg in err


def _trial(tmp_path, change=lambda d: d, J=6):
    from simstudy import Design
    d = change(Design().simulate(np.random.default_rng(2), J, 12).train)
    p = tmp_path / "trial.csv"
    d.to_csv(p, index=False)
    return ["apply", "--data", str(p), "--outcome", "Y", "--treatment", "T", "--site", "site",
            "--covariates", "X1", "X2", "X3", "--moderators", "X3", "--methods", "Q-base",
            "--depths", "--value-folds", "2", "--out", str(tmp_path / "o")]


def test_apply_inf_one_site_and_config_types(tmp_path, capsys):
    code, _, err = cli(capsys, *_trial(tmp_path, lambda d: d.assign(X2=d.X2.where(d.index != 3,
                                                                                   np.inf))))
    assert code == 2 and "infinite values in X2 (1 rows)" in err
    code, _, err = cli(capsys, *_trial(tmp_path, lambda d: d.assign(site=1), J=1))
    assert code == 2 and "need at least 2" in err or "sites" in err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("covariates: 5\n")
    code, _, err = cli(capsys, *_trial(tmp_path)[:1], "--config", str(cfg),
                       *_trial(tmp_path)[1:9], "--moderators", "X3", "--out", str(tmp_path / "q"))
    assert code == 2 and "covariates" in err


# ------------------------------------------------------------------ signals (subprocess)
def _spawn(tmp_path, *extra, sleep="0.5", pipes=True):
    env = {**os.environ, "PYTHONPATH": str(HERE), "SIMSTUDY_TEST_SLEEP": sleep,
           "MPLBACKEND": "Agg"}
    return subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", "J=3", "n_j=8",
                             "reps=40", "methods=[Q-base,test-slow]", "plugins=[plugin_methods]",
                             "figures=false", "progress=false", "flush_seconds=0.2", *extra,
                             f"out={tmp_path / 'sig'}"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE if pipes else subprocess.DEVNULL,
                            stderr=subprocess.PIPE if pipes else subprocess.DEVNULL, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("sig, word", [(signal.SIGINT, "interrupted"),
                                       (signal.SIGTERM, "terminated")])
def test_ctrl_c_and_sigterm_say_what_was_saved(tmp_path, sig, word):
    p = _spawn(tmp_path, "n_jobs=1")
    _wait_for_rows(tmp_path / "sig", p)            # a condition, not a fixed sleep (load)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    assert f"{word}; every replicate finished so far is saved" in err
    assert len(read_metrics(tmp_path / "sig")) > 0


@pytest.mark.slow
def test_killed_parent_leaves_no_workers(tmp_path):
    psutil = pytest.importorskip("psutil")
    p = _spawn(tmp_path, "n_jobs=2", "probe=false", pipes=False)
    deadline = time.time() + 60
    kids = []
    while time.time() < deadline and len(kids) < 2:
        time.sleep(0.5)
        kids = psutil.Process(p.pid).children(recursive=True)
    assert len(kids) >= 2, "the run did not start its workers"
    _wait_for_rows(tmp_path / "sig", p)            # the workers are computing
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert_workers_exit(psutil, kids)


def _wait_for_rows(out, proc, seconds=180):
    """Until the run has flushed finished rows (parts/), with a generous deadline."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if list((out / "parts").glob("metrics-*.parquet")):
            return
        assert proc.poll() is None, "the run ended before writing any row"
        time.sleep(0.2)
    raise AssertionError(f"no finished row within {seconds} s")


def assert_workers_exit(psutil, kids, seconds=60):
    """The workers of a killed parent exit (each polls its parent once a second; under load a
    worker compiling numba kernels holds the GIL for a while, so allow `seconds`)."""
    deadline = time.time() + seconds
    alive = kids
    while time.time() < deadline:
        alive = [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.5)
    for k in alive:
        k.kill()
    raise AssertionError(f"{len(alive)} worker(s) outlived the killed parent")


# ------------------------------------------------------------------ fuzz
VALUES = ["-1", "0", "1", "2", "3", "2.5", "inf", "-inf", "nan", "abc", "1e308", "[2,3]", "''",
          "null", "true"]
KEYS = ["J", "n_j", "reps", "seed", "n_jobs", "flush_seconds", "batch_size", "design.beta1",
        "design.R_sd", "design.prevalence", "design.noise_sd", "design.test_size",
        "design.max_draws", "+method_options.Q-base.moderators", "+method_options.W-aug.nfolds",
        "+method_options.W-aug.max_fits", "+method_options.PT.depth", "replicates"]


@pytest.mark.slow
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), min_size=1, max_size=3))
def test_fuzz_config_keys(tmp_path_factory, overrides):
    """Any values for any keys: exit 0 with a complete store, or exit 2 with nothing written;
    never a traceback."""
    import io
    from contextlib import redirect_stderr, redirect_stdout
    out = tmp_path_factory.mktemp("fuzz")
    args = {"J": "3", "n_j": "6", "reps": "1", "n_jobs": "1", "design.max_draws": "50"}
    args.update(overrides)
    fixed = ["progress=false", "figures=false", "methods=[Q-base,W-aug,PT,treat-all]"]
    err, std = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(std):
        code = main(["run", *[f"{k}={v}" for k, v in args.items()], *fixed, f"out={out}"])
    assert "Traceback" not in err.getvalue() + std.getvalue(), err.getvalue()
    assert code in (0, 2), err.getvalue()
    if code == 2:
        assert not (out / "metrics.parquet").exists()
    else:
        from simstudy.report.tables import status_table
        table, _ = status_table(out)
        assert (table["done"] == table["planned"]).all()


CSV_CHANGES = {
    "nan outcome": lambda d: d.assign(Y=d.Y.where(d.index % 5 != 0)),
    "string covariate": lambda d: d.assign(X1=np.resize(["a", "b", "c"], len(d))),
    "inf covariate": lambda d: d.assign(X2=np.where(d.index == 0, np.inf, d.X2)),
    "one site": lambda d: d.assign(site=7),
    "all treated": lambda d: d.assign(T=1),
    "three arms": lambda d: d.assign(T=d.index % 3),
    "constant moderator": lambda d: d.assign(X3=1.0),
    "string outcome": lambda d: d.assign(Y="high"),
    "tiny": lambda d: d.head(3),
    "bool treatment": lambda d: d.assign(T=d["T"].astype(bool)),
    "duplicate rows": lambda d: pd.concat([d, d]),
    "negative site ids": lambda d: d.assign(site=-d.site),
    "huge values": lambda d: d.assign(X4=d.X4 * 1e300),
}


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(sorted(CSV_CHANGES)), min_size=1, max_size=2, unique=True),
       st.booleans(), st.booleans())
def test_fuzz_apply_csvs(tmp_path_factory, changes, dropna, drop_sites):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from simstudy import Design
    tmp = tmp_path_factory.mktemp("fz")
    d = Design().simulate(np.random.default_rng(3), 6, 12).train
    for c in changes:
        d = CSV_CHANGES[c](d)
    p = tmp / "d.csv"
    d.to_csv(p, index=False)
    args = ["apply", "--data", str(p), "--outcome", "Y", "--treatment", "T", "--site", "site",
            "--covariates", "X1", "X2", "X3", "--moderators", "X3", "X4", "--methods", "Q-base",
            "W-aug", "--depths", "2", "--value-folds", "2", "--out", str(tmp / "o")]
    args += ["--dropna"] if dropna else []
    args += ["--drop-sites"] if drop_sites else []
    err, std = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(std):
        code = main(args)
    assert "Traceback" not in err.getvalue() + std.getvalue(), err.getvalue()
    assert code in (0, 2), (changes, err.getvalue())
