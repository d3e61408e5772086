"""Your trial, your study (issue 42): calibrate a multisite design to a real trial, ask which rule
to trust on trials like it, and how many sites a new trial needs.

    simstudy apply --example star --simulate [--scenarios linear tree smooth none]
                   [--sim-reps 100] [--plan-sites 10 25 50 100] [--plan-target 0.9]

1. `calibrate`: the trial's covariates (cov and mod, standardised over its people), sites, site
   sizes and treated shares are kept; its outcome surface is the REML fit of
       Y ~ X + T + T:X_mod + (1 + T | site)
   (main effects of every covariate, the effect moderated by the moderators, a site random
   intercept and random effect of T, correlated; simstudy.engines.lmm, lme4's estimates), which
   gives main, delta, tau0, tau1, rho and the residual SD of the `calibrated` design family
   (simstudy/designs/calibrated.py). A 0/1 outcome is fitted by the same linear-probability
   model and simulated as Bernoulli(clip(m + t Delta, 0, 1)).
2. `calibration_table`: the simulated trials against the real one (means and SDs of Y by arm,
   site intercept and slope SDs, ICC, treated-share range): the real statistic is judged
   "inside" when it lies in the 2.5-97.5% range of the same statistic over simulated trials
   (each of which resamples the trial's sites and people, as the design does).
3. `simulate`: a study (the one runner: seeds, resumable store, report) of every rule on the
   calibrated design under each heterogeneity scenario, at the trial's number of sites; the
   answer per scenario (accuracy / regret / value with MC SEs, the leader and the rules
   indistinguishable from it) and one sentence of recommendation.
4. `plan`: the same design at other numbers of sites J; accuracy against J and the smallest J
   at which each rule reaches a target accuracy (point estimate, and with its MC 95% interval
   above the target).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

from .designs.calibrated import SCENARIOS

CHECK_REPS = 200          # simulated trials in the calibration table
STATS = ("mean_Y_control", "sd_Y_control", "mean_Y_treated", "sd_Y_treated",
         "site_intercept_sd", "site_slope_sd", "icc", "share_min", "share_max")


@dataclass
class Calibration:
    """The fitted design parameters of a trial and what they were fitted on."""
    params: dict                      # the `calibrated` design's parameters (scenario aside)
    names: dict                       # X1..Xp -> the trial's column
    moderators: list                  # the X names of the moderators
    frame: pd.DataFrame               # site, X1..Xp (standardised), T, Y
    fit: object                       # the LMMFit
    stats: dict = field(default_factory=dict)


def _standardised(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    X = df[columns].to_numpy(float)
    sd = X.std(axis=0)
    if np.any(sd == 0):
        raise DataError(f"--simulate: covariate(s) {[c for c, s in zip(columns, sd) if s == 0]} "
                        f"are constant in the trial; drop them from --covariates/--moderators")
    return (X - X.mean(axis=0)) / sd


def fit_outcome(site, X, T, y, moderators):
    """REML fit of y ~ X + T + T:X[:, moderators] + (1 + T | site): (fit, names)."""
    from .engines.lmm import fit_lmm
    p = X.shape[1]
    xn = [f"X{k + 1}" for k in range(p)]
    design = np.column_stack([np.ones_like(y), X, T, T[:, None] * X[:, moderators]])
    names = ["intercept", *xn, "T", *[f"T:{xn[k]}" for k in moderators]]
    fit = fit_lmm(design, y, site, np.column_stack([np.ones_like(y), T]), names=names,
                  re_names=["(Intercept)", "T"], reml=True)
    return fit, names


def trial_stats(site, X, T, y, moderators) -> dict:
    """The statistics the calibration table compares (real trial vs simulated trials)."""
    fit, _ = fit_outcome(site, X, T, y, moderators)
    tau0, tau1 = fit.re_sd
    codes = pd.factorize(site)[0]
    share = np.bincount(codes, weights=T) / np.bincount(codes)
    return {"mean_Y_control": y[T == 0].mean(), "sd_Y_control": y[T == 0].std(ddof=1),
            "mean_Y_treated": y[T == 1].mean(), "sd_Y_treated": y[T == 1].std(ddof=1),
            "site_intercept_sd": tau0, "site_slope_sd": tau1,
            "icc": tau0 ** 2 / (tau0 ** 2 + fit.sigma ** 2),
            "share_min": share.min(), "share_max": share.max()}


def calibrate(df: pd.DataFrame, outcome: str, treatment: str, site: str, cov, mod) -> Calibration:
    """Fit the calibrated design's parameters to a prepared trial (apply's `prepare` frame)."""
    columns = list(dict.fromkeys([*cov, *mod]))
    if df[site].nunique() < 2:
        raise DataError(f"--simulate: the trial has {df[site].nunique()} site; a multisite "
                        f"model needs at least 2")
    X = _standardised(df, columns)
    T = df[treatment].to_numpy(float)
    y = df[outcome].to_numpy(float)
    codes = pd.factorize(df[site], sort=True)[0]
    moderators = [columns.index(c) for c in mod]
    fit, names = fit_outcome(codes, X, T, y, moderators)
    if not np.all(np.isfinite(fit.beta)):
        raise DataError(f"--simulate: the outcome model has aliased terms {fit.aliased}; drop "
                        f"the redundant covariates")
    b = dict(zip(names, fit.beta.tolist()))
    xn = [f"X{k + 1}" for k in range(len(columns))]
    tau0, tau1 = (float(v) for v in fit.re_sd)
    rho = float(fit.re_corr[0, 1]) if tau0 > 0 and tau1 > 0 else 0.0
    binary = set(np.unique(y)) <= {0.0, 1.0}
    params = {
        "family": "calibrated", "site_column": "site", "covariate_columns": xn,
        "standardize": False, "treatment_column": "T", "site_sizes": "real",
        "min_site_size": 2, "outcome": "binary" if binary else "continuous",
        "main": {"intercept": b["intercept"], **{c: b[c] for c in xn}},
        "delta": {"intercept": b["T"], **{xn[k]: b[f"T:{xn[k]}"] for k in moderators}},
        "site_intercept_sd": tau0, "site_slope_sd": tau1, "site_corr": rho,
        "noise_sd": float(fit.sigma)}
    frame = pd.DataFrame({"site": df[site].astype(str).to_numpy(),
                          **{c: X[:, k] for k, c in enumerate(xn)}, "T": T.astype(int), "Y": y})
    cal = Calibration(params=params, names=dict(zip(xn, columns)),
                      moderators=[xn[k] for k in moderators], frame=frame, fit=fit)
    cal.stats = trial_stats(codes, X, T, y, moderators)
    return cal


def design_of(cal: Calibration, data: Path, scenario: str, name: str | None = None) -> dict:
    """The `calibrated` design mapping of one scenario (the trial's file at `data`)."""
    return {**copy.deepcopy(cal.params), "name": name or scenario, "data": str(data),
            "scenario": scenario}


def calibration_table(cal: Calibration, data: Path, reps: int = CHECK_REPS,
                      seed: int = 2024) -> pd.DataFrame:
    """Real vs simulated trials (scenario linear, the trial's number of sites): per statistic
    the real value, the simulated mean, 2.5% and 97.5% points, and whether the real value is
    inside that range."""
    from .designs import make_design
    design = make_design(design_of(cal, data, "linear"))
    J = cal.frame["site"].nunique()
    n_j = max(2, round(len(cal.frame) / J))
    mods = [int(c[1:]) - 1 for c in cal.moderators]
    xn = list(cal.names)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(reps):
        tr = design.simulate(rng, J, n_j).train
        rows.append(trial_stats(tr["site"].to_numpy(), tr[xn].to_numpy(float),
                                tr["T"].to_numpy(float), tr["Y"].to_numpy(float), mods))
    sim = pd.DataFrame(rows)
    out = pd.DataFrame({"statistic": list(STATS),
                        "real": [cal.stats[s] for s in STATS],
                        "simulated_mean": sim[list(STATS)].mean().to_numpy(),
                        "simulated_2.5%": sim[list(STATS)].quantile(0.025).to_numpy(),
                        "simulated_97.5%": sim[list(STATS)].quantile(0.975).to_numpy()})
    out["inside"] = (out["real"] >= out["simulated_2.5%"]) & (out["real"] <= out["simulated_97.5%"])
    return out


# ------------------------------------------------------------------------- the studies
def study_spec(cal: Calibration, data: Path, scenarios, J: list[int], reps: int, methods,
               seed: int, n_jobs: int, out: Path, progress: bool = True,
               sizes: list[int] | None = None, figures: bool = True) -> dict:
    """The study spec (what `simstudy run` composes) of the calibrated design's scenarios: the
    trial's real site sizes, or (`sizes`) Poisson site sizes of each mean n_j."""
    from .config import study_defaults
    plain = copy.deepcopy(study_defaults())
    n_j = [max(2, round(len(cal.frame) / cal.frame["site"].nunique()))] if not sizes \
        else list(sizes)
    mods = cal.moderators
    designs = [{**design_of(cal, data, s), **({"site_sizes": "poisson"} if sizes else {})}
               for s in scenarios]
    plain.update(design=designs, J=list(J), n_j=n_j,
                 reps=int(reps), methods=list(methods), seed=int(seed), n_jobs=int(n_jobs),
                 method_defaults={"covariates": list(cal.names), "moderators": mods,
                                  "features": mods},
                 method_options={}, out=str(out), progress=progress, figures=figures,
                 aim="Which rule should I trust on a trial like mine?",
                 probe=False)      # a fit that fails on some resampled trial is recorded, not fatal
    return plain


def run_spec(plain: dict, log=print) -> Path:
    from .api import execute
    return execute(plain, {}, None, echo=log)


def answer(metrics: pd.DataFrame, order) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(table per scenario and rule, headline per scenario, the recommendation sentence)."""
    from .report.study import headline
    ok = metrics[metrics["status"] == "ok"]
    failed = metrics[metrics["status"] != "ok"].groupby(["design", "method"],
                                                        observed=True).size()
    rows = []
    for (design, method), g in ok.groupby(["design", "method"], observed=True, sort=False):
        row = {"scenario": design, "rule": method, "reps": len(g),
               "failed": int(failed.get((design, method), 0))}
        for m in ("accuracy", "regret", "value"):
            x = g[m].to_numpy(float)
            row[m] = x.mean()
            row[f"{m}_mcse"] = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else np.nan
        rows.append(row)
    rank = {m: i for i, m in enumerate(order)}
    table = pd.DataFrame(rows)
    where = {s: i for i, s in enumerate(SCENARIOS)}
    table = table.sort_values(["scenario", "rule"], key=lambda c: c.map(
        rank if c.name == "rule" else where), kind="stable").reset_index(drop=True)
    head = headline(metrics, "accuracy", order).rename(columns={"design": "scenario"})
    head = head.sort_values("scenario", key=lambda c: c.map(where), kind="stable")
    text = recommend(table, head, order)
    return table, head, text


def recommend(table: pd.DataFrame, head: pd.DataFrame, order) -> str:
    """One sentence: the rule whose accuracy is never far below each scenario's leader (the
    smallest worst shortfall; ties: tied with the leader in more scenarios, then `order`), in
    how many scenarios it leads or ties, and how far below the leader it is elsewhere."""
    from .report.study import REFERENCE_RULES
    sets = {r.scenario: set(r.indistinguishable.split()) for r in head.itertuples()}
    best = {r.scenario: (r.leader, r.leader_mean) for r in head.itertuples()}
    acc = table[~table["rule"].isin(REFERENCE_RULES)].pivot(index="rule", columns="scenario",
                                                            values="accuracy")
    short = pd.DataFrame({sc: best[sc][1] - acc[sc] for sc in acc.columns if sc in best})
    if short.empty:
        return "No rule had a successful fit; see the study's failures.csv."
    worst = short.max(axis=1)
    tied = pd.Series({m: sum(m in sets.get(sc, ()) for sc in short.columns) for m in short.index})
    pos = {m: i for i, m in enumerate(order)}
    pick = min(short.index, key=lambda m: (round(worst[m], 6), -tied[m], pos.get(m, len(pos))))
    n = len(short.columns)
    where = [sc for sc in short.columns if pick in sets.get(sc, ())]
    rest = [sc for sc in short.columns if sc not in where]
    lead = ", ".join(f"{v[0]} under {k}" for k, v in best.items())
    beaten = [r.scenario for r in head.itertuples() if pick in str(r.beat_constant).split()]
    unbeaten = [f"{r.constant} under {r.scenario}" for r in head.itertuples()
                if r.constant and r.scenario not in beaten]
    consts = {r.constant for r in head.itertuples() if r.constant}
    if len(unbeaten) == n and len(consts) == 1:
        constant = (f" It beats {consts.pop()} in none of them: treating by that constant rule "
                    f"is as accurate, so on trials like this no targeting pays off.")
    else:
        constant = (f" It beats the better constant rule in {len(beaten)} of {n}"
                    + (f"; {', '.join(unbeaten)} is as accurate (no targeting pays off there)."
                       if unbeaten else "."))
    if not rest:
        return (f"Trust {pick}: the leader or indistinguishable from it (accuracy, paired 95% "
                f"interval) in all {n} scenarios, so the choice does not hinge on the shape of "
                f"the effect (leaders: {lead})." + constant)
    gap = ", ".join(f"{short.loc[pick, sc]:.3f} under {sc}" for sc in rest)
    return (f"The safest choice is {pick}: the leader or indistinguishable from it in {len(where)} "
            f"of {n} scenarios ({', '.join(where) or 'none'}) and below the leader by {gap}; "
            f"how much the choice depends on the effect's shape is that gap (leaders: {lead})."
            + constant)


def plan_table(metrics: pd.DataFrame, target: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(accuracy by scenario, rule and J with MC SE; the smallest J at which each rule reaches
    `target`: `J_reach` where the mean is >= target from that J on, `J_sure` where the MC 95%
    lower bound is; NaN where no J in the sweep does)."""
    ok = metrics[metrics["status"] == "ok"]
    curve = ok.groupby(["design", "method", "n_j", "J"], observed=True)["accuracy"].agg(
        ["mean", "std", "count"]).reset_index()
    curve["mcse"] = curve["std"] / np.sqrt(curve["count"])
    where = {s: i for i, s in enumerate(SCENARIOS)}
    curve = curve.sort_values(["design", "n_j", "J"], key=lambda c: c.map(where)
                              if c.name == "design" else c, kind="stable")
    curve = curve.rename(columns={"design": "scenario", "method": "rule", "mean": "accuracy",
                                  "count": "reps"}).drop(columns="std")
    rows = []
    for (sc, rule, n_j), g in curve.groupby(["scenario", "rule", "n_j"], sort=False):
        g = g.sort_values("J")

        def first(ok_):                 # the smallest J from which every larger J reaches it
            ok_ = np.asarray(ok_)
            for k in range(len(ok_)):
                if ok_[k:].all():
                    return int(g["J"].iloc[k])
            return np.nan
        rows.append({"scenario": sc, "rule": rule, "n_j": n_j, "target": target,
                     "J_reach": first(g["accuracy"] >= target),
                     "J_sure": first(g["accuracy"] - 1.96 * g["mcse"] >= target),
                     "accuracy_at_max_J": float(g["accuracy"].iloc[-1])})
    reach = pd.DataFrame(rows)
    for c in ("J_reach", "J_sure"):
        reach[c] = reach[c].astype("Int64")
    return curve, reach


def plan_md(reach: pd.DataFrame, sizes_given: bool) -> str:
    """The planning table for simulate.md: a row per rule, a column per scenario (and mean
    site size), each cell 'J_reach / J_sure (accuracy at the largest J)'."""
    r = reach.copy()
    r["cell"] = [("-" if pd.isna(a) else str(a)) + " / " + ("-" if pd.isna(b) else str(b))
                 + f" ({m:.3f})" for a, b, m in zip(r["J_reach"], r["J_sure"],
                                                      r["accuracy_at_max_J"])]
    r["column"] = r["scenario"] + ((", n_j " + r["n_j"].astype(str)) if sizes_given else "")
    wide = r.pivot(index="rule", columns="column", values="cell")
    wide = wide.loc[list(dict.fromkeys(r["rule"])), list(dict.fromkeys(r["column"]))]
    return _fmt(wide.reset_index().rename_axis(None, axis=1))


def plan_figure(curve: pd.DataFrame, target: float, path: Path) -> None:
    """Accuracy against J: a panel per scenario (columns) and mean site size (rows)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    scenarios = list(dict.fromkeys(curve["scenario"]))
    sizes = sorted(curve["n_j"].unique())
    rules = list(dict.fromkeys(curve["rule"]))
    colours = dict(zip(rules, plt.get_cmap("tab20")(np.linspace(0, 1, max(len(rules), 2)))))
    fig, axes = plt.subplots(len(sizes), len(scenarios), squeeze=False, sharey=True,
                             figsize=(4.2 * len(scenarios), 3.6 * len(sizes) + 0.6))
    Js = sorted(curve["J"].unique())
    for i, n_j in enumerate(sizes):
        for ax, sc in zip(axes[i], scenarios):
            cell = curve[(curve["scenario"] == sc) & (curve["n_j"] == n_j)]
            for rule, g in cell.groupby("rule", sort=False):
                g = g.sort_values("J")
                ref = rule in ("oracle", "treat-all", "treat-none")
                ax.errorbar(g["J"], g["accuracy"], yerr=1.96 * g["mcse"], marker="o", ms=3,
                            lw=1, ls="--" if ref else "-", label=rule, capsize=2,
                            color=colours[rule])
            ax.axhline(target, color="k", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_xticks(Js)
            ax.set_xticklabels([str(j) for j in Js])
            ax.minorticks_off()
            ax.set_title(f"scenario {sc}" + (f", n_j {n_j}" if len(sizes) > 1 else ""), fontsize=9)
            ax.set_xlabel("number of sites J")
        axes[i][0].set_ylabel(f"accuracy (target {target:g} dotted)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, ncol=min(9, len(labels)), loc="lower center")
    fig.suptitle("Accuracy against the number of sites (calibrated design; bars: MC 95%)")
    fig.tight_layout(rect=(0, 0.09 if len(labels) > 9 else 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path.with_suffix(".png"), dpi=120)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)


# ------------------------------------------------------------------------- apply --simulate
def _fmt(table: pd.DataFrame, digits: int = 3) -> str:
    from .report.tables import to_markdown
    return to_markdown(table, digits=digits)


def simulate(req: dict, sim: dict, title: str = "", log=print) -> Path:
    """`simstudy apply --simulate`: calibrate, check, run the scenarios' study (and the plan),
    write the answer beside the apply output (`<out>_simulate/`) and into its report."""
    from .store import write_csv, write_text
    out = Path(req["out"])
    dest = out.with_name(out.name + "_simulate")
    dest.mkdir(parents=True, exist_ok=True)
    df = req["df"]
    cal = calibrate(df, req["outcome"], req["treatment"], req["site"], req["cov"], req["mod"])
    data = (dest / "trial.csv").absolute()
    text = cal.frame.to_csv(index=False, float_format="%.17g")
    if not data.exists() or data.read_text() != text:        # unchanged: the store resumes
        write_text(data, text)
    names = pd.DataFrame({"X": list(cal.names), "column": list(cal.names.values()),
                          "moderator": [x in cal.moderators for x in cal.names]})
    params = pd.DataFrame([{"term": f"main.{k}", "estimate": v} for k, v in
                           cal.params["main"].items()]
                          + [{"term": f"delta.{k}", "estimate": v} for k, v in
                             cal.params["delta"].items()]
                          + [{"term": k, "estimate": cal.params[k]} for k in
                             ("site_intercept_sd", "site_slope_sd", "site_corr", "noise_sd")])
    J = int(df[req["site"]].nunique())
    log(f"--simulate: calibrated to {len(df)} people in {J} sites ({cal.params['outcome']} "
        f"outcome); checking {CHECK_REPS} simulated trials against the real one")
    check = calibration_table(cal, data, seed=req["seed"])
    write_csv(names, dest / "covariates.csv", index=False)
    write_csv(params, dest / "calibration_parameters.csv", index=False)
    write_csv(check, dest / "calibration.csv", index=False)
    log(f"--simulate: {sim['reps']} replicates x {len(sim['scenarios'])} scenarios "
        f"({', '.join(sim['scenarios'])}) at J={J}, {len(sim['methods'])} rules, "
        f"n_jobs={sim['n_jobs']}; store {dest / 'store'} (resumable)")
    spec = study_spec(cal, data, sim["scenarios"], [J], sim["reps"], sim["methods"],
                      req["seed"], sim["n_jobs"], dest / "store")
    run_spec(spec, log)
    from .store import read_metrics
    table, head, sentence = answer(read_metrics(dest / "store"), sim["methods"])
    write_csv(table, dest / "answer.csv", index=False)
    write_csv(head, dest / "headline.csv", index=False)
    curve = reach = None
    if not sim["plan_sites"]:       # an earlier run's plan tables would outlive its text
        for f in ("plan_curve.csv", "plan_sites.csv", "figures/plan_sites.png",
                  "figures/plan_sites.pdf"):
            (dest / f).unlink(missing_ok=True)
    if sim["plan_sites"]:                       # real sizes and Poisson sizes: two stores
        plan_store = dest / ("plan_sizes" if sim["plan_sizes"] else "plan")
        log(f"--simulate: planning, J in {sim['plan_sites']}"
            + (f", mean site size in {sim['plan_sizes']}" if sim["plan_sizes"] else "")
            + f" ({sim['reps']} replicates each); store {plan_store}")
        run_spec(study_spec(cal, data, sim["scenarios"], sim["plan_sites"], sim["reps"],
                            sim["methods"], req["seed"], sim["n_jobs"], plan_store,
                            sizes=sim["plan_sizes"], figures=False), log)
        curve, reach = plan_table(read_metrics(plan_store), sim["target"])
        write_csv(curve, dest / "plan_curve.csv", index=False)
        write_csv(reach, dest / "plan_sites.csv", index=False)
        plan_figure(curve, sim["target"], dest / "figures" / "plan_sites")
    md = simulate_md(cal, names, check, table, head, sentence, reach, sim, J, len(df))
    write_text(dest / "simulate.md", md)
    _into_report(out, dest, md, title, log)
    log(f"--simulate: written to {dest}: simulate.md (the answer), answer.csv, headline.csv, "
        f"calibration.csv, calibration_parameters.csv, covariates.csv"
        + (", plan_curve.csv, plan_sites.csv, figures/plan_sites.png" if reach is not None
           else "") + f"; and into {out / 'report.html'}")
    return dest


def simulate_md(cal, names, check, table, head, sentence, reach, sim, J, n) -> str:
    """simulate.md: the recommendation, the per-scenario table, the calibration check, the plan."""
    inside = int(check["inside"].sum())
    lines = ["## Which rule to trust on a trial like this", "",
             f"**{sentence}**", "",
             f"Calibrated simulation: {sim['reps']} simulated trials per scenario, each with this "
             f"trial's {J} sites resampled (real sizes, real covariates, real treated shares) "
             f"and outcomes from the multilevel model fitted to it (Y ~ X + T + T:X_mod + "
             f"(1 + T | site), REML); the effect's shape by scenario: linear = the fitted "
             f"moderation, tree / smooth = the same SD of the X part in another shape, none = "
             f"the average effect for everyone. Covariates: "
             + ", ".join(f"{r.X} = {r.column}" for r in names.itertuples()) + ".", ""]
    from .report.study import headline_text           # the study report's own lines
    lines += headline_text(head.rename(columns={"scenario": "design"})).splitlines()[2:]
    lines += ["", "### Accuracy, regret and value per scenario (mean, MC SE)", "",
              _fmt(table.round(4), 4), "",
              f"### Calibration check: simulated trials vs this trial ({inside} of {len(check)} "
              f"statistics inside the simulated 2.5-97.5% range)", "", _fmt(check, 4), ""]
    if reach is not None:
        lines += [f"### Planning: sites needed for accuracy {sim['target']:g}", "",
                  "Each cell: J_reach / J_sure (accuracy at the largest J). J_reach: the "
                  "smallest number of sites (of " + ", ".join(map(str, sim["plan_sites"]))
                  + ") from which the mean accuracy reaches the target; J_sure: from which its "
                  "MC 95% lower bound does; -: no J in the sweep. Site sizes: "
                  + ("Poisson with mean n_j" if sim["plan_sizes"] else "the trial's, resampled")
                  + " (plan_sites.csv, plan_curve.csv: every number; figures/plan_sites.png).",
                  "", plan_md(reach, bool(sim["plan_sizes"])), ""]
    return "\n".join(lines) + "\n"


def _into_report(out: Path, dest: Path, md: str, title: str, log) -> None:
    """The answer into the apply output (simulate.md, its tables, the plan figure) and its
    report.html re-rendered with them."""
    import shutil

    from .report.html import write_apply_html
    from .store import write_text
    write_text(out / "simulate.md", md)
    for name in ("answer.csv", "headline.csv", "calibration.csv", "plan_sites.csv"):
        if (dest / name).exists():
            shutil.copyfile(dest / name, out / f"simulate_{name}")
    for ext in (".png", ".pdf"):
        f = dest / "figures" / f"plan_sites{ext}"
        if f.exists():
            (out / "figures").mkdir(exist_ok=True)
            shutil.copyfile(f, out / "figures" / f.name)
    note = (out / "values.md").read_text()          # apply's note, then its values table
    write_apply_html(out, title or out.name, note.split("\n|", 1)[0])
