"""SLURM runs (`simstudy run -m hydra/launcher=slurm ...`, Hydra's submitit launcher) that fail
the way a cluster fails, in one line each, without losing or inventing a row.

In the foreground (`launch`, which replaces the launcher's own `launch`):
- before anything is submitted, every sweep point's configuration is validated as a local run
  would validate it, and the request (cpus_per_task = n_jobs, mem_gb, partition) is compared
  with the partition's nodes (`sinfo`): a job that could never start is refused here (exit 2);
- sbatch's refusal (a bad account, a limit) is one line naming the launcher keys (exit 2);
- the job ids, their name and log folder are printed, and the wait shows the jobs' states; a
  job SLURM will never start (PartitionConfig, ...) is cancelled and named (exit 2);
- a job that ended without its result (scancel, time limit after its requeues, out of memory,
  a node failure) is one line as soon as it ends; the others run on, and the run exits 3
  ("stopped, not your input"): every finished replicate is in the store and re-running the same
  command resumes;
- Ctrl-C stops the waiting only: the message says the jobs keep running and how to cancel them.
Inside a job (`in_job`), SIGTERM (scancel, preemption) is simstudy's clean stop (finished rows
flushed and merged) instead of submitit's "bypass"; the time limit's USR2 stays submitit's
requeue (`max_num_timeout` in conf/hydra/launcher/slurm.yaml)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from .errors import ConfigError, Stopped, report

# squeue reasons of a pending job that waiting cannot cure (the request exceeds what the
# partition, the account or the QOS allow)
NEVER_STARTS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints",
                "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed",
                "DependencyNeverSatisfied", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob",
                "QOSMaxWallDurationPerJobLimit", "AssocMaxCpuPerJobLimit",
                "AssocMaxWallDurationPerJobLimit", "AssocMaxMemPerJobLimit")
POLL_SECONDS = 2.0
RESULT_GRACE_SECONDS = 30.0       # a shared file system may show the result file late
STATUS_EVERY_SECONDS = 60.0


def use_simstudy_launch() -> None:
    """Make Hydra's SLURM launcher run through `launch` (this process only). The class is taken
    from Hydra's plugin registry: its scan loads the plugin modules anew."""
    from hydra.core.plugins import Plugins
    name = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    cls = Plugins.instance().class_name_to_class.get(name)
    if cls is None:
        raise ConfigError('hydra/launcher=slurm needs Hydra\'s submitit launcher: pip install '
                          '"simstudy[slurm]"')
    cls.launch = launch


def in_job() -> None:
    """Called first inside a SLURM job: SIGTERM stops the study cleanly (submitit bypasses it,
    so scancel would kill the job after SLURM's KillWait with the last rows unflushed)."""
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        from .errors import install_sigterm
        install_sigterm()


def launch(self, job_overrides, initial_job_idx):
    """`BaseSubmititLauncher.launch` with the failure semantics of the module docstring; Hydra's
    own error printing is bypassed (SystemExit with simstudy's exit code)."""
    try:
        return _launch(self, [list(o) for o in job_overrides], initial_job_idx)
    except BaseException as exc:                                  # noqa: BLE001
        if isinstance(exc, SystemExit):
            raise
        raise SystemExit(report(exc, "simstudy")) from None


def _launch(self, points: list[list[str]], first: int):
    from hydra.core.singleton import Singleton
    from submitit.core.utils import FailedJobError, FailedSubmissionError
    out, figures = _check_points(self, points)
    missing = [c for c in ("sbatch", "squeue", "srun") if shutil.which(c) is None]
    if missing:
        raise ConfigError(f"hydra/launcher=slurm: SLURM's {', '.join(missing)} not found on this "
                          f"machine; run the command on the cluster's login node (or without "
                          f"hydra/launcher=slurm to run here)")
    _check_nodes(self.params)
    executor = _executor(self)
    args = [(o, "hydra.sweep.dir", first + i, f"job_id_for_{first + i}", Singleton.get_state())
            for i, o in enumerate(points)]
    try:
        with contextlib.redirect_stderr(io.StringIO()):     # submitit prints sbatch's stderr
            jobs = executor.map_array(self, *zip(*args))
    except (FailedJobError, FailedSubmissionError) as exc:
        raise ConfigError(f"SLURM refused the jobs: {_last_line(exc)}; check the launcher's "
                          f"settings (hydra.launcher.partition, account, mem_gb, constraint, "
                          f"timeout_min; cpus_per_task = n_jobs)") from None
    name = self.params.get("name") or "simstudy"
    logs = Path(str(self.params["submitit_folder"]).replace("%j", "<job id>"))
    print(f"simstudy: submitted {len(jobs)} SLURM job(s) {_ids(jobs)} named {name!r}; logs in "
          f"{logs}; `squeue -n {name}` shows them; waiting here (Ctrl-C stops the waiting, not "
          f"the jobs)", flush=True)
    labels = [" ".join(_point_words(o, points)) or "the study" for o in points]
    failed = _wait(jobs, labels, out, self.params)
    if failed:
        raise Stopped(f"{len(failed)} of {len(jobs)} SLURM job(s) did not finish "
                      f"({', '.join(failed)}); every replicate finished is saved in {out}: "
                      f"re-run the same command to resume (`simstudy status {out}` shows what "
                      f"is missing)")
    # every job wrote the tables when it ended; written once more from the complete store (two
    # jobs ending together could leave the one that read less last)
    from .report.tables import write_report
    write_report(out, figures=figures, designs=[])
    print(f"simstudy: all {len(jobs)} SLURM job(s) finished; study stored in {out}; summary "
          f"table: {out / 'summary.md'}; `simstudy report {out}` prints it", flush=True)
    return [_result(j)[1] for j in jobs]


def _point_words(overrides: list[str], points: list[list[str]]) -> list[str]:
    """The overrides that tell this sweep point from the others (design=design2 J=150)."""
    from hydra.core.utils import filter_overrides
    if len(points) == 1:
        return []
    common = set.intersection(*(set(p) for p in points))
    return [o for o in filter_overrides(overrides) if not o.startswith("hydra")
            and o not in common]


def _check_points(self, points: list[list[str]]) -> tuple[Path, bool]:
    """Every sweep point's configuration, validated as its job will (the study keys, methods,
    designs, out), before anything is submitted; returns the store's path and `figures`."""
    from omegaconf import OmegaConf

    from .config import StudyConfig, check_out, run_flags
    out, figures = None, True
    for overrides in points:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        plain = {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k])
                 else cfg[k] for k in cfg if k != "hydra"}
        try:
            figures = run_flags(plain)["figures"]
            StudyConfig.from_config(plain)
            out = check_out(plain.get("out"))
        except ConfigError as exc:
            words = " ".join(_point_words(overrides, points))
            raise ConfigError(f"{exc} (sweep point {words}; nothing was submitted)"
                              if words else f"{exc} (nothing was submitted)") from None
    return out, figures


def _sinfo(partition: str | None) -> list[tuple[str, int, int]] | None:
    """(partition, cpus, memory MB) per node group, or None when sinfo cannot answer here."""
    cmd = ["sinfo", "-h", "-o", "%P|%c|%m"] + (["-p", partition] if partition else [])
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode:
        return None
    rows = []
    for line in res.stdout.split():
        part, cpus, mem = line.split("|")
        rows.append((part, int(cpus.rstrip("+")), int(mem.rstrip("+"))))
    return rows


def _check_nodes(params: dict) -> None:
    """cpus_per_task (= n_jobs) and mem_gb against the partition's largest node: a job asking
    for more pends forever (reason PartitionConfig), so it is refused before submission."""
    partition = params.get("partition")
    rows = _sinfo(partition)
    if rows is None:
        return                                     # no sinfo on this host: sbatch decides
    if not rows:
        every = _sinfo(None) or []
        raise ConfigError(f"hydra.launcher.partition={partition}: SLURM has no such partition; "
                          f"partitions: {', '.join(sorted({r[0].rstrip('*') for r in every}))}")
    if not partition:
        rows = [r for r in rows if r[0].endswith("*")] or rows        # the default partition
    name = rows[0][0].rstrip("*")
    cpus, mem = max(r[1] for r in rows), max(r[2] for r in rows)
    want = int(params.get("cpus_per_task") or 1)
    if want > cpus:
        raise ConfigError(f"n_jobs={want} asks SLURM for {want} cores per job, but the nodes of "
                          f"partition {name} have at most {cpus}: use n_jobs={cpus} or fewer "
                          f"(n_jobs is the cores of ONE job; the sweep points are separate jobs)")
    mem_gb = params.get("mem_gb")
    if mem_gb and float(mem_gb) * 1024 > mem:
        raise ConfigError(f"hydra.launcher.mem_gb={mem_gb} is more than the {mem / 1024:.1f} GB "
                          f"of the largest node of partition {name}: use "
                          f"hydra.launcher.mem_gb={max(1, int(mem / 1024))} or less")


def _executor(self):
    """submitit's executor with the launcher's parameters (as the launcher builds it)."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf
    kind = self._EXECUTOR
    params = dict(self.params)
    init = {"folder": params.pop("submitit_folder")}
    if "max_num_timeout" in params:
        init[f"{kind}_max_num_timeout"] = params.pop("max_num_timeout")
    executor = submitit.AutoExecutor(cluster=kind, **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"{kind}_{k}": v
                                  for k, v in params.items()})
    Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    return executor


def _ids(jobs) -> str:
    arrays = sorted({str(j.job_id).split("_")[0] for j in jobs})
    return ", ".join(f"{a}_[0-{len(jobs) - 1}]" if len(jobs) > 1 else str(jobs[0].job_id)
                     for a in arrays)


def _squeue(jobs) -> dict[str, tuple[str, str]] | None:
    """job id -> (state, reason) of the jobs still known to squeue; None if squeue failed."""
    arrays = sorted({str(j.job_id).split("_")[0] for j in jobs})
    try:
        res = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if res.returncode:
        # squeue exits 1 for job ids it no longer knows (all ended on some versions)
        return {} if "Invalid job id" in res.stderr else None
    states = {}
    for line in res.stdout.split():
        jid, state, reason = (line.split("|") + ["", ""])[:3]
        states[jid] = (state, reason)
    return states


def _wait(jobs, labels: list[str], out: Path, params: dict) -> list[str]:
    """Wait for every job; print each one that ended without its result at once, the states
    when they change (or every minute); return those jobs' ids."""
    pending = {str(j.job_id): (j, label) for j, label in zip(jobs, labels)}
    failed: list[str] = []
    gone: dict[str, float] = {}
    shown, last = None, 0.0
    try:
        while pending:
            states = _squeue(jobs)
            now = time.monotonic()
            for jid, (job, label) in list(pending.items()):
                if job.paths.result_pickle.exists():
                    outcome, why = _result(job)
                    if outcome != "success":
                        print(f"simstudy: SLURM job {jid} ({label}) failed: {why}",
                              file=sys.stderr, flush=True)
                        failed.append(jid)
                    del pending[jid]
                elif states is not None and jid not in states:
                    gone.setdefault(jid, now)
                    why, sure = _why_ended(job)
                    if sure or now - gone[jid] >= RESULT_GRACE_SECONDS:
                        print(f"simstudy: SLURM job {jid} ({label}) {why}; its finished "
                              f"replicates are saved", file=sys.stderr, flush=True)
                        failed.append(jid)
                        del pending[jid]
            never = {jid: states[jid][1] for jid in pending if states and jid in states
                     and states[jid][0] == "PENDING" and states[jid][1] in NEVER_STARTS}
            if never:
                _cancel(list(never))
                jid, reason = next(iter(never.items()))
                raise ConfigError(
                    f"SLURM will never start job {jid}: {reason} (it asks for cpus_per_task="
                    f"{params.get('cpus_per_task')} = n_jobs, mem_gb={params.get('mem_gb')}, "
                    f"timeout_min={params.get('timeout_min')} on partition "
                    f"{params.get('partition') or 'the default'}); its jobs were cancelled: "
                    f"lower n_jobs / hydra.launcher.mem_gb / .timeout_min or choose another "
                    f"hydra.launcher.partition, then re-run")
            counts = _counts(pending, states)
            if pending and (counts != shown or now - last >= STATUS_EVERY_SECONDS):
                print(f"simstudy: SLURM jobs: {counts}, {len(jobs) - len(pending)} of "
                      f"{len(jobs)} ended", flush=True)
                shown, last = counts, now
            if pending:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        left = sorted(pending)
        print(f"simstudy: stopped waiting; {len(left)} SLURM job(s) ({', '.join(left)}) keep "
              f"running and writing into {out}: `squeue -n {params.get('name') or 'simstudy'}` "
              f"shows them, `scancel {' '.join(sorted({j.split('_')[0] for j in left}))}` stops "
              f"them; once they have ended, re-running the same command resumes what is missing",
              file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    return failed


def _counts(pending: dict, states) -> str:
    if states is None:
        return f"{len(pending)} not ended (squeue does not answer)"
    tally: dict[str, int] = {}
    for jid in pending:
        state, reason = states.get(jid, ("ENDING", ""))
        key = state.lower() + (f" ({reason})" if state == "PENDING" and reason not in
                               ("", "None") else "")
        tally[key] = tally.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))


def _cancel(ids: list[str]) -> None:
    try:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass


def _result(job):
    """("success", JobReturn) or ("error", the last line of the job's exception)."""
    from submitit.core.utils import pickle_load
    outcome, value = pickle_load(job.paths.result_pickle)
    if outcome == "success":
        return outcome, value
    return outcome, _last_line(value)


def _why_ended(job) -> tuple[str, bool]:
    """Why a job ended without its result, from the end of its error log (SLURM's or the
    job's own last words), and whether the log says so for sure (no grace period needed)."""
    try:
        log = Path(job.paths.stderr).read_text(errors="replace").splitlines()
    except OSError:
        log = []
    marks = [i for i, ln in enumerate(log) if "DUE TO JOB REQUEUE" in ln]
    n = sum("*** JOB" in log[i] for i in marks)
    requeued = f" after {n} requeue(s)" if n else ""
    log = log[marks[-1] + 1:] if marks else log           # the job's last run only
    own = [ln.split(": ", 1)[-1].split("; every replicate")[0] for ln in log
           if ln.startswith("simstudy")]
    text = " ".join(log[-30:])
    if "DUE TO TIME LIMIT" in text or "timed-out too many times" in text:
        why = (f"reached its time limit (hydra.launcher.timeout_min){requeued}: raise "
               f"hydra.launcher.timeout_min or .max_num_timeout")
    elif "CANCELLED" in text and "DUE TO" not in text:
        why = "was cancelled (scancel)"
    elif "oom" in text.lower() or "out of memory" in text.lower():
        why = "ran out of memory (raise hydra.launcher.mem_gb)"
    elif "DUE TO" in text:
        why = "was stopped by SLURM " + text[text.index("DUE TO"):].split("***")[0].strip()
    elif own:
        why = f"stopped: {own[-1]}"
    else:
        return f"ended without its result (log: {job.paths.stderr})", False
    return f"{why} (log: {job.paths.stderr})", True


def _last_line(value) -> str:
    lines = [ln.strip() for ln in str(value).strip().splitlines() if ln.strip()
             and not set(ln.strip()) <= set("-")]
    return lines[-1] if lines else str(value)


# ---------------------------------------------------------------------- dask (backend=dask)
@contextlib.contextmanager
def dask_backend(cfg):
    """joblib's backend for the run; backend=dask connects a distributed Client to
    `dask_address` or starts a LocalCluster of n_jobs single-threaded worker processes."""
    if cfg.backend != "dask":
        yield
        return
    import logging

    import joblib
    from distributed import Client, LocalCluster
    for name in ("distributed", "bokeh", "tornado"):     # Hydra's logging config says INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        if cfg.dask_address:
            client = stack.enter_context(_connect(Client, cfg.dask_address, DASK_CONNECT_SECONDS))
            _wait_for_workers(client, cfg.dask_address, cfg.dask_wait)
        else:
            from .config import _workers
            workers = _workers(cfg.n_jobs, cfg.backend)
            cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1,
                                                       processes=True, dashboard_address=None,
                                                       silence_logs=logging.WARNING))
            client = stack.enter_context(Client(cluster))
        stack.enter_context(joblib.parallel_config(backend="dask"))
        stack.enter_context(_watch_workers(client, cfg.dask_wait))
        yield client


def _n_workers(client) -> int | None:
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:                                              # noqa: BLE001
        return None                     # the scheduler is gone: the run's own calls say so


def _wait_for_workers(client, address: str, seconds: float) -> None:
    """Wait up to `seconds` (dask_wait) for a worker, saying so every 10 s; a ConfigError
    naming the fix after that (nothing has been computed yet)."""
    start = last = time.monotonic()
    while not _n_workers(client):
        now = time.monotonic()
        if now - start >= seconds:
            raise ConfigError(f"dask_address={address}: no dask worker connected within "
                              f"{seconds:g} s (dask_wait); start workers (`dask worker "
                              f"{address}`) or raise dask_wait, then re-run the same command")
        if now - last >= 10:
            print(f"simstudy: waiting for dask workers at {address}: 0 connected, "
                  f"{now - start:.0f} s of dask_wait={seconds:g}", flush=True)
            last = now
        time.sleep(0.25)


DASK_LOST: dict = {}        # set by _watch_workers when every worker is gone for dask_wait s


@contextlib.contextmanager
def _watch_workers(client, seconds: float):
    """During the run, a thread that stops it (KeyboardInterrupt in the main thread, so the
    finished rows are flushed) when the cluster has had no worker for `seconds`: dask would
    wait forever in silence for one to come back."""
    import _thread
    import threading
    DASK_LOST.clear()
    stop = threading.Event()

    def watch():
        since = None
        while not stop.wait(0.5):
            gone = getattr(client, "status", "running") != "running"   # the scheduler lost
            n = None if gone else _n_workers(client)
            if n:
                since = None
                continue
            since = since or time.monotonic()
            if time.monotonic() - since >= seconds:
                DASK_LOST["why"] = (
                    f"the dask scheduler ({client.scheduler.address}) was lost and did not come "
                    f"back within {seconds:g} s (dask_wait)" if gone else
                    f"every dask worker was lost and none came back within {seconds:g} s "
                    f"(dask_wait)")
                _thread.interrupt_main()
                return
    t = threading.Thread(target=watch, daemon=True, name="simstudy-dask-watch")
    t.start()
    try:
        yield
    finally:
        stop.set()


DASK_CONNECT_SECONDS = 10.0


def _connect(Client, address: str, seconds: float):
    """A dask Client of the scheduler at `address`, or a ConfigError after `seconds`: a server
    that accepts the connection but does not speak dask's protocol (an HTTP server, say) would
    make Client wait forever, so the connection is made in a daemon thread with a deadline."""
    box: dict = {}

    def connect():
        try:
            box["client"] = Client(address, timeout=f"{seconds:g}s")
        except BaseException as exc:                                  # noqa: BLE001
            box["error"] = exc
    t = threading.Thread(target=connect, daemon=True, name="simstudy-dask-connect")
    t.start()
    t.join(seconds + 5.0)
    if "client" in box:
        return box["client"]
    why = type(box["error"]).__name__ if "error" in box else "no dask handshake"
    raise ConfigError(f"dask_address={address}: no dask scheduler answered within {seconds:g} s "
                      f"({why}); start one (`dask scheduler`) and give its tcp://HOST:PORT, or "
                      f"leave dask_address empty for a local cluster")
