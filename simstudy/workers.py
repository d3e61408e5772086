"""Worker processes of every pool (the runner's replicates, the report's figures): each worker
starts watching its parent as it starts, so killing the command (even with SIGKILL, even before
the first task) never leaves workers behind (issue 29, class 9)."""
from __future__ import annotations

import contextlib
import os
import threading
import time

PROCESS_BACKENDS = ("loky", "multiprocessing")


def cores() -> int:
    return max(1, os.cpu_count() or 1)


def check_n_jobs(value, key: str) -> int:
    """A number of workers as every command takes it: a positive integer, or -1 for all cores
    (joblib's -2 = "all but one" is not ours to guess: refused, as 0 is)."""
    from .errors import ConfigError
    try:
        n = int(value)
        ok = not isinstance(value, bool) and n == value if not isinstance(value, str) \
            else str(n) == value.strip()
    except (TypeError, ValueError, OverflowError):
        ok, n = False, 0
    if not ok or not (n >= 1 or n == -1):
        raise ConfigError(f"{key}={value!r}: give a positive number of workers, or -1 for all "
                          f"cores")
    return n


def resolve_n_jobs(n_jobs: int) -> int:
    """The one rule for `n_jobs` (a run's workers, the report's figure processes): a positive
    number is capped at the machine's cores, -1 (any negative) means all cores."""
    return cores() if n_jobs < 0 else max(1, min(int(n_jobs), cores()))


PARENT_VAR = "SIMSTUDY_PARENT_PID"     # set by `watched` in the command's process


def watch_parent() -> None:
    """In a worker: exit within a second when the parent process dies; at once if it died
    while this worker was starting (its parent is then no longer the command that started
    the pool: `PARENT_VAR`), which left workers behind after a signal at a pool's start."""
    parent = os.getppid()
    expected = os.environ.get(PARENT_VAR)
    if expected and expected.isdigit() and int(expected) != parent:
        os._exit(1)
    if getattr(watch_parent, "started", False) or (parent <= 1 and not expected):
        return
    watch_parent.started = True

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="simstudy-parent-watch").start()


@contextlib.contextmanager
def watched(backend: str = "loky"):
    """joblib's process backends start every worker with `watch_parent` as initializer."""
    if backend not in PROCESS_BACKENDS:
        yield
        return
    from joblib import parallel_config
    os.environ[PARENT_VAR] = str(os.getpid())           # inherited by the workers started now
    with parallel_config(backend=backend, initializer=watch_parent):
        yield


def stop_idle_workers(kill: bool = False) -> None:
    """Stop joblib's reusable worker processes once a command is done (a run, all its sweep
    points and its report): otherwise the exit waits ~0.4 s for their interpreters to tear
    down. Idle workers are asked to exit, not killed: a worker killed between registering a
    semaphore with loky's resource tracker and releasing it left the tracker to print
    "There appear to be 1 leaked semlock objects" at exit (2 of 14 runs of a finished study).
    After a signal (`kill`) busy workers are killed: the command must stop now."""
    import sys
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)            # None: no worker was started
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=kill)
