"""Apply the estimators to one multisite randomized trial (Suk & Park Section 6, Figs 6-9),
plus policy trees on doubly robust scores and the estimated value of every rule.

    simstudy apply --data trial.csv --outcome Y --treatment T --site school \
        --covariates X1 X2 X3 --moderators X3 X4 [--methods ...] [--by X4] --out DIR

Every method is fitted on all rows and scores the same rows (the paper's in-sample decisions,
Section 6). Categorical columns are expanded as R's model.matrix does (treatment contrasts:
one 0/1 column per level except the first, named column + level). A rule's value is the mean
of the cross-fitted AIPW scores Gamma_i(d_i) (SPEC 5) over the rows, with SE = SD / sqrt(n);
it is an in-sample estimate for rules learnt on the same rows (optimistic), printed next to
treat-all and treat-none.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .designs import ConfigError

DEFAULT_METHODS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base",
                   "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


class DataError(ConfigError):
    """Unusable data: the message names the column, the rows and the fix."""


# ---------------------------------------------------------------------- data checks
def load(path) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file")
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix.lower() in (".csv", ".txt"):
        return pd.read_csv(path)
    raise DataError(f"--data {path}: use a .csv or .parquet file")


def prepare(df: pd.DataFrame, outcome: str, treatment: str, site: str, covariates, moderators,
            by=None, treated=None, dropna: bool = False, drop_sites: bool = False,
            log=print) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Check and clean the data; returns (frame with columns Y, T, site, design columns, by),
    expanded covariate names, expanded moderator names."""
    covariates, moderators = list(covariates), list(moderators)
    need = [outcome, treatment, site, *covariates, *moderators] + ([by] if by else [])
    missing = [c for c in dict.fromkeys(need) if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} not in the data ({len(df)} rows); the data has "
                        f"{list(df.columns)[:40]}")
    df = df[list(dict.fromkeys(need))].copy()
    na = df.isna().sum()
    na = na[na > 0]
    if len(na):
        rows = int(df.isna().any(axis=1).sum())
        detail = ", ".join(f"{c}: {n}" for c, n in na.items())
        if not dropna:
            raise DataError(f"missing values in {rows} of {len(df)} rows ({detail}); impute them "
                            f"or pass --dropna to drop those rows")
        df = df.dropna()
        log(f"dropped {rows} rows with missing values ({detail}); {len(df)} remain")
    # treatment: 0/1 or two labels
    levels = sorted(pd.unique(df[treatment]), key=str)
    if len(levels) != 2:
        raise DataError(f"treatment column {treatment!r} has {len(levels)} distinct values "
                        f"({levels[:10]}); it must have exactly two (0/1 or two labels)")
    if set(levels) == {0, 1}:
        df[treatment] = df[treatment].astype(int)
    else:
        if treated is None:
            raise DataError(f"treatment column {treatment!r} has labels {levels}; say which one "
                            f"is treated with --treated LABEL")
        if str(treated) not in map(str, levels):
            raise DataError(f"--treated {treated!r} is not a value of {treatment!r} ({levels})")
        df[treatment] = (df[treatment].astype(str) == str(treated)).astype(int)
    if not pd.api.types.is_numeric_dtype(df[outcome]):
        raise DataError(f"outcome column {outcome!r} is not numeric (dtype {df[outcome].dtype})")
    # sites
    size = df.groupby(site)[treatment].agg(["size", "mean"])
    bad = {"one person": size.index[size["size"] < 2],
           "everyone treated": size.index[(size["size"] >= 2) & (size["mean"] == 1)],
           "no one treated": size.index[(size["size"] >= 2) & (size["mean"] == 0)]}
    bad = {k: list(v) for k, v in bad.items() if len(v)}
    if bad:
        detail = "; ".join(f"{len(v)} site(s) with {k} (e.g. {v[:5]})" for k, v in bad.items())
        drop = [s for v in bad.values() for s in v]
        n_rows = int(df[site].isin(drop).sum())
        if not drop_sites:
            raise DataError(f"{detail} in {site!r}: the within-site estimators (site effects, "
                            f"site propensities) cannot use them; pass --drop-sites to drop these "
                            f"{len(drop)} sites ({n_rows} rows)")
        df = df[~df[site].isin(drop)]
        log(f"dropped {len(drop)} sites ({n_rows} rows): {detail}")
    # design columns: categorical expansion as R's model.matrix (treatment contrasts)
    def expand(cols):
        names = []
        for c in cols:
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
                names.append(c)
                continue
            lev = sorted(pd.unique(df[c]), key=str)
            for level in lev[1:]:
                name = f"{c}{level}"
                df[name] = (df[c] == level).astype(float)
                names.append(name)
        return names
    cov, mod = expand(covariates), expand(moderators)
    const = [c for c in dict.fromkeys(mod) if df[c].nunique() < 2]
    if const:
        raise DataError(f"moderator(s) {const} constant within the data ({len(df)} rows); they "
                        f"cannot moderate anything -- remove them from --moderators")
    return df.reset_index(drop=True), cov, mod


# ---------------------------------------------------------------------- the analysis
def analyse(df, outcome, treatment, site, cov, mod, methods, by=None, seed=2024, folds=5,
            depths=(2, 3), out=None, log=print) -> dict:
    from .engines.groups import site_codes
    from .engines.treesearch import PolicyTreeSearch, rules_table
    from .methods import make
    from .methods.policytree import aipw_scores
    from .metrics import congruence

    defaults = {"covariates": cov, "moderators": mod, "features": mod, "site": site,
                "treatment": treatment, "outcome": outcome}
    scores, decisions, errors = {}, {}, {}
    import time
    for k, name in enumerate(methods):
        t0 = time.perf_counter()
        try:
            m = make(name, None, defaults)
            m.random_state = seed + k
            s = np.asarray(m.fit(df).benefit_score(df), float)
            scores[name], decisions[name] = s, (s > 0).astype(int)
            log(f"[{k + 1}/{len(methods)}] {name}: {100 * decisions[name].mean():.1f}% "
                f"recommended for treatment ({time.perf_counter() - t0:.1f} s)")
        except Exception as exc:                                   # noqa: BLE001
            errors[name] = f"{type(exc).__name__}: {exc}"
            log(f"[{k + 1}/{len(methods)}] {name}: failed ({errors[name]})")
    # doubly robust scores (cross-fitted, site fixed effects, site treated shares)
    labels, codes = site_codes(df[site])
    rng = np.random.default_rng(seed)
    fold = rng.permutation(np.resize(np.arange(folds), len(df)))
    G = aipw_scores(df[cov].to_numpy(float), df[treatment].to_numpy(float),
                    df[outcome].to_numpy(float), codes, labels.size, fold)
    F = df[mod].to_numpy(float)
    trees, rules = {}, {}
    log(f"policy trees of depth {', '.join(map(str, depths))} on cross-fitted doubly robust scores")
    for depth in depths:
        min_leaf = max(1, int(0.1 * len(df) / (2 * depth)))
        tree = PolicyTreeSearch(depth, min_leaf, 100).fit(F, G)
        trees[f"tree depth {depth}"] = tree
        decisions[f"tree depth {depth}"] = tree.predict(F)
        rules[depth] = rules_table(tree, F, G, mod, ["control", "treat"])
    n = len(df)

    def value(rule, d):
        v = G[np.arange(n), d]
        return {"rule": rule, "treated_share": float(np.mean(d)), "value": v.mean(),
                "value_se": v.std(ddof=1) / np.sqrt(n)}
    rows = [value(r, d) for r, d in
            [("treat-all", np.ones(n, int)), ("treat-none", np.zeros(n, int)), *decisions.items()]]
    values = pd.DataFrame(rows)
    shares = values[~values["rule"].isin(["treat-all", "treat-none"])][["rule", "treated_share"]]
    pairs = congruence({k: v.astype(bool) for k, v in decisions.items()})
    names = list(decisions)
    M = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b, agree in pairs:
        M.loc[a, b] = M.loc[b, a] = agree
    res = {"scores": scores, "decisions": decisions, "errors": errors, "G": G, "trees": trees,
           "rules": rules, "values": values, "shares": shares, "congruence": M}
    if out is not None:
        write(res, df, site, by, mod, Path(out), log)
    return res


def write(res, df, site, by, mod, out: Path, log=print):
    from .report.figures import heatmap, policy_tree
    from .report.tables import to_markdown
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    rows = pd.DataFrame({"row": np.arange(len(df)), site: df[site].to_numpy()})
    if by:
        rows[by] = df[by].to_numpy()
    for name, s in res["scores"].items():
        rows[f"score_{name}"] = s
    for name, d in res["decisions"].items():
        rows[f"decision_{name}"] = d
    rows.to_parquet(out / "scores.parquet", index=False)
    rows.to_csv(out / "scores.csv", index=False)
    res["values"].to_csv(out / "values.csv", index=False)
    (out / "values.md").write_text(
        "Estimated value of each rule: mean cross-fitted AIPW score (SE); in-sample for rules "
        "learnt on these rows.\n\n" + to_markdown(res["values"], digits=4))
    res["congruence"].to_csv(out / "congruence.csv")
    for depth, table in res["rules"].items():
        table.to_csv(out / f"tree_depth{depth}_rules.csv", index=False)
        (out / f"tree_depth{depth}_rules.md").write_text(to_markdown(table, digits=3))
    for name, tree in res["trees"].items():
        policy_tree(tree, mod, ["control", "treat"], f"Policy tree, {name}",
                    fig_dir / name.replace(" ", "_"))
    # Fig 6: recommended share per method
    sh = res["shares"]
    fig, ax = plt.subplots(figsize=(0.45 * len(sh) + 2, 3.2))
    ax.bar(sh["rule"], 100 * sh["treated_share"], color="#6a9fcf")
    for i, v in enumerate(sh["treated_share"]):
        ax.text(i, 100 * v + 1, f"{100 * v:.0f}", ha="center", fontsize=7)
    ax.set_ylabel("recommended for treatment (%)")
    ax.set_ylim(0, 105)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    fig.savefig(fig_dir / "shares.png", dpi=130)
    plt.close(fig)
    heatmap(res["congruence"], "Congruence of the decisions", fig_dir / "congruence")
    if by:                                              # Figs 8, 9 by a grouping column
        dec = pd.DataFrame(res["decisions"]).assign(_by=df[by].to_numpy())
        share_by = dec.groupby("_by").mean().T
        share_by.to_csv(out / f"shares_by_{by}.csv")
        fig, ax = plt.subplots(figsize=(0.45 * len(share_by) + 2.5, 3.4))
        (100 * share_by).plot.bar(ax=ax, width=0.8)
        ax.set_ylabel("recommended for treatment (%)")
        ax.legend(title=by, fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / f"shares_by_{by}.png", dpi=130)
        plt.close(fig)
        sc = pd.DataFrame(res["scores"]).assign(_by=df[by].to_numpy())
        long = sc.melt(id_vars="_by", var_name="method", value_name="benefit score")
        import seaborn as sns
        fig, ax = plt.subplots(figsize=(0.5 * len(res["scores"]) + 3, 3.6))
        sns.boxplot(long, x="method", y="benefit score", hue="_by", ax=ax, fliersize=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.tick_params(axis="x", rotation=60, labelsize=8)
        ax.legend(title=by, fontsize=7)
        fig.tight_layout()
        fig.savefig(fig_dir / f"scores_by_{by}.png", dpi=130)
        plt.close(fig)
    log(f"written to {out}: scores.parquet/.csv, values.csv/.md, congruence.csv, "
        f"tree_depth*_rules.csv/.md, figures/")


# ---------------------------------------------------------------------- examples
EXAMPLES = {
    "simulated": "A simulated multisite trial (Suk & Park Design 2, J = 40 sites of 60 pupils; "
                 "SPEC 2), NOT real data: the real multisite trial data sets this command should "
                 "ship are not available in this repository yet.",
}


def example(name: str, seed: int = 1) -> tuple[pd.DataFrame, dict]:
    if name not in EXAMPLES:
        raise DataError(f"--example {name!r}: available examples {sorted(EXAMPLES)}")
    from .designs import Design
    rep = Design(name="design2").simulate(np.random.default_rng(seed), 40, 60)
    df = rep.train.copy()
    df["X4_group"] = np.where(df["X4"] > df["X4"].median(), "high", "low")
    return df, dict(outcome="Y", treatment="T", site="site", covariates=["X1", "X2", "X3", "X4",
                    "X5"], moderators=["X3", "X4", "X5"], by="X4_group")


def _from_config(args) -> None:
    """Fill options not given on the command line from --config FILE (YAML)."""
    if args.config:
        import yaml
        path = Path(args.config)
        if not path.exists():
            raise DataError(f"--config {path}: no such file")
        cfg = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(cfg) - set(vars(args)) - {"drop-sites"})
        if unknown:
            raise DataError(f"--config {path}: unknown keys {unknown}; allowed "
                            f"{sorted(k for k in vars(args) if k != 'config')}")
        for key, value in cfg.items():
            key = key.replace("-", "_")
            if getattr(args, key) in (None, False):
                setattr(args, key, value)
    args.methods = args.methods or DEFAULT_METHODS
    args.seed = 2024 if args.seed is None else int(args.seed)
    for key in ("covariates", "moderators", "methods"):
        value = getattr(args, key)
        if isinstance(value, str):
            setattr(args, key, value.split())


def main(argv) -> int:
    ap = argparse.ArgumentParser(prog="simstudy apply", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a YAML file with any of these options (data, outcome, "
                    "treatment, site, covariates, moderators, methods, by, out, ...); options "
                    "given on the command line win")
    ap.add_argument("--data", help="csv or parquet file, one row per individual")
    ap.add_argument("--example", help=f"a built-in example: {', '.join(EXAMPLES)}")
    ap.add_argument("--outcome")
    ap.add_argument("--treatment")
    ap.add_argument("--treated", help="the treated label when the treatment is not 0/1")
    ap.add_argument("--site")
    ap.add_argument("--covariates", nargs="+", default=None)
    ap.add_argument("--moderators", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=None, help="default: the 14 estimators")
    ap.add_argument("--by", help="grouping column for Figs 8-9 (shares and scores by group)")
    ap.add_argument("--dropna", action="store_true", help="drop rows with missing values")
    ap.add_argument("--drop-sites", action="store_true",
                    help="drop sites with one person or everyone / no one treated")
    ap.add_argument("--seed", type=int, default=None, help="default 2024")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    try:
        _from_config(args)
        if bool(args.data) == bool(args.example):
            raise DataError("give exactly one of --data FILE or --example NAME")
        if not args.out:
            raise DataError("--out DIR is required (where the outputs go)")
        if args.example:
            df, spec = example(args.example)
            print(EXAMPLES[args.example])
            spec = {**spec, **{k: v for k, v in vars(args).items() if k in spec and v}}
        else:
            df = load(args.data)
            spec = dict(outcome=args.outcome, treatment=args.treatment, site=args.site,
                        covariates=args.covariates, moderators=args.moderators, by=args.by)
            lacking = [f"--{k}" for k, v in spec.items() if k != "by" and not v]
            if lacking:
                raise DataError(f"{' '.join(lacking)} required with --data")
        from .methods import available
        unknown = [m for m in args.methods if m not in available()]
        if unknown:
            raise DataError(f"--methods {unknown} not registered; choose from {available()}")
        frame, cov, mod = prepare(df, spec["outcome"], spec["treatment"], spec["site"],
                                  spec["covariates"], spec["moderators"], spec.get("by"),
                                  args.treated, args.dropna, args.drop_sites)
    except ConfigError as exc:
        print(f"simstudy apply: {exc}", file=sys.stderr)
        return 2
    res = analyse(frame, spec["outcome"], spec["treatment"], spec["site"], cov, mod, args.methods,
                  spec.get("by"), args.seed, out=args.out)
    with pd.option_context("display.width", 200):
        print(res["values"].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 1 if len(res["errors"]) == len(args.methods) else 0
