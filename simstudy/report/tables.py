"""Report tables from a study store: mean, SD and Monte Carlo SE (= SD / sqrt(R)) of each
metric per condition and method over the replicates whose fit succeeded, failure counts, and
the congruence matrix per condition. Reads the store only (partial stores too)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import METRICS
from ..store import read_config, read_congruence, read_metrics

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


def failures(metrics: pd.DataFrame) -> pd.DataFrame:
    """Failed fits per condition and method with the most frequent message."""
    bad = metrics[metrics["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=CONDITION + ["method", "failures", "message"])
    return (bad.groupby(CONDITION + ["method"], observed=True)["error"]
            .agg(failures="size", message=lambda e: e.value_counts().index[0])
            .reset_index())


def write_report(out, figures: bool = False, designs=None) -> pd.DataFrame:
    """Tables (and with `figures`, the paper's figures) from the store in `out`; figures only
    for `designs` when given (a sweep job draws its own design)."""
    out = Path(out)
    read_config(out)                       # a clear error if `out` holds no study
    metrics = read_metrics(out)
    if metrics.empty:
        raise ValueError(f"{out} holds no finished replicates yet")
    order = method_order(out)
    summ = summary(metrics, order)
    summ.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(
        "Mean (Monte Carlo SE) over replicates; `reps` = successful fits, `errors` = failed.\n\n"
        + to_markdown(compact(summ)))
    fails = failures(metrics)
    fails.to_csv(out / "failures.csv", index=False)
    congruence = read_congruence(out)
    tables = out / "congruence"
    tables.mkdir(exist_ok=True)
    from .figures import boxplots, conditions, congruence_matrix, four_metrics, heatmap
    for design in metrics["design"].unique():
        draw = figures and (designs is None or design in designs)
        for J, n_j in conditions(metrics[metrics["design"] == design]):
            M = congruence_matrix(congruence, design, J, n_j, order)
            stem = f"{design}_J{J}_n{n_j}"
            M.to_csv(tables / f"{stem}.csv")
            (tables / f"{stem}.md").write_text(
                f"Congruence (mean share of equal decisions), {design}, (J, n_j) = ({J}, {n_j})\n\n"
                + to_markdown((100 * M).round(1).reset_index(names="method"), digits=1))
            if draw:
                heatmap(M, f"Congruence, {design}, (J, n_j) = ({J}, {n_j})",
                        out / "figures" / f"congruence_{stem}")
        if draw:
            boxplots(metrics, design, "accuracy", out / "figures" / f"accuracy_{design}")
            boxplots(metrics, design, "regret", out / "figures" / f"regret_{design}")
            four_metrics(metrics, design, out / "figures" / f"metrics_{design}")
    return summ


def report_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="simstudy report",
                                 description="Summarise a study store (never refits).")
    ap.add_argument("dirs", nargs="+", help="study directories (the `out` of simstudy run)")
    ap.add_argument("--no-figures", action="store_true",
                    help="tables only (summary, failures, congruence); skip DIR/figures/")
    args = ap.parse_args(argv)
    code = 0
    for d in args.dirs:
        try:
            summ = write_report(d, figures=not args.no_figures)
        except (FileNotFoundError, ValueError) as exc:
            print(f"simstudy report: {exc}", file=sys.stderr)
            code = 2
            continue
        with pd.option_context("display.width", 250, "display.max_columns", 30,
                               "display.max_rows", 500):
            print(f"== {d}: mean (Monte Carlo SE) ==")
            print(compact(summ, ("accuracy", "f1", "spearman", "auc", "regret",
                                 "treated_share")).to_string(index=False))
        print(f"written: {Path(d) / 'summary.csv'}, summary.md, failures.csv, congruence/"
              + ("" if args.no_figures else ", figures/"))
    return code
