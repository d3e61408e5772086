"""Issue 30, class 1: an exception of the execution environment (submitit's UncompletedJobError
at a SLURM job's time limit, a lost dask worker) stops the run cleanly and is NEVER stored as a
failed fit; re-running the same command resumes to the store a clean run gives."""
import pandas as pd
import pytest

from simstudy.cli import main
from simstudy.errors import environment_error
from simstudy.store import read_metrics

ARGS = ["run", "J=4", "n_j=8", "reps=4", "n_jobs=1", "batch_size=1", "progress=false",
        "figures=false", "probe=false", "methods=[Q-base,test-walltime]",
        "plugins=[plugin_methods]"]


def test_environment_errors_are_recognised_by_their_package():
    from plugin_methods import UncompletedJobError
    assert environment_error(UncompletedJobError("x"))
    assert not environment_error(ValueError("x")) and not environment_error(MemoryError())


def test_walltime_stops_cleanly_stores_no_error_row_and_resumes_identically(
        tmp_path, monkeypatch, capsys):
    import plugin_methods
    monkeypatch.setenv("SIMSTUDY_TEST_WALLTIME", "3")            # the third replicate's fit
    plugin_methods._WALLTIME_FITS[0] = 0
    out = tmp_path / "job"
    assert main(ARGS + [f"out={out}"]) == 3
    err = capsys.readouterr().err
    assert "stopped by the execution environment (UncompletedJobError" in err
    assert "re-run the same command to resume" in err and len(err.strip().splitlines()) == 1
    m = read_metrics(out)
    assert sorted(m["replicate"].unique()) == [0, 1] and (m["status"] == "ok").all()
    monkeypatch.delenv("SIMSTUDY_TEST_WALLTIME")
    assert main(ARGS + [f"out={out}"]) == 0                       # resume
    assert main(ARGS + [f"out={tmp_path / 'clean'}"]) == 0
    key = ["replicate", "method"]
    a = read_metrics(out).drop(columns="seconds").sort_values(key).reset_index(drop=True)
    b = read_metrics(tmp_path / "clean").drop(columns="seconds").sort_values(key).reset_index(
        drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert (a["status"] == "ok").all() and a["error"].isna().all()


@pytest.mark.parametrize("args,says", [
    (["hydra/launcher=slurm", "J=4"], "needs -m"),
    (["-m", "hydra/launcher=slurm", "n_jobs=-1"], "n_jobs=-1 with hydra/launcher=slurm"),
    (["-m", "hydra/launcher=slurm", "n_jobs=two"], "n_jobs=two with hydra/launcher=slurm")])
def test_slurm_launcher_settings_refused_before_anything_runs(args, says, tmp_path, capsys):
    """Issue 30, class 4: no silent local run, no --cpus-per-task=-1 reaching sbatch."""
    assert main(["run", *args, f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
    assert not (tmp_path / "o").exists()


def test_slurm_preset_requeues_at_the_time_limit_and_names_its_jobs():
    """The preset composes with submitit's schema: requeue at the time limit, jobs named
    simstudy, one core per job per n_jobs."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from simstudy.cli import config_dir
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "n_jobs=4"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.max_num_timeout >= 1 and launcher.name == "simstudy"
    assert launcher.cpus_per_task == 4


def test_new_term_of_a_design_mapping_is_one_line_naming_the_plus(tmp_path, capsys):
    """design.delta.W=0.3 on a preset whose delta has no W: one line with the `+` to add it,
    not Hydra's 'not in struct' dump."""
    assert main(["run", "design=design1", "design.delta.W=0.3", f"out={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "add one with +design.delta.W=0.3" in err[0]
    assert "site_covariate=true" in err[0]


def test_slurm_launcher_without_slurm_here_is_one_line(tmp_path):
    """Issue 30, class 4: SLURM's commands missing on this machine -> one line naming them and
    where to run (not submitit's 'Could not detect srun' as an internal error), nothing run."""
    import os
    import subprocess
    import sys
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    res = subprocess.run([sys.executable, "-m", "simstudy.cli", "run", "-m", "hydra/launcher=slurm",
                          "design=design1", "J=4", "n_j=8", "reps=2", "n_jobs=1",
                          f"out={tmp_path / 'o'}"], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PATH": str(bin_dir)}, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "SLURM's sbatch, squeue, srun not found on this machine" in lines[0]
    assert not (tmp_path / "o" / "metrics.parquet").exists()


def test_ctrl_c_inside_compiled_code_stops_the_fit_and_is_not_a_failed_fit(monkeypatch):
    """A signal that lands while a compiled (numba) kernel runs surfaces as SystemError("...
    returned a result with an exception set") chained to the KeyboardInterrupt. Seen on a real
    study: Ctrl-C was stored as a failed Q-rs fit and the run went on. The fit path must raise
    the interrupt instead. A real signal (SIGALRM with Python's Ctrl-C handler) during a real
    kernel that runs for seconds unless interrupted."""
    import signal

    import numpy as np

    from simstudy.engines.ols import _site_fold_sums
    from simstudy.errors import interrupt_behind, report
    from simstudy.fitting import fit_and_score
    from simstudy.methods.qlearning import QBase
    n = 1_000_000
    D, y = np.ones((n, 8)), np.ones(n)
    zeros = np.zeros(n, np.int64)
    _site_fold_sums(D[:10], y[:10], zeros[:10], 1, zeros[:10], 1)       # compiled already

    def slow_fit(self, train):
        for _ in range(300):                  # ~30 ms each: the alarm lands inside a kernel
            _site_fold_sums(D, y, zeros, 1, zeros, 1)
        return self
    monkeypatch.setattr(QBase, "fit", slow_fit)
    frame = pd.DataFrame({"site": [0, 1], "T": [0, 1], "Y": [0.0, 1.0]})
    old = signal.signal(signal.SIGALRM, signal.default_int_handler)
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            fit_and_score("Q-base", frame, frame, 1)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    wrapped = SystemError("returned a result with an exception set")
    wrapped.__cause__ = KeyboardInterrupt()
    assert environment_error(wrapped) and isinstance(interrupt_behind(wrapped), KeyboardInterrupt)
    assert report(wrapped) == 130                 # "interrupted", not an internal error
