"""The study store: tidy Parquet tables in an output directory, written atomically.

    out/config.yaml          the study's identity (seed, methods, options, each design's
                             parameters) and the last run's resolved config
    out/metrics.parquet      design, J, n_j, replicate, method, accuracy ... status, error
    out/congruence.parquet   design, J, n_j, replicate, method_a, method_b, agreement
    out/parts/*.parquet      chunks streamed during a run, merged at its end

Every file is written to a temporary name and renamed, so a reader (or a run killed with
SIGKILL) sees whole chunks or nothing. A replicate counts as done when its metrics rows
exist; congruence chunks are written before metrics chunks and duplicates are dropped on
read, so an interrupted run resumes without losing or duplicating anything.
"""
from __future__ import annotations

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
from .metrics import METRICS

KEY = ["design", "J", "n_j", "replicate"]
METRIC_COLUMNS = KEY + ["method", *METRICS, "seconds", "status", "error"]
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
    df = df.reindex(columns=cols)
    for c in ("J", "n_j", "replicate"):
        df[c] = df[c].astype("int64")
    for c in ("design", "method", "method_a", "method_b", "status"):
        if c in df:
            df[c] = df[c].astype("string")
    if "error" in df:
        df["error"] = df["error"].astype("string")
    return df


def read_table(out: str | Path, table: str) -> pd.DataFrame:
    """The merged table (main file + unmerged parts), duplicates dropped, sorted by key."""
    out = Path(out)
    cols, key = TABLES[table]
    frames = []
    main = out / f"{table}.parquet"
    if main.exists():
        frames.append(pd.read_parquet(main))
    parts = out / "parts"
    if parts.is_dir():
        frames += [pd.read_parquet(p) for p in sorted(parts.glob(f"{table}-*.parquet"))]
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
        raise FileNotFoundError(f"{out} holds no study (no config.yaml); run `simstudy run out={out}`")
    with open(path) as fh:
        return yaml.safe_load(fh)


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: stored {a!r}, requested {b!r}"]


class Store:
    """A study directory. Use as a context manager: it holds an exclusive lock while open."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self._lock = None

    # -------------------------------------------------------------- open / identity
    def __enter__(self) -> "Store":
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "parts").mkdir(exist_ok=True)
        self._lock = open(self.out / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ConfigError(f"out={self.out} is being written by another simstudy run; wait for it "
                              f"or choose another out directory") from None
        for tmp in self.out.rglob(".*.tmp"):          # leftovers of a killed writer
            tmp.unlink()
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def prepare(self, study: dict, designs: dict[str, dict], run_config: dict,
                overwrite: bool = False) -> None:
        """Check the stored study identity against this run's; refuse a different study.

        `study` (seed, methods, options) must match exactly; each design name must keep its
        parameters. New designs and new (J, n_j, reps) extend the store."""
        path = self.out / "config.yaml"
        if path.exists() and overwrite:
            self.clear()
        stored = read_config(self.out) if path.exists() else None
        if stored is not None:
            problems = _diff(stored.get("study", {}), study)
            for name, params in designs.items():
                if name in stored.get("designs", {}):
                    problems += [f"design {name}: {p}" for p in
                                 _diff(stored["designs"][name], params)]
            if problems:
                raise ConfigError(
                    f"out={self.out} holds a study with a different config:\n  - "
                    + "\n  - ".join(problems)
                    + "\nUse another `out=...`, give a changed design a new `design.name=...`, "
                      "or pass `overwrite=true` to delete the stored results.")
            all_designs = {**stored.get("designs", {}), **designs}
        else:
            all_designs = dict(designs)
        write_yaml({"study": study, "designs": all_designs, "last_run": run_config}, path)
        self.consolidate()

    def clear(self) -> None:
        for name in ("metrics.parquet", "congruence.parquet", "config.yaml"):
            (self.out / name).unlink(missing_ok=True)
        shutil.rmtree(self.out / "parts", ignore_errors=True)
        (self.out / "parts").mkdir()

    # -------------------------------------------------------------- rows
    def done(self) -> set[tuple]:
        """(design, J, n_j, replicate) of every finished replicate."""
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
        for table in TABLES:
            files = sorted(parts.glob(f"{table}-*.parquet"))
            if not files:
                continue
            write_parquet(read_table(self.out, table), self.out / f"{table}.parquet")
            for f in files:
                f.unlink()
