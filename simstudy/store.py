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
nothing. A replicate counts as done when its metrics rows exist; congruence chunks are written
before metrics chunks and duplicates are dropped on read, so an interrupted run resumes
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

import pandas as pd
import yaml

from .designs import ConfigError
from .metrics import DIAGNOSTICS, METRICS

KEY = ["point", "design", "J", "n_j", "replicate"]
METRIC_COLUMNS = KEY + ["method", *METRICS, "seconds", "status", "error", *DIAGNOSTICS]
CONGRUENCE_COLUMNS = KEY + ["method_a", "method_b", "agreement"]
TABLES = {"metrics": (METRIC_COLUMNS, KEY + ["method"]),
          "congruence": (CONGRUENCE_COLUMNS, KEY + ["method_a", "method_b"])}


def _atomic_write_bytes(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet(df: pd.DataFrame, path: Path) -> None:
    _atomic_write_bytes(Path(path), lambda tmp: df.to_parquet(tmp, index=False))


def write_yaml(obj: Any, path: Path) -> None:
    def w(tmp):
        with open(tmp, "w") as fh:
            yaml.safe_dump(obj, fh, sort_keys=False)
    _atomic_write_bytes(Path(path), w)


def _typed(df: pd.DataFrame, table: str) -> pd.DataFrame:
    cols, _ = TABLES[table]
    # a plugin metric's column (register_metric) is kept after the built-in ones
    df = df.reindex(columns=cols + [c for c in df.columns if c not in cols])
    df["point"] = df["point"].fillna("")              # stores written before sweep points
    for c in ("J", "n_j", "replicate"):
        df[c] = df[c].astype("int64")
    for c in ("point", "design", "method", "method_a", "method_b", "status"):
        if c in df:
            df[c] = df[c].astype("string")
    for c in ("error", "warning"):
        if c in df:
            df[c] = df[c].astype("string")
    return df


class StoreDamaged(ConfigError):
    """Files of the store cannot be read (truncated by a crash or a full disk)."""

    def __init__(self, out: Path, files: list[Path]):
        self.files = files
        names = ", ".join(str(f.relative_to(out)) for f in files[:5])
        super().__init__(f"{out}: {len(files)} unreadable file(s) ({names}); `simstudy repair "
                         f"{out}` moves them to {out / 'quarantine'} and the next run recomputes "
                         f"their replicates")


def table_files(out: str | Path, table: str) -> list[Path]:
    out = Path(out)
    files = [out / f"{table}.parquet"] if (out / f"{table}.parquet").exists() else []
    if (out / "parts").is_dir():
        files += sorted((out / "parts").glob(f"{table}-*.parquet"))
    return files


def unreadable(out: str | Path) -> list[Path]:
    """The store's Parquet files that cannot be read."""
    bad = []
    for table in TABLES:
        for f in table_files(out, table):
            try:
                pd.read_parquet(f, columns=["replicate"])
            except Exception:                                    # noqa: BLE001
                bad.append(f)
    return bad


def read_table(out: str | Path, table: str) -> pd.DataFrame:
    """The merged table (main file + unmerged parts), duplicates dropped, sorted by key."""
    out = Path(out)
    cols, key = TABLES[table]
    frames, bad = [], []
    for f in table_files(out, table):
        try:
            frames.append(pd.read_parquet(f))
        except FileNotFoundError:             # merged and removed by a concurrent consolidate
            continue
        except Exception:                                        # noqa: BLE001
            bad.append(f)
    if bad:
        raise StoreDamaged(out, bad)
    if not frames:
        return _typed(pd.DataFrame(columns=cols), table)
    df = _typed(pd.concat(frames, ignore_index=True), table)
    df = df.drop_duplicates(subset=key, keep="first")
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def read_metrics(out) -> pd.DataFrame:
    return read_table(out, "metrics")


def read_congruence(out) -> pd.DataFrame:
    return read_table(out, "congruence")


def read_config(out) -> dict:
    path = Path(out) / "config.yaml"
    if not path.exists():
        if (Path(out) / "metrics.parquet").exists() or any(Path(out).glob("parts/metrics-*")):
            raise ConfigError(f"{out} holds results but no config.yaml (deleted?); restore it "
                              f"from a copy, or re-run the study's command with overwrite=true")
        raise FileNotFoundError(f"{out} holds no study (no config.yaml); run `simstudy run out={out}`")
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
    return cfg


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


def _with_defaults(params: dict) -> dict:
    """A stored design's parameters with the family and the parameters added since it was
    stored at their defaults (stores written before the design registry resume unchanged)."""
    from .designs import design_defaults
    family = params.get("family", "multisite")
    defaults = {k: _plain_value(v) for k, v in design_defaults(family).items()}
    return {"family": family, **defaults, **params}


def _plain_value(v):
    return dict(v) if isinstance(v, dict) else list(v) if isinstance(v, tuple) else v


class Store:
    """A study directory. Use as a context manager: it holds an exclusive lock while open."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._lock = None

    # -------------------------------------------------------------- open / identity
    def __enter__(self) -> "Store":
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "parts").mkdir(exist_ok=True)
        return self

    def __exit__(self, *exc) -> None:
        pass

    @contextlib.contextmanager
    def locked(self, timeout: float = 600.0):
        """Exclusive lock for the short read-modify-write steps (config.yaml, merging parts)."""
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
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def prepare(self, study: dict, designs: dict[str, dict], run_config: dict,
                overwrite: bool = False, point: dict | None = None,
                planned: list[dict] | None = None, keys: dict | None = None) -> None:
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
            old = stored["points"].get(label)
            if old is not None:
                problems = _diff(old.get("study", {}), study)
                for name, params in designs.items():
                    if name in old.get("designs", {}):
                        problems += [f"design {name}: {p}" for p in
                                     _diff(_with_defaults(old["designs"][name]), params)]
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
            stored["points"][label] = {"keys": keys, "study": study, "designs": designs}
            stored["planned"] = _merge_planned(stored["planned"], planned or [])
            stored["last_run"] = run_config
            write_yaml(stored, path)
        self.consolidate()

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
                                 for p in _diff(_with_defaults(old["designs"][name]),
                                                _with_defaults(pt["designs"][name]))]
            if problems:
                raise ConfigError(f"cannot merge {src} into {self.out}: a different study\n  - "
                                  + "\n  - ".join(problems))
            for label, pt in src_cfg["points"].items():
                old = stored["points"].get(label)
                designs = {**(old or {}).get("designs", {}), **pt["designs"]}
                stored["points"][label] = {**pt, "designs": designs}
            stored["planned"] = _merge_planned(stored["planned"], src_cfg["planned"])
            have = self.done()
            m = read_metrics(src)
            c = read_congruence(src)
            reps = set(map(tuple, m[KEY].drop_duplicates().itertuples(index=False, name=None)))
            new = reps - have
            keep = pd.Series([k in new for k in m[KEY].itertuples(index=False, name=None)],
                             dtype=bool, index=m.index)
            keepc = pd.Series([k in new for k in c[KEY].itertuples(index=False, name=None)],
                              dtype=bool, index=c.index)
            self.append(m[keep], c[keepc])
            write_yaml(stored, path)
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
            write_parquet(df[keep], self.out / f"{table}.parquet")
            for f in files:                 # only the parts read: a concurrent job's new part stays
                f.unlink()
        return dropped

    def drop_failed(self, label: str) -> int:
        """Delete every replicate of sweep point `label` in which a method failed, so the run
        computes it again (`retry_errors=true`). Returns the number of replicates deleted."""
        self.consolidate()
        with self.locked():
            m = read_metrics(self.out)
            bad = m[(m["point"] == label) & (m["status"] != "ok")][KEY].drop_duplicates()
            keys = set(map(tuple, bad.itertuples(index=False, name=None)))
            if keys:
                self._drop(lambda df: pd.Series([k in keys for k in df[KEY].itertuples(
                    index=False, name=None)], index=df.index, dtype=bool))
        return len(keys)

    def repair(self) -> list[Path]:
        """Move unreadable Parquet files to out/quarantine/ (their replicates count as not done,
        so the next run recomputes them, identically: seeds do not depend on anything else)."""
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
        """(point, design, J, n_j, replicate) of every finished replicate."""
        m = read_metrics(self.out)
        return set(map(tuple, m[KEY].drop_duplicates().itertuples(index=False, name=None)))

    def append(self, metrics: pd.DataFrame, congruence: pd.DataFrame) -> None:
        """Write one chunk: congruence first, metrics (the completion marker) last."""
        stamp = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        parts = self.out / "parts"
        if len(congruence):
            write_parquet(_typed(congruence, "congruence"), parts / f"congruence-{stamp}.parquet")
        if len(metrics):
            write_parquet(_typed(metrics, "metrics"), parts / f"metrics-{stamp}.parquet")

    def consolidate(self) -> None:
        """Merge parts into the main tables (atomic), then delete the merged parts."""
        parts = self.out / "parts"
        with self.locked():
            for tmp in self.out.rglob(".*.tmp"):      # leftovers of a killed writer: the main
                with contextlib.suppress(OSError):     # files are written under this lock only
                    if tmp.parent == self.out or time.time() - tmp.stat().st_mtime > 600:
                        tmp.unlink()
            for table in TABLES:
                files = sorted(parts.glob(f"{table}-*.parquet"))
                if not files:
                    continue
                write_parquet(read_table(self.out, table), self.out / f"{table}.parquet")
                for f in files:
                    f.unlink()
