"""A real dask cluster (issue 29, class 12): a scheduler and two workers as separate processes on
localhost, a study run against it with one worker killed mid-run: it finishes, and the store is
identical to n_jobs=1 (but the timing column)."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from simstudy.store import read_congruence, read_metrics

pytestmark = pytest.mark.slow             # cluster processes: `python -m pytest -m slow`
pytest.importorskip("distributed")
HERE = Path(__file__).parent
ARGS = ["J=3", "n_j=8", "reps=24", "methods=[Q-base,Q-fe,W-aug,test-slow,treat-all]",
        "plugins=[plugin_methods]", "progress=false", "figures=false", "batch_size=1",
        "flush_seconds=0.2"]


def _env(sleep: str = "0.3"):
    return {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "SIMSTUDY_TEST_SLEEP": sleep, "MPLBACKEND": "Agg"}


def _wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_real_cluster_with_a_worker_killed_mid_run(tmp_path):
    sched_file = tmp_path / "scheduler.json"
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_for(sched_file.exists, 60, "the scheduler")
        workers = [subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
             str(sched_file), "--nthreads", "1", "--nworkers", "1", "--no-dashboard",
             "--no-nanny"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(2)]
        procs += workers
        import json
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        out = tmp_path / "dask"
        run = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", *ARGS,
                                "backend=dask", f"dask_address={address}", f"out={out}"],
                               env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        procs.append(run)
        err, _ = _kill_mid_run(run, out, workers[0], after=4)
        assert run.returncode == 0, err
        local = tmp_path / "local"
        subprocess.run([sys.executable, "-m", "simstudy.cli", "run", *ARGS, "n_jobs=1",
                        f"out={local}"], env=_env(), cwd=tmp_path, check=True,
                       capture_output=True)
        a, b = read_metrics(out), read_metrics(local)
        assert len(a) == 24 * 5 and not a.duplicated(["J", "n_j", "replicate", "method"]).any()
        pd.testing.assert_frame_equal(a.drop(columns="seconds"), b.drop(columns="seconds"),
                                      check_exact=True)
        pd.testing.assert_frame_equal(read_congruence(out), read_congruence(local),
                                      check_exact=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)


def _scheduler(tmp_path, procs):
    sched_file = tmp_path / "scheduler.json"
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    _wait_for(sched_file.exists, 60, "the scheduler")
    import json
    return sched_file, json.loads(sched_file.read_text())["address"]


def _worker(sched_file):
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
         "--nthreads", "1", "--nworkers", "1", "--no-dashboard", "--no-nanny"],
        env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_no_worker_at_the_start_is_a_bounded_wait_and_one_line(tmp_path):
    """Issue 30, class 2: with a scheduler but no worker, the run waits dask_wait seconds and
    exits 2 naming the fix (not an internal error after joblib's 10 s)."""
    procs = []
    try:
        _, address = _scheduler(tmp_path, procs)
        t0 = time.time()
        res = subprocess.run([sys.executable, "-m", "simstudy.cli", "run", *ARGS, "backend=dask",
                              f"dask_address={address}", "dask_wait=3",
                              f"out={tmp_path / 'o'}"], env=_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert "no dask worker connected within 3 s (dask_wait)" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and time.time() - t0 < 60
    finally:
        for p in procs:
            p.kill()


def _kill_mid_run(run, out, victim, after=3):
    """Once `after` replicates are stored, SIGKILL `victim`; the run's stderr and its seconds
    to end."""
    def some_done():
        try:
            return len(read_metrics(out)["replicate"].unique()) >= after
        except Exception:                                   # noqa: BLE001
            return False
    _wait_for(some_done, 180, "the first replicates")
    victim.send_signal(signal.SIGKILL)
    t0 = time.time()
    _, err = run.communicate(timeout=300)
    return err, time.time() - t0


def _same_as_local(out, tmp_path, *extra):
    local = tmp_path / "local"
    subprocess.run([sys.executable, "-m", "simstudy.cli", "run", *ARGS, *extra, "n_jobs=1",
                    f"out={local}"], env=_env("0"), cwd=tmp_path, check=True, capture_output=True)
    key = ["replicate", "method"]
    pd.testing.assert_frame_equal(
        read_metrics(out).drop(columns="seconds").sort_values(key).reset_index(drop=True),
        read_metrics(local).drop(columns="seconds").sort_values(key).reset_index(drop=True),
        check_exact=True)


def test_every_worker_lost_stops_with_rows_kept_and_resumes_identically(tmp_path):
    """Issue 30, class 2: the only worker killed mid-run -> after dask_wait seconds the run
    stops (exit 3, one line with how to resume), its finished rows consolidated (no parts/
    left); a new worker and the same command complete it, identical to a local run."""
    procs = []
    try:
        sched_file, address = _scheduler(tmp_path, procs)
        worker = _worker(sched_file)
        procs.append(worker)
        from distributed import Client
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
        out = tmp_path / "dask"
        cmd = [sys.executable, "-m", "simstudy.cli", "run", *ARGS, "backend=dask",
               f"dask_address={address}", "dask_wait=4", f"out={out}"]
        run = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        procs.append(run)
        err, seconds = _kill_mid_run(run, out, worker)
        assert run.returncode == 3, err
        assert "every dask worker was lost" in err and "re-run the same command" in err
        assert seconds < 60
        kept = read_metrics(out)
        assert len(kept) >= 3 * 5 and not list((out / "parts").glob("*.parquet"))
        procs.append(_worker(sched_file))
        res = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr
        _same_as_local(out, tmp_path)
    finally:
        for p in procs:
            p.kill()


def test_scheduler_killed_keeps_and_consolidates_rows_and_resumes_identically(tmp_path):
    """Issue 30, class 2: the scheduler killed mid-run -> one line (exit 3, how to resume), every
    finished row kept and merged (no parts/ left); a new scheduler and worker and the same
    command (with the new address) complete the store, identical to a local run."""
    procs = []
    try:
        sched_file, address = _scheduler(tmp_path, procs)
        scheduler = procs[0]
        procs.append(_worker(sched_file))
        out = tmp_path / "dask"
        args = [*ARGS, "backend=dask", "dask_wait=4", f"out={out}", "reps=200"]
        run = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", *args,
                                f"dask_address={address}"], env=_env(), cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(run)
        err, seconds = _kill_mid_run(run, out, scheduler)
        assert run.returncode == 3, err
        assert len(err.strip().splitlines()) == 1 and "re-run the same command" in err, err
        assert "Traceback" not in err and "internal error" not in err
        assert "the dask scheduler (tcp://127.0.0.1:" in err and "was lost" in err
        assert seconds < 120
        kept = read_metrics(out)
        assert len(kept) >= 3 * 5 and not list((out / "parts").glob("*.parquet"))
        assert (kept["status"] == "ok").all()
        sched_file.unlink()
        sched_file, address = _scheduler(tmp_path, procs)
        procs.append(_worker(sched_file))
        res = subprocess.run([sys.executable, "-m", "simstudy.cli", "run", *args,
                              f"dask_address={address}"], env=_env("0"), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        _same_as_local(out, tmp_path, "reps=200")
    finally:
        for p in procs:
            p.kill()
