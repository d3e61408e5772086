"""The one runner: expand the condition grid, run every replicate still missing through joblib
(one core each), isolate failures, stream rows to the store, resume.
The study's configuration is `config`, the fit path and seeds `fitting`; one replicate can be
re-run alone (`run_replicate`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import threading
import time
import warnings

import numpy as np
import pandas as pd

from .config import StudyConfig, _plain, _workers, check_out
from .designs import Design, Replicate, blame, check_replicate
from .errors import ConfigError, ProbeFailed, Stopped, stop_if_environment
from .fitting import _error_text, claims_seed, data_seed, fit_and_score, method_seed
from .metrics import (DIAGNOSTICS, METRICS, REFERENCE_RULES, average_ranks, congruence,
                      decisions, evaluate, extra_metrics, targeting)
from .methods import load_plugins
from .methods.registry import describe, new_site_options, shared_reads
from .options import parse_bool
from .store import CONGRUENCE_COLUMNS, Store, read_metrics
from .cluster import DASK_LOST, dask_backend
from .kernels import kernels_cached
from .workers import PROCESS_BACKENDS, watch_parent, watched


def simulate_replicate(cfg: StudyConfig, design: Design, J: int, n_j: int, replicate: int
                       ) -> Replicate:
    """The data of one replicate, exactly as the runner draws it."""
    with np.errstate(over="ignore", invalid="ignore"):   # a non-finite draw is named by
        return design.simulate(                               # check_replicate, not warned of
            np.random.default_rng(data_seed(cfg.seed, design.name, J, n_j, replicate)), J, n_j)


def run_replicate(cfg: StudyConfig, design: Design, J: int, n_j: int, replicate: int
                  ) -> tuple[list[dict], list[tuple]]:
    """Fit every method on one replicate; a method that raises gives an error row."""
    key = {"point": cfg.label, "design": design.name, "J": J, "n_j": n_j, "replicate": replicate}
    nan_metrics = {m: np.nan for m in METRICS}
    try:
        rep = simulate_replicate(cfg, design, J, n_j, replicate)
    except Exception as exc:                                       # noqa: BLE001
        stop_if_environment(exc)
        err = _error_text(exc)
        return ([{**key, "method": m, **nan_metrics, "seconds": 0.0, "status": "error",
                  "error": f"data: {err}"} for m in cfg.methods], [])
    try:
        check_replicate(rep, design, J, n_j)          # a design's output, checked once
    except ConfigError as exc:                        # ... naming the keys that cause it
        raise blame(design, J, n_j, data_seed(cfg.seed, design.name, J, n_j, replicate),
                    exc) from None
    test_truth = None
    truth = {c: rep.truth[c].to_numpy() for c in rep.truth.columns}     # read once, not per method
    delta_ranks = average_ranks(truth["Delta"])
    labels, codes = np.unique(rep.test["site"].to_numpy(), return_inverse=True)   # by site
    rows, decided, truthful = [], {}, set()
    def frame_for(method):
        nonlocal test_truth
        if not method.uses_truth:
            return rep.test
        test_truth = rep.test_with_truth() if test_truth is None else test_truth
        return test_truth

    new_sites = getattr(design, "test_sites", "same") == "new"
    with shared_reads():           # the methods share their reads of rep.train and rep.test
        for name in cfg.methods:
            t0 = time.perf_counter()
            options = cfg.method_options.get(name)
            if new_sites:          # each method's way to score a site it never saw (as apply's
                options = {**new_site_options(name), **(options or {})}   # held-out sites)
            fit = fit_and_score(name, rep.train, frame_for,
                                method_seed(cfg.seed, design.name, J, n_j, replicate, name),
                                options, cfg.defaults_for(design))
            values, status, error = nan_metrics, "error", fit.error
            if fit.method is not None and fit.method.uses_truth:
                truthful.add(name)
            if fit.error is None:
                try:
                    values = evaluate(fit.score, truth, delta_ranks)
                    values.update(targeting(fit.score, truth, codes, labels.size, cfg.budget))
                    values.update(extra_metrics(fit.score, rep.truth, rep.test, cfg.plugins))
                    infinite = [k for k, v in values.items() if np.isinf(v)]
                    if infinite:          # NaN is "undefined"; an infinite metric is a fault
                        raise FloatingPointError(f"metric(s) {infinite} infinite")
                    values.update({k: (v if k == "warning" else float(v)) for k, v in
                                   fit.method.diagnostics().items() if k in DIAGNOSTICS})
                    status = "ok"
                    decided[name] = decisions(fit.score)
                except ConfigError:           # a plugin metric's fault: stop, naming it
                    raise
                except Exception as exc:                           # noqa: BLE001
                    stop_if_environment(exc)
                    values, error = nan_metrics, _error_text(exc)
            rows.append({**key, "method": name, **values, "seconds": time.perf_counter() - t0,
                         "status": status, "error": error})
    if cfg.value_claims != "none":
        _claim_values(cfg, design, rep, key, rows, truthful)
    pairs = [(cfg.label, design.name, J, n_j, replicate, a, b, agree)
             for a, b, agree in congruence(decided)]
    return rows, pairs


def _claim_values(cfg: StudyConfig, design: Design, rep: Replicate, key: dict, rows: list,
                  truthful: set) -> None:
    """value_hat, value_se, value_true of every method whose fit succeeded (claims.py), each
    refitted on the learning half with its own seed and options; a refit that fails leaves
    them NaN and says why in the row's warning."""
    from .claims import value_claims
    if rep.more is None:
        raise ConfigError(f"value_claims={cfg.value_claims} needs the true value of each rule "
                          f"for new people in the trial's sites, and design {design.name!r} "
                          f"does not draw them (its simulate() returns no Replicate.more; "
                          f"docs/plugins.md); use value_claims=none with it")
    ok = [r["method"] for r in rows if r["status"] == "ok"]
    if not ok:
        return
    seed = [key[k] for k in ("design", "J", "n_j", "replicate")]

    def fit(name, learn, frame):
        f = fit_and_score(name, learn, frame, method_seed(cfg.seed, *seed, name),
                          cfg.method_options.get(name), cfg.defaults_for(design))
        return f.error if f.error is not None else f.score
    covariates = design.roles().get("covariates") or [
        c for c in rep.train.columns if c not in ("site", "T", "Y")]
    claims = value_claims(rep, ok, fit, cfg.value_claims, covariates,
                          np.random.default_rng(claims_seed(cfg.seed, *seed)),
                          uses_truth=truthful.__contains__)
    for row in rows:
        claim = claims.get(row["method"])
        if claim is None:
            continue
        error = claim.pop("claim_error", None)
        row.update(claim)
        if error:
            row["warning"] = "; ".join(w for w in (row.get("warning") or "",
                                                   f"value claim: {error}") if w)


def _run_batch(cfg: StudyConfig, design: Design, J: int, n_j: int, replicates: list[int],
               main_pid: int | None = None):
    load_plugins(cfg.plugins)                 # workers import user methods too
    if main_pid is not None and os.getpid() != main_pid:
        watch_parent()                        # a worker process: exit with its parent
        _one_thread_for_good()
    rows, pairs = [], []
    with one_thread():
        for r in replicates:
            rr, pp = run_replicate(cfg, design, J, n_j, r)
            rows += rr
            pairs += pp
    return len(replicates), rows, pairs


_ONE_THREAD = threading.local()      # .on: this thread already computes on one thread


@contextlib.contextmanager
def one_thread():
    """Every replicate is computed on one core, in the main process (n_jobs=1, the probe) as in
    the workers: n_jobs is the number of cores a study uses. One BLAS (and OpenMP: the ML
    family's boosting) thread also keeps results independent of n_jobs: a product that OpenBLAS
    splits over threads sums in another order, and a mixed model's optimiser amplifies that to
    1e-9 in the scores (seen at n = 22,500).
    numba's threads (the policy tree's root search) are set back afterwards. Inside an active
    limit (the run's, or a worker's) it costs nothing (setting one takes ~0.6 ms)."""
    if getattr(_ONE_THREAD, "on", False):
        yield
        return
    import numba
    from threadpoolctl import threadpool_limits
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    _ONE_THREAD.on = True
    saved = _pin_environment()
    try:
        with threadpool_limits(1):
            yield
    finally:
        _ONE_THREAD.on = False
        numba.set_num_threads(before)
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


# the thread pools of native libraries, read when a library is first loaded: threadpoolctl
# limits the libraries loaded already, these variables the ones a fit loads later (the ML
# family's OpenMP boosting imported at its first fit ran on every core: issue 45, class 10)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def _pin_environment() -> dict:
    """Every THREAD_VARIABLES set to 1; returns the previous values (None: unset). A library
    first loaded while it is set keeps one thread for the rest of the process."""
    saved = {v: os.environ.get(v) for v in THREAD_VARIABLES}
    os.environ.update({v: "1" for v in THREAD_VARIABLES})
    return saved


def _one_thread_for_good() -> None:
    """In a worker process: one BLAS and one numba thread for the rest of its life (set once,
    not per task)."""
    if getattr(_ONE_THREAD, "on", False):
        return
    import numba
    from threadpoolctl import threadpool_limits
    _pin_environment()
    numba.set_num_threads(1)
    threadpool_limits(1)
    _ONE_THREAD.on = True


# ---------------------------------------------------------------------- the study
def _batches(cfg: StudyConfig, done: set[tuple], limits: dict | None = None
             ) -> list[tuple[Design, int, int, list[int]]]:
    """The replicates still to do, in tasks; `limits[(design, J, n_j)] = n` runs only
    replicates < n of that cell (reps=auto)."""
    workers = _workers(cfg.n_jobs, cfg.backend)
    out = []
    for design, J, n_j in cfg.conditions():
        ids = cfg.replicate_ids()
        if limits is not None:
            ids = range(ids.start, min(ids.stop, limits.get((design.name, J, n_j), 0)))
        todo = [r for r in ids if (cfg.label, design.name, J, n_j, r) not in done]
        if not todo:
            continue
        if cfg.batch_size:
            size = cfg.batch_size
        elif workers == 1 or cfg.backend == "sequential":
            size = 1        # no task overhead in-process; finest progress and flushing
        else:   # small conditions: larger tasks (overhead); large ones: one replicate per task
            size = max(1, min(math.ceil(len(todo) / (8 * workers)), 10000 // (J * n_j)))
        out += [(design, J, n_j, todo[i:i + size]) for i in range(0, len(todo), size)]
    return out


def _probe_alone(cfg: StudyConfig) -> None:
    """The probe in this process, before the store is touched (for overwrite=true)."""
    design, J, n_j = cfg.conditions()[0]
    r = cfg.replicate_ids()[0]
    with one_thread():
        rows, _ = run_replicate(cfg, design, J, n_j, r)
    _check_probe(rows, (design.name, J, n_j, r))


def _check_probe(rows: list[dict], at: tuple) -> None:
    """The probe: every method is fitted on the first replicate still to do (the run's first
    task) before anything is stored; a method that fails there (a bad option, a missing column,
    a degenerate design) stops the run with this ConfigError instead of filling the store with
    error rows. `at` = (design, J, n_j, replicate)."""
    bad = [r for r in rows if r["status"] != "ok"]
    if bad and all(str(r["error"]).startswith("data: ") for r in bad):
        raise ProbeFailed(f"design {at[0]} could not draw the probe replicate (J={at[1]}, "
                          f"n_j={at[2]}, replicate {at[3]}) -- {bad[0]['error'][6:]}; fix the "
                          f"design's parameters")
    if bad:
        detail = "; ".join(f"{r['method']}: {r['error']}" for r in bad[:4])
        raise ProbeFailed(
            f"the probe replicate ({at[0]}, J={at[1]}, n_j={at[2]}, replicate {at[3]}) failed "
            f"for {len(bad)} of {len(rows)} methods before the study started -- {detail}. Fix "
            f"the method options, or pass probe=false if these methods fail only sometimes")


def run_study(cfg: StudyConfig, out, overwrite: bool = False, progress: bool = True,
              run_config: dict | None = None, probe: bool = False,
              retry_errors: bool = False) -> Store:
    """Run (or resume) the study into `out`; returns the store. `probe`: fit every method on one
    replicate first and stop with a ConfigError if one fails; `retry_errors`: recompute the
    stored replicates in which a method failed (e.g. after fixing an option or adding memory)."""
    overwrite, progress = parse_bool(overwrite, "overwrite"), parse_bool(progress, "progress")
    probe, retry_errors = parse_bool(probe, "probe"), parse_bool(retry_errors, "retry_errors")
    out = check_out(out)
    study, designs = cfg.identity()
    t0, c0 = time.perf_counter(), time.process_time()
    with Store(out) as store:
        bad = store.repair()
        if bad:
            print(f"simstudy: {len(bad)} unreadable file(s) moved to {store.out / 'quarantine'} "
                  f"({', '.join(f.name for f in bad[:3])}); their replicates are recomputed")
        if overwrite and probe and store.conflicts(study, designs, cfg.point):
            _probe_alone(cfg)         # overwrite deletes only once the new study's probe passed
            probe = False
        before = store.config_bytes()
        store.prepare(study, designs, _plain(run_config or {}), overwrite=overwrite,
                      point=cfg.point, planned=cfg.planned(), keys=cfg.point_keys,
                      methods=describe(cfg.methods))
        after = store.config_bytes()
        action, grown = getattr(store, "growth", ("create", []))
        if action == "extend":                     # a store grows only when asked: say so
            print(f"simstudy: extending {store.out}: " + "; ".join(grown))
        redo: set[tuple] = set()      # retry_errors: recomputed, then replace the stored rows
        if retry_errors:
            redo = store.failed(cfg.label, {(d.name, J, n) for d, J, n in cfg.conditions()},
                                cfg.replicate_ids())
            if redo:
                print(f"simstudy: retry_errors: {len(redo)} replicates with failed fits are "
                      f"recomputed; their stored rows are replaced once the new ones are stored")
        try:
            with one_thread():    # also for threads of backend=threading (nested limits keep 1)
                if cfg.auto is None:
                    _execute(cfg, store, probe, progress, redo=redo)
                else:
                    _run_auto(cfg, store, probe, progress, redo=redo)
        except ConfigError:       # the probe, or a design's replicate refused (check_replicate)
            if not store.appended:   # nothing stored: the config is as before, so the
                store.restore_config(before, after)      # corrected command is not "another study"
            raise
        except KeyboardInterrupt:
            _consolidate_quietly(store)
            if DASK_LOST.get("why"):
                raise Stopped(f"backend=dask: {DASK_LOST['why']}; every replicate finished "
                              f"so far is saved: start the scheduler and workers again and "
                              f"re-run the same command (with the scheduler's dask_address) to "
                              f"resume") from None
            raise
        except BaseException:     # a lost scheduler, a job's time limit, ...: rows kept, merged
            _consolidate_quietly(store)
            raise
        store.consolidate()
        from .provenance import facts
        store.record_provenance({**facts(), "run wall seconds": f"{time.perf_counter() - t0:.1f}",
                                 "run cpu seconds (main process)":
                                     f"{time.process_time() - c0:.1f}",
                                 "run n_jobs": str(cfg.n_jobs), "run backend": cfg.backend})
    return store


def _consolidate_quietly(store: Store) -> None:
    """Merge the parts a stopped run wrote (best effort: the next run merges them anyway)."""
    with contextlib.suppress(Exception):
        store.consolidate()


def _execute(cfg: StudyConfig, store: Store, probe: bool, progress: bool,
             limits: dict | None = None, redo: set | None = None) -> None:
    """Compute every replicate still missing (below `limits` per cell), and those in `redo`
    (retry_errors: removed from it once scheduled), in parallel, streaming finished rows to
    the store."""
    from tqdm.auto import tqdm
    redo = set() if redo is None else redo
    batches = _batches(cfg, store.done() - redo, limits)
    redo -= {(cfg.label, b[0].name, b[1], b[2], r) for b in batches for r in b[3]}
    workers = min(_workers(cfg.n_jobs, cfg.backend), max(1, len(batches)))
    serial = cfg.backend != "dask" and (workers == 1 or cfg.backend == "sequential")
    probing = None          # the probe replicate: nothing is stored before it is back, clean
    if probe and batches:   # its own first task (in this process, or the workers' first)
        design, J, n_j, reps = batches[0]
        probing = (design.name, J, n_j, reps[0])
        batches = ([(design, J, n_j, reps[:1])] + [(design, J, n_j, reps[1:])] * (len(reps) > 1)
                   + batches[1:])
    if cfg.backend != "dask" and cfg.n_jobs > workers and batches:
        print(f"simstudy: n_jobs={cfg.n_jobs} capped at {workers} (the machine's "
              f"{os.cpu_count()} cores and {len(batches)} tasks to do)")
    total = sum(len(b[3]) for b in batches)
    n_all = (len(cfg.conditions()) * len(cfg.replicate_ids()) if limits is None
             else sum(limits.values()))
    bar = tqdm(total=total, disable=not progress, unit="rep", **bar_width(),
               desc=f"replicates ({n_all - total} of {n_all} already done)" if total < n_all
               else "replicates")
    buf_rows, buf_pairs, last = [], [], time.monotonic()
    errors = 0

    def flush():
        nonlocal buf_rows, buf_pairs, last
        if buf_rows:
            store.append(pd.DataFrame(buf_rows),
                         pd.DataFrame(buf_pairs, columns=CONGRUENCE_COLUMNS))
        buf_rows, buf_pairs, last = [], [], time.monotonic()

    stack, results = contextlib.ExitStack(), None
    try:
        cold = bool(batches) and cfg.backend != "dask" and not kernels_cached()
        desc = getattr(bar, "desc", "replicates")     # (a disabled bar has none)
        if cold and progress:
            from .kernels import compile_seconds
            secs = compile_seconds(cfg.methods, 1 if serial else workers)
            bar.set_description_str("compiling the numerical kernels once (a first run, or the "
                                    f"engines changed): ~{5 * math.ceil(secs / 5):.0f} s")
        if serial:
            results = (_run_batch(cfg, *b) for b in batches)
        else:
            stack.enter_context(dask_backend(cfg))
            stack.enter_context(watched(cfg.backend))
            results = _parallel(cfg, batches, workers, compile_first=cold)
        for n_done, rows, pairs in results:
            if cold and progress:
                cold = False                  # the rate and time left from here on, not
                bar.reset(total=bar.total)    # from a first replicate that compiled
                bar.set_description_str(desc)
            if probing is not None:
                first = [r for r in rows if (r["design"], r["J"], r["n_j"], r["replicate"])
                         == probing]
                if first:
                    at, probing = probing, None
                    try:
                        _check_probe(first, at)
                    except ProbeFailed:
                        buf_rows, buf_pairs = [], []     # nothing of this run is stored
                        raise
            buf_rows += rows
            buf_pairs += pairs
            errors += sum(r["status"] != "ok" for r in rows)
            bar.update(n_done)
            if errors:
                bar.set_postfix(errors=errors)
            if probing is None and time.monotonic() - last >= cfg.flush_seconds:
                flush()
    finally:
        flush()           # whatever finished is kept, also on Ctrl-C or an exception
        bar.close()
        if results is not None:        # stop queued tasks (joblib warns that it does)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                results.close()
        stack.close()


def _warm(cfg: StudyConfig, design: Design, J: int, n_j: int, replicate: int, methods: list,
          main_pid: int | None = None) -> list:
    """Compile (and cache on disk) the numerical kernels `methods` use: their fits on one
    replicate, the results dropped."""
    _run_batch(dataclasses.replace(cfg, methods=list(methods)), design, J, n_j, [replicate],
               main_pid=main_pid)
    return methods


def _parallel(cfg: StudyConfig, batches: list, workers: int, compile_first: bool):
    """The batches' results through joblib, as they finish. `compile_first` (the compiled
    kernels are not on disk yet): first the methods are fitted once on the first replicate,
    one task per family (its methods share their engine's kernels), the costliest to compile
    first (`Method.compile_cost`), spread over the workers: each kernel is compiled once, by
    one worker, with both cores busy; the batches then load the cached kernels (else every
    worker compiles every kernel at once)."""
    from joblib import Parallel, delayed
    n_jobs = -1 if cfg.backend == "dask" else workers
    backend = None if cfg.backend in ("dask", *PROCESS_BACKENDS) else cfg.backend
    if compile_first and batches:
        from .kernels import compile_families
        design, J, n_j, reps = batches[0]
        order = compile_families(cfg.methods)
        for _ in Parallel(n_jobs=n_jobs, backend=backend, return_as="generator_unordered")(
                delayed(_warm)(cfg, design, J, n_j, reps[0], ms, main_pid=os.getpid())
                for ms in order):
            pass
    if batches:
        yield from Parallel(n_jobs=n_jobs, backend=backend,    # None: the context's (`watched`)
                            return_as="generator_unordered")(
            delayed(_run_batch)(cfg, *b, main_pid=os.getpid()) for b in batches)


def cell_mcse(metrics: pd.DataFrame, label: str, cell: tuple, n: int, metric: str,
              reference: str | None = None) -> float:
    """Largest Monte Carlo SE over the cell's methods (reference rules excluded) of the mean of
    `metric` over replicates 0..n-1, or of its paired difference from `reference`."""
    design, J, n_j = cell
    m = metrics[(metrics["point"] == label) & (metrics["design"] == design) & (metrics["J"] == J)
                & (metrics["n_j"] == n_j) & (metrics["replicate"] < n)
                & (metrics["status"] == "ok")]
    w = m.pivot_table(index="replicate", columns="method", values=metric, observed=True)
    if reference is not None:         # paired: each method minus the reference, replicate-wise
        if reference not in w:
            return math.inf
        w = w.drop(columns=reference).sub(w[reference], axis=0)
    w = w.drop(columns=[c for c in REFERENCE_RULES if c in w])
    se = w.std(ddof=1) / np.sqrt(w.count())
    return float(se.max()) if len(se) and se.notna().any() else math.inf


def _run_auto(cfg: StudyConfig, store: Store, probe: bool, progress: bool,
              redo: set | None = None) -> None:
    """reps=auto: every cell starts with min_reps replicates and grows by `batch_reps` until
    the largest MC SE of its target metric is <= target_mcse or it has max_reps. Replicate r
    is always the same draw, so a cell's result does not depend on how the batches fell, and
    the first n in min_reps, min_reps + batch, ... that meets the target is where it stops."""
    a = cfg.auto
    cells = [(d.name, J, n) for d, J, n in cfg.conditions()]
    limits = {c: a["min_reps"] for c in cells}
    open_cells = set(cells)
    reasons = {}
    while open_cells:
        _execute(cfg, store, probe, progress, limits, redo)
        probe = False
        store.consolidate()
        metrics = read_metrics(store.out)
        for c in sorted(open_cells):
            se = cell_mcse(metrics, cfg.label, c, limits[c], a["metric"], a.get("reference"))
            if se <= a["target_mcse"]:
                reasons[c] = f"target met: MC SE {se:.5f} <= {a['target_mcse']} at {limits[c]} reps"
            elif limits[c] >= a["max_reps"]:
                reasons[c] = f"max_reps {a['max_reps']} reached: MC SE {se:.5f}"
            else:
                limits[c] = min(a["max_reps"], limits[c] + a["batch_reps"])
                continue
            open_cells.discard(c)
            if progress:
                print(f"simstudy: {c[0]} (J={c[1]}, n_j={c[2]}): {reasons[c]}")
    store.record_stops(cfg.label, {c: (limits[c], reasons[c]) for c in cells})


# ---------------------------------------------------------------------- the dry run
def dry_run(cfg: StudyConfig, out, overwrite: bool = False, calibrate: int = 6) -> str:
    """What `simstudy run ... dry_run=true` prints, having written nothing: the cells, methods
    and replicates, the store action (`store_action`: create / resume / extend / refuse, with
    the differences) and the time: one replicate of up to `calibrate` distinct cell sizes is
    fitted here (after a warm-up one, not stored) and the rest scaled by rows, times the
    replicates still to do, over the workers; plus the first run's compile estimate."""
    from pathlib import Path

    from .kernels import compile_seconds
    from .store import read_config, read_congruence, store_action, complete
    study, designs = cfg.identity()
    action, lines = store_action(out, study, designs, cfg.point, cfg.planned(), overwrite)
    done: set = set()
    if action in ("resume", "extend") and Path(out, "config.yaml").exists():
        read_config(out)
        done = complete(read_metrics(out), read_congruence(out))
    todo = {(d.name, J, n): sum((cfg.label, d.name, J, n, r) not in done
                                for r in cfg.replicate_ids()) for d, J, n in cfg.conditions()}
    if action in ("overwrite",):
        todo = {c: len(cfg.replicate_ids()) for c in todo}
    sizes = sorted({J * n for _, J, n in todo})
    pick = sizes if len(sizes) <= calibrate else [sizes[round(i * (len(sizes) - 1) /
                                                             (calibrate - 1))]
                                                  for i in range(calibrate)]
    cold = not kernels_cached()
    design = cfg.designs[0]
    seconds = {}
    with one_thread():
        smallest = min(((J, n) for _, J, n in todo), key=lambda c: c[0] * c[1])
        t0 = time.perf_counter()
        run_replicate(cfg, design, *smallest, cfg.replicate_ids()[0])        # warm-up
        first = time.perf_counter() - t0      # loads the kernels and modules, as a run does
        for rows in pick:
            J, n = next((J, n) for _, J, n in todo if J * n == rows)
            t0 = time.perf_counter()
            run_replicate(cfg, design, J, n, cfg.replicate_ids()[0])
            seconds[rows] = time.perf_counter() - t0
    known = sorted(seconds)

    def per_rep(rows):                    # linear in rows between calibrated sizes
        return float(np.interp(rows, known, [seconds[k] for k in known],
                               right=seconds[known[-1]] * rows / known[-1]))
    workers = 1 if cfg.backend == "sequential" else _workers(cfg.n_jobs, cfg.backend)
    startup = max(0.0, first - per_rep(smallest[0] * smallest[1]))   # per process, once
    if workers > 1 and cfg.backend in PROCESS_BACKENDS:     # a worker process's start, timed
        import subprocess
        import sys
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import simstudy.runner, simstudy.methods"],
                       capture_output=True, timeout=300)
        startup += time.perf_counter() - t0
    cpu = sum(k * per_rep(J * n) for (_, J, n), k in todo.items()) + startup * workers
    compile_s = compile_seconds(cfg.methods, workers) if cold else 0.0
    wall = (cpu / max(1, min(workers, sum(todo.values()) or 1)) + compile_s
            if sum(todo.values()) else 0.0)
    n_todo = sum(todo.values())
    verb = {"create": "create", "resume": "resume", "extend": "extend",
            "overwrite": "overwrite this point of", "refuse": "REFUSE (a different study):"}
    text = [f"simstudy: dry run (nothing written): {len(todo)} cell(s) x {len(cfg.replicate_ids())} "
            f"replicates, {len(cfg.methods)} methods: {', '.join(cfg.methods)}"]
    text += [f"  {cfg.label or '-':24s} {d:16s} J={J:<6d} n_j={n:<6d} to do {k:6d} "
             f"(~{_secs(k * per_rep(J * n))} CPU-s)" for (d, J, n), k in todo.items()]
    text.append(f"store: {verb[action]} {out}" + ("".join(f"\n  - {x}" for x in lines)))
    if cfg.auto:
        text.append(f"reps=auto: each cell runs {cfg.auto['min_reps']} replicates, then more "
                    f"until its target; the time below is for max_reps={cfg.auto['max_reps']}, "
                    f"the most it can take")
    text.append(f"time: {n_todo} replicates, ~{_secs(cpu)} CPU-seconds, ~{_secs(wall)} s wall "
                f"on {workers} worker(s)" + (f" (incl. ~{compile_s:.0f} s compiling the kernels: a "
                                          f"first run)" if compile_s else "")
                + f"; calibrated on {len(pick)} cell size(s) here")
    return "\n".join(text)


def bar_width() -> dict:
    """tqdm's width: the terminal's, following it; a fixed 100 columns where the terminal
    reports none (`script -c`, some CI and IDE consoles), where tqdm's dynamic width would
    print nothing at all until the end (issue 40, item 7)."""
    import shutil
    try:
        columns = os.get_terminal_size(2).columns
    except OSError:                            # not a terminal: tqdm's own default
        columns = shutil.get_terminal_size((100, 24)).columns
    return {"dynamic_ncols": True} if columns > 0 else {"ncols": 100}


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 1 else f"{x:.1f}" if x < 10 else f"{x:,.0f}"
