"""The statistics of the study itself (Morris, White & Crowther 2019, "Using simulation studies
to evaluate statistical methods", Stat Med): paired comparisons against a reference method,
performance measures with their Monte Carlo SEs, the data of a nested-loop plot (Ruecker &
Schwarzer 2014), replicate planning, and the ADEMP protocol block. Reads stored rows only.

Every method sees the same replicate, so differences are paired: for method m and reference r
in one cell, d_i = metric_i(m) - metric_i(r) over the replicates i where both succeeded;
mean(d) with MC SE = SD(d) / sqrt(n) and the 95% interval mean +- t(0.975, n - 1) SE (Student's
t: at 20 replicates 2.09, not 1.96).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from ..errors import ConfigError

CONDITION = ["point", "design", "J", "n_j"]
COMPARED = ("accuracy", "f1", "spearman", "auc", "value", "regret")
LOWER_IS_BETTER = {"regret"}
REFERENCE_RULES = {"oracle", "treat-all", "treat-none"}


def paired(metrics: pd.DataFrame, reference: str, compared=COMPARED) -> pd.DataFrame:
    """Per cell, metric and method: paired mean difference from `reference`, its MC SE, a 95%
    interval, and win / tie / loss counts (win = better than the reference; for regret lower
    is better; tie = equal to 1e-12)."""
    ok = metrics[metrics["status"] == "ok"]
    if reference not in set(ok["method"]):
        raise ConfigError(f"report reference {reference!r} has no successful rows; methods: "
                         f"{sorted(set(ok['method']))}")
    rows = []
    for key, cell in ok.groupby(CONDITION, sort=True, observed=True):
        # replicate x method tables of each metric (the store holds one row per pair)
        reps, row = np.unique(cell["replicate"].to_numpy(), return_inverse=True)
        names, col = np.unique(cell["method"].to_numpy(object), return_inverse=True)
        for metric in compared:
            W = np.full((reps.size, names.size), np.nan)
            W[row, col] = cell[metric].to_numpy(float)
            present = ~np.isnan(W)
            if reference not in names or not present[:, names == reference].any():
                continue
            ref = W[:, int(np.flatnonzero(names == reference)[0])]
            for m, method in enumerate(names):
                if method == reference or not present[:, m].any():
                    continue
                both = present[:, m] & ~np.isnan(ref)
                d = W[both, m] - ref[both]
                n = d.size
                mean = d.mean() if n else np.nan
                se = d.std(ddof=1) / math.sqrt(n) if n > 1 else np.nan
                q = float(student_t.ppf(0.975, n - 1)) if n > 1 else np.nan   # 1.96 at large n
                sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
                rows.append({**dict(zip(CONDITION, key)), "metric": metric, "method": method,
                             "reference": reference, "pairs": n, "mean_diff": mean,
                             "mcse": se, "ci_low": mean - q * se, "ci_high": mean + q * se,
                             "wins": int(np.sum(sign * d > 1e-12)),
                             "ties": int(np.sum(np.abs(d) <= 1e-12)),
                             "losses": int(np.sum(sign * d < -1e-12))})
    return pd.DataFrame(rows)


def measures(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per cell and method: SD of each metric across replicates with its MC SE
    (SD / sqrt(2 (n - 1)), Morris et al. Table 6), the share of replicates whose rule is
    constant (treats all or none), and the relative regret: regret / (V(d_opt) - best constant
    rule's value), the share of the personalisation gain lost (needs oracle, treat-all and
    treat-none in the study; NaN otherwise)."""
    ok = metrics[metrics["status"] == "ok"]
    rows = []
    for key, cell in ok.groupby(CONDITION, sort=True, observed=True):
        v = cell.pivot_table(index="replicate", columns="method", values="value", observed=True)
        gain = None
        if REFERENCE_RULES <= set(v.columns):
            gain = v["oracle"] - np.maximum(v["treat-all"], v["treat-none"])
        for method, g in cell.groupby("method", observed=True):
            row = {**dict(zip(CONDITION, key)), "method": method, "reps": len(g)}
            for m in ("accuracy", "value", "regret"):
                x = g[m].to_numpy(float)
                x = x[np.isfinite(x)]
                sd = x.std(ddof=1) if x.size > 1 else np.nan
                row[f"{m}_sd"] = sd
                row[f"{m}_sd_mcse"] = sd / math.sqrt(2 * (x.size - 1)) if x.size > 1 else np.nan
            share = g["treated_share"].to_numpy(float)
            row["constant_rule_share"] = float(np.mean((share == 0) | (share == 1)))
            if gain is not None:
                r = g.set_index("replicate")["regret"].reindex(gain.index)
                rel = (r / gain.where(gain > 0)).to_numpy(float)
                rel = rel[np.isfinite(rel)]
                row["relative_regret"] = rel.mean() if rel.size else np.nan
                row["relative_regret_mcse"] = (rel.std(ddof=1) / math.sqrt(rel.size)
                                               if rel.size > 1 else np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def value_claims(metrics: pd.DataFrame) -> pd.DataFrame:
    """The value each rule claims, judged as an estimator (issue 41; claims.py): per cell and
    method over the replicates with a claim, with error e_r = value_hat_r - value_true_r (the
    estimand is the value of the rule learned in replicate r, so it moves with the data):
    bias = mean e, empirical SE = SD of e, model SE = sqrt(mean value_se^2), coverage = the
    share of 95% intervals value_hat +- 1.96 value_se that hold value_true; each with its Monte
    Carlo SE (Morris, White & Crowther 2019, Table 6): SD(e)/sqrt(R), empSE/sqrt(2(R-1)),
    sqrt(Var(value_se^2) / (4 R modSE^2)), sqrt(c(1-c)/R)."""
    cols = ["value_hat", "value_se", "value_true"]
    if not set(cols) <= set(metrics.columns):
        return pd.DataFrame()
    ok = metrics[(metrics["status"] == "ok") & metrics["value_hat"].notna()
                 & metrics["value_se"].notna() & metrics["value_true"].notna()]
    rows = []
    for key, g in ok.groupby(CONDITION + ["method"], sort=True, observed=True):
        e = (g["value_hat"] - g["value_true"]).to_numpy(float)
        se2 = g["value_se"].to_numpy(float) ** 2
        R = e.size
        cover = float(np.mean(np.abs(e) <= 1.96 * np.sqrt(se2)))
        emp = e.std(ddof=1) if R > 1 else np.nan
        mod = math.sqrt(se2.mean())
        rows.append({**dict(zip(CONDITION + ["method"], key)), "reps": R,
                     "value_true": g["value_true"].mean(), "value_hat": g["value_hat"].mean(),
                     "bias": e.mean(), "bias_mcse": emp / math.sqrt(R) if R > 1 else np.nan,
                     "emp_se": emp,
                     "emp_se_mcse": emp / math.sqrt(2 * (R - 1)) if R > 1 else np.nan,
                     "model_se": mod,
                     "model_se_mcse": (math.sqrt(se2.var(ddof=1) / (4 * R * mod ** 2))
                                       if R > 1 and mod > 0 else np.nan),
                     "coverage": cover, "coverage_mcse": math.sqrt(cover * (1 - cover) / R)})
    return pd.DataFrame(rows)


def nested_loop_data(summ: pd.DataFrame, metric: str = "accuracy",
                     factors: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """The data of a nested-loop plot: one row per condition (every combination of the
    factors that vary: design, J, n_j and swept keys), sorted with the first factor varying
    slowest, with its x position and the mean of `metric` per method as columns."""
    s = summ[~summ["method"].isin(REFERENCE_RULES)]
    if factors is None:
        candidates = ["design", "J", "n_j"] + [c for c in s.columns if "." in c or c == "seed"]
        factors = [c for c in candidates if c in s and s[c].nunique() > 1]
    key = factors or ["design"]
    wide = s.pivot_table(index=key, columns="method", values=f"{metric}_mean",
                         observed=True).sort_index()
    wide = wide.reset_index()
    wide.insert(0, "x", np.arange(len(wide)))
    return wide, factors


MAX_PLAN = 1e9          # replicates per cell beyond which a target is not a plan


def plan(metrics: pd.DataFrame, target: float, metric: str = "accuracy",
         n_jobs: int = 1) -> pd.DataFrame:
    """Replicates each cell needs for MC SE <= `target` of `metric` (the worst method in the
    cell): ceil((SD / target)^2) from the stored (pilot) replicates, and the wall time that
    takes at the stored seconds per replicate (all methods) on `n_jobs` workers."""
    if metric not in metrics.columns or metric in ("seconds", "status", "error", "warning"):
        from ..metrics import METRICS
        extra = [c for c in metrics.columns if c not in (*METRICS, "seconds", "status", "error",
                                                         "warning", "fits", "point", "design",
                                                         "J", "n_j", "replicate", "method")]
        raise ConfigError(f"--metric {metric!r}: not a metric of this store; choose from "
                          f"{', '.join([*METRICS, *extra])}")
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"--target {target}: must be a finite number > 0")
    ok = metrics[metrics["status"] == "ok"]
    rows = []
    for key, cell in ok.groupby(CONDITION, sort=True, observed=True):
        sd = cell.groupby("method", observed=True)[metric].std(ddof=1)
        sd = sd[sd.notna()]
        if sd.empty:
            continue
        worst = sd.idxmax()
        with np.errstate(over="ignore"):
            ratio = (sd.max() / target) ** 2
        if not ratio <= MAX_PLAN:
            raise ConfigError(f"--target {target}: {key[1]} (J={key[2]}, n_j={key[3]}) would "
                              f"need about {ratio:.3g} replicates; give a larger target (its "
                              f"SD is {sd.max():.3g})")
        need = int(math.ceil(ratio))
        have = int(cell["replicate"].nunique())
        # median: a worker's first replicate also pays its start-up (imports, compiled
        # kernels), which a mean spreads over every replicate still to run
        per_rep = float(cell.groupby("replicate")["seconds"].sum().median())
        extra = max(0, need - have)
        rows.append({**dict(zip(CONDITION, key)), "pilot_reps": have, "worst_method": worst,
                     "sd": float(sd.max()), "mcse_now": float(sd.max() / math.sqrt(have)),
                     "reps_needed": need, "more_reps": extra,
                     "seconds_per_rep": per_rep,
                     "wall_minutes": extra * per_rep / max(1, n_jobs) / 60})
    return pd.DataFrame(rows)


def ademp(cfg: dict, metrics: pd.DataFrame) -> str:
    """The protocol block opening summary.md (Morris et al.: Aims, Data-generating mechanisms,
    Estimands, Methods, Performance measures), generated from the stored config."""
    from ..metrics import METRICS
    last = cfg.get("last_run", {}) or {}
    families = {str(p.get("family", "multisite")) for pt in cfg.get("points", {}).values()
                for p in (pt.get("designs") or {}).values()}
    ours = families <= {"multisite", "plasmode"}        # the built-in designs; else a plugin's
    aim = last.get("aim") or ("compare estimators of the optimal treatment rule learnt from "
                              "multisite randomized trials" + (" (Suk & Park)" if ours else ""))
    lines = ["## Protocol (ADEMP)", "", f"- **Aims**: {aim}."]
    lines.append("- **Data-generating mechanisms** ("
                 + ("docs/designs.md; " if ours else f"design families {', '.join(sorted(families))}; ")
                 + "train and test sets of new people in the same sites):")
    from ..designs import design_defaults
    from ..options import plain
    for label, pt in cfg.get("points", {}).items():
        where = f" at sweep point `{label}`" if label else ""
        for name, params in pt.get("designs", {}).items():
            family = str(params.get("family", "multisite"))
            base = design_defaults(family)
            flat, differ = [], []
            for k, v in params.items():
                if k in ("name", "family"):
                    continue
                if isinstance(v, dict):
                    items = [f"{k}.{kk}={vv}" for kk, vv in v.items()] or [f"{k}={{}}"]
                else:
                    items = [f"{k}={v}"]
                flat += items
                if base and k in base and plain(base[k]) != plain(v):
                    differ += items
            shown = (f"{family} family; differs from its defaults in: " + ", ".join(differ)
                     if differ else f"{family} family at its defaults") if base else \
                ", ".join(flat)
            lines.append(f"  - `{name}`{where}: {shown}")
            if base:
                lines.append(f"    <details><summary>every parameter</summary>"
                             f"{', '.join(flat)}</details>")
    sizes = sorted({(int(a), int(b)) for a, b in metrics[["J", "n_j"]].itertuples(index=False)})
    lines.append("  - sites x people per site (J, n_j): " + ", ".join(f"({a}, {b})" for a, b in sizes))
    lines.append("- **Estimand**: the optimal rule d_opt(x) = 1{Delta(x) > 0} on each test set "
                 "(and its value E[Y(d_opt)]), known from the design's potential outcomes.")
    methods, options = [], {}
    for pt in cfg.get("points", {}).values():
        st = pt.get("study", {})
        methods += [m for m in st.get("methods", []) if m not in methods]
        for m, o in (st.get("method_options") or {}).items():
            options.setdefault(m, o)
        defaults = st.get("method_defaults") or {}
    lines.append("- **Methods**: " + ", ".join(
        f"{m}" + (f" ({', '.join(f'{k}={v}' for k, v in options[m].items())})" if m in options else "")
        for m in methods) + (f"; for all: {', '.join(f'{k}={v}' for k, v in defaults.items())}"
                             if methods and defaults else ""))
    lines.append(f"- **Performance measures** (test set, per replicate; mean, SD and their Monte "
                 f"Carlo SEs over replicates): {', '.join(METRICS)}; paired differences against "
                 f"a reference method; the share of constant rules; relative regret.")
    ok = metrics[metrics["status"] == "ok"]
    reps = ok.groupby(CONDITION + ["method"], observed=True)["replicate"].nunique()
    worst = (ok.groupby(CONDITION + ["method"], observed=True)["accuracy"].std(ddof=1)
             / np.sqrt(reps)).max()
    planned = {c.get("reps") for c in cfg.get("planned", [])}
    stops = [f"{c['design']} ({c['J']}, {c['n_j']}): {c['stopped']}"
             for c in cfg.get("planned", []) if c.get("stopped")]
    why = ("reps=auto, replicates added until the Monte Carlo SE target was met: "
           + "; ".join(stops)) if stops else (
        f"{', '.join(map(str, sorted(planned)))} planned per cell" if planned else "as stored")
    count = (f"{int(reps.min())} per cell" if reps.min() == reps.max() else
             f"{int(reps.min())}-{int(reps.max())} per cell and method (the cells or methods "
             f"differ: failed fits, or cells still running)")
    lines.append(f"- **Replicates**: {count} ({why}); the largest Monte Carlo SE of a mean "
                 f"accuracy is {worst:.4f}.")
    return "\n".join(lines) + "\n\n"


def headline(metrics: pd.DataFrame, metric: str = "accuracy", order=None) -> pd.DataFrame:
    """The study's answer, per cell (point, design, J, n_j), on `metric` (higher is better, or
    lower for regret): the leader (the best mean over successful fits: summary.csv's argmax
    among the estimators, the reference rules aside), the methods statistically
    indistinguishable from it (the 95% interval of their paired difference from the leader
    holds 0), the runner-up's paired margin with its MC SE, and the better constant rule
    (treat-all / treat-none) with the estimators whose paired interval against it lies wholly
    on the better side. Equal means go to the method first in `order` (the study's), as in
    summary.csv's row order."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    rank = {m: i for i, m in enumerate(order or [])}
    ok = metrics[metrics["status"] == "ok"]
    rows = []
    for key, cell in ok.groupby(CONDITION, sort=True, observed=True):
        means = cell.groupby("method", observed=True)[metric].mean().dropna()
        rules = means[[m not in REFERENCE_RULES for m in means.index]]
        if rules.empty:
            continue
        ranked = (sign * rules).iloc[sorted(range(len(rules)), key=lambda i: (
            -sign * rules.iloc[i], rank.get(rules.index[i], len(rank)), rules.index[i]))]
        leader = ranked.index[0]
        vs = paired(cell, leader, (metric,)) if len(ranked) > 1 else pd.DataFrame()
        tied = [leader] + ([r.method for r in vs.itertuples() if r.method in rules.index
                            and (r.ci_high >= 0 if sign > 0 else r.ci_low <= 0)
                            and np.isfinite(r.mcse)] if len(vs) else [])
        tied = [m for m in ranked.index if m in tied]           # in order of the mean
        row = {**dict(zip(CONDITION, key)), "metric": metric, "leader": leader,
               "leader_mean": float(rules[leader]), "indistinguishable": " ".join(tied),
               "runner_up": None, "margin": np.nan, "margin_mcse": np.nan,
               "constant": None, "constant_mean": np.nan, "beat_constant": ""}
        if len(ranked) > 1:
            second = ranked.index[1]
            d = vs[vs["method"] == second].iloc[0]
            row.update(runner_up=second, margin=-float(d.mean_diff) * sign + 0.0,
                       margin_mcse=float(d.mcse))
        constants = means[[m in ("treat-all", "treat-none") for m in means.index]]
        if len(constants):
            best = (sign * constants).idxmax()
            vc = paired(cell, best, (metric,))
            beat = [r.method for r in vc.itertuples() if r.method in rules.index
                    and (r.ci_low > 0 if sign > 0 else r.ci_high < 0)]
            row.update(constant=best, constant_mean=float(constants[best]),
                       beat_constant=" ".join(m for m in ranked.index if m in beat))
        rows.append(row)
    return pd.DataFrame(rows)


def _small(x: float) -> str:
    """A margin or an MC SE: four decimals, or '< 0.0001' rather than a misleading 0.0000."""
    return f"{x:.4f}" if abs(x) >= 5e-5 else "< 0.0001"


def headline_text(table: pd.DataFrame) -> str:
    """summary.md's (and the page's) opening block: a line per cell and one reading across the
    cells (how often each method leads or ties the leader)."""
    if table.empty:
        return ""
    metric = table["metric"].iloc[0]
    lines = [f"## Headline ({metric}; leader = the best mean among the estimators)", ""]
    for r in table.itertuples():
        where = f"{r.design}, (J, n_j) = ({r.J}, {r.n_j})" + (f" [{r.point}]" if r.point else "")
        tied = [m for m in r.indistinguishable.split() if m != r.leader]
        text = f"- **{where}**: **{r.leader}** {r.leader_mean:.3f}"
        text += (f"; indistinguishable from it (paired 95% interval holds 0): {', '.join(tied)}"
                 if tied else "; no other rule is within its paired 95% interval")
        if r.runner_up:
            text += (f"; runner-up {r.runner_up}, {_small(r.margin)} behind (MC SE "
                     f"{_small(r.margin_mcse)})" if r.margin > 0 else
                     f"; runner-up {r.runner_up}, the same on every replicate"
                     if r.margin == 0 and r.margin_mcse == 0 else
                     f"; runner-up {r.runner_up}, {abs(r.margin):.4f} behind on the paired "
                     f"replicates (MC SE {r.margin_mcse:.4f})")
        if r.constant:
            beat = r.beat_constant.split() if r.beat_constant else []
            text += (f"; {len(beat)} rule(s) beat the better constant rule ({r.constant} "
                     f"{r.constant_mean:.3f})" + ("" if beat else ": none does"))
        lines.append(text + ".")
    counts: dict[str, int] = {}
    for r in table.itertuples():
        for m in r.indistinguishable.split():
            counts[m] = counts.get(m, 0) + 1
    by_count: dict[int, list[str]] = {}
    for m, k in counts.items():
        by_count.setdefault(k, []).append(m)
    n = len(table)
    groups = [f"{('all ' + str(n)) if k == n > 1 else 'the one' if k == n else f'{k} of {n}'}"
              f": {', '.join(sorted(ms))}"
              for k, ms in sorted(by_count.items(), reverse=True)[:3]]
    lead = table["leader"].value_counts()
    lines += ["", f"Reading: the rules that lead or are indistinguishable from the leader, by "
              f"the number of conditions where they are: " + "; ".join(groups)
              + f" (the outright leader most often: {lead.index[0]}, {int(lead.iloc[0])} of "
              f"{n}). Means and MC SEs: the tables below; every paired difference: "
              f"comparison.csv.", ""]
    return "\n".join(lines) + "\n"


# the warnings a fit can store (metrics.parquet `warning`), by kind: a pattern of the text, the
# kind's name and what it means for the rule (engines/lmm.py, methods/weighting.py)
WARNING_KINDS = (
    ("boundary (singular) fit", "singular fit",
     "a random-effect variance (a random slope's, as a rule) was estimated at its bound 0, as "
     "lme4 reports it: the model is then the one without that random effect (Q-rs acts as "
     "Q-ri), a fitted model, not a failed one"),
    ("did not converge", "not converged",
     "the mixed model's optimiser stopped before its convergence test (lme4 would warn too)"),
    ("lasso selected no moderator", "constant rule",
     "after the refit loop the lasso kept no moderator, so the rule treats everyone or no one "
     "(personalized's behaviour, docs/estimators.md)"),
)


def warning_kind(text) -> str:
    """The kind (WARNING_KINDS) of a stored warning text; 'other' for one not listed."""
    for pattern, kind, _ in WARNING_KINDS:
        if pattern in str(text):
            return kind
    return "other"


def warnings_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per cell, method and warning kind: the successful fits with that warning, their share,
    and whether it goes with other decisions: the mean accuracy of the warned fits, of the
    method's other fits in the cell, and the difference (NaN when every fit was warned)."""
    ok = metrics[metrics["status"] == "ok"]
    if "warning" not in ok or ok["warning"].isna().all():
        return pd.DataFrame(columns=CONDITION + ["method", "kind", "warned", "fits", "share",
                                                 "accuracy_warned", "accuracy_other",
                                                 "difference"])
    rows = []
    for (key, method), cell in _by_method(ok):
        kinds = [warning_kind(t) if isinstance(t, str) and t else None
                 for t in cell["warning"].astype(object).where(cell["warning"].notna(), None)]
        acc = cell["accuracy"].to_numpy(float)
        for kind in sorted({k for k in kinds if k}):
            hit = np.array([k == kind for k in kinds])
            warned, other = pd.Series(acc[hit]), pd.Series(acc[~hit])
            rows.append({**dict(zip(CONDITION, key)), "method": method, "kind": kind,
                         "warned": int(hit.sum()), "fits": len(cell),
                         "share": hit.mean(), "accuracy_warned": warned.mean(),
                         "accuracy_other": other.mean() if len(other) else np.nan,
                         "difference": warned.mean() - other.mean() if len(other) else np.nan})
    return pd.DataFrame(rows)


def _by_method(ok: pd.DataFrame):
    for key, cell in ok.groupby([*CONDITION, "method"], observed=True, sort=True):
        yield (key[:-1], key[-1]), cell


def warnings_text(table: pd.DataFrame) -> str:
    """One paragraph per warning kind present: what it is, how often, and the measured
    difference in accuracy between warned and other fits of the same method and cell."""
    if table.empty:
        return ""
    out = []
    for pattern, kind, meaning in WARNING_KINDS + (("", "other", "a warning of another kind "
                                                     "(its text in metrics.parquet)"),):
        part = table[table["kind"] == kind]
        if part.empty:
            continue
        diff = part["difference"].dropna()
        w = (part["warned"] * part["difference"]).dropna().sum() / part.loc[
            part["difference"].notna(), "warned"].sum() if len(diff) else np.nan
        effect = (f"warned fits are {abs(w):.3f} {'less' if w < 0 else 'more'} accurate than "
                  f"the same method's other fits in the same cell (weighted by the warned "
                  f"fits; per cell in the table)" if np.isfinite(w) else
                  "every fit of these methods was warned, so there is nothing to compare")
        methods = ", ".join(sorted(set(part["method"])))
        out.append(f"- **{kind}** ({methods}; {int(part['warned'].sum())} of "
                   f"{int(part['fits'].sum())} fits): {meaning}. Measured here: {effect}.")
    return "\n".join(out) + "\n"
