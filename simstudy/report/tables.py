"""Summary tables from a study store: mean, SD and Monte Carlo SE (= SD / sqrt(R)) of each
metric per condition and method, over the replicates whose fit succeeded."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import METRICS
from ..store import read_config, read_metrics

CONDITION = ["design", "J", "n_j"]


def method_order(out) -> list[str] | None:
    try:
        return list(read_config(out)["study"]["methods"])
    except (FileNotFoundError, KeyError, TypeError):
        return None


def summary(metrics: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (design, J, n_j, method): reps, errors, <metric>_mean/_sd/_se."""
    rows = []
    for key, g in metrics.groupby(CONDITION + ["method"], sort=True, observed=True):
        ok = g[g["status"] == "ok"]
        row = dict(zip(CONDITION + ["method"], key))
        row["reps"] = int(len(ok))
        row["errors"] = int(len(g) - len(ok))
        for m in METRICS:
            x = ok[m].to_numpy(float)
            x = x[np.isfinite(x)]
            row[f"{m}_mean"] = x.mean() if x.size else np.nan
            row[f"{m}_sd"] = x.std(ddof=1) if x.size > 1 else np.nan
            row[f"{m}_se"] = row[f"{m}_sd"] / np.sqrt(x.size) if x.size > 1 else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and order:
        rank = {m: i for i, m in enumerate(order)}
        df["_o"] = df["method"].map(lambda m: rank.get(m, len(rank)))
        df = df.sort_values(CONDITION + ["_o"], kind="stable").drop(columns="_o")
    return df.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub Markdown table (no extra dependency)."""
    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body]) + "\n"


def compact(summ: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """mean (MC SE) strings per metric, for printing."""
    out = summ[CONDITION + ["method", "reps", "errors"]].copy()
    for m in metrics:
        out[m] = [f"{a:.3f} ({s:.3f})" if np.isfinite(a) else "NaN"
                  for a, s in zip(summ[f"{m}_mean"], summ[f"{m}_se"].fillna(np.nan))]
    return out


def write_report(out) -> pd.DataFrame:
    out = Path(out)
    read_config(out)                       # a clear error if `out` holds no study
    metrics = read_metrics(out)
    if metrics.empty:
        raise ValueError(f"{out} holds no finished replicates yet")
    summ = summary(metrics, method_order(out))
    summ.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(
        "Mean (Monte Carlo SE) over replicates; `reps` = successful fits, `errors` = failed.\n\n"
        + to_markdown(compact(summ)))
    return summ


def report_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="simstudy report",
                                 description="Summarise a study store (never refits).")
    ap.add_argument("dirs", nargs="+", help="study directories (the `out` of simstudy run)")
    args = ap.parse_args(argv)
    code = 0
    for d in args.dirs:
        try:
            summ = write_report(d)
        except (FileNotFoundError, ValueError) as exc:
            print(f"simstudy report: {exc}", file=sys.stderr)
            code = 2
            continue
        with pd.option_context("display.width", 250, "display.max_columns", 30,
                               "display.max_rows", 500):
            print(f"== {d}: mean (Monte Carlo SE) ==")
            print(compact(summ, ("accuracy", "f1", "spearman", "auc", "regret",
                                 "treated_share")).to_string(index=False))
        print(f"written: {Path(d) / 'summary.csv'}, {Path(d) / 'summary.md'}")
    return code
