"""Hostile use, round 3 (issue 45): each class of the red team's list, tested on the class with
members of our own beyond the report's example. Through the CLI a user reaches one line and
exit 2 (or 3 / 129 / 130), never a traceback, a silent wrong number or a lost table."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simstudy.errors import ConfigError, Stopped
from simstudy.store import Store, Superseded, read_congruence, read_metrics

from test_hostile import TINY, cli
from test_hostile2 import snapshot

HERE = Path(__file__).parent
THREE = ["J=3", "n_j=8", "reps=3", "n_jobs=1", "progress=false", "figures=false",
         "methods=[Q-base,Q-ri,oracle,treat-all]"]


def stored(out):
    return yaml.safe_load((Path(out) / "config.yaml").read_text())


# ------------------------------------------------------------------ 1. a derived table lost
@pytest.mark.parametrize("damage", ["truncate", "delete", "part"])
def test_a_lost_congruence_table_is_recomputed_and_status_says_so(damage, tmp_path, capsys):
    """A replicate is done only when every table it owes is stored: its metrics rows and the
    congruence of every pair of its ok methods. Truncated (then `repair`), deleted, or a
    part lost before it was merged: status counts those replicates as missing and the next
    run restores the table to what a clean run stores."""
    out, clean = tmp_path / "s", tmp_path / "clean"
    args = [*THREE, "flush_seconds=1000"]
    assert cli(capsys, "run", *args, f"out={clean}")[0] == 0
    assert cli(capsys, "run", *args, f"out={out}")[0] == 0
    assert len(read_congruence(out)) == 3 * 6
    if damage == "truncate":
        with open(out / "congruence.parquet", "r+b") as fh:
            fh.truncate(300)
        assert cli(capsys, "repair", str(out))[0] == 0
    elif damage == "delete":
        (out / "congruence.parquet").unlink()
    else:                        # the congruence rows of replicate 2 never reached the store
        c = read_congruence(out)
        from simstudy.store import point_tokens, write_parquet
        write_parquet(c[c["replicate"] < 2], out / "congruence.parquet", point_tokens(out))
    code, text, _ = cli(capsys, "status", str(out))
    assert code == 0 and "100.0%" not in text
    assert cli(capsys, "run", *args, f"out={out}")[0] == 0
    pd.testing.assert_frame_equal(read_congruence(out), read_congruence(clean))
    pd.testing.assert_frame_equal(read_metrics(out).drop(columns="seconds"),
                                  read_metrics(clean).drop(columns="seconds"))
    assert "100.0%" in cli(capsys, "status", str(out))[1]


def test_a_replicate_missing_a_methods_rows_is_recomputed(tmp_path, capsys):
    """Every method of the point's study owes its row: a replicate whose rows of one method are
    gone (its pairs' congruence too) is not done; the run restores it as a clean run has it."""
    from simstudy.store import point_tokens, write_parquet
    out, clean = tmp_path / "s", tmp_path / "c"
    assert cli(capsys, "run", *THREE, f"out={clean}")[0] == 0
    assert cli(capsys, "run", *THREE, f"out={out}")[0] == 0
    m, c = read_metrics(out), read_congruence(out)
    gone = (m["replicate"] == 1) & (m["method"] == "Q-ri")
    write_parquet(m[~gone], out / "metrics.parquet", point_tokens(out))
    write_parquet(c[~((c["replicate"] == 1) & ((c["method_a"] == "Q-ri")
                                              | (c["method_b"] == "Q-ri")))],
                  out / "congruence.parquet", point_tokens(out))
    assert "100.0%" not in cli(capsys, "status", str(out))[1]
    assert cli(capsys, "run", *THREE, f"out={out}")[0] == 0
    pd.testing.assert_frame_equal(read_metrics(out).drop(columns="seconds"),
                                  read_metrics(clean).drop(columns="seconds"))
    pd.testing.assert_frame_equal(read_congruence(out), read_congruence(clean))


def test_a_replicate_owes_congruence_only_for_its_ok_fits(tmp_path, capsys):
    """One method (no pair) or failed fits (fewer pairs): done, and never recomputed."""
    out = tmp_path / "one"
    args = ["J=3", "n_j=8", "reps=3", "n_jobs=1", "progress=false", "figures=false"]
    assert cli(capsys, "run", *args, "methods=[Q-base]", f"out={out}")[0] == 0
    seconds = read_metrics(out)["seconds"].to_numpy()
    assert cli(capsys, "run", *args, "methods=[Q-base]", f"out={out}")[0] == 0
    assert np.array_equal(read_metrics(out)["seconds"], seconds)       # nothing recomputed
    flaky = tmp_path / "flaky"
    fargs = [*args[:2], "reps=6", *args[3:], "methods=[Q-base,test-flaky,oracle]",
             "plugins=[plugin_methods]", "probe=false"]
    assert cli(capsys, "run", *fargs, f"out={flaky}")[0] == 0
    m = read_metrics(flaky)
    assert (m["status"] == "error").any()
    seconds = m["seconds"].to_numpy()
    assert cli(capsys, "run", *fargs, f"out={flaky}")[0] == 0
    assert np.array_equal(read_metrics(flaky)["seconds"], seconds)


# ------------------------------------------------------------------ 2. two studies in one point
def _prepared(out, methods, overwrite=False, point=None):
    store = Store(out).__enter__()
    study = {"seed": 1, "methods": methods, "method_defaults": {}, "method_options": {},
             "plugins": []}
    from simstudy.designs import make_design
    store.prepare(study, {"d": make_design({"name": "d"}).identity()}, {}, overwrite=overwrite,
                  point=point or {}, planned=[{"point": "", "design": "d", "J": 3, "n_j": 8,
                                               "reps": 2}])
    return store


def _rows(methods, label="", replicate=0):
    m = pd.DataFrame([{"point": label, "design": "d", "J": 3, "n_j": 8, "replicate": replicate,
                       "method": x, "accuracy": 0.5, "status": "ok"} for x in methods])
    return m, pd.DataFrame(columns=["point", "design", "J", "n_j", "replicate", "method_a",
                                    "method_b", "agreement"])


def test_a_writer_whose_point_was_replaced_stops_and_writes_nothing(tmp_path):
    """The writer keeps the token it prepared: once another run replaced its point
    (overwrite=true, another study), its next chunk is refused, naming that run's pid and
    host; the store holds the other study only."""
    out = tmp_path / "o"
    first = _prepared(out, ["Q-ri", "oracle"])
    first.append(*_rows(["Q-ri", "oracle"], replicate=0))
    second = _prepared(out, ["Q-base"], overwrite=True)
    second.append(*_rows(["Q-base"], replicate=0))
    with pytest.raises(Superseded, match=rf"pid {os.getpid()} on .*overwrite=true"):
        first.append(*_rows(["Q-ri", "oracle"], replicate=1))
    assert isinstance(Superseded(out, "", None), Stopped)        # exit 3, as a lost cluster
    m = read_metrics(out)
    assert set(m["method"]) == {"Q-base"} and len(m) == 1


def test_writers_of_the_same_study_or_of_other_points_go_on(tmp_path):
    """Two runs of the same study (SLURM jobs resuming one point) share its token; a point
    overwritten elsewhere in a sweep does not stop the writer of another point."""
    out = tmp_path / "o"
    a = _prepared(out, ["Q-ri"])
    b = _prepared(out, ["Q-ri"])
    a.append(*_rows(["Q-ri"], replicate=0))
    b.append(*_rows(["Q-ri"], replicate=1))
    c = _prepared(out, ["Q-ri"], point={"seed": "7"})
    _prepared(out, ["Q-base"], overwrite=True, point={"seed": "7"})
    a.append(*_rows(["Q-ri"], replicate=2))            # its point '' is untouched
    with pytest.raises(Superseded, match="sweep point 'seed=7'"):
        c.append(*_rows(["Q-ri"], label="seed=7"))
    assert sorted(read_metrics(out).query("point == ''")["replicate"]) == [0, 1, 2]


@pytest.mark.slow
def test_a_run_overwritten_mid_run_exits_3_and_the_store_is_the_second_study(tmp_path):
    """The red team's example, as written: two processes, the second with overwrite=true."""
    out = tmp_path / "O"
    first = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "run", "J=3", "n_j=8",
                              "reps=100000", "n_jobs=1", "progress=false", "figures=false",
                              "methods=[Q-ri,oracle]", "flush_seconds=0.2", f"out={out}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "parts").glob("metrics-*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run([sys.executable, "-m", "simstudy.cli", "run", "J=3", "n_j=8",
                                 "reps=4", "n_jobs=1", "progress=false", "figures=false",
                                 "methods=[Q-base,W-aug]", "overwrite=true", f"out={out}"],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr
        _, err = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 3 and "replaced by another run" in err and "Traceback" not in err
    m = read_metrics(out)
    assert set(m["method"]) == {"Q-base", "W-aug"} and len(m) == 8
    assert stored(out)["points"][""]["study"]["methods"] == ["Q-base", "W-aug"]


# ------------------------------------------------------------------ 3. non-finite truths
@pytest.mark.parametrize("args,key", [
    (["design=step", "design.effect_scale=1e308"], "design.effect_scale=1e+308"),
    (["design.delta.X3=1e308"], "design.delta.X3=1e+308"),
    (["design.main.X1=1e308"], "design.main.X1=1e+308"),
    (["design.noise_sd=1e307"], "design.noise_sd=1e+307"),
    (["design.cluster_main=1e308"], "design.cluster_main=1e+308"),
    (["design.noise_sd=1e200"], "design.noise_sd=1e+200"),        # finite sums, squares not
    (["design=tree", "design.effect_scale=-1e308"], "design.effect_scale=-1e+308")])
def test_an_overflowing_design_is_refused_naming_its_key(args, key, tmp_path, capsys):
    """Finite keys whose truth or outcomes overflow a mean (the oracle's value was stored as
    inf, status ok): refused at the probe naming the key, nothing stored, not even a config
    that would refuse the corrected command as another study."""
    code, _, err = cli(capsys, "run", *args, *THREE, f"out={tmp_path / 'o'}")
    assert code == 2 and key in err and "fix its simulate()" not in err, err
    assert len(err.strip().splitlines()) == 1 and "Warning" not in err
    assert not list((tmp_path / "o").glob("**/*.parquet"))
    assert not (tmp_path / "o" / "config.yaml").exists()


def test_a_plugin_design_with_an_infinite_truth_is_told_to_fix_simulate(tmp_path, capsys,
                                                                        monkeypatch):
    from test_hostile2 import plugin
    name = plugin(tmp_path, monkeypatch, """
        import numpy as np
        from dataclasses import dataclass
        from simstudy.designs import Design, register_design
        @register_design("hugetruth")
        @dataclass(frozen=True)
        class Huge(Design):
            name: str = "huge"
            def simulate(self, rng, J, n_j):
                rep = super().simulate(rng, J, n_j)
                rep.truth["Y1"] = rep.truth["Y1"] * 1e308
                return rep
        """)
    code, _, err = cli(capsys, "run", f"plugins=[{name}]", "design.family=hugetruth",
                       *THREE, f"out={tmp_path / 'o'}")
    assert code == 2 and "fix its simulate()" in err and "plug_" in err, err
    assert "too large to sum" in err or "infinite values" in err


def test_every_stored_metric_is_finite(tmp_path, capsys):
    """A plugin metric returning inf stops the study naming the metric (NaN means undefined)."""
    import uuid
    name = f"plug_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        from simstudy.metrics import register_metric
        @register_metric("blowup")
        def blowup(score, truth, test):
            return float("inf")
        """))
    sys.path.insert(0, str(tmp_path))
    try:
        code, _, err = cli(capsys, "run", f"plugins=[{name}]", *THREE, f"out={tmp_path / 'o'}")
    finally:
        sys.path.remove(str(tmp_path))
    assert code == 2 and "blowup" in err and "inf" in err


# ------------------------------------------------------------------ 4. mappings given whole
@pytest.mark.parametrize("prefix", ["", "+", "++"])
def test_a_mapping_given_whole_replaces_the_presets(prefix, tmp_path, capsys):
    out = tmp_path / "d"
    code, _, _ = cli(capsys, "run", f"{prefix}design.delta={{intercept:0.2,X3:0.5}}", *THREE,
                     f"out={out}")
    (label, point), = stored(out)["points"].items()
    assert code == 0 and point["designs"]["design1"]["delta"] == {"intercept": 0.2, "X3": 0.5}
    assert label == "design.delta={X3:0.5,intercept:0.2}"


def test_mapping_replacements_compose_with_later_terms_and_defaults(tmp_path, capsys):
    out = tmp_path / "d"
    code, _, _ = cli(capsys, "run", "design.main={intercept:1,X1:2}", "design.main.X2=3",
                     "method_defaults={moderators:[X1,X2]}", *THREE, f"out={out}")
    (label, point), = stored(out)["points"].items()
    assert code == 0 and point["designs"]["design1"]["main"] == {"intercept": 1, "X1": 2, "X2": 3}
    assert point["study"]["method_defaults"] == {"moderators": ["X1", "X2"]}   # no covariates
    # the preset's own mapping, given whole, is the plain study (no sweep point)
    out2 = tmp_path / "e"
    assert cli(capsys, "run", "design.delta={intercept:0.2,X3:0.5,X4:-0.2,X5:-0.2}", *THREE,
               f"out={out2}")[0] == 0
    assert list(stored(out2)["points"]) == [""]


def test_the_api_replaces_mappings_as_the_command_line_does(tmp_path):
    import simstudy
    study = simstudy.run_study("design1", design_params={"delta": {"intercept": 0.2, "X3": 0.5}},
                               J=3, n_j=8, reps=2, n_jobs=1, methods=["Q-base", "oracle"],
                               out=tmp_path / "a")
    (label, point), = study.config["points"].items()
    assert point["designs"]["design1"]["delta"] == {"intercept": 0.2, "X3": 0.5}
    assert label == "design.delta={X3:0.5,intercept:0.2}"


# ------------------------------------------------------------------ 5. site codes as text
def test_apply_reads_site_codes_as_text(tmp_path):
    from simstudy.apply import load
    rows = ["site,grp,T,Y,X1"] + [f"{s},{g},{t},{y},{x}" for s, g, t, y, x in
                                   [("1", "07", 0, 1.0, 0.1), ("01", "7", 1, 2.0, 0.3),
                                    ("1", "07", 1, 1.5, 0.2), ("01", "7", 0, 2.5, 0.1)]]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    df = load(tmp_path / "t.csv", ids=("site", "grp"))
    assert df["site"].nunique() == 2 and df["grp"].nunique() == 2
    assert list(df["site"]) == ["1", "01", "1", "01"]
    # plain integer codes are read as before (integers: the same sites, order and results)
    (tmp_path / "i.csv").write_text("site,Y\n3,1\n12,2\n3,3\n")
    assert load(tmp_path / "i.csv", ids=("site",))["site"].dtype == np.int64
    (tmp_path / "n.csv").write_text("site,Y\nA7,1\n-3,2\n")
    assert list(load(tmp_path / "n.csv", ids=("site",))["site"]) == ["A7", "-3"]


def test_the_plasmode_keeps_leading_zero_sites_apart(tmp_path):
    from simstudy.designs.plasmode import _load
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"school": ["1"] * 5 + ["01"] * 5, "x": rng.standard_normal(10)})
    df.to_csv(tmp_path / "p.csv", index=False)
    _, start, counts = _load(str(tmp_path / "p.csv"), "school", ("x",), False)
    assert list(counts) == [5, 5]


# ------------------------------------------------------------------ 6. signals, every command
def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True, text=True).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines()[1:] if line.strip()]
    kids, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, parent in rows:
            if parent == p:
                kids.append(c)
                todo.append(c)
    return kids


def _alive(pids) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists()
            and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]


@pytest.fixture(scope="module")
def drawn_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("drawn") / "s"
    from simstudy.cli import main
    assert main(["run", "J=[3,4]", "n_j=8", "reps=3", "n_jobs=1", "progress=false",
                 "figures=false", "methods=[Q-base,Q-ri,PT,oracle,treat-all]",
                 f"out={out}"]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 130), (signal.SIGHUP, 129),
                                      (signal.SIGINT, 130)])
def test_a_signal_while_the_report_draws_stops_it_and_its_workers(sig, code, drawn_store):
    proc = subprocess.Popen([sys.executable, "-m", "simstudy.cli", "report", str(drawn_store),
                             "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, kids = time.monotonic() + 60, []
    while time.monotonic() < deadline and len(kids) < 2:     # the figure workers are up
        kids = [k for k in _children(proc.pid)]
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (code, 0), err           # 0: it finished before the signal
    if proc.returncode == code:
        assert "Traceback" not in err and "leaked" not in err and "report:" in err
    deadline = time.monotonic() + 10
    while _alive(kids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(kids)


def test_a_signal_inside_a_semaphores_cleanup_waits_for_it_to_finish():
    """A signal that lands while a pool's semaphore is cleaned up (unlinked, then unregistered
    from loky's resource tracker) is delivered once that cleanup has returned: raised inside
    it, the tracker printed "1 leaked semlock objects" and the finalizer a traceback (CI, the
    report stopped by SIGTERM while drawing). The signal is sent from inside the unregister."""
    script = textwrap.dedent("""
        import os, signal, time
        from joblib.externals.loky.backend import resource_tracker
        from joblib.externals.loky.backend.context import get_context
        from simstudy.errors import Interrupted, install_sigterm
        install_sigterm()
        real, done = resource_tracker.unregister, []
        def unregister(name, rtype):
            os.kill(os.getpid(), signal.SIGTERM)      # the handler runs on return from kill
            real(name, rtype)
            done.append(name)
        resource_tracker.unregister = unregister
        from multiprocessing import util
        lock = get_context("loky").Lock()
        name = lock._semlock.name
        cleanup, = [f for f in list(util._finalizer_registry.values()) if f._args == (name,)]
        try:
            cleanup()                                 # as the executor's shutdown does
            print("cleanup finished", done == [name])
            time.sleep(2)
            print("not interrupted")
        except Interrupted as e:
            print("interrupted after", done == [name], e.signum)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert run.stdout.split("\n")[:2] == ["cleanup finished True", "interrupted after True 15"], \
        run.stdout + run.stderr
    assert "leaked" not in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_signal_during_the_shutdown_is_a_clean_stop(tmp_path, capsys, monkeypatch):
    """SIGTERM while idle workers are stopped, after the study was stored: no traceback; exit
    130 saying the work was complete."""
    import simstudy.workers as W
    import simstudy.cli as C
    real = W.stop_idle_workers

    def stop_with_a_signal(kill=False):
        os.kill(os.getpid(), signal.SIGTERM)
        real(kill)
    monkeypatch.setattr(W, "stop_idle_workers", stop_with_a_signal)
    before = signal.getsignal(signal.SIGTERM)
    try:
        code = C.main(["run", *TINY, f"out={tmp_path / 'o'}"])
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert code == 130 and "while shutting down" in err and "Traceback" not in err
    assert len(read_metrics(tmp_path / "o")) == 4


def test_a_worker_whose_command_died_while_it_started_exits(tmp_path):
    """A worker started by a command that is gone (killed before the worker's initializer
    ran) exits at once instead of waiting forever as an orphan."""
    code = "from simstudy.workers import watch_parent; watch_parent(); print('alive')"
    env = {**os.environ, "SIMSTUDY_PARENT_PID": "999999999"}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "alive" not in r.stdout
    env["SIMSTUDY_PARENT_PID"] = str(os.getpid())
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "alive" in r.stdout


# ------------------------------------------------------------------ 7. OS write errors
def _limited(limit: int):
    def pre():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


@pytest.mark.parametrize("limit", [2_000, 20_000, 40_000])
def test_a_write_refused_by_the_os_in_any_writer_names_the_path(limit, drawn_store, tmp_path):
    """A file-size limit (EFBIG, a real refusal of the OS) at several sizes, so it hits
    different writers (tables, PNG and PDF figures, the page): exit 2 naming the file."""
    import shutil
    out = tmp_path / "s"
    shutil.copytree(drawn_store, out)
    shutil.rmtree(out / "figures", ignore_errors=True)
    r = subprocess.run([sys.executable, "-m", "simstudy.cli", "report", str(out)],
                       capture_output=True, text=True, timeout=300, preexec_fn=_limited(limit))
    assert r.returncode == 2, r.stderr
    assert "file-size limit" in r.stderr and str(out) in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    assert not list(out.rglob(".*.tmp"))                   # no half-written temporary left


def test_a_full_disk_while_drawing_names_the_figure(drawn_store, tmp_path):
    """A real full disk (a small tmpfs; needs root, as CI has) while matplotlib writes."""
    import shutil
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs",
                                            str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        out = mnt / "s"
        out.mkdir()
        for f in ("config.yaml", "metrics.parquet", "congruence.parquet"):
            shutil.copy(drawn_store / f, out / f)
        r = subprocess.run([sys.executable, "-m", "simstudy.cli", "report", str(out)],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "the disk is full" in r.stderr and str(out) in r.stderr
        assert "internal error" not in r.stderr and "Traceback" not in r.stderr
        # the same store on a file system made read-only (EROFS): exit 2 naming a file
        shutil.rmtree(out / "figures", ignore_errors=True)
        if subprocess.run(["mount", "-o", "remount,ro", str(mnt)],
                          capture_output=True).returncode == 0:
            r = subprocess.run([sys.executable, "-m", "simstudy.cli", "report", str(out)],
                               capture_output=True, text=True, timeout=300)
            assert r.returncode == 2 and "read-only" in r.stderr and str(out) in r.stderr
            assert "internal error" not in r.stderr and "Traceback" not in r.stderr
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ------------------------------------------------------------------ 8. the API: threads, types
def test_run_study_in_a_thread_gives_the_main_threads_store(tmp_path):
    import simstudy
    kw = dict(J=3, n_j=8, reps=2, n_jobs=1, methods=["Q-base", "Q-ri", "oracle"])
    box = {}

    def work():
        try:
            box["study"] = simstudy.run_study("design2", out=tmp_path / "t", **kw)
        except BaseException as exc:                               # noqa: BLE001
            box["error"] = exc
    t = threading.Thread(target=work)
    t.start()
    t.join(300)
    assert "error" not in box, box.get("error")
    main = simstudy.run_study("design2", out=tmp_path / "m", **kw)
    pd.testing.assert_frame_equal(box["study"].metrics.drop(columns="seconds"),
                                  main.metrics.drop(columns="seconds"))


def test_run_study_never_touches_the_command_line(tmp_path, monkeypatch):
    import simstudy
    import simstudy.cli as C

    def forbidden(*a, **k):
        raise AssertionError("run_study went through the command line")
    monkeypatch.setattr(C, "main", forbidden)
    monkeypatch.setattr(C, "_run", forbidden)
    monkeypatch.setattr(signal, "signal", forbidden)
    simstudy.run_study(J=3, n_j=8, reps=1, n_jobs=1, methods=["Q-base"], out=tmp_path / "o")
    import ast
    tree = ast.parse((Path(simstudy.__file__).parent / "api.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "cli" not in imported and not any("cli" in (m or "") for m in imported)


@pytest.mark.parametrize("kw,says", [
    ({"method_options": {"Q-base": "x"}}, "method_options['Q-base']"),
    ({"method_options": "x"}, "method_options="),
    ({"method_options": {"Q-base": {"moderators": 3}}}, "moderators"),
    ({"design_params": ["beta1", 0.2]}, "design_params="),
    ({"design_params": {"beta1": "lots"}}, "design.beta1"),
    ({"design": 2}, "design=2"),
    ({"design": "desing2"}, "did you mean 'design2'"),
    ({"J": "abc"}, "J="),
    ({"reps": 2.5}, "reps="),
    ({"methods": 5}, "unknown method"),
    ({"method_defaults": ["X1"]}, "method_defaults="),
    ({"n_jobs": -3}, "n_jobs=-3"),
    ({"rpes": 3}, "did you mean 'reps'"),
    ({"out": ["a"]}, "out=['a']"),
    ({"seed": None}, "seed=")])
def test_every_wrong_type_in_the_api_is_a_config_error(kw, says, tmp_path):
    import simstudy
    args = {"J": 3, "n_j": 8, "reps": 1, "n_jobs": 1, "methods": ["Q-base"], **kw}
    with pytest.raises(ConfigError, match=None) as info:
        simstudy.run_study(**{"out": tmp_path / "o", **args})
    assert says in str(info.value), str(info.value)
    assert not list((tmp_path / "o").glob("**/*.parquet"))


# ------------------------------------------------------------------ 9. column options
@pytest.mark.parametrize("option,says", [
    ("+method_options.DR.outcome=T", "method_options.DR.outcome='T' (that is the design's "
                                     "treatment column)"),
    ("+method_options.CF.site=X1", "method_options.CF.site='X1'"),
    ("+method_options.Q-base.treatment=Y", "method_options.Q-base.treatment='Y'"),
    ("+method_options.PT.features=[X1,Y]", "'Y' is the design's outcome column"),
    ("+method_options.W-aug.covariates=[X1,site]", "'site' is the design's site column"),
    ("+method_options.Q-ri.moderators=[X3,X7]", "has no covariate(s) ['X7']"),
    ("method_defaults.moderators=[T]", "'T' is the design's treatment column")])
def test_column_options_are_checked_against_the_designs_roles(option, says, tmp_path, capsys):
    method = option.split(".")[1] if option.startswith("+") else "Q-base"
    code, _, err = cli(capsys, "run", *THREE[:-1], f"methods=[{method}]", option,
                       f"out={tmp_path / 'o'}")
    assert code == 2 and says in err and "probe" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_site_covariate_is_a_covariate_when_the_design_draws_it(tmp_path, capsys):
    code, _, err = cli(capsys, "run", *THREE[:-1], "methods=[Q-base]",
                       "+method_options.Q-base.moderators=[X3,W]", f"out={tmp_path / 'o'}")
    assert code == 2 and "['W']" in err
    code, _, err = cli(capsys, "run", *THREE[:-1], "methods=[Q-base]", "design.site_covariate=true",
                       "+method_options.Q-base.moderators=[X3,W]", f"out={tmp_path / 'p'}")
    assert code == 0, err


# ------------------------------------------------------------------ 10. one core per worker
THREADS = """
import os, sys
import numpy as np
from simstudy.runner import one_thread, _one_thread_for_good
X = np.random.default_rng(0).standard_normal((20000, 8)); y = X[:, 0]
def fit():
    before = len(os.listdir("/proc/self/task"))
    from sklearn.ensemble import HistGradientBoostingRegressor   # loads OpenMP now
    import scipy.linalg
    HistGradientBoostingRegressor(max_iter=10).fit(X, y)
    scipy.linalg.solve(X.T @ X, X.T @ y)
    from threadpoolctl import threadpool_info
    pools = sorted({i["num_threads"] for i in threadpool_info()})
    print(pools, len(os.listdir("/proc/self/task")) - before)
if sys.argv[1] == "run":
    with one_thread():
        fit()
else:
    _one_thread_for_good()
    fit()
"""


@pytest.mark.parametrize("where", ["run", "worker"])
def test_every_native_pool_has_one_thread_also_when_loaded_during_a_fit(where, tmp_path):
    """OpenMP (the ML family's boosting) and scipy's BLAS loaded by a fit, after the limits
    were set: one thread each, and no thread added to the process (n_jobs=1 = one core)."""
    (tmp_path / "t.py").write_text(THREADS)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    r = subprocess.run([sys.executable, str(tmp_path / "t.py"), where], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("]")[0] + "]" == "[1]" and r.stdout.split()[-1] == "0", r.stdout


# ------------------------------------------------------------------ 11. promises kept or refused
@pytest.mark.parametrize("args", [
    ["methods=[oracle,treat-all]", "target_metric=regret"],
    ["methods=[oracle,treat-none,treat-all]"],
    ["methods=[Q-base,oracle]", "target_reference=Q-base"]])
def test_reps_auto_that_can_never_stop_is_refused_up_front(args, tmp_path, capsys):
    code, _, err = cli(capsys, "run", "J=3", "n_j=8", "reps=auto", "target_mcse=0.01",
                       "n_jobs=1", "progress=false", "figures=false", *args,
                       f"out={tmp_path / 'o'}")
    assert code == 2 and "reps=auto" in err and "no rule" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value", ["-5", "-2", "0", "two"])
def test_a_number_of_workers_is_positive_or_minus_one_everywhere(value, drawn_store, tmp_path,
                                                                capsys):
    code, _, err = cli(capsys, "plan", str(drawn_store), "--target", "0.01", "--n-jobs", value)
    assert code == 2 and "--n-jobs" in err
    code, _, err = cli(capsys, "run", *TINY[:3], f"n_jobs={value}", *TINY[4:],
                       f"out={tmp_path / 'o'}")
    assert code == 2 and "n_jobs=" in err and not (tmp_path / "o").exists()


def test_a_mapping_the_preset_has_empty_is_given_whole_without_a_hydra_dump(tmp_path, capsys):
    """`design.rules={...}` where the preset's rules are {} (Hydra alone stops with 'Key ... is
    not in struct' and a dump): set as given, its point labelled, and a bad column in it named
    in one line."""
    out = tmp_path / "r"
    code, _, err = cli(capsys, "run", "design.rules={moderators:[X1,X2]}", *THREE, f"out={out}")
    (label, point), = stored(out)["points"].items()
    assert code == 0 and point["designs"]["design1"]["rules"] == {"moderators": ["X1", "X2"]}
    assert label == "design.rules={moderators:[X1,X2]}"
    code, _, err = cli(capsys, "run", "design.rules={moderators:[X9]}", *THREE,
                       f"out={tmp_path / 'x'}")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "X9" in err
    assert "design.rules.moderators" in err                   # named where the user set it


def test_plan_says_a_short_remainder_in_seconds_not_zero_minutes(drawn_store, capsys):
    """A few seconds of work read 'about 0.0 minutes' (found walking README); under a minute the
    total is given in seconds, the per-cell table keeps its minutes."""
    import re
    code, out, _ = cli(capsys, "plan", str(drawn_store), "--target", "0.05", "--n-jobs", "1")
    assert code == 0
    last = out.strip().splitlines()[-1]
    assert re.search(r"more replicates, about \d+ s; run them", last), last
    assert "0.0 minutes" not in out
