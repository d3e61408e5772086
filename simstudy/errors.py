"""One error boundary for every command: whatever goes wrong becomes one line that says what,
where and what to do. Exit codes: 0 done; 2 the user's input (config, data, paths, a damaged
store, a cluster request that can never run); 1 an internal error, whose traceback goes to a log
file named in the message; 3 stopped by the execution environment (a SLURM job cancelled or out
of time, every dask worker lost, a worker process killed), 130 Ctrl-C / SIGTERM: for 3 and 130
every finished replicate is saved and the message says how to resume."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path



class ConfigError(ValueError):
    """The user's input is invalid (a key's value, a data file, a path, a damaged store); the
    message names what and the fix. The CLI prints it in one line and exits 2."""


class DataError(ConfigError):
    """Unusable data: the message names the column, the rows and the fix."""


class NoStudy(ConfigError):
    """The path is not a study store (missing, a file, or no config.yaml)."""


class StoreDamaged(ConfigError):
    """Files of the store cannot be read (truncated by a crash or a full disk) or are not its
    own (another study's, another table's)."""

    def __init__(self, out, files: list):
        self.files = files
        names = ", ".join(str(f.relative_to(out)) for f in files[:5])
        super().__init__(f"{out}: {len(files)} unreadable file(s) ({names}); `simstudy repair "
                         f"{out}` moves them to {out / 'quarantine'} and the next run recomputes "
                         f"their replicates")


class Stopped(RuntimeError):
    """The run stopped before its end for a reason outside the user's input (cluster jobs
    cancelled or out of time, every dask worker lost): finished replicates are stored, the
    message says how to resume. Exit 3."""


class ProbeFailed(ConfigError):
    """A method (or the design) failed on the probe replicate; nothing of the run was stored."""

USER_ERRNO = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
              errno.EROFS: "the file system is read-only", errno.ENAMETOOLONG: "a name is too long",
              errno.ENOTDIR: "a path component is a file, not a directory",
              errno.EISDIR: "a directory stands where a file is expected",
              errno.ENOENT: "no such file or directory", errno.EDQUOT: "the disk quota is exceeded",
              errno.EFBIG: "a file is larger than allowed (a file-size limit, ulimit -f)"}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP (or SIGINT through `install_sigterm`), raised as KeyboardInterrupt so
    the runner flushes what it has; `signum` gives the exit code (`EXIT_CODES`)."""

    def __init__(self, signum: int = 15):
        super().__init__()
        self.signum = signum


# one signal policy for every command (issue 45, class 6): SIGINT (Ctrl-C) and SIGTERM exit 130,
# SIGHUP (the terminal closed) 129; each stops cleanly: finished work saved, workers stopped
EXIT_CODES = {2: 130, 15: 130, 1: 129}          # SIGINT, SIGTERM, SIGHUP
SIGNAL_WORDS = {2: "interrupted", 15: "terminated", 1: "hung up (SIGHUP)"}
_SIGNALS = {"defer": 0, "pending": None, "later": 0}


# packages whose exceptions come from the machinery that runs a study, never from a fit: a
# SLURM job at its time limit (submitit's UncompletedJobError), a dask worker or scheduler lost
ENVIRONMENT_PACKAGES = ("submitit", "distributed", "dask", "loky", "joblib")


def interrupt_behind(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt (Ctrl-C, or SIGTERM as `Interrupted`) that `exc` is, or that a
    chain of SystemErrors wraps: a signal that arrives while compiled code runs (numba, LAPACK)
    surfaces as SystemError("... returned a result with an exception set") caused by the
    interrupt. Seen on a real study: Ctrl-C inside a mixed model was stored as a failed Q-rs
    fit and the run went on. Only that wrapping is looked through: other exceptions keep
    their meaning (a lost dask worker, a SLURM time limit)."""
    if isinstance(exc, KeyboardInterrupt):
        return exc
    seen, hops = exc, 0
    while isinstance(seen, SystemError) and hops < 50:
        seen, hops = seen.__cause__ or seen.__context__, hops + 1
        if isinstance(seen, KeyboardInterrupt):
            return seen
    return None


def environment_error(exc: BaseException) -> bool:
    """True for an exception of the execution environment (ENVIRONMENT_PACKAGES) or one an
    interrupt caused (`interrupt_behind`), which must stop the run (finished replicates kept,
    the interrupted one recomputed on resume) and never be stored as a failed fit."""
    return interrupt_behind(exc) is not None or any(
        str(getattr(k, "__module__", "")).split(".")[0] in ENVIRONMENT_PACKAGES
        for k in type(exc).__mro__)


def stop_if_environment(exc: BaseException) -> None:
    """In an `except Exception` around a fit: raise what must stop the run when `exc` is the
    environment's (`environment_error`): the interrupt behind it, else `exc` itself."""
    if environment_error(exc):
        raise interrupt_behind(exc) or exc


def log_path() -> Path:
    base = Path(os.environ.get("SIMSTUDY_LOG_DIR") or tempfile.gettempdir())
    return base / f"simstudy-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) if "\n" not in str(text).strip() else str(text).strip()


def report(exc: BaseException, prog: str = "simstudy", resume: str | None = None) -> int:
    """Print `exc` as a message for a person and return the exit code."""
    exc = interrupt_behind(exc) or exc
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", 2)
        msg = f"{prog}: {SIGNAL_WORDS.get(signum, 'interrupted')}"
        if resume:
            msg += (f"; every replicate finished so far is saved: re-run the same command to "
                    f"resume ({resume})")
        print(msg, file=sys.stderr)
        return EXIT_CODES.get(signum, 130)
    if isinstance(exc, Stopped):
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return 3
    if environment_error(exc):
        msg = (f"{prog}: stopped by the execution environment ({type(exc).__name__}: "
               f"{_one_line(exc)[:300]}); every replicate finished so far is saved, the "
               f"interrupted one is not: re-run the same command to resume")
        print(msg + (f" ({resume})" if resume else ""), file=sys.stderr)
        return 3
    if isinstance(exc, ConfigError):
        print(f"{prog}: {_one_line(exc)}", file=sys.stderr)
        return 2
    if isinstance(exc, MemoryError):
        print(f"{prog}: out of memory; use smaller J x n_j, fewer workers (n_jobs) or a machine "
              f"with more memory", file=sys.stderr)
        return 2
    if isinstance(exc, OSError) and exc.errno in USER_ERRNO:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"{prog}: {USER_ERRNO[exc.errno]}{where}: {exc.strerror or exc}; fix the path or "
              f"free the space, then re-run the same command (finished work is kept)",
              file=sys.stderr)
        return 2
    path = log_path()
    try:
        path.write_text("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        where = f"; the traceback is in {path}"
    except OSError:
        where = ""
    print(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)[:500]}{where}; please "
          f"report it with that file", file=sys.stderr)
    return 1


def install_sigterm() -> None:
    """SIGINT, SIGTERM and SIGHUP behave alike in every command: `Interrupted` (a
    KeyboardInterrupt) is raised in the main thread, so the runner flushes finished rows and
    workers are stopped; while `signals_deferred` is active (a command's shutdown) a signal is
    only noted; inside a pool's resource bookkeeping it is delivered again 20 ms later
    (`_in_bookkeeping`). Outside the main thread (the API in a thread) nothing is installed."""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if _SIGNALS["defer"]:
            _SIGNALS["pending"] = _SIGNALS["pending"] or signum
            return
        if _in_bookkeeping(frame) and _SIGNALS["later"] < 100:
            _SIGNALS["later"] += 1            # raised here, it would tear a cleanup in half:
            again = threading.Timer(0.02, os.kill, (os.getpid(), signum))     # in 20 ms
            again.daemon = True               # a process that ends first has nothing to stop
            again.start()
            return
        _SIGNALS["later"] = 0
        raise Interrupted(signum)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            if sig == signal.SIGINT and signal.getsignal(sig) is signal.SIG_IGN:
                continue                     # a background job started with SIGINT ignored
            signal.signal(sig, handler)
        except (ValueError, OSError):
            pass


# the process pools' resource bookkeeping: a semaphore's finalizer unlinks it and then tells
# loky's resource tracker; an exception raised between the two (a signal) leaves the tracker
# to print "There appear to be 1 leaked semlock objects" and the finalizer a traceback.
_BOOKKEEPING = ("multiprocessing/util.py", "multiprocessing/synchronize.py",
                "multiprocessing/resource_tracker.py", "loky/backend/synchronize.py",
                "loky/backend/resource_tracker.py")


def _in_bookkeeping(frame) -> bool:
    """Is the main thread inside a pool's finalizers or resource tracker (`_BOOKKEEPING`)?
    There a signal is delivered again 20 ms later, once that code has returned (raised anyway
    after 2 s, so a stop is never lost)."""
    while frame is not None:
        if frame.f_code.co_filename.replace("\\", "/").endswith(_BOOKKEEPING):
            return True
        frame = frame.f_back
    return False


import contextlib  # noqa: E402


@contextlib.contextmanager
def signals_deferred():
    """A command's shutdown (stopping idle workers, the last flush): a signal arriving now is
    noted, not raised, so the shutdown finishes without a traceback; `pending_signal()` tells."""
    _SIGNALS["defer"] += 1
    try:
        yield
    finally:
        _SIGNALS["defer"] -= 1


def pending_signal() -> int | None:
    """The signal noted during `signals_deferred` (cleared), or None."""
    signum, _SIGNALS["pending"] = _SIGNALS["pending"], None
    return signum
