"""Issue 30 on a real SLURM: a one-node cluster on this machine (scripts/local_slurm.sh: munge,
slurmctld, slurmd from Debian's slurm-wlm) and Hydra's submitit launcher. The happy path gives the
store a local run gives; a request that can never run is refused before submission; scancel,
the time limit and Ctrl-C on the foreground each stop in one line with nothing wrong stored, and
re-running the same command resumes to the local run's store.
Skipped without slurm-wlm (or not as root, which the daemons need); CI installs it."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from simstudy.store import read_congruence, read_metrics

pytestmark = pytest.mark.slow             # cluster processes: `python -m pytest -m slow`
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
HERE = Path(__file__).parent
SCRIPT = HERE.parent / "scripts" / "local_slurm.sh"
ARGS = ["J=4", "n_j=8", "n_jobs=1", "progress=false", "figures=false", "flush_seconds=0.2",
        "methods=[Q-base,Q-fe,test-slow]", "plugins=[plugin_methods]"]


def _cluster_answers() -> bool:
    try:
        res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return res.returncode == 0 and any(s in res.stdout for s in ("idle", "mixed", "alloc"))


@pytest.fixture(scope="module")
def slurm():
    """A running local SLURM (started here when slurm-wlm is installed and it is not up)."""
    if not _cluster_answers():
        if not shutil.which("slurmctld") or os.geteuid() != 0:
            pytest.skip("no SLURM here: slurm-wlm (and root) needed for the real-cluster tests")
        res = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True,
                             timeout=300)
        if not _cluster_answers():                   # e.g. a container without munge's needs
            pytest.skip(f"scripts/local_slurm.sh start did not bring SLURM up here: "
                        f"{(res.stderr or res.stdout).strip()[-300:]}")
    conf = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True).stdout
    if "ClusterName             = local" not in conf:
        pytest.skip("a SLURM that is not the local test cluster answers here: not using it")
    yield
    subprocess.run(["scancel", "-n", "simstudy"], capture_output=True)


def _env(sleep: str = "0"):
    return {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "SIMSTUDY_TEST_SLEEP": sleep, "MPLBACKEND": "Agg"}


def _simstudy(args, cwd, sleep="0", timeout=600):
    return subprocess.run([sys.executable, "-m", "simstudy.cli", "run", *args], env=_env(sleep),
                          cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _slurm(points, out, *extra):
    return ["-m", "hydra/launcher=slurm", points, *ARGS, f"out={out}", *extra]


def _wait_for(predicate, seconds, what):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _done(out, design: str) -> int:
    try:
        return read_metrics(out).query("design == @design")["replicate"].nunique()
    except Exception:                                                # noqa: BLE001
        return 0


def _same_as_local(out, tmp_path, points, reps):
    local = tmp_path / "local"
    res = _simstudy(["-m", points, *ARGS, f"reps={reps}", f"out={local}"], tmp_path)
    assert res.returncode == 0, res.stderr
    key = ["design", "replicate", "method"]
    a, b = (read_metrics(p).drop(columns="seconds").sort_values(key).reset_index(drop=True)
            for p in (out, local))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (a["status"] == "ok").all()
    c, d = (read_congruence(p).sort_values(list(read_congruence(p).columns[:5]))
            .reset_index(drop=True) for p in (out, local))
    pd.testing.assert_frame_equal(c, d, check_exact=True)


def _queued() -> str:
    return subprocess.run(["squeue", "-h", "-n", "simstudy"], capture_output=True,
                          text=True).stdout.strip()


def test_sweep_through_slurm_is_the_local_store_and_says_where_its_jobs_are(slurm, tmp_path):
    out = tmp_path / "slurm"
    res = _simstudy(_slurm("design=design1,design2", out, "reps=6"), tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "submitted 2 SLURM job(s)" in res.stdout and "named 'simstudy'" in res.stdout
    assert f"logs in {out}/.submitit/<job id>" in res.stdout
    assert "all 2 SLURM job(s) finished" in res.stdout
    assert "Traceback" not in res.stderr and "sacct" not in res.stderr
    assert (out / "summary.md").exists() and (out / "report.html").exists()
    _same_as_local(out, tmp_path, "design=design1,design2", 6)


@pytest.mark.parametrize("extra,says", [
    (["n_jobs=64"], "n_jobs=64 asks SLURM for 64 cores per job, but the nodes of partition "
                    "debug have at most"),
    (["hydra.launcher.partition=nope"], "hydra.launcher.partition=nope: SLURM has no such "
                                        "partition; partitions: debug"),
    (["hydra.launcher.mem_gb=100000"], "hydra.launcher.mem_gb=100000 is more than"),
    (["hydra.launcher.constraint=gpu"], "SLURM refused the jobs: sbatch: error: Batch job "
                                        "submission failed: Invalid feature specification"),
    (["J=1"], "J=1: must be an integer >= 2 (sweep point design=design1; nothing was "
              "submitted)")])
def test_a_request_that_cannot_run_is_refused_before_submission(slurm, tmp_path, extra, says):
    out = tmp_path / "o"
    res = _simstudy(_slurm("design=design1,design2", out, "reps=2", *extra), tmp_path,
                    timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], res.stderr
    assert "submitted" not in res.stdout and not _queued()
    assert not (out / "metrics.parquet").exists()


def test_scancel_stops_the_job_cleanly_and_the_same_command_resumes(slurm, tmp_path):
    out = tmp_path / "slurm"
    cmd = _slurm("design=design1,design2", out, "reps=60")
    run = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", *cmd], env=_env("0.2"),
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        _wait_for(lambda: _done(out, "design2") >= 2, 180, "design2's first replicates")
        job = next(line.split()[0] for line in _queued().splitlines() if "_1 " in line + " ")
        subprocess.run(["scancel", job], check=True)
        stdout, stderr = run.communicate(timeout=240)
    finally:
        run.kill()
    assert run.returncode == 3, stdout + stderr
    assert f"SLURM job {job} (design=design2) was cancelled (scancel)" in stderr
    assert "1 of 2 SLURM job(s) did not finish" in stderr and "re-run the same command" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 2
    log = next((out / ".submitit" / job).glob("*_log.err")).read_text()
    assert "simstudy: terminated" in log                     # simstudy's clean stop ran in it
    m = read_metrics(out)
    assert (m["status"] == "ok").all() and 0 < m.query("design == 'design2'")[
        "replicate"].nunique() < 60
    res = _simstudy(cmd, tmp_path)                                    # resume
    assert res.returncode == 0, res.stdout + res.stderr
    _same_as_local(out, tmp_path, "design=design1,design2", 60)


def test_time_limit_stores_no_error_row_and_the_same_command_resumes(slurm, tmp_path):
    """timeout_min=2 with the time-limit signal 30 s before the end and no requeue left: the
    job stops at the signal (submitit's UncompletedJobError), nothing of it is a failed fit.
    SLURM checks time limits periodically and may send the signal up to 60 s early (sbatch(1),
    --signal), so the signal comes 30-90 s into the job: a one-minute limit could signal a job
    still importing, before its first replicate (CI saw exactly that once)."""
    out = tmp_path / "slurm"
    limit = ["hydra.launcher.timeout_min=2", "hydra.launcher.signal_delay_s=30",
             "hydra.launcher.max_num_timeout=0"]
    cmd = _slurm("design=design1", out, "reps=600", *limit)
    res = _simstudy(cmd, tmp_path, sleep="0.2", timeout=300)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "reached its time limit (hydra.launcher.timeout_min)" in res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    m = read_metrics(out)
    assert (m["status"] == "ok").all() and m["error"].isna().all()
    assert 0 < m["replicate"].nunique() < 600
    res = _simstudy(cmd, tmp_path)                                    # resume, no time pressure
    assert res.returncode == 0, res.stdout + res.stderr
    _same_as_local(out, tmp_path, "design=design1", 600)


def test_ctrl_c_stops_the_waiting_and_says_the_jobs_run_on(slurm, tmp_path):
    out = tmp_path / "slurm"
    run = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run",
                            *_slurm("design=design1,design2", out, "reps=200")],
                           env=_env("0.2"), cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: _queued().count(" R ") == 2, 120, "both jobs running")
        run.send_signal(signal.SIGINT)
        stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 130, stdout + stderr
        assert "stopped waiting; 2 SLURM job(s)" in stderr and "keep running" in stderr
        assert "scancel" in stderr and "Traceback" not in stderr
        assert _queued().count("simstudy") == 2                   # they do run on
    finally:
        run.kill()
        subprocess.run(["scancel", "-n", "simstudy"], capture_output=True)
    _wait_for(lambda: not _queued(), 120, "the cancelled jobs to leave the queue")
