"""Report tables from a study store: mean, SD and Monte Carlo SE (= SD / sqrt(R)) of each
metric per condition and method over the replicates whose fit succeeded, failure counts, and
the congruence matrix per condition. Reads the store only (partial stores too)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..metrics import DECISION_METRICS, METRICS, TARGETING_METRICS
from ..store import (KEY, complete, point_methods, read_config, read_congruence, read_metrics, study_methods,
                     write_csv, write_text)

CONDITION = ["point", "design", "J", "n_j"]


def method_order(out) -> list[str] | None:
    try:
        return study_methods(read_config(out)) or None
    except (ConfigError, FileNotFoundError, KeyError, TypeError):
        return None


def swept(out) -> pd.DataFrame:
    """One row per sweep point: its label and the swept keys as columns (numbers where they
    parse as numbers)."""
    points = read_config(out)["points"]
    df = pd.DataFrame([{"point": label, **pt.get("keys", {})} for label, pt in points.items()])
    for c in df.columns[1:]:
        num = pd.to_numeric(df[c], errors="coerce")
        if num.notna().all():
            df[c] = num
    return df


def summary(metrics: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """One row per (point, design, J, n_j, method): reps, errors, <metric>_mean/_sd/_se."""
    if "point" not in metrics:
        metrics = metrics.assign(point="")
    rows = []
    names = list(METRICS) + extra_columns(metrics)
    for key, g in metrics.groupby(CONDITION + ["method"], sort=True, observed=True):
        ok = g[g["status"] == "ok"]
        row = dict(zip(CONDITION + ["method"], key))
        row["reps"] = int(len(ok))
        row["errors"] = int(len(g) - len(ok))
        row["warnings"] = int(ok["warning"].fillna("").ne("").sum()) if "warning" in ok else 0
        for m in names:
            x = ok[m].to_numpy(float)
            x = x[np.isfinite(x)]
            row[f"{m}_mean"] = x.mean() if x.size else np.nan
            row[f"{m}_sd"] = x.std(ddof=1) if x.size > 1 else np.nan
            row[f"{m}_se"] = row[f"{m}_sd"] / np.sqrt(x.size) if x.size > 1 else np.nan
        fits = ok["fits"].to_numpy(float) if "fits" in ok else np.empty(0)
        fits = fits[np.isfinite(fits)]          # the weighting refit loop (docs/estimators.md)
        row["fits_mean"] = fits.mean() if fits.size else np.nan
        row["refit_share"] = np.mean(fits > 1) if fits.size else np.nan
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and order:
        rank = {m: i for i, m in enumerate(order)}
        df["_o"] = df["method"].map(lambda m: rank.get(m, len(rank)))
        df = df.sort_values(CONDITION + ["_o"], kind="stable").drop(columns="_o")
    return df.reset_index(drop=True)


def extra_columns(metrics: pd.DataFrame) -> list[str]:
    """Numeric columns a plugin metric added to the metrics table (register_metric)."""
    from ..store import METRIC_COLUMNS
    return [c for c in metrics.columns if c not in METRIC_COLUMNS
            and pd.api.types.is_numeric_dtype(metrics[c])]


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


def plugin_metrics(summ: pd.DataFrame) -> list[str]:
    """Metrics of a summary beyond the built-in ones (register_metric plugins)."""
    return [c[:-5] for c in summ.columns if c.endswith("_mean")
            and c[:-5] not in METRICS and c != "fits_mean"]


def compact(summ: pd.DataFrame, metrics=None) -> pd.DataFrame:
    """mean (MC SE) strings per metric, for printing (no point column in a plain study);
    default: the built-in metrics and any plugin metric in the summary."""
    if metrics is None:
        metrics = list(METRICS) + plugin_metrics(summ)
    out = _plain_study(summ[CONDITION + ["method", "reps", "errors"]
                            + (["warnings"] if "warnings" in summ else [])]).copy()
    for m in metrics:
        out[m] = [f"{a:.3f} ({s:.3f})" if np.isfinite(a) else "NaN"
                  for a, s in zip(summ[f"{m}_mean"], summ[f"{m}_se"].fillna(np.nan))]
    if "refit_share" in summ and summ["refit_share"].notna().any():
        out["refitted"] = [f"{100 * v:.0f}%" if np.isfinite(v) else ""
                           for v in summ["refit_share"]]
    return out


def failures(metrics: pd.DataFrame) -> pd.DataFrame:
    """Failed fits per condition and method with the most frequent message."""
    bad = metrics[metrics["status"] != "ok"]
    if bad.empty:
        return pd.DataFrame(columns=CONDITION + ["method", "failures", "message"])
    return (bad.groupby(CONDITION + ["method"], observed=True)["error"]
            .agg(failures="size", message=lambda e: e.value_counts().index[0])
            .reset_index())


def write_report(out, figures: bool = False, designs=None, point: str | None = None,
                 reference: str | None = None, n_jobs: int = 1) -> pd.DataFrame:
    """Tables (and with `figures`, the paper's figures) from the store in `out`; per-cell
    figures only for `designs` and sweep `point` when given (a sweep job draws its own).
    `reference`: the method the paired comparisons are against (default: the study's
    `reference` key, else Q-fe if run, else the first method).
    `n_jobs` > 1 draws the figures in that many processes (joblib)."""
    out = Path(out)
    cfg = read_config(out)                 # a clear error if `out` holds no study
    metrics = read_metrics(out)
    if metrics.empty:
        raise ConfigError(f"{out} holds no finished replicates yet; run (or resume) its study "
                          f"first: `simstudy status {out}` shows what is planned")
    order = method_order(out)
    families = {m: (v or {}).get("family") for m, v in (cfg.get("methods") or {}).items()}
    from .figures import use_families
    use_families(families)               # also for the congruence tables' method order
    summ = summary(metrics, order)
    keys = swept(out)
    if keys.shape[1] > 1:                  # the swept keys as columns
        summ = summ.merge(keys, on="point", how="left")
    write_csv(_plain_study(summ), out / "summary.csv", index=False)
    comp = _write_comparisons(out, metrics, order,
                              reference or (cfg.get("last_run") or {}).get("reference"), keys)
    _write_summary(out, cfg, metrics, summ, order)
    drawings = _study_figures(out, summ, comp, keys, metrics, point, designs) if figures else []
    drawings += _congruence(out, metrics, order, figures, designs, point)
    _draw(drawings, n_jobs, families)
    from .html import write_html
    write_html(out, cfg, summ, comp, order or [], pd.read_csv(out / "failures.csv"),
               comp["reference"].iloc[0] if len(comp) else None)
    return summ


def _write_comparisons(out: Path, metrics, order, reference, keys) -> pd.DataFrame:
    """comparison.csv / .md: every method minus `reference` on the same replicates."""
    from .study import paired
    run = set(metrics["method"])
    present = [m for m in (order or []) if m in run] or sorted(run)
    reference = reference or ("Q-fe" if "Q-fe" in present else present[0])
    if reference not in present:
        raise ConfigError(f"--reference {reference!r} is not a method of {out}: {present}")
    comp = paired(metrics, reference)
    if len(comp) and keys.shape[1] > 1:
        comp = comp.merge(keys, on="point", how="left")
    write_csv(_plain_study(comp), out / "comparison.csv", index=False)
    acc = comp[comp["metric"] == "accuracy"] if len(comp) else comp
    write_text(out / "comparison.md",
        f"Paired comparison against {reference}: each method minus {reference} on the same "
        f"replicates (mean difference, its Monte Carlo SE, 95% interval, and the replicates "
        f"where the method wins / ties / loses; all metrics in comparison.csv). Accuracy:\n\n"
        + (to_markdown(_plain_study(acc.drop(columns=["metric", "reference"])), digits=4)
           if len(acc) else "(no pairs)\n"))
    return comp


def _targeting_md(summ) -> str:
    """summary.md's second table (issue 41): the rule under the budget, its ranking's AUTOC and
    Qini against the true Delta, and the rule site by site (docs/metrics.md)."""
    have = [m for m in TARGETING_METRICS if f"{m}_mean" in summ and summ[f"{m}_mean"].notna().any()]
    if not have:
        return ""
    return ("\n## Beyond the decision: budget, ranking, sites\n\n"
            "`value_at_budget`: the value when the rule treats at most the study's `budget` share "
            "(its highest scores); `autoc`, `qini`: the areas under its ranking's targeting "
            "operator characteristic against the true Delta (0 for a constant rule); "
            "`worst_site_accuracy`, `site_accuracy_sd`: its accuracy in the worst test site and "
            "the SD across sites; `sites_below_constant`: the share of sites where its true value "
            "is below the better constant rule's.\n\n" + to_markdown(compact(summ, have)))


def value_claims_text(table: pd.DataFrame) -> str:
    """summary.md's section on the value claims: what is estimated and the table."""
    shown = table.drop(columns=[c for c in ("point",) if c in table
                                and table[c].astype(str).eq("").all()])
    return ("\n## The value each rule claims\n\n"
            "Each rule learned on half of the training data (half of every site's treated and "
            "controls); its value estimated on the other half by AIPW with a 95% interval "
            "(`value_hat` +- 1.96 `value_se`), against its true value for new people in the "
            "trial's sites (`value_true`; docs/metrics.md). bias, emp_se (SD of value_hat - "
            "value_true), model_se (root mean value_se^2) and coverage of the 95% interval, "
            "each with its Monte Carlo SE; an honest claim has bias ~0, model_se ~ emp_se and "
            "coverage ~0.95.\n\n" + to_markdown(shown, digits=3))


def _provenance_md(cfg: dict) -> str:
    """summary.md's provenance: what the last run computed with (config.yaml `provenance`)."""
    facts = cfg.get("provenance") or {}
    if not facts:
        return ""
    return ("\n\n## Provenance (the last run)\n\n"
            + "\n".join(f"- {k}: {v}" for k, v in facts.items()) + "\n")


def _write_summary(out: Path, cfg: dict, metrics, summ, order=None) -> None:
    """measures.csv, headline.csv, summary.md (the headline, the ADEMP protocol and the mean
    (MC SE) table), failures.csv."""
    from .study import (ademp, headline, headline_text, measures, value_claims,
                        warnings_table, warnings_text)
    meas = measures(metrics)
    warns = warnings_table(metrics)
    write_csv(_plain_study(warns), out / "warnings.csv", index=False)
    write_csv(_plain_study(meas), out / "measures.csv", index=False)
    claims = value_claims(metrics)
    if len(claims) or (out / "value_claims.csv").exists():
        write_csv(_plain_study(claims), out / "value_claims.csv", index=False)
    head = headline(metrics, order=order)
    write_csv(_plain_study(head), out / "headline.csv", index=False)
    write_text(out / "summary.md",
        headline_text(head) + ademp(cfg, metrics) + "## Results\n\n"
        "Mean (Monte Carlo SE) over replicates; `reps` = successful fits, `errors` = failed, "
        "`warnings` = successful fits with a warning (a singular or non-converged mixed model, a "
        "lasso that selected no moderator; texts in metrics.parquet); "
        "`refitted` = share of replicates where the weighting lasso was refitted with new folds "
        "because its first fit selected no moderator (personalized's loop, docs/estimators.md).\n\n"
        + to_markdown(compact(summ, [*DECISION_METRICS, *plugin_metrics(summ)]))
        + _targeting_md(summ)
        + (value_claims_text(claims) if len(claims) else "")
        + ("\n## Warnings, by kind\n\n" + warnings_text(warns) if len(warns) else "")
        + _provenance_md(cfg))
    fails = failures(metrics)
    write_csv(_plain_study(fails), out / "failures.csv", index=False)


def _study_figures(out: Path, summ, comp, keys, metrics, point, designs) -> list[tuple]:
    """The study-level figures to draw: sweep lines, the nested-loop plot, paired differences."""
    from .figures import sweep_lines
    from .study import nested_loop_data
    # a metric against each swept value (and against J or n_j when 3+ values were run)
    xs = [c for c in keys.columns[1:] if keys[c].nunique() > 1] + [
        c for c in ("J", "n_j") if metrics[c].nunique() > 2]
    drawings = []                          # (figure function, arguments): drawn at the end
    for x in xs:
        for metric in ("accuracy", "regret"):
            drawings.append((sweep_lines, summ, x, metric,
                             out / "figures" / _safe(f"sweep_{metric}_vs_{x}")))
    data, factors = nested_loop_data(summ, "accuracy")
    if factors and len(data) > 2:
        from .figures import nested_loop
        drawings.append((nested_loop, data, factors, "accuracy", "",   # its own title
                         out / "figures" / "nested_loop_accuracy"))
        write_csv(data, out / "nested_loop_accuracy.csv", index=False)
    from .figures import paired_differences
    for design in comp["design"].unique() if len(comp) else []:
        sub = comp[comp["point"] == (point if point is not None else comp["point"].iloc[0])] \
            if keys.shape[1] > 1 else comp
        if designs is None or design in designs:
            drawings.append((paired_differences, sub[sub["design"] == design], design,
                             "accuracy", out / "figures" / _safe(f"paired_accuracy_{design}")))
    return drawings


def _congruence(out: Path, metrics, order, figures: bool, designs, point) -> list[tuple]:
    """Congruence tables (always) per (sweep point, design) and condition, and the per-design
    figures to draw (heatmaps, boxplots, four metrics) when `figures`."""
    from .figures import (boxplots, claims_figure, conditions, congruence_matrix,
                          congruence_panels, four_metrics, targeting)
    from .study import value_claims
    congruence = read_congruence(out)
    tables = out / "congruence"
    tables.mkdir(exist_ok=True)
    drawings = []
    # figures and congruence tables per (sweep point, design): the label names both
    metrics = metrics.assign(design=_cell_label(metrics))
    congruence = congruence.assign(design=_cell_label(congruence))
    if designs is not None or point is not None:
        base = metrics["design"].str.split(" [", regex=False).str[0]
        keep = base.isin(designs) if designs is not None else pd.Series(True, index=metrics.index)
        if point is not None:
            keep &= metrics["point"] == point
        designs = set(metrics["design"][keep])
    for design in metrics["design"].unique():
        draw = figures and (designs is None or design in designs)
        mats = []
        for J, n_j in conditions(metrics[metrics["design"] == design]):
            M = congruence_matrix(congruence, design, J, n_j, order)
            stem = _safe(f"{design}_J{J}_n{n_j}")
            write_csv(M, tables / f"{stem}.csv")
            write_text(tables / f"{stem}.md",
                f"Congruence (mean share of equal decisions), {design}, (J, n_j) = ({J}, {n_j})\n\n"
                + to_markdown((100 * M).round(1).reset_index(names="method"), digits=1))
            mats.append((f"(J, n_j) = ({J}, {n_j})", M))
        if draw and mats:              # one compact figure per design, a panel per condition
            drawings.append((congruence_panels, mats, f"Congruence of the rules' decisions, "
                             f"{design} (% of test rows decided alike)",
                             out / "figures" / _safe(f"congruence_{design}")))
        if draw:
            cell = metrics[metrics["design"] == design]
            drawings += [
                (boxplots, cell, design, "accuracy", out / "figures" / _safe(f"accuracy_{design}")),
                (boxplots, cell, design, "regret", out / "figures" / _safe(f"regret_{design}")),
                (four_metrics, cell, design, out / "figures" / _safe(f"metrics_{design}"))]
            if "autoc" in cell and cell["autoc"].notna().any():     # stores since issue 41
                drawings.append((targeting, cell, design,
                                 out / "figures" / _safe(f"targeting_{design}")))
            claims = value_claims(cell)
            if len(claims):                                          # value_claims != none
                drawings.append((claims_figure, claims, design,
                                 out / "figures" / _safe(f"value_claims_{design}")))
    return drawings


def _draw(drawings: list[tuple], n_jobs: int = 1, families: dict | None = None) -> None:
    """Draw and save the figures, in `n_jobs` processes when there are several (each figure is
    independent; matplotlib draws one figure per process at a time), methods grouped by
    `families` (the store's record)."""
    if n_jobs == 1 or len(drawings) < 2:
        for fn, *args in drawings:
            _drawn(families, fn, *args)
        return
    from joblib import Parallel, delayed

    from ..workers import resolve_n_jobs, watched
    workers = min(len(drawings), resolve_n_jobs(n_jobs))        # as the run's workers
    with watched("loky"):
        Parallel(n_jobs=workers)(delayed(_drawn)(families, fn, *args) for fn, *args in drawings)


def _drawn(families, fn, *args):
    from .figures import use_families
    use_families(families)
    return fn(*args)


def _plain_study(df: pd.DataFrame) -> pd.DataFrame:
    """Without sweep points the `point` column is empty: leave it out of the written tables."""
    if "point" in df and (df["point"].astype(str) == "").all():
        return df.drop(columns="point")
    return df


def _cell_label(df: pd.DataFrame) -> pd.Series:
    """'design1' in a plain study, 'design1 [design.beta1=0.2]' at a sweep point."""
    point = df["point"].astype(str)
    return df["design"].astype(str).where(point == "", df["design"].astype(str) + " [" + point + "]")


def _safe(name: str, limit: int = 120) -> str:
    """A file name from a cell label; a long label (many swept keys) is cut and given a short
    hash of the whole label, so file names stay unique and under the file system's limit."""
    import re
    import zlib
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("_")
    if len(safe) <= limit:
        return safe
    return f"{safe[:limit - 40]}~{zlib.crc32(name.encode()):08x}~{safe[-30:]}"


def status_table(out) -> tuple[pd.DataFrame, str]:
    """Per planned cell (point, design, J, n_j): replicates planned, done (every method has a
    row), failed fits, and the missing replicate ids as ranges; and a printable text."""
    cfg = read_config(out)
    m = read_metrics(out)
    full = complete(m, read_congruence(out), point_methods(out))   # every table and method
    whole = m[[k in full for k in m[KEY].itertuples(index=False, name=None)]]
    done = whole.groupby(CONDITION, observed=True)["replicate"].agg(lambda r: set(r.tolist()))
    errors = m[m["status"] != "ok"].groupby(CONDITION, observed=True).size()
    cells = {(c["point"], c["design"], c["J"], c["n_j"]): c["reps"] for c in cfg["planned"]}
    stopped = {(c["point"], c["design"], c["J"], c["n_j"]): c.get("stopped", "")
               for c in cfg["planned"]}
    for key in done.index:                          # cells of older stores without a plan
        cells.setdefault(key, max(done[key]) + 1)
    rows = []
    for key, reps in sorted(cells.items()):
        have = done.get(key, set())
        missing = sorted(set(range(reps)) - have)
        rows.append({**dict(zip(CONDITION, key)), "planned": reps, "done": len(have & set(range(reps))),
                     "extra": len(have - set(range(reps))), "failed_fits": int(errors.get(key, 0)),
                     "missing": _ranges(missing), "stopped": stopped.get(key, "")})
    cols = CONDITION + ["planned", "done", "extra", "failed_fits", "missing"]
    if any(stopped.values()):
        cols.append("stopped")             # reps=auto: why each cell stopped
    table = pd.DataFrame(rows).reindex(columns=cols)
    total, have = table["planned"].sum(), table["done"].sum()
    text = (f"{out}: {have} of {total} planned replicates done"
            + (f" ({100 * have / total:.1f}%)" if total else "") + "\n"
            + _plain_study(table).to_string(index=False))
    if have < total:
        text += ("\nResume the gaps with the same `simstudy run` command (here or on a copy of "
                 "the store elsewhere; `replicates=start:stop` runs a share), then "
                 "`simstudy merge COPY " + str(out) + "`.")
    return table, text


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "-"
    out, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(out)


def report_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="simstudy report",
                                 description="Summarise a study store (never refits).")
    ap.add_argument("dirs", nargs="+", help="study directories (the `out` of simstudy run)")
    ap.add_argument("--no-figures", action="store_true",
                    help="tables only (summary, failures, congruence); skip DIR/figures/")
    ap.add_argument("--reference", help="method the paired comparisons are against "
                    "(default: the study's reference key, else Q-fe if run, else the first method)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="processes drawing the figures (-1 = all cores; default 1)")
    ap.add_argument("--open", action="store_true",
                    help="open each study's report.html in the web browser afterwards")
    args = ap.parse_args(argv)
    if args.jobs == 0 or args.jobs < -1:
        ap.error(f"--jobs {args.jobs}: give a positive number of processes or -1 (all cores)")
    code = 0
    for d in args.dirs:
        try:
            summ = write_report(d, figures=not args.no_figures, reference=args.reference,
                                n_jobs=args.jobs)
        except (ConfigError, OSError) as exc:   # the one boundary's message; other dirs go on
            from ..errors import report
            code = max(code, report(exc, "simstudy report"))
            continue
        with pd.option_context("display.width", 250, "display.max_columns", 30,
                               "display.max_rows", 500):
            md = (Path(d) / "summary.md").read_text()
            if md.startswith("## Headline"):          # the answer first, as on the page
                print(f"== {d}: " + md.split("## Protocol")[0][3:].strip() + "\n")
            print(f"== {d}: mean (Monte Carlo SE) ==")
            print(compact(summ, ("accuracy", "f1", "spearman", "auc", "regret",
                                 "treated_share", *plugin_metrics(summ))).to_string(index=False))
        print(f"written: {Path(d) / 'summary.csv'}, summary.md, report.html, comparison.csv/.md, "
              f"measures.csv, failures.csv, congruence/"
              + ("" if args.no_figures else ", figures/"))
        if args.open:
            import webbrowser
            page = (Path(d) / "report.html").resolve()
            if not webbrowser.open(page.as_uri()):
                print(f"no web browser found; open {page} by hand")
    return code
