"""Worker processes of every pool (the runner's replicates, the report's figures): each worker
starts watching its parent as it starts, so killing the command (even with SIGKILL, even before
the first task) never leaves workers behind (issue 29, class 9)."""
from __future__ import annotations

import contextlib
import os
import threading
import time

PROCESS_BACKENDS = ("loky", "multiprocessing")


def watch_parent() -> None:
    """In a worker: exit within a second when the parent process dies."""
    parent = os.getppid()
    if getattr(watch_parent, "started", False) or parent <= 1:
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
    with parallel_config(backend=backend, initializer=watch_parent):
        yield
