"""The study store: tidy Parquet tables in an output directory, written atomically.

    out/config.yaml          per sweep point: its swept keys and the study's identity (seed,
                             methods, options, each design's parameters); the planned cells;
                             the last run's resolved config
    out/metrics.parquet      point, design, J, n_j, replicate, method, accuracy ... status, error
    out/congruence.parquet   point, design, J, n_j, replicate, method_a, method_b, agreement
    out/parts/*.parquet      chunks streamed during a run, merged at its end

A sweep point is one setting of the swept keys (Hydra multirun over e.g. design.beta1 or a
method option): label "key=value,..." ("" for a plain study). Every file is written to a
temporary name and renamed, so a reader (or a run killed with SIGKILL) sees whole chunks or
nothing. A replicate counts as done when its metrics rows and the congruence rows they owe exist
(`complete`); congruence chunks are written before metrics chunks and duplicates are dropped on read, so an interrupted run resumes
without losing or duplicating anything, several runs (SLURM jobs of one sweep) may write one
store at once, and merging two stores of the same study never duplicates a replicate. The
lock is held only while config.yaml is checked/updated and while parts are merged.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from .errors import ConfigError, NoStudy, StoreDamaged, Stopped
from .metrics import DECISION_METRICS, DIAGNOSTICS, METRICS

KEY = ["point", "design", "J", "n_j", "replicate"]
METRIC_COLUMNS = KEY + ["method", *METRICS, "seconds", "status", "error", *DIAGNOSTICS]
CONGRUENCE_COLUMNS = KEY + ["method_a", "method_b", "agreement"]
# the columns a file must have to be this table's: a store written before a metric existed
# (the targeting metrics of issue 41) is read with that column empty, never quarantined
REQUIRED = {"metrics": KEY + ["method", *DECISION_METRICS, "seconds", "status", "error"],
            "congruence": CONGRUENCE_COLUMNS}
TABLES = {"metrics": (METRIC_COLUMNS, KEY + ["method"]),
          "congruence": (CONGRUENCE_COLUMNS, KEY + ["method_a", "method_b"])}


def _atomic_write_bytes(path: Path, write) -> None:
    """`write(tmp)` then rename to `path`: a reader sees the whole file or the old one. An OS
    error (a full disk, a quota, a read-only file system) names `path` (issue 45, class 7:
    every writer of the store, tables, figures and pages goes through here)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if exc.errno is not None and getattr(exc, "filename", None) in (None, str(tmp), tmp):
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                tmp.unlink()


def write_bytes(path, data: bytes) -> None:
    """A whole file, atomically (`_atomic_write_bytes`)."""
    _atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def write_text(path, text: str) -> None:
    """A text file (UTF-8), atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_csv(df: pd.DataFrame, path, **kw) -> None:
    """A table as CSV (pandas' to_csv options), atomically."""
    write_text(path, df.to_csv(**kw))


def write_parquet(df: pd.DataFrame, path: Path, tokens: dict | None = None) -> None:
    """Write atomically; `tokens` ({point: study token}) go into the file's metadata for the
    points among its rows (`_read_checked` compares them with the config's)."""
    import json

    import pyarrow as pa

    def write(tmp):
        table = pa.Table.from_pandas(df, preserve_index=False)
        if tokens and "point" in df:
            mine = {p: tokens[p] for p in pd.unique(df["point"].astype(str))
                    if tokens.get(p)}
            if mine:
                table = table.replace_schema_metadata(
                    {**(table.schema.metadata or {}), TOKEN_KEY: json.dumps(mine).encode()})
        pq.write_table(table, tmp)
    _atomic_write_bytes(Path(path), write)


class _ReadableDumper(yaml.SafeDumper):
    """safe_dump, but a short one-line key is always written plainly: the sweep point labelled
    '' reads `'': ...`, not YAML's complex-key form `? ''`."""

    def check_simple_key(self):
        if super().check_simple_key():
            return True
        ev = self.event
        return isinstance(ev, yaml.ScalarEvent) and len(ev.value) < 1000 and "\n" not in ev.value


def write_yaml(obj: Any, path: Path) -> None:
    def w(tmp):
        with open(tmp, "w") as fh:
            yaml.dump(obj, fh, Dumper=_ReadableDumper, sort_keys=False)
    _atomic_write_bytes(Path(path), w)


def _typed(df: pd.DataFrame, table: str) -> pd.DataFrame:
    cols, _ = TABLES[table]
    # a plugin metric's column (register_metric) is kept after the built-in ones
    df = df.reindex(columns=cols + [c for c in df.columns if c not in cols])
    df["point"] = df["point"].astype(object).fillna("")    # stores written before sweep points
    for c in ("J", "n_j", "replicate"):
        df[c] = df[c].astype("int64")
    for c in ("point", "design", "method", "method_a", "method_b", "status"):
        if c in df:
            df[c] = df[c].astype("string")
    for c in ("error", "warning"):
        if c in df:
            df[c] = df[c].astype("string")
    return df


def table_files(out: str | Path, table: str) -> list[Path]:
    """The table's files, oldest first: the main file, then the parts in the order written."""
    out = Path(out)
    files = [out / f"{table}.parquet"] if (out / f"{table}.parquet").exists() else []
    if (out / "parts").is_dir():
        files += sorted((out / "parts").glob(f"{table}-*.parquet"))
    return files


TOKEN_KEY = b"simstudy.points"      # Parquet metadata: {point label: study token} of the rows


def point_tokens(out: str | Path) -> dict[str, str | None] | None:
    """{point label: token} of the store's config (None: no config.yaml, nothing to check). A
    token is drawn when a point's study is first stored (or overwritten); every file written
    for the point carries it, so a file of another study is recognised (issue 29, class 6)."""
    if not (Path(out) / "config.yaml").exists():
        return None
    try:
        cfg = read_config(out)
    except ConfigError:
        return None
    return {label: p.get("token") for label, p in cfg["points"].items()}


def _read_checked(f: Path, table: str, tokens: dict | None, columns=None) -> pd.DataFrame:
    """One file of the table (`columns` only, if given); ValueError if it is not this store's:
    another table's columns, or rows of a sweep point whose study token differs from the
    config's (a file of another study, copied in: issue 29, class 6)."""
    import json
    schema = pq.read_schema(f)
    missing = [c for c in REQUIRED[table] if c not in schema.names]
    if missing:
        raise ValueError(f"not a {table} table (no column(s) {missing[:4]})")
    df = pd.read_parquet(f, columns=columns)
    if tokens is not None:
        meta = schema.metadata or {}
        written = json.loads(meta[TOKEN_KEY]) if TOKEN_KEY in meta else {}
        points = df["point"] if "point" in df else pd.read_parquet(f, columns=["point"])["point"]
        for label in pd.unique(points.fillna("").astype(str)):
            if label not in tokens or (tokens[label] is not None
                                       and written.get(label) != tokens[label]):
                raise ValueError(f"rows of another study (sweep point {label!r})")
    return df


def unreadable(out: str | Path) -> list[Path]:
    """The store's Parquet files that cannot be read, or are not this store's: another
    table's columns, or rows of another study (its token differs)."""
    bad = []
    tokens = point_tokens(out)
    for table in TABLES:
        for f in table_files(out, table):
            try:
                _read_checked(f, table, tokens, columns=["point", "replicate"])
            except FileNotFoundError:
                continue
            except Exception:                                    # noqa: BLE001
                bad.append(f)
    return bad


def read_table(out: str | Path, table: str) -> pd.DataFrame:
    """The merged table (main file + unmerged parts), sorted by key. A replicate present in
    several files (recomputed by retry_errors, or by two jobs at once) is taken whole from the
    newest file that has it, so a recomputation replaces the old rows only once its own rows
    are stored."""
    out = Path(out)
    cols, key = TABLES[table]
    frames, bad = [], []
    tokens = point_tokens(out)
    for i, f in enumerate(table_files(out, table)):
        try:
            frames.append(_read_checked(f, table, tokens).assign(_file=i))
        except FileNotFoundError:             # merged and removed by a concurrent consolidate
            continue
        except Exception:                                        # noqa: BLE001
            bad.append(f)
    if bad:
        raise StoreDamaged(out, bad)
    if not frames:
        return _typed(pd.DataFrame(columns=cols), table)
    df = _typed(pd.concat(frames, ignore_index=True), table)
    if len(frames) > 1:
        newest = df.groupby(KEY, observed=True, sort=False)["_file"].transform("max")
        df = df[df["_file"].to_numpy() == newest.to_numpy()]
    df = df.drop(columns="_file").drop_duplicates(subset=key, keep="last")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def read_metrics(out) -> pd.DataFrame:
    return read_table(out, "metrics")


def read_congruence(out) -> pd.DataFrame:
    return read_table(out, "congruence")


def _is_study(path: Path) -> bool:
    return (path / "config.yaml").is_file() or (path / "metrics.parquet").is_file()


def _did_you_mean(path: Path) -> str:
    """' (did you mean results/default?)' for a mistyped study folder: the closest sibling
    that is a study, or the study that holds `path`."""
    import difflib
    for up in [path, *path.parents]:
        if up.exists() and up != path and _is_study(up):
            return f" (it is inside the study {up}: give {up})"
    parent = path.parent if str(path.parent) else Path(".")
    if parent.is_dir():
        names = [p.name for p in parent.iterdir() if p.is_dir() and _is_study(p)]
        close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
        if close:
            return f" (did you mean {parent / close[0]}?)"
    return ""


def _studies_near(path: Path) -> str:
    """For a folder that is not a study: the study that holds it, or the studies below it."""
    for up in path.resolve().parents:
        if _is_study(up):
            return f"; it is inside the study {up}: give that folder"
    found = []
    for depth in ("*", "*/*", "*/*/*"):
        found += [p for p in sorted(path.glob(depth)) if p.is_dir() and _is_study(p)]
        if len(found) >= 12:
            break
    if found:
        return ("; the studies below it: " + ", ".join(str(p) for p in found[:12])
                + (", ..." if len(found) > 12 else "") + f" (e.g. `simstudy report {found[0]}`)")
    return "; give the `out` of a `simstudy run` (none is below it)"


def complete(metrics: pd.DataFrame, congruence: pd.DataFrame,
             methods: dict[str, list] | None = None) -> set[tuple]:
    """KEYs of the replicates whose every table is stored: a metrics row of every method of its
    sweep point's study (`methods`: {point: methods}, from config.yaml; not checked when None),
    and the congruence of every pair of its methods whose fit succeeded (k ok methods owe
    k (k - 1) / 2 rows). A replicate whose congruence file was lost (truncated, quarantined by
    `repair`) or that lacks a method's rows is not done, so the next run recomputes it
    (issue 45, class 1)."""
    if not len(metrics):
        return set()
    ok = (metrics["status"] == "ok").to_numpy(bool)
    groups = metrics[KEY + ["method"]].assign(_ok=ok).groupby(KEY, observed=True, sort=False)
    owed = groups["_ok"].sum()
    owed = owed * (owed - 1) // 2
    have = congruence.groupby(KEY, observed=True, sort=False).size() if len(congruence) \
        else pd.Series(dtype="int64")
    have = have.reindex(owed.index, fill_value=0)
    whole = np.array((have >= owed).to_numpy(), dtype=bool)
    if methods:
        count = groups["method"].nunique().reindex(owed.index)
        need = np.array([len(set(methods.get(k[0], ()))) for k in owed.index])
        whole &= count.to_numpy() >= need
    return set(owed.index[whole].tolist())


def point_methods(out) -> dict[str, list] | None:
    """{point: its study's methods} of a store's config (None without one)."""
    if not (Path(out) / "config.yaml").exists():
        return None
    return {label: list(p["study"].get("methods", []))
            for label, p in read_config(out)["points"].items()}


def read_config(out) -> dict:
    path = Path(out) / "config.yaml"
    if not path.exists():
        if (Path(out) / "metrics.parquet").exists() or any(Path(out).glob("parts/metrics-*")):
            raise ConfigError(f"{out} holds results but no config.yaml (deleted?); restore it "
                              f"from a copy, or re-run the study's command with overwrite=true")
        if not Path(out).exists():
            raise NoStudy(f"{out}: no such directory{_did_you_mean(Path(out))}; give the `out` "
                          f"of a `simstudy run`")
        if not Path(out).is_dir():
            raise NoStudy(f"{out} is a file, not a study directory; give the `out` of a "
                          f"`simstudy run`{_did_you_mean(Path(out))}")
        raise NoStudy(f"{out} holds no study (no config.yaml){_studies_near(Path(out))}")
    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML ({str(exc).splitlines()[0]}); restore it from "
                          f"a copy, or delete the store's results (overwrite=true)") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path} is not a simstudy config (a {type(cfg).__name__}, not a "
                          f"mapping); restore it, or delete the store's results (overwrite=true)")
    if "points" not in cfg and "study" in cfg:           # a store written before sweep points
        cfg["points"] = {"": {"keys": {}, "study": cfg.pop("study"),
                              "designs": cfg.pop("designs", {})}}
    cfg.setdefault("points", {})
    cfg.setdefault("planned", [])
    _check_config(cfg, path)
    return cfg


def _check_config(cfg: dict, path: Path) -> None:
    """The fields every command reads, typed (a hand-edited config.yaml with `reps: abc` is
    named here, not met as an internal error later)."""
    def bad(what):
        raise ConfigError(f"{path}: {what}; restore config.yaml from a copy (or re-run the "
                          f"study's command into a new out=...)")
    if not isinstance(cfg["points"], dict):
        bad("`points` is not a mapping")
    for label, pt in cfg["points"].items():
        if not isinstance(pt, dict) or not isinstance(pt.get("study"), dict) \
                or not isinstance(pt.get("designs", {}), dict):
            bad(f"point {label!r} has no `study` / `designs` mapping")
        if not isinstance(pt["study"].get("methods", []), list):
            bad(f"point {label!r}: `study.methods` is not a list")
    if not isinstance(cfg["planned"], list):
        bad("`planned` is not a list")
    for i, c in enumerate(cfg["planned"]):
        if not isinstance(c, dict) or not {"point", "design", "J", "n_j", "reps"} <= set(c):
            bad(f"planned[{i}] lacks point/design/J/n_j/reps")
        for k in ("J", "n_j", "reps"):
            if isinstance(c[k], bool) or not isinstance(c[k], int) or c[k] < 0:
                bad(f"planned[{i}].{k}={c[k]!r} is not a whole number")


def _writer() -> dict:
    """Who drew a point's token: the process and machine of the run that first stored (or
    overwrote) its study, named when another run finds its point replaced."""
    import socket
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}


class Superseded(Stopped):
    """Another run replaced (overwrite=true) a sweep point this run was writing."""

    def __init__(self, out, label: str, writer: dict | None):
        who = (f" (pid {writer.get('pid')} on {writer.get('host')}, {writer.get('time')})"
               if isinstance(writer, dict) else "")
        where = f"sweep point {label!r}" if label else "the study"
        super().__init__(
            f"out={out}: {where} was replaced by another run{who} with overwrite=true while "
            f"this run was writing it; this run stopped and stored nothing more (its rows "
            f"belong to the replaced study). The store now holds the other run's study: run "
            f"this one into another out=...")


def point_label(keys: dict) -> str:
    """'k1=v1,k2=v2' (sorted keys) for a sweep point; '' for none."""
    return ",".join(f"{k}={keys[k]}" for k in sorted(keys))


def study_methods(cfg: dict) -> list[str]:
    """Every method of a store's points, in their configured order."""
    out: list[str] = []
    for point in cfg.get("points", {}).values():
        out += [m for m in point["study"].get("methods", []) if m not in out]
    return out


def _merge_planned(planned: list[dict], new: list[dict]) -> list[dict]:
    cells = {(c["point"], c["design"], c["J"], c["n_j"]): dict(c) for c in planned}
    for c in new:
        key = (c["point"], c["design"], c["J"], c["n_j"])
        if key in cells:
            cells[key]["reps"] = max(cells[key]["reps"], c["reps"])
        else:
            cells[key] = dict(c)
    return list(cells.values())


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: stored {a!r}, requested {b!r}"]


def _design_diff(stored: dict, params: dict) -> list[str]:
    """Differences of a design's stored parameters from this run's (a data file's hash that a
    store written before hashing lacks is not a difference: it is recorded from now on)."""
    stored = _with_defaults(stored)
    params = {k: v for k, v in params.items()
              if not (k.endswith("_sha256") and k not in stored)}
    return _diff(stored, params)


def _with_defaults(params: dict) -> dict:
    """A stored design's parameters with the family and the parameters added since it was
    stored at their defaults (stores written before the design registry resume unchanged)."""
    from .designs import design_defaults
    family = params.get("family", "multisite")
    defaults = {k: _plain_value(v) for k, v in design_defaults(family).items()}
    return {"family": family, **defaults, **params}


def _plain_value(v):
    return dict(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v


def _problems(old: dict, study: dict, designs: dict) -> list[str]:
    """How this run's study differs from a stored point's (seed, methods, options, and the
    parameters of each design both have)."""
    problems = _diff(old.get("study", {}), study)
    for name, params in designs.items():
        if name in old.get("designs", {}):
            problems += [f"design {name}: {p}" for p in _design_diff(old["designs"][name], params)]
    return problems


def store_action(out, study: dict, designs: dict, point: dict | None, planned: list[dict],
                 overwrite: bool = False) -> tuple[str, list[str]]:
    """What a run would do to the store at `out`, read-only: ("create" | "resume" | "extend" |
    "overwrite" | "refuse", lines). Resume: only missing replicates of cells it already plans;
    extend: new cells, designs, sweep points or replicates (each named); refuse: the stored
    study of this point differs (the differences); overwrite: that, with overwrite=true."""
    out = Path(out)
    if not (out / "config.yaml").exists():
        return "create", []
    cfg = read_config(out)
    label = point_label(dict(point or {}))
    old = cfg["points"].get(label)
    if old is not None:
        problems = _problems(old, study, designs)
        if problems:
            return ("overwrite" if overwrite else "refuse"), problems
    return _growth(cfg, label, planned)


def _growth(cfg: dict, label: str, planned: list[dict]) -> tuple[str, list[str]]:
    """("resume", []) or ("extend", what is added) for `planned` against a stored config."""
    lines = []
    if label not in cfg["points"]:
        lines.append(f"+ sweep point {label}" if label else "+ the plain study (no sweep point)")
    cells = {(c["point"], c["design"], c["J"], c["n_j"]): c["reps"] for c in cfg["planned"]}
    new = [c for c in planned if (c["point"], c["design"], c["J"], c["n_j"]) not in cells]
    if new:
        lines.append(f"+{len(new)} cell{'s' * (len(new) > 1)} "
                     + ", ".join(f"({c['design']}, J={c['J']}, n_j={c['n_j']})" for c in new[:6])
                     + (", ..." if len(new) > 6 else ""))
    more = [(c, cells[(c["point"], c["design"], c["J"], c["n_j"])]) for c in planned
            if cells.get((c["point"], c["design"], c["J"], c["n_j"]), c["reps"]) < c["reps"]]
    if more:
        lines.append(f"+replicates in {len(more)} cell{'s' * (len(more) > 1)} ("
                     + ", ".join(f"({c['design']}, J={c['J']}, n_j={c['n_j']}): {was} -> "
                                 f"{c['reps']}" for c, was in more[:4])
                     + (", ..." if len(more) > 4 else "") + ")")
    return ("extend" if lines else "resume"), lines


class Store:
    """A study directory. Use as a context manager (it checks the layout and makes the folders);
    the lock is taken only for short read-modify-write steps (`locked`)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._lock = 0                        # depth of `locked` held by this Store
        self._tokens: dict[str, str] = {}     # {point: token} of the points this run writes
        self.appended = 0                     # metric rows this Store has written

    # -------------------------------------------------------------- open / identity
    def __enter__(self) -> "Store":
        self.check_layout()
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "parts").mkdir(exist_ok=True)
        return self

    def check_layout(self) -> None:
        """The store's folders must be folders (a file named `parts` would fail every write)."""
        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"{self.out} is a file; give a directory")
        for name in ("parts", "quarantine", "figures"):
            p = self.out / name
            if p.exists() and not p.is_dir():
                raise ConfigError(f"{p} is a file where the store keeps its {name}/ folder; "
                                  f"move it away, then re-run")

    def __exit__(self, *exc) -> None:
        pass

    @contextlib.contextmanager
    def locked(self, timeout: float = 600.0):
        """Exclusive lock for the short read-modify-write steps (config.yaml, merging parts);
        re-entrant within this Store (a second flock of the file would wait for the first)."""
        if self._lock:
            self._lock += 1
            try:
                yield
            finally:
                self._lock -= 1
            return
        self.out.mkdir(parents=True, exist_ok=True)
        fh = open(self.out / ".lock", "w")
        t0 = time.monotonic()
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - t0 > timeout:
                    fh.close()
                    raise ConfigError(f"out={self.out} stayed locked for {timeout:.0f} s; is a "
                                      f"simstudy process stuck? remove {self.out / '.lock'} "
                                      f"if not") from None
                time.sleep(0.05)
        self._lock = 1
        try:
            yield
        finally:
            self._lock = 0
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def prepare(self, study: dict, designs: dict[str, dict], run_config: dict,
                overwrite: bool = False, point: dict | None = None,
                planned: list[dict] | None = None, keys: dict | None = None,
                methods: dict | None = None) -> None:
        """Check the stored identity of this sweep point against this run's; refuse a different
        study. Within a point, `study` (seed, methods, options) must match exactly and each
        design name must keep its parameters; new designs, new points and new (J, n_j, reps)
        extend the store."""
        point = dict(point or {})
        label = point_label(point)
        self.consolidate()
        with self.locked():
            path = self.out / "config.yaml"
            if not path.exists() and self._has_rows():
                if not overwrite:
                    raise ConfigError(
                        f"out={self.out} holds results but no config.yaml (deleted?), so their "
                        f"study cannot be checked against this one: restore config.yaml, use "
                        f"another out=..., or pass overwrite=true to delete those results")
                self.clear()
            stored = read_config(self.out) if path.exists() else {"points": {}, "planned": []}
            self.growth = _growth(stored, label, planned or []) if path.exists() else \
                ("create", [])
            old = stored["points"].get(label)
            if old is not None:
                problems = _problems(old, study, designs)
                if problems and overwrite:
                    # overwrite deletes THIS point's rows only (a sweep job never deletes another
                    # point's), and only when its stored study differs
                    self._drop(lambda df: df["point"] == label)
                    old, problems = None, []
                    stored["points"].pop(label, None)
                    stored["planned"] = [c for c in stored["planned"] if c["point"] != label]
                if problems:
                    where = f" (sweep point {label})" if label else ""
                    raise ConfigError(
                        f"out={self.out} holds a study with a different config{where}:\n  - "
                        + "\n  - ".join(problems)
                        + "\nUse another `out=...`, give a changed design a new `design.name=...`, "
                          "or pass `overwrite=true` to delete the stored results.")
            if old is not None:
                designs = {**old.get("designs", {}), **designs}
            # keys: every swept key of the runs that wrote this point (a key at its default
            # value is not in the label but is a column of the report)
            keys = {**(old or {}).get("keys", {}), **point, **(keys or {})}
            token = (old or {}).get("token")
            writer = (old or {}).get("writer") or _writer()
            if token is None:            # a new point, or one stored before tokens existed:
                token = uuid.uuid4().hex  # its rows get the token before the config names it
                writer = _writer()
                if old is not None:
                    self._rewrite({**{k: p.get("token") for k, p in stored["points"].items()},
                                   label: token})
            stored["points"][label] = {"keys": keys, "study": study, "designs": designs,
                                       "token": token, "writer": writer}
            self._tokens[label] = token
            stored["planned"] = _merge_planned(stored["planned"], planned or [])
            # what the report needs of the registry (family per method), so it reads the store only
            stored["methods"] = {**(stored.get("methods") or {}), **(methods or {})}
            stored["last_run"] = run_config
            write_yaml(stored, path)
        self.consolidate()

    def conflicts(self, study: dict, designs: dict, point: dict | None = None) -> list[str]:
        """How this run's study differs from the stored one of its sweep point ([] if none is
        stored): what `overwrite=true` would delete."""
        if not (self.out / "config.yaml").exists():
            return []
        old = read_config(self.out)["points"].get(point_label(dict(point or {})))
        return [] if old is None else _problems(old, study, designs)

    def config_bytes(self) -> bytes | None:
        path = self.out / "config.yaml"
        return path.read_bytes() if path.exists() else None

    def record_provenance(self, facts: dict[str, str]) -> None:
        """config.yaml's `provenance`: what the last run computed with (simstudy.provenance)
        and its wall / CPU time."""
        with self.locked():
            path = self.out / "config.yaml"
            stored = yaml.safe_load(path.read_text()) or {}
            stored["provenance"] = {str(k): str(v) for k, v in facts.items()}
            write_yaml(stored, path)

    def restore_config(self, before: bytes | None, after: bytes | None) -> None:
        """Undo a `prepare` whose run stored nothing (its probe failed), unless another run has
        changed config.yaml since: a corrected command is then not refused as another study."""
        with self.locked():
            if self.config_bytes() != after:
                return
            path = self.out / "config.yaml"
            if before is None:
                if not self._has_rows():
                    path.unlink()
            else:
                _atomic_write_bytes(path, lambda tmp: tmp.write_bytes(before))

    def merge_from(self, src: str | Path) -> tuple[int, int]:
        """Add another store of the same study (e.g. the gaps run on another machine): its
        points must agree with ours where both have them; replicates already here are kept,
        never duplicated. Returns (replicates added, replicates already present)."""
        src_cfg = read_config(src)
        with self.locked():
            path = self.out / "config.yaml"
            stored = read_config(self.out) if path.exists() else {"points": {}, "planned": []}
            problems = []
            for label, pt in src_cfg["points"].items():
                old = stored["points"].get(label)
                if old is None:
                    continue
                problems += [f"point {label!r}: {p}" for p in _diff(old["study"], pt["study"])]
                for name in set(old["designs"]) & set(pt["designs"]):
                    problems += [f"point {label!r} design {name}: {p}"
                                 for p in _design_diff(old["designs"][name],
                                                       _with_defaults(pt["designs"][name]))]
            if problems:
                raise ConfigError(f"cannot merge {src} into {self.out}: a different study\n  - "
                                  + "\n  - ".join(problems))
            for label, pt in src_cfg["points"].items():
                old = stored["points"].get(label)
                designs = {**(old or {}).get("designs", {}), **pt["designs"]}
                token = (old or {}).get("token") if old is not None else uuid.uuid4().hex
                stored["points"][label] = {**pt, "designs": designs, "token": token}
            stored["planned"] = _merge_planned(stored["planned"], src_cfg["planned"])
            stored["methods"] = {**(src_cfg.get("methods") or {}), **(stored.get("methods") or {})}
            have = self.done()
            m = read_metrics(src)
            c = read_congruence(src)
            reps = set(map(tuple, m[KEY].drop_duplicates().itertuples(index=False, name=None)))
            new = reps - have
            keep = pd.Series([k in new for k in m[KEY].itertuples(index=False, name=None)],
                             dtype=bool, index=m.index)
            keepc = pd.Series([k in new for k in c[KEY].itertuples(index=False, name=None)],
                              dtype=bool, index=c.index)
            write_yaml(stored, path)          # the tokens first: the rows are written under them
            self.append(m[keep], c[keepc])
        self.consolidate()
        return len(new), len(reps) - len(new)

    def _has_rows(self) -> bool:
        return (self.out / "metrics.parquet").exists() or any(
            (self.out / "parts").glob("metrics-*.parquet"))

    def _drop(self, where) -> int:
        """Delete the rows of both tables for which `where(df)` holds (lock held by the caller;
        parts are merged first). Returns the number of metric rows deleted."""
        dropped = 0
        for table in TABLES:
            files = sorted((self.out / "parts").glob(f"{table}-*.parquet"))
            df = read_table(self.out, table)
            keep = ~where(df).to_numpy(bool)
            dropped += int((~keep).sum()) if table == "metrics" else 0
            write_parquet(df[keep], self.out / f"{table}.parquet", point_tokens(self.out))
            for f in files:                 # only the parts read: a concurrent job's new part stays
                f.unlink()
        return dropped

    def failed(self, label: str, cells: set[tuple], ids: range) -> set[tuple]:
        """KEYs of the stored replicates of sweep point `label`, cells (design, J, n_j) and
        replicate ids `ids` in which a method failed (what `retry_errors=true` recomputes; their
        rows stay until the new rows are stored, which then replace them: `read_table`)."""
        m = read_metrics(self.out)
        bad = m[(m["point"] == label) & (m["status"] != "ok")][KEY].drop_duplicates()
        return {k for k in map(tuple, bad.itertuples(index=False, name=None))
                if (k[1], k[2], k[3]) in cells and k[4] in ids}

    def repair(self) -> list[Path]:
        """Move unreadable Parquet files to out/quarantine/ (their replicates count as not done,
        so the next run recomputes them, identically: seeds do not depend on anything else)."""
        self.check_layout()
        with self.locked():
            bad = unreadable(self.out)
            if bad:
                q = self.out / "quarantine"
                q.mkdir(exist_ok=True)
                for f in bad:
                    os.replace(f, q / f"{f.name}.{uuid.uuid4().hex[:6]}")
        return bad

    def record_stops(self, label: str, stops: dict[tuple, tuple[int, str]]) -> None:
        """reps=auto: each cell's final number of replicates and why it stopped, in the plan."""
        with self.locked():
            path = self.out / "config.yaml"
            stored = read_config(self.out)
            token = stored["points"].get(label, {}).get("token")
            if label in self._tokens and token != self._tokens[label]:
                raise Superseded(self.out, label, stored["points"].get(label, {}).get("writer"))
            for c in stored["planned"]:
                key = (c["design"], c["J"], c["n_j"])
                if c["point"] == label and key in stops:
                    c["reps"], c["stopped"] = int(stops[key][0]), stops[key][1]
            write_yaml(stored, path)

    def clear(self) -> None:
        for name in ("metrics.parquet", "congruence.parquet", "config.yaml"):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / "parts", ignore_errors=True)
        (self.out / "parts").mkdir()

    # -------------------------------------------------------------- rows
    def done(self) -> set[tuple]:
        """(point, design, J, n_j, replicate) of every finished replicate: `complete`."""
        return complete(read_metrics(self.out), read_congruence(self.out),
                        point_methods(self.out))

    def append(self, metrics: pd.DataFrame, congruence: pd.DataFrame) -> None:
        """Write one chunk: congruence first, metrics (the completion marker) last. Under the
        lock, and only while every point of the chunk still has the token this run prepared:
        a point that another run replaced meanwhile (overwrite=true) is never given this run's
        rows; this run stops instead (`Superseded`, issue 45, class 2)."""
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        parts = self.out / "parts"
        metrics, congruence = _typed(metrics, "metrics"), _typed(congruence, "congruence")
        with self.locked():
            tokens = point_tokens(self.out)
            points = set(metrics["point"].astype(str)) if len(metrics) else set()
            for label in sorted(points & set(self._tokens)):
                if (tokens or {}).get(label) != self._tokens[label]:
                    raise Superseded(self.out, label, read_config(self.out)["points"]
                                     .get(label, {}).get("writer"))
            if len(congruence):
                write_parquet(congruence, parts / f"congruence-{stamp}.parquet", tokens)
            if len(metrics):
                write_parquet(metrics, parts / f"metrics-{stamp}.parquet", tokens)
                self.appended += len(metrics)

    def consolidate(self) -> None:
        """Merge parts into the main tables (atomic), then delete the merged parts."""
        with self.locked():
            for tmp in self.out.rglob(".*.tmp"):      # leftovers of a killed writer: the main
                with contextlib.suppress(OSError):     # files are written under this lock only
                    if tmp.parent == self.out or time.time() - tmp.stat().st_mtime > 600:
                        tmp.unlink()
            self._rewrite(point_tokens(self.out), only_with_parts=True)

    def _rewrite(self, tokens: dict | None, only_with_parts: bool = False) -> None:
        """Write each table's main file from all its files (under the lock), with `tokens`
        in its metadata, and delete the parts merged."""
        parts = self.out / "parts"
        for table in TABLES:
            files = sorted(parts.glob(f"{table}-*.parquet"))
            if only_with_parts and not files:
                continue
            df = read_table(self.out, table)
            if len(df) or (self.out / f"{table}.parquet").exists():
                write_parquet(df, self.out / f"{table}.parquet", tokens)
            for f in files:
                f.unlink()
