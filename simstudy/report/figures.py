"""The paper's figures from a study store (read only; nothing is refitted).

- accuracy boxplots, one row per (J, n_j), Q-learning | weighting panels, mean above each box
  (Suk & Park Figs 1, 3, 5);
- the four-metric version: accuracy, F1, rank correlation, AUC (Figs 10-12, 14);
- congruence heatmaps: upper triangle coloured, lower triangle the numbers, weighting methods
  in reverse order as the paper lists them (Figs 2, 4, 13, 15);
- beyond the paper: regret and value per method;
- a drawn policy tree (Bodory, Mascolo & Lechner 2024, Figs 2, 4, 6);
- for one trial (`simstudy apply`, paper Section 6): shares recommended (Fig 6), shares and
  score distributions by a grouping (Figs 8, 9), each rule's in-sample and cross-fitted value.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

Q_ORDER = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs"]
W_ORDER = ["W-base", "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]
REFERENCE = {"oracle", "treat-all", "treat-none"}
CONSTANT_RULES = ["treat-all", "treat-none"]
CONDITION_ORDER = [(25, 25), (150, 25), (25, 150), (150, 150)]
METRIC_LABELS = {"accuracy": "Accuracy", "f1": "F1 score", "spearman": "Rank correlation",
                 "auc": "AUC", "regret": "Regret", "value": "Value", "autoc": "AUTOC",
                 "qini": "Qini", "worst_site_accuracy": "Worst-site accuracy",
                 "sites_below_constant": "Sites below the better constant rule (share)"}


PANEL_ORDER = ["Q-learning", "Weighting", "Policy tree", "Machine learning"]
FAMILY_OF: dict[str, str] = {}     # method -> family, from the store (`use_families`)


def use_families(mapping: dict) -> None:
    """The families the figures group methods by: the store's record of the registry at run
    time (report/ reads the store only), or apply's rules."""
    FAMILY_OF.clear()
    FAMILY_OF.update({str(k): str(v) for k, v in (mapping or {}).items() if v})


def family_of(method: str) -> str:
    """A method's family: as recorded, else by the paper's names (stores written before the
    record): Q-* Q-learning, W-* / WS-* weighting, PT and trees the policy tree."""
    if method in FAMILY_OF:
        return FAMILY_OF[method]
    if method in REFERENCE:
        return "Reference"
    if method in Q_ORDER:
        return "Q-learning"
    if method in W_ORDER:
        return "Weighting"
    return "Policy tree" if method == "PT" or method.startswith("tree") else "Other"


def panels(methods) -> list[tuple[str, list[str]]]:
    """[(family, methods)] by the recorded families (`register(..., family=...)`): the
    paper's Q-learning and weighting panels in its order, the policy tree, then any family of
    the user's own; reference rules (oracle, treat-all/none) left out. A name the registry does
    not know (a plugin not imported) goes to "Other"."""
    present = list(dict.fromkeys(methods))
    fam = {m: family_of(m) for m in present}
    rank = {m: i for i, m in enumerate(Q_ORDER + W_ORDER)}
    names = PANEL_ORDER + sorted({f for f in fam.values()} - set(PANEL_ORDER) - {"Reference"})
    out = []
    for f in names:
        ms = sorted((m for m in present if fam[m] == f), key=lambda m: rank.get(m, len(rank)))
        if ms:
            out.append((f, ms))
    return out


def families(methods) -> tuple[list[str], list[str]]:
    """(every non-weighting method, weighting methods), each in the paper's order."""
    groups = panels(methods)
    return ([m for f, ms in groups if f != "Weighting" for m in ms],
            [m for f, ms in groups if f == "Weighting" for m in ms])


def congruence_order(methods) -> list[str]:
    """The order of every other figure: the families' panels in order (Q-learning, weighting,
    policy tree, machine learning, a plugin's); reference rules left out. (The paper's Fig 2
    reversed the weighting methods; one order across figures reads more easily.)"""
    return [m for _, ms in panels(list(dict.fromkeys(methods))) for m in ms]


def conditions(df: pd.DataFrame) -> list[tuple[int, int]]:
    have = sorted({(int(a), int(b)) for a, b in df[["J", "n_j"]].itertuples(index=False)})
    return [c for c in CONDITION_ORDER if c in have] + [c for c in have if c not in CONDITION_ORDER]


def _reps_note(ok: pd.DataFrame) -> str:
    counts = ok.groupby(["J", "n_j", "method"], observed=True).size()
    lo, hi = int(counts.min()), int(counts.max())
    return f"R = {lo} replicates per cell" if lo == hi else f"R = {lo}-{hi} replicates per cell (partial store)"


# the widest a figure is drawn (inches): the report shows figures at most ~1160 px wide (its
# body is 1200 px), so 8-point labels stay >= 9 px high on screen (issue 40: the old 22-inch
# metrics figure showed them at ~5 px)
PAGE_WIDTH_IN = 12.5
FAMILY_COLOURS = {"Q-learning": "#dbe8f5", "Weighting": "#f7e3cf", "Policy tree": "#d9efd6",
                  "Machine learning": "#e8dcf2"}


def _box_panel(ax, data: pd.DataFrame, methods: list[str], metric: str, show_means: bool,
               colours: dict[str, str] | None = None, span: tuple | None = None):
    series = [data.loc[data["method"] == m, metric].dropna().to_numpy() for m in methods]
    keep = [i for i, s in enumerate(series) if s.size]
    if not keep:
        ax.set_axis_off()
        return
    bp = ax.boxplot([series[i] for i in keep], tick_labels=[methods[i] for i in keep], widths=0.6,
               showfliers=True, flierprops={"markersize": 2, "alpha": 0.4},
               medianprops={"color": "black"}, patch_artist=True,
               boxprops={"facecolor": "#dbe8f5"})
    if colours:
        for patch, i in zip(bp["boxes"], keep):
            patch.set_facecolor(colours.get(methods[i], "#e6e6e6"))
    ax.tick_params(axis="x", rotation=45, labelsize=8)
    for lab in ax.get_xticklabels():
        lab.set_ha("right")
    if show_means:                      # on the axis' scale; limits shared by the figure
        bottom, top = span if span is not None else (
            min(np.min(series[i]) for i in keep), max(np.max(series[i]) for i in keep))
        pad = 0.06 * (top - bottom if top > bottom else 1.0)
        for pos, i in enumerate(keep, start=1):
            ax.text(pos, top + pad, f"{np.mean(series[i]):.3f}", ha="center", va="bottom",
                    fontsize=7.5)
        ax.set_ylim(bottom - pad, top + 3 * pad)
    ax.grid(axis="y", alpha=0.3)


def boxplots(metrics: pd.DataFrame, design: str, metric: str = "accuracy", out: Path | None = None):
    """One row per (J, n_j); a panel per family (Q-learning | weighting | policy tree ...), its
    width following its number of methods; mean printed above each box."""
    ok = metrics[(metrics["design"] == design) & (metrics["status"] == "ok")]
    cols = panels(ok["method"].unique())
    conds = conditions(ok)
    widths = [max(len(ms), 2) for _, ms in cols]
    fig, axes = plt.subplots(len(conds), len(cols), squeeze=False, sharey=True,
                             figsize=(min(PAGE_WIDTH_IN, 0.75 * sum(widths) + 0.8 * len(cols)),
                                      2.9 * len(conds)),
                             gridspec_kw={"width_ratios": widths})
    shown = ok[ok["method"].isin([m for _, ms in cols for m in ms])][metric].dropna()
    # the reference line: the better constant rule's mean per cell (what a rule must beat)
    const = ok[ok["method"].isin(CONSTANT_RULES)].groupby(
        ["J", "n_j", "method"], observed=True)[metric].mean().dropna()
    best = (const.groupby(level=[0, 1]).min() if metric == "regret"
            else const.groupby(level=[0, 1]).max()) if len(const) else pd.Series(dtype=float)
    span = (float(min(shown.min(), best.min() if len(best) else np.inf)),
            float(max(shown.max(), best.max() if len(best) else -np.inf))) \
        if len(shown) else None  # one y-axis
    colours = {m: FAMILY_COLOURS.get(f, "#e6e6e6") for f, ms in cols for m in ms}
    for r, (J, n_j) in enumerate(conds):
        cell = ok[(ok["J"] == J) & (ok["n_j"] == n_j)]
        for c, (family, methods) in enumerate(cols):
            ax = axes[r, c]
            _box_panel(ax, cell, methods, metric, show_means=True, span=span, colours=colours)
            if (J, n_j) in best.index:
                ax.axhline(best[(J, n_j)], ls="--", lw=0.9, color="0.35", zorder=0)
            if c == 0:
                ax.set_ylabel(f"(J, n_j) = ({J}, {n_j})\n{METRIC_LABELS.get(metric, metric)}")
            if r == 0:
                ax.set_title(family)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} of the estimators, {design} "
                 f"({_reps_note(ok)}); mean above each box; "
                 f"{'lower' if metric in ('regret',) else 'higher'} is better"
                 + ("; dashed: the better constant rule (treat-all / treat-none)"
                    if len(best) else ""), fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def four_metrics(metrics: pd.DataFrame, design: str, out: Path | None = None):
    """Accuracy, F1, rank correlation and AUC (paper Figs 10-12, 14): rows (J, n_j), columns metric."""
    return metric_grid(metrics, design, ["accuracy", "f1", "spearman", "auc"],
                       "Accuracy, F1, rank correlation and AUC", "higher is better", out)


def targeting(metrics: pd.DataFrame, design: str, out: Path | None = None):
    """The ranking's AUTOC and Qini against the true Delta, and the rule site by site (its
    worst site's accuracy, the share of sites below the better constant rule): issue 41."""
    return metric_grid(metrics, design, ["autoc", "qini", "worst_site_accuracy",
                                         "sites_below_constant"],
                       "Ranking (AUTOC, Qini) and sites (worst-site accuracy, share of sites "
                       "below the better constant rule)",
                       "higher is better but for the share of sites", out)


def claims_figure(claims: pd.DataFrame, design: str, out: Path | None = None):
    """The value each rule claims (report.study.value_claims): per (J, n_j), the coverage of
    its 95% interval and its bias, each with a 95% Monte Carlo interval, a row per method."""
    conds = conditions(claims)
    methods = [m for _, ms in panels(claims["method"].unique()) for m in ms]
    methods += [m for m in pd.unique(claims["method"]) if m not in methods]   # the references
    lo, hi = int(claims["reps"].min()), int(claims["reps"].max())
    reps = f"{lo}" if lo == hi else f"{lo}-{hi}"
    fig, axes = plt.subplots(len(conds), 2, figsize=(PAGE_WIDTH_IN, 1.2 + (0.5 + 0.3 * len(
        methods)) * len(conds)), squeeze=False)
    for r, (J, n_j) in enumerate(conds):
        cell = claims[(claims["J"] == J) & (claims["n_j"] == n_j)].set_index("method")
        cell = cell.reindex([m for m in methods if m in cell.index])
        y = np.arange(len(cell))
        for ax, (col, mcse, ref, label) in zip(axes[r], [
                ("coverage", "coverage_mcse", 0.95, "coverage of the 95% interval"),
                ("bias", "bias_mcse", 0.0, "bias of value_hat (value_hat - value_true)")]):
            ax.errorbar(cell[col], y, xerr=1.96 * cell[mcse], fmt="o", color="0.2", ms=4,
                        capsize=2)
            ax.axvline(ref, color="#b00020", lw=1, ls="--")
            ax.set_yticks(y, cell.index, fontsize=9)
            ax.set_ylim(len(cell) - 0.5, -0.5)
            ax.tick_params(axis="x", labelsize=9)
            ax.set_title(f"{label}, (J, n_j) = ({J}, {n_j})", fontsize=9)
            ax.grid(axis="x", color="0.9")
    fig.suptitle(f"The value each rule claims, {design}: its AIPW estimate on held-out "
                 f"training data against its true value (R = {reps} replicates per cell; "
                 f"dashed: nominal)",
                 fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, out)


def metric_grid(metrics: pd.DataFrame, design: str, names: list[str], what: str, better: str,
                out: Path | None = None):
    """Boxplots of several metrics, two per row, each (J, n_j) on consecutive rows."""
    ok = metrics[(metrics["design"] == design) & (metrics["status"] == "ok")]
    groups = panels(ok["method"].unique())
    methods = [m for _, ms in groups for m in ms]
    colours = {m: FAMILY_COLOURS.get(f, "#e6e6e6") for f, ms in groups for m in ms}
    conds = conditions(ok)
    # two metrics side by side, a condition per pair of rows: PAGE_WIDTH_IN wide, so its labels
    # are legible at the report's width (issue 40)
    per = -(-len(names) // 2)                  # rows per condition
    fig, axes = plt.subplots(per * len(conds), 2,
                             figsize=(PAGE_WIDTH_IN, 2.7 * per * len(conds)), squeeze=False)
    for r, (J, n_j) in enumerate(conds):
        cell = ok[(ok["J"] == J) & (ok["n_j"] == n_j)]
        for k, metric in enumerate(names):
            ax = axes[per * r + k // 2, k % 2]
            _box_panel(ax, cell, methods, metric, show_means=False, colours=colours)
            ax.set_title(f"{METRIC_LABELS.get(metric, metric)}, (J, n_j) = ({J}, {n_j})",
                         fontsize=9)
        for k in range(len(names), 2 * per):
            axes[per * r + k // 2, k % 2].set_axis_off()
    from matplotlib.patches import Patch
    fig.legend([Patch(fc=FAMILY_COLOURS.get(f, "#e6e6e6"), ec="0.3") for f, _ in groups],
               [f for f, _ in groups], loc="upper right", fontsize=9, ncol=len(groups))
    fig.suptitle(f"{what} of the estimators, {design} ({_reps_note(ok)}); {better}",
                 fontsize=10, x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    return _save(fig, out)


def congruence_matrix(congruence: pd.DataFrame, design: str, J: int, n_j: int,
                      methods=None) -> pd.DataFrame:
    """Mean agreement over replicates, methods x methods, 1 on the diagonal (docs/metrics.md)."""
    cell = congruence[(congruence["design"] == design) & (congruence["J"] == J)
                      & (congruence["n_j"] == n_j)]
    mean = cell.groupby(["method_a", "method_b"], observed=True)["agreement"].mean()
    names = congruence_order(methods if methods is not None else
                             pd.unique(cell[["method_a", "method_b"]].to_numpy().ravel()))
    M = pd.DataFrame(np.nan, index=names, columns=names)
    for (a, b), v in mean.items():
        if a in M.index and b in M.index:
            M.loc[a, b] = M.loc[b, a] = v
    for m in names:
        M.loc[m, m] = 1.0
    return M


def _triangles(ax, M: pd.DataFrame, cmap: str, low: float, fontsize: float, diagonal: bool):
    """One congruence matrix on `ax`: the upper triangle coloured from `low` to 100, the lower
    triangle (and the diagonal if `diagonal`) the numbers in %; seaborn's heatmap drawn with
    matplotlib alone (importing seaborn cost ~0.9 s per report): square cells, white borders,
    row 0 at the top. Returns the coloured mesh (for a colour bar)."""
    k = len(M)
    upper = np.triu(np.ones((k, k), bool), k=1)
    cells = ax.pcolormesh(np.ma.masked_array(100 * M.to_numpy(float), ~upper), cmap=cmap,
                          vmin=low, vmax=100, edgecolors="white", linewidth=0.3)
    ax.set_xlim(0, k)
    ax.set_ylim(k, 0)
    ax.set_aspect("equal")
    for side in ax.spines.values():
        side.set_visible(False)
    for i in range(k):
        for j in range(i + 1 if diagonal else i):
            v = M.iat[i, j]
            if np.isfinite(v):
                ax.text(j + 0.5, i + 0.5, f"{100 * v:.0f}", ha="center", va="center",
                        fontsize=fontsize)
    ax.set_xticks(np.arange(k) + 0.5, M.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(k) + 0.5, M.index, fontsize=8)
    return cells


def congruence_panels(mats: list[tuple[str, pd.DataFrame]], title: str,
                      out: Path | None = None):
    """The congruence of every pair of rules, one panel per condition (a 2-column grid, PAGE_
    WIDTH_IN wide: one compact figure per design); upper triangle coloured on a scale from the
    lowest off-diagonal value shown up to 100 (so 90 and 99 differ), lower triangle the
    numbers (%)."""
    ncols = min(len(mats), 2)
    nrows = -(-len(mats) // ncols)
    n = max(len(M) for _, M in mats)
    side = PAGE_WIDTH_IN / ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH_IN, nrows * side * 0.92),
                             squeeze=False)
    off = np.concatenate([100 * M.to_numpy(float)[np.triu_indices(len(M), 1)] for _, M in mats])
    off = off[np.isfinite(off)]
    low = float(np.floor(off.min())) if off.size else 50.0
    low = min(low, 99.0)
    cells = None
    for ax, (label, M) in zip(axes.flat, mats):
        cells = _triangles(ax, M, "viridis", low, fontsize=7 if n > 12 else 8, diagonal=False)
        ax.set_title(label, fontsize=9)
    for ax in axes.flat[len(mats):]:
        ax.set_axis_off()
    if cells is not None:
        fig.colorbar(cells, ax=axes.ravel().tolist(), shrink=0.6,
                     label=f"congruence (%), from {low:.0f} to 100").outline.set_visible(False)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out)


def heatmap(M: pd.DataFrame, title: str, out: Path | None = None):
    """Upper triangle coloured, lower triangle the numbers (percent), as the paper draws it."""
    n = len(M)
    fig, ax = plt.subplots(figsize=(0.55 * n + 2.5, 0.5 * n + 1.5))
    cells = _triangles(ax, M, "Reds", 50, fontsize=7, diagonal=True)
    fig.colorbar(cells, ax=ax, label="congruence (%)").outline.set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def sweep_lines(summ: pd.DataFrame, x: str, metric: str = "accuracy", out: Path | None = None):
    """A metric against a swept value: the mean over replicates with a +-1.96 Monte Carlo SE
    band, one line per method. A column per family (Q-learning, weighting, policy tree, ...:
    at most a handful of lines and bands per panel, each its own colour), a row per setting of
    everything else that varies (design, J, n_j, other swept keys), named in every panel's
    title. Reference rules (oracle, treat-all/none) are left out."""
    df = summ[~summ["method"].isin(REFERENCE)].copy()
    if not pd.api.types.is_numeric_dtype(df[x]):     # text values; a point that did not set
        df[x] = df[x].fillna("(not set)").astype(str)   # the key has none
    others = [c for c in df.columns if c not in (x, "point", "method") and c in
              (["design", "J", "n_j"] + [k for k in df.columns if "." in k or k == "seed"])
              and df[c].nunique() > 1]
    groups = list(df.groupby(others, sort=True)) if others else [((), df)]
    fams = panels(df["method"].unique())
    fig, axes = plt.subplots(len(groups), len(fams), squeeze=False, sharey=True,
                             figsize=(4.6 * len(fams) + 1.5, 3.3 * len(groups)))
    cmap = plt.get_cmap("tab10")
    for r, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{k} = {v}" for k, v in zip(others, key))
        for c, (family, methods) in enumerate(fams):
            ax = axes[r, c]
            for i, m in enumerate(methods):
                d = g[g["method"] == m].sort_values(x)
                if d.empty:
                    continue
                xv = d[x].to_numpy()
                mean = d[f"{metric}_mean"].to_numpy()
                se = d[f"{metric}_se"].fillna(0).to_numpy()
                colour = cmap(i % cmap.N)
                ax.plot(xv, mean, "-", marker="o", ms=3, color=colour, label=m, lw=1.4)
                ax.fill_between(xv, mean - 1.96 * se, mean + 1.96 * se, color=colour,
                                alpha=0.18, lw=0)
            ax.set_title(f"{family}" + (f" | {where}" if where else ""), fontsize=9)
            ax.set_xlabel(x)
            if c == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
            ax.grid(alpha=0.3)
            if r == 0 and methods:
                ax.legend(fontsize=7, loc="best", framealpha=0.8)
    reps = f"R = {int(df['reps'].min())}-{int(df['reps'].max())}" if df["reps"].nunique() > 1 \
        else f"R = {int(df['reps'].iloc[0])}"
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)} against {x} (mean, band = +-1.96 Monte "
                 f"Carlo SE; {reps} replicates per point)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# ------------------------------------------------------------------ the study's own statistics
def paired_differences(comp: pd.DataFrame, design: str, metric: str = "accuracy",
                       out: Path | None = None):
    """Paired difference of each method from the reference with its 95% interval, one panel
    per (J, n_j): which differences are real at this number of replicates."""
    d = comp[(comp["design"] == design) & (comp["metric"] == metric)]
    if d.empty:
        return None
    conds = conditions(d)
    methods = [m for _, ms in panels(d["method"].unique()) for m in ms]   # no reference rules
    ref = d["reference"].iloc[0]
    ncols = min(len(conds), 2)
    nrows = -(-len(conds) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(min(PAGE_WIDTH_IN, 5.6 * ncols + 1.2),
                                                    nrows * (0.22 * len(methods) + 1.2) + 0.6),
                             squeeze=False, sharey=True, sharex=True)   # one x-axis per design
    for ax in axes.flat[len(conds):]:
        ax.set_axis_off()
    for ax, (J, n_j) in zip(axes.flat, conds):
        c = d[(d["J"] == J) & (d["n_j"] == n_j)].set_index("method").reindex(methods)
        y = np.arange(len(methods))[::-1]
        real = (c["ci_low"] > 0) | (c["ci_high"] < 0)
        ax.errorbar(c["mean_diff"], y, xerr=c["ci_high"] - c["mean_diff"], fmt="none",
                    ecolor="0.45", lw=1)                     # the t interval of paired()
        ax.scatter(c["mean_diff"], y, s=14, zorder=3,
                   c=np.where(real, "#c0392b", "0.55"))
        ax.axvline(0, color="0.2", lw=0.8)
        ax.set_title(f"(J, n_j) = ({J}, {n_j})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.set_yticks(y, methods, fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    fig.supxlabel(f"paired difference in {METRIC_LABELS.get(metric, metric).lower()} from {ref} "
                  f"(mean, 95% interval; red = interval excludes 0)", fontsize=9)
    fig.suptitle(f"{METRIC_LABELS.get(metric, metric)}: each method minus {ref} on the same "
                 f"replicates, {design}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def nested_loop(data: pd.DataFrame, factors: list[str], metric: str = "accuracy",
                title: str = "", out: Path | None = None):
    """Nested-loop plot (Ruecker & Schwarzer 2014): every condition of a factorial study on the
    x axis (first factor varying slowest), the metric's mean per method as step lines, and
    under them one step line per factor showing its level."""
    methods = [c for c in data.columns if c not in ["x", *factors]]
    order = [m for _, ms in panels(methods) for m in ms]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.42 * len(data) + 3), 5.2))
    cmap = plt.get_cmap("tab10" if len(order) <= 10 else "tab20")
    x = data["x"].to_numpy(float)
    for i, m in enumerate(order):
        ax.step(x, data[m], where="mid", color=cmap(i % cmap.N), lw=1.3, label=m)
    top = np.nanmin(data[order].to_numpy(float))
    span = np.nanmax(data[order].to_numpy(float)) - top or 1.0
    band = 0.09 * span
    for k, f in enumerate(factors):
        codes, levels = pd.factorize(data[f], sort=True)
        base = top - (k + 1.4) * band
        y = base + 0.7 * band * codes / max(1, len(levels) - 1)
        ax.step(x, y, where="mid", color="0.25", lw=1)
        ax.text(x[-1] + 0.7, base + 0.35 * band,
                f"{f}: " + ", ".join(str(v) for v in levels), fontsize=7, va="center")
    ax.set_xlim(x[0] - 0.5, x[-1] + 0.5 + 0.15 * len(x))
    ax.set_xticks(x, [str(int(v) + 1) for v in x], fontsize=7)
    ax.set_xlabel("condition (factors nested: the first varies slowest)")
    ax.set_ylabel(f"mean {METRIC_LABELS.get(metric, metric).lower()}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title or f"Nested-loop plot of {METRIC_LABELS.get(metric, metric).lower()} over "
                 f"{len(data)} conditions", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


# ------------------------------------------------------------------ one trial (simstudy apply)
def _rule_colours(rules) -> list[str]:
    fam = [family_of(r) for r in rules]
    return [FAMILY_COLOURS.get(f, "#e6e6e6") for f in fam]


def shares(share: pd.Series, title: str = "", out: Path | None = None):
    """Share of the trial recommended for treatment by each rule (paper Fig 6)."""
    fig, ax = plt.subplots(figsize=(0.45 * len(share) + 2, 3.4))
    ax.bar(share.index, 100 * share.to_numpy(), color=_rule_colours(share.index), ec="0.4", lw=0.5)
    for i, v in enumerate(share.to_numpy()):
        ax.text(i, 100 * v + 1, f"{100 * v:.0f}", ha="center", fontsize=7)
    return _finish_rules(fig, ax, title, out, share=True)


def _finish_rules(fig, ax, title, out, share: bool):
    """One style for the per-rule figures of a trial: rotated rule names, grid, title, save."""
    if share:
        ax.set_ylabel("recommended for treatment (%)")
        ax.set_ylim(0, 108)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    for lab in ax.get_xticklabels():
        lab.set_ha("right")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def group_colours(levels) -> dict:
    """One colour per group of the `by` column, the same in every figure of a trial."""
    cmap = plt.get_cmap("tab10")
    return {g: cmap(i % cmap.N) for i, g in enumerate(sorted(levels, key=str))}


def _caption(fig, text: str) -> None:
    fig.text(0.01, 0.005, text, fontsize=7, color="0.3", ha="left", va="bottom")


def shares_by_group(share_by: pd.DataFrame, by: str, title: str = "", out: Path | None = None):
    """Share recommended for treatment by rule (rows) within each group of `by` (paper Fig 8)."""
    fig, ax = plt.subplots(figsize=(0.5 * len(share_by) + 3, 3.9))
    colours = group_colours(share_by.columns)
    (100 * share_by).plot.bar(ax=ax, width=0.8, color=[colours[g] for g in share_by.columns],
                              ec="0.3", lw=0.3)
    ax.legend(title=by, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    _caption(fig, f"Bars: the % of each {by} group that the rule would treat.")
    return _finish_rules(fig, ax, title, out, share=True)


def scores_by_group(scores: pd.DataFrame, groups, by: str, title: str = "",
                    out: Path | None = None):
    """Distribution of each estimator's benefit score within each group of `by`, 0 = the
    decision boundary (paper Fig 9); each rule's scores divided by their root mean square over
    the trial (sign kept; a constant rule at +-1), so rules on different scales (Q-learning,
    weighting, trees) share one axis."""
    import seaborn as sns
    rms = np.sqrt((scores ** 2).mean()).replace(0, 1.0)
    label = "benefit score / its RMS"
    long = (scores / rms).assign(_by=np.asarray(groups)).melt(
        id_vars="_by", var_name="method", value_name=label)
    fig, ax = plt.subplots(figsize=(0.55 * scores.shape[1] + 3, 4.1))
    sns.boxplot(long, x="method", y=label, hue="_by", ax=ax, fliersize=1,
                linewidth=0.6, palette=group_colours(long["_by"].unique()))
    ax.axhline(0, color="0.3", lw=0.8)
    ax.legend(title=by, fontsize=7, title_fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    _caption(fig, "Boxes: each rule's benefit scores within a group, divided by the rule's root "
                  "mean square over the trial (comparable scales); above 0 = treat.")
    return _finish_rules(fig, ax, title, out, share=False)


def values(table: pd.DataFrame, title: str = "", out: Path | None = None):
    """Each rule's estimated value, in-sample and cross-fitted over sites, with 95% intervals."""
    t = table.iloc[::-1]
    y = np.arange(len(t))
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(t) + 1.4))
    ax.errorbar(t["value_insample"], y + 0.15, xerr=1.96 * t["se_insample"], fmt="o", ms=3,
                color="0.55", label="in-sample (optimistic)")
    ax.errorbar(t["value_crossfit"], y - 0.15, xerr=1.96 * t["se_crossfit"], fmt="s", ms=3,
                color="#c0392b", label="cross-fitted over sites")
    ax.set_yticks(y, t["rule"], fontsize=8)
    ax.set_xlabel("estimated value (mean outcome under the rule)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _condition(node, names, left: bool, binary=()) -> str:
    name = names[node.feature]
    if name in binary and 0 <= node.threshold < 1:       # a 0/1 feature: = 0 goes left
        return f"{name} = {0 if left else 1}"
    if node.categories is not None:
        cats = ", ".join(f"{c:g}" for c in node.categories)
        return f"{name} {'in' if left else 'not in'} {{{cats}}}"
    return f"{name} {'<=' if left else '>'} {node.threshold:.4g}"


def policy_tree(tree, feature_names=None, action_names=None, title: str = "",
                out: Path | None = None, binary=()):
    """Draw a policy tree top-down: each split shows its condition (left branch = true; a 0/1
    feature named in `binary` as "= 0"), each leaf its action, size and share of the sample;
    leaves coloured by action."""
    leaves = list(tree.leaves())
    n_total = tree.n
    names = feature_names or [f"x{j}" for j in range(64)]
    acts = action_names or [str(a) for a in range(16)]
    depth = max(len(path) for path, _ in leaves)
    fig, ax = plt.subplots(figsize=(max(5.0, 2.3 * len(leaves)), 1.6 * depth + 1.8))
    colours = plt.get_cmap("Set2")
    pos, counter = {}, iter(range(len(leaves)))

    def place(node, level):
        if node.is_leaf:
            pos[id(node)] = (next(counter), -level)
        else:
            place(node.left, level + 1)
            place(node.right, level + 1)
            pos[id(node)] = ((pos[id(node.left)][0] + pos[id(node.right)][0]) / 2, -level)

    def draw(node):
        x, y = pos[id(node)]
        if node.is_leaf:
            text = f"{acts[node.action]}\nn = {node.n} ({100 * node.n / n_total:.1f}%)"
            ax.text(x, y, text, ha="center", va="center", fontsize=8,
                    bbox=dict(boxstyle="round", fc=colours(node.action % 8), ec="0.3"))
            return
        split = _condition(node, names, True, binary)
        ax.text(x, y, f"{split}\nn = {node.n}", ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", fc="white", ec="0.3"))
        for child, label in ((node.left, "yes"), (node.right, "no")):
            cx, cy = pos[id(child)]
            ax.annotate("", xy=(cx, cy + 0.25), xytext=(x, y - 0.25),
                        arrowprops=dict(arrowstyle="->", color="0.4"))
            ax.text((x + cx) / 2, (y + cy) / 2, label, fontsize=7, color="0.3",
                    ha="center", va="center", bbox=dict(fc="white", ec="none", pad=0.5))
            draw(child)

    place(tree, 0)
    draw(tree)
    ax.set_xlim(-0.7, len(leaves) - 0.3)
    ax.set_ylim(-depth - 0.6, 0.6)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig, out: Path | None):
    """Write out.png and out.pdf (out may contain dots: sweep labels) and close the figure."""
    if out is None:
        return fig
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png, pdf = out.parent / f"{out.name}.png", out.parent / f"{out.name}.pdf"
    # the tight bounding box once for both files (savefig's bbox_inches="tight" would lay the
    # figure out again for each); 0.1 in of padding as savefig's default
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(0.1)
    import io

    from ..store import write_bytes
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text)
             if t.get_visible() and t.get_text().strip()]
    png_meta = {"simstudy:min_font_pt": f"{min(sizes, default=10.0):g}",
                "simstudy:width_in": f"{fig.get_size_inches()[0]:g}"}
    try:                 # drawn in memory, written atomically: a full disk names the file
        for path, kw in ((png, {"dpi": 130, "format": "png", "metadata": png_meta}),
                         (pdf, {"format": "pdf"})):
            buf = io.BytesIO()
            fig.savefig(buf, bbox_inches=box, **kw)
            write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
    return png
