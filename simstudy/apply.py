"""Apply the estimators to one multisite randomized trial (Suk & Park Section 6, Figs 6-9),
plus policy trees on doubly robust scores and the estimated value of every rule.

    simstudy apply --example star --out DIR          # Project STAR (shipped), Thornton, simulated
    simstudy apply --data trial.csv --outcome Y --treatment T --site school \
        --covariates X1 X2 X3 --moderators X3 X4 [--methods ...] [--by X4] --out DIR

Every method is fitted on all rows and scores the same rows (the paper's in-sample decisions,
Section 6). Categorical columns are expanded as R's model.matrix does (treatment contrasts:
one 0/1 column per level except the first, named column + level). Two values per rule:
- in-sample: mean of the cross-fitted AIPW scores Gamma_i(d_i) (docs/policy_tree.md) over all rows for the
  rule learnt on all rows (optimistic: learnt and valued on the same people), SE clustered by
  site;
- cross-fitted over sites: the sites are split into K folds; each rule is learnt on K-1 folds
  and applied to the held-out fold's people, valued with AIPW scores whose outcome model was
  fitted on the other folds (propensity: the held-out site's treated share, the within-site
  randomisation); mean over all rows, SE clustered by site; also the paired difference from
  treating everyone with its SE. This values each rule for NEW sites like the trial's.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .data import codes_as_read
from .designs.calibrated import SCENARIOS
from .errors import ConfigError, DataError
from .store import write_csv, write_parquet, write_text

DEFAULT_METHODS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base",
                   "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


# ---------------------------------------------------------------------- data checks
def load(path, ids=()) -> pd.DataFrame:
    """A trial's file. Columns named in `ids` (the site, the --by groups) are read from a CSV
    as text: site codes `1` and `01` are two schools, never one number (issue 45, class 5)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--data {path}: no such file")
    if path.is_dir():
        raise DataError(f"--data {path} is a directory; give a .csv or .parquet file")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif path.suffix.lower() in (".csv", ".txt"):
            df = codes_as_read(pd.read_csv(path, dtype={c: str for c in ids if c}), ids)
        else:
            raise DataError(f"--data {path}: use a .csv or .parquet file")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"--data {path} is empty (no header, no rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"--data {path} is not a well-formed CSV: {str(exc).strip()} (rows with "
                        f"more fields than the header?)") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"--data {path} cannot be read: {exc}") from None
    if df.empty:
        raise DataError(f"--data {path} has a header but no rows")
    if path.suffix.lower() in (".csv", ".txt"):       # pandas renames a repeated name X1.1
        import csv
        with open(path, newline="") as fh:
            header = next(csv.reader(fh), [])
        dup = sorted({c for c in header if header.count(c) > 1})
        if dup:
            raise DataError(f"--data {path}: the header names column(s) {dup} more than once; "
                            f"rename them so each column has one name")
    return df


def prepare(df: pd.DataFrame, outcome: str, treatment: str, site: str, covariates, moderators,
            by=None, treated=None, dropna: bool = False, drop_sites: bool = False,
            log=print) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Check and clean the data; returns (frame with columns Y, T, site, design columns, by),
    expanded covariate names, expanded moderator names."""
    covariates, moderators = list(covariates), list(moderators)
    roles = {"outcome": outcome, "treatment": treatment, "site": site}
    for role, col in roles.items():     # a column has one role: trees must not split on Y
        clash = [r for r, cols in (("covariates", covariates), ("moderators", moderators))
                 if col in cols]
        if clash:
            raise DataError(f"{col!r} is the {role} and cannot also be in --{clash[0]}; remove it")
    if len(set(roles.values())) < 3:
        raise DataError(f"outcome, treatment and site must be three different columns, got "
                        f"{roles}")
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
    df[treatment] = _treatment_01(df[treatment], treatment, treated)
    _check_numbers(df, outcome, covariates, moderators)
    df = _usable_sites(df, site, treatment, drop_sites, log)
    # design columns: categorical expansion as R's model.matrix (treatment contrasts)
    created: set[str] = set()

    def expand(cols):
        names = []
        for c in cols:
            if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
                names.append(c)
                continue
            lev = sorted(pd.unique(df[c]), key=str)
            if len(lev) < 2:
                raise DataError(f"categorical column {c!r} has one level ({lev[0]!r}) in the "
                                f"{len(df)} rows used: it gives no dummy column; remove it from "
                                f"--covariates / --moderators")
            if len(lev) > MAX_LEVELS:
                raise DataError(f"categorical column {c!r} has {len(lev)} levels (an ID?); each "
                                f"level becomes a 0/1 column: use a numeric column, group its "
                                f"levels (at most {MAX_LEVELS}), or drop it")
            for level in lev[1:]:
                name = f"{c}{level}"
                if name in df.columns and name not in created:
                    raise DataError(f"categorical column {c!r} level {level!r} would create the "
                                    f"dummy {name!r}, but the data already has a column {name!r}; "
                                    f"rename one of them")
                created.add(name)
                df[name] = (df[c] == level).astype(float)
                names.append(name)
        return names
    cov, mod = expand(covariates), expand(moderators)
    const = [c for c in dict.fromkeys(mod) if df[c].nunique() < 2]
    if const:
        raise DataError(f"moderator(s) {const} constant within the data ({len(df)} rows); they "
                        f"cannot moderate anything -- remove them from --moderators")
    return df.reset_index(drop=True), cov, mod


def _treatment_01(t: pd.Series, treatment: str, treated) -> pd.Series:
    """The treatment as 0/1: a 0/1 column, or two labels with `treated` naming the treated."""
    levels = sorted(pd.unique(t), key=str)
    if len(levels) != 2:
        raise DataError(f"treatment column {treatment!r} has {len(levels)} distinct values "
                        f"({levels[:10]}); it must have exactly two (0/1 or two labels)")
    if set(levels) == {0, 1}:
        return t.astype(int)
    if treated is None:
        raise DataError(f"treatment column {treatment!r} has labels {levels}; say which one "
                        f"is treated with --treated LABEL")
    if str(treated) not in map(str, levels):
        raise DataError(f"--treated {treated!r} is not a value of {treatment!r} ({levels})")
    return (t.astype(str) == str(treated)).astype(int)


def _check_numbers(df: pd.DataFrame, outcome: str, covariates, moderators) -> None:
    """A numeric outcome; no infinite or overflowing values in the numeric columns."""
    if not pd.api.types.is_numeric_dtype(df[outcome]):
        raise DataError(f"outcome column {outcome!r} is not numeric (dtype {df[outcome].dtype})")
    numeric = [c for c in dict.fromkeys([outcome, *covariates, *moderators])
               if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    inf = {c: int(np.isinf(df[c].to_numpy(float)).sum()) for c in numeric}
    inf = {c: k for c, k in inf.items() if k}
    if inf:
        raise DataError("infinite values in " + ", ".join(f"{c} ({k} rows)" for c, k in inf.items())
                        + "; fix or drop those rows")
    huge = [c for c in numeric if np.abs(df[c].to_numpy(float)).max(initial=0.0) > MAX_ABS]
    if huge:
        raise DataError(f"column(s) {huge} have values beyond +-{MAX_ABS:g}: their squares "
                        f"overflow the estimators' sums of squares; rescale them (e.g. to "
                        f"standard units)")


def _usable_sites(df: pd.DataFrame, site: str, treatment: str, drop_sites: bool, log
                  ) -> pd.DataFrame:
    """Sites with one person or with everyone / no one treated: an error naming them, or
    dropped (--drop-sites); at least 2 usable sites remain."""
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
    if df[site].nunique() < 2:
        raise DataError(f"{df[site].nunique()} usable site(s) in {site!r} ({len(df)} rows): the "
                        f"estimators compare sites and need at least 2 with treated and control "
                        f"people" + (" after dropping the degenerate ones" if bad else ""))
    return df


# ---------------------------------------------------------------------- the analysis
def rules_of(methods, depths) -> list[tuple[str, str, dict | None]]:
    """(label, registered method, options): the estimators, then a policy tree per depth."""
    return ([(m, m, None) for m in methods]
            + [(f"tree depth {d}", "PT", {"depth": int(d)}) for d in depths])


WARM_SITES = 12          # a first run compiles on the rows of this many sites


def warm_rules(df, rules, defaults, seed: int, workers: int) -> bool:
    """Compile (and cache on disk) the kernels of `rules` before they are fitted: each family's
    rules (they share their engine's kernels) fitted once on `df` (a few sites' rows: the
    same column types as the data) by one of `workers` processes, the costliest family first,
    as `simstudy run` compiles; the fits are dropped (a failed one too: its kernels then
    compile in the real fit). One worker or one family: nothing here (False), the fits
    compile as they go."""
    from joblib import Parallel, delayed

    from .kernels import compile_families
    by_name: dict[str, list] = {}
    for rule in rules:
        by_name.setdefault(rule[1], []).append(rule)
    families = [[r for m in ms for r in by_name[m]] for ms in compile_families(by_name)]
    if workers < 2 or len(families) < 2:
        return False
    # the workers see this process's numba threads: the tree search compiles the variant (one
    # thread or threaded) the fits here will call
    import numba
    from joblib import parallel_config
    with parallel_config(backend="loky", inner_max_num_threads=numba.get_num_threads()):
        for _ in Parallel(n_jobs=min(workers, len(families)), return_as="generator_unordered")(
                delayed(_fit_rules)(df, fam, defaults, seed, os.getpid()) for fam in families):
            pass
    return True


def _fit_rules(df, rules, defaults, seed: int, main_pid: int) -> None:
    """In a worker: fit the rules on df, results dropped (their compiled kernels stay cached)."""
    from .fitting import fit_and_score, named_seed
    from .workers import watch_parent
    if os.getpid() != main_pid:
        watch_parent()
    for label, name, opts in rules:
        fit_and_score(name, df, df, named_seed(seed, "apply", label), opts, defaults)


def cluster_se(x, codes) -> float:
    """SE of mean(x) clustered by site: sqrt(J/(J-1) sum_j (sum_i in j (x_i - mean))^2) / n."""
    x = np.asarray(x, float)
    r = np.bincount(codes, weights=x - x.mean())
    J = r.size
    return float(np.sqrt(J / (J - 1) * np.sum(r * r)) / x.size) if J > 1 else np.nan


def site_folds(labels, K: int, seed: int) -> np.ndarray:
    """Fold of each site (0..K-1): a random permutation of rep(0:K-1, length = J), so every
    site lies in exactly one fold and fold sizes differ by at most one site."""
    from .fitting import named_seed
    if not 2 <= K <= len(labels):
        raise DataError(f"--value-folds {K}: need 2 <= K <= the number of sites ({len(labels)})")
    rng = np.random.default_rng(named_seed(seed, "apply", "site folds"))
    return rng.permutation(np.resize(np.arange(K), len(labels)))


def crossfit_aipw(X, T, y, codes, train, test, J) -> np.ndarray:
    """(n_test, 2) AIPW scores of held-out rows: mu_t from OLS of Y on (1, X, T, T X) fitted on
    the training rows only (held-out sites are new, so no site effects), propensity the row's
    site treated share (the within-site randomisation)."""
    from .engines.groups import group_means
    from .engines.ols import ols
    from .methods.policytree import aipw
    D = np.column_stack([np.ones(len(y)), X, T, T[:, None] * X])
    b = np.nan_to_num(ols(D[train], y[train]).coef)
    Xt, Tt, yt = X[test], T[test], y[test]
    p = group_means(T, codes, J)[:, 0][codes[test]]
    mu = np.column_stack([np.column_stack([np.ones(len(yt)), Xt, np.full(len(yt), t), t * Xt]) @ b
                          for t in (0, 1)])
    return aipw(mu, Tt, yt, p)


@dataclass
class Analysis:
    """What `analyse` finds for one trial: per rule its benefit scores and decisions (all rows),
    fit errors, the AIPW scores G (n, 2) in-sample and cross-fitted over sites, the rules'
    cross-fitted decisions, the policy trees and their rule tables, the values table, the
    treated shares, the congruence matrix, the sites' folds and the fitted methods.
    `analysis["values"]` reads as `analysis.values`."""
    scores: dict
    decisions: dict
    errors: dict
    G: np.ndarray
    G_crossfit: np.ndarray
    decisions_crossfit: dict
    crossfit_errors: dict
    trees: dict
    rules: dict
    values: pd.DataFrame
    shares: pd.DataFrame
    congruence: pd.DataFrame
    site_folds: pd.DataFrame
    fitted: dict

    def __getitem__(self, key: str):
        return getattr(self, key)


def analyse(df, outcome, treatment, site, cov, mod, methods, by=None, seed=2024, folds=5,
            depths=(2, 3), value_folds=5, out=None, log=print) -> Analysis:
    """Fit every rule on all rows (one fit path with `simstudy run`: `fitting.fit_and_score`,
    each rule seeded from its NAME), value it in-sample and cross-fitted over sites."""
    from .engines.groups import site_codes
    from .fitting import fit_and_score, named_seed
    from .methods.policytree import aipw_scores
    from .metrics import congruence
    from .metrics import decisions as decide

    defaults = {"covariates": cov, "moderators": mod, "features": mod, "site": site,
                "treatment": treatment, "outcome": outcome}
    rules = rules_of(methods, depths)
    labels, codes = site_codes(df[site])
    fold_of_site = site_folds(labels, value_folds, seed)           # checked before any fit
    n = len(df)
    scores, decisions, errors, fitted = {}, {}, {}, {}
    from .kernels import kernels_cached
    if not kernels_cached(*(["treebound._root34"] if max(depths, default=0) > 2 else [])):
        workers = min(2, os.cpu_count() or 1)
        log("compiling the numerical kernels once (a first run on this machine, or the engines "
            f"changed; {workers} worker{'s' * (workers > 1)}, about a minute); later runs load "
            "them from numba's cache")
        t0 = time.perf_counter()
        if warm_rules(df[codes < WARM_SITES], rules, defaults, seed, workers):
            log(f"compiled in {time.perf_counter() - t0:.0f} s")
    for k, (label, name, opts) in enumerate(rules):
        fit = fit_and_score(name, df, df, named_seed(seed, "apply", label), opts, defaults)
        if fit.error is None:
            scores[label], decisions[label] = fit.score, decide(fit.score)
            fitted[label] = fit.method
            log(f"[{k + 1}/{len(rules)}] {label}: {100 * decisions[label].mean():.1f}% "
                f"recommended for treatment ({fit.seconds:.1f} s)")
        else:
            errors[label] = fit.error
            log(f"[{k + 1}/{len(rules)}] {label}: failed ({fit.error})")
    # in-sample value: doubly robust scores cross-fitted over people (site fixed effects)
    X, T, y = (df[cov].to_numpy(float), df[treatment].to_numpy(float),
               df[outcome].to_numpy(float))
    rng = np.random.default_rng(named_seed(seed, "apply", "aipw"))
    G = aipw_scores(X, T, y, codes, labels.size, rng.permutation(np.resize(np.arange(folds), n)))
    G_cf, d_cf, cf_errors = _crossfit_over_sites(df, X, T, y, codes, labels, fold_of_site,
                                                 rules, defaults, seed, value_folds, log)
    trees, rule_tables = {}, {}
    for label, m in fitted.items():
        if label.startswith("tree depth"):
            trees[label] = m.tree
            rule_tables[int(label.split()[-1])] = m.rule_table(df, mod, ["control", "treat"])
    values = _values(G, G_cf, codes, decisions, d_cf, cf_errors)
    shares = values[~values["rule"].isin(["treat-all", "treat-none"])][["rule", "treated_share"]]
    pairs = congruence({k: v.astype(bool) for k, v in decisions.items()})
    names = list(decisions)
    M = pd.DataFrame(np.eye(len(names)), index=names, columns=names)
    for a, b, agree in pairs:
        M.loc[a, b] = M.loc[b, a] = agree
    res = Analysis(scores=scores, decisions=decisions, errors=errors, G=G, G_crossfit=G_cf,
                   decisions_crossfit=d_cf, crossfit_errors=cf_errors, trees=trees,
                   rules=rule_tables, values=values, shares=shares, congruence=M,
                   site_folds=pd.DataFrame({site: labels, "fold": fold_of_site}), fitted=fitted)
    if out is not None:
        write_atomic(res, df, site, by, mod, Path(out), log)
    return res


OUTPUT_MARKERS = ("values.csv", "site_folds.csv")     # what makes a directory apply's output


def check_apply_out(out) -> Path:
    """--out before any fit: new, empty, or a previous apply output (replaced whole)."""
    from .config import check_output_dir
    try:
        return check_output_dir(
            out, "--out", lambda p: all((p / m).exists() for m in OUTPUT_MARKERS),
            own_what="apply output (values.csv, site_folds.csv)")
    except ConfigError as exc:
        raise DataError(str(exc)) from None


def write_atomic(res, df, site, by, mod, out: Path, log=print) -> None:
    """Every output into a new directory beside `out`, then swapped in: a killed run leaves the
    previous output whole (or none), never new scores beside old trees (issue 29, class 7)."""
    import shutil
    import uuid
    out = Path(out)
    tag = uuid.uuid4().hex[:8]
    tmp = out.with_name(f".{out.name}.new-{tag}")
    old = out.with_name(f".{out.name}.old-{tag}")
    try:
        write(res, df, site, by, mod, tmp, lambda *a: None, title=out.name)
        if out.exists():
            os.replace(out, old)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and out.exists():
            shutil.rmtree(old, ignore_errors=True)
    log(f"written to {out}: report.html, scores.parquet/.csv, values.csv/.md, site_folds.csv, "
        f"congruence.csv, tree_depth*_rules.csv/.md, figures/ (PNG and PDF)")


def recover_out(out: Path) -> None:
    """A run killed between the two renames of `write_atomic` left the previous output as
    .NAME.old-*: put it back (and drop unfinished .NAME.new-* directories)."""
    import shutil
    out = Path(out)
    parent = out.absolute().parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{out.name}.new-*"):
        shutil.rmtree(p, ignore_errors=True)
    olds = sorted(parent.glob(f".{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not out.exists():
        os.replace(olds[-1], out)
        olds = olds[:-1]
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)


def _crossfit_over_sites(df, X, T, y, codes, labels, fold_of_site, rules, defaults, seed: int,
                         value_folds: int, log):
    """Learn every rule on K-1 folds of sites, decide on the held-out fold's people, and score
    them with AIPW scores whose outcome model was fitted without that fold (`crossfit_aipw`).
    Returns (the (n, 2) held-out AIPW scores, each rule's held-out decisions, the rules that
    failed in some fold)."""
    import time

    from .fitting import fit_and_score, named_seed
    from .methods import REGISTRY
    from .metrics import decisions as decide
    n = len(df)
    row_fold = fold_of_site[codes]
    G_cf = np.empty((n, 2))
    d_cf = {label: np.full(n, -1) for label, _, _ in rules}
    cf_errors: dict[str, str] = {}
    log(f"cross-fitted values: {value_folds} folds of sites "
        f"({', '.join(str(int(np.sum(fold_of_site == k))) for k in range(value_folds))} sites)")
    t0 = time.perf_counter()
    for k in range(value_folds):
        test, train = row_fold == k, row_fold != k
        G_cf[test] = crossfit_aipw(X, T, y, codes, train, test, labels.size)
        tr, te = df[train], df[test]
        for label, name, opts in rules:
            if label in cf_errors:
                continue
            cls = REGISTRY[name][0]
            fit = fit_and_score(name, tr, te, named_seed(seed, "apply", label, "site fold", k),
                                {**cls.new_site_options, **(opts or {})}, defaults)
            if fit.error is None:
                d_cf[label][test] = decide(fit.score)
            else:
                cf_errors[label] = f"fold {k}: {fit.error}"
    log(f"cross-fitting done ({time.perf_counter() - t0:.1f} s)")
    return G_cf, d_cf, cf_errors


def _values(G, G_cf, codes, decisions, d_cf, cf_errors) -> pd.DataFrame:
    """One row per rule (treat-all and treat-none first): its treated share, its in-sample
    value (mean AIPW score of its decisions, SE clustered by site) and its cross-fitted value
    with the paired difference from treating everyone."""
    n = len(codes)
    rows_ix = np.arange(n)

    def value(rule, d, dcf):
        v = G[rows_ix, d]
        row = {"rule": rule, "treated_share": float(np.mean(d)), "value_insample": v.mean(),
               "se_insample": cluster_se(v, codes)}
        if dcf is None or np.any(dcf < 0):
            return {**row, "value_crossfit": np.nan, "se_crossfit": np.nan,
                    "vs_treat_all_crossfit": np.nan, "se_vs_treat_all": np.nan,
                    "treated_share_crossfit": np.nan}
        vc = G_cf[rows_ix, dcf]
        diff = vc - G_cf[:, 1]
        return {**row, "value_crossfit": vc.mean(), "se_crossfit": cluster_se(vc, codes),
                "vs_treat_all_crossfit": diff.mean(),
                "se_vs_treat_all": cluster_se(diff, codes) if np.any(diff) else 0.0,
                "treated_share_crossfit": float(np.mean(dcf))}
    const = [("treat-all", np.ones(n, int)), ("treat-none", np.zeros(n, int))]
    values = pd.DataFrame([value(r, d, d) for r, d in const]
                          + [value(r, d, None if r in cf_errors else d_cf[r])
                             for r, d in decisions.items()])
    return values


VALUES_NOTE = (
    "Estimated value of each rule (mean outcome if the rule decided who is treated), from "
    "doubly robust (AIPW) scores.\n\n"
    "- `value_insample` (SE `se_insample`, clustered by site): the rule learnt on ALL rows and valued "
    "on the same rows: optimistic for learnt rules.\n"
    "- `value_crossfit` (SE `se_crossfit`, clustered by site): sites split into K folds; each "
    "rule learnt without the fold it is valued on, AIPW outcome model fitted without that fold: "
    "an honest estimate of the rule's value for new sites like these.\n"
    "- `vs_treat_all_crossfit` (SE `se_vs_treat_all`, paired over rows, clustered by site): "
    "cross-fitted value minus treating everyone.\n"
    "- `treated_share`: share the rule learnt on all rows treats; `treated_share_crossfit`: "
    "share treated by the held-out-fold decisions.\n\n")


def headline(values: pd.DataFrame) -> str:
    """values.md's and the page's opening block (issue 40): what the rules recommend (the
    shares they treat) and the cross-fitted value of each against the better constant rule
    (treat-all or treat-none), with the paired SE where the comparison is with treat-all."""
    v = values.set_index("rule")
    if not {"treat-all", "treat-none"} <= set(v.index):
        return ""
    const = "treat-all" if v.loc["treat-all", "value_crossfit"] >= v.loc[
        "treat-none", "value_crossfit"] else "treat-none"
    learnt = v.drop(index=["treat-all", "treat-none"])
    learnt = learnt[learnt["value_crossfit"].notna()]
    if learnt.empty:
        return ""
    digits = 2 if v["value_crossfit"].abs().max() >= 100 else 3
    share = learnt["treated_share"]
    everyone = [r for r in learnt.index if share[r] >= 0.995]
    nobody = [r for r in learnt.index if share[r] <= 0.005]
    lines = ["## Headline", ""]
    lines.append(f"- **What the rules recommend**: {len(everyone)} of {len(learnt)} treat "
                 f"everyone" + (f" ({', '.join(everyone)})" if everyone else "")
                 + (f", {len(nobody)} no one ({', '.join(nobody)})" if nobody else "")
                 + "; the others treat " + ", ".join(
                     f"{r} {100 * share[r]:.0f}%" for r in learnt.index
                     if r not in everyone + nobody) + "." if len(everyone) + len(nobody) <
                 len(learnt) else f"- **What the rules recommend**: {len(everyone)} of "
                 f"{len(learnt)} treat everyone, {len(nobody)} no one.")
    gain = (learnt["vs_treat_all_crossfit"] if const == "treat-all"
            else learnt["value_crossfit"] - v.loc["treat-none", "value_crossfit"])
    best = gain.idxmax()
    se = learnt["se_vs_treat_all"] if const == "treat-all" else None
    beat = [r for r in learnt.index if se is not None and gain[r] - 1.96 * se[r] > 0]
    lines.append(f"- **Value for new sites like these** (cross-fitted over sites): the better "
                 f"constant rule is {const} ({v.loc[const, 'value_crossfit']:.{digits}f}); the "
                 f"best learnt rule, {best}, is {gain[best]:+.{digits}f} against it"
                 + (f" (paired SE {se[best]:.{digits}f})" if se is not None else
                    " (its SE against treat-none is not paired: see values.csv)")
                 + (f"; {len(beat)} rule(s) beat it beyond their 95% interval: "
                    f"{', '.join(beat)}." if beat else
                    "; no learnt rule beats it beyond its 95% interval."))
    return "\n".join(lines) + "\n\n"


def write(res, df, site, by, mod, out: Path, log=print, title: str | None = None):
    from .methods import FAMILIES
    from .report import figures as F
    F.use_families({**FAMILIES, **{name: "Policy tree" for name in res["trees"]}})
    from .report.tables import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    rows = pd.DataFrame({"row": np.arange(len(df)), site: df[site].to_numpy()})
    if by:
        rows[by] = df[by].to_numpy()
    for name, s in res["scores"].items():
        rows[f"score_{name}"] = s
    for name, d in res["decisions"].items():
        rows[f"decision_{name}"] = d
    for name, d in res["decisions_crossfit"].items():
        if name not in res["crossfit_errors"] and name in res["decisions"]:
            rows[f"decision_crossfit_{name}"] = d
    write_parquet(rows, out / "scores.parquet")          # whole or not at all, errors name it
    write_csv(rows, out / "scores.csv", index=False)
    write_csv(res["values"], out / "values.csv", index=False)
    note = headline(res["values"]) + VALUES_NOTE
    if res["crossfit_errors"]:
        note += "Cross-fitting failed for: " + "; ".join(
            f"{k} ({v})" for k, v in res["crossfit_errors"].items()) + "\n\n"
    write_text(out / "values.md", note + to_markdown(res["values"], digits=4))
    write_csv(res["site_folds"], out / "site_folds.csv", index=False)
    write_csv(res["congruence"].rename_axis("rule"), out / "congruence.csv")
    for depth, table in res["rules"].items():
        write_csv(table, out / f"tree_depth{depth}_rules.csv", index=False)
        write_text(out / f"tree_depth{depth}_rules.md", to_markdown(table, digits=3))
    binary = [c for c in mod if c in df and set(pd.unique(df[c].dropna())) <= {0, 1}]
    for name, tree in res["trees"].items():
        F.policy_tree(tree, mod, ["control", "treat"], f"Policy tree, {name}",
                      fig_dir / name.replace(" ", "_"), binary=binary)
    sh = res["shares"].set_index("rule")["treated_share"]
    F.shares(sh, "Share recommended for treatment (paper Fig 6)", fig_dir / "shares")
    F.heatmap(res["congruence"], "Congruence of the decisions (paper Fig 7)",
              fig_dir / "congruence")
    F.values(res["values"], "Value of each rule: in-sample vs cross-fitted over sites",
             fig_dir / "values")
    if by:                                              # Figs 8, 9 by a grouping column
        share_by = pd.DataFrame(res["decisions"]).assign(_by=df[by].to_numpy()).groupby("_by").mean().T
        share_by.columns.name = by
        write_csv(share_by.rename_axis("rule"), out / f"shares_by_{by}.csv")
        F.shares_by_group(share_by, by, f"Share recommended for treatment by {by} (paper Fig 8)",
                          fig_dir / f"shares_by_{by}")
        F.scores_by_group(pd.DataFrame(res["scores"]), df[by].to_numpy(), by,
                          f"Benefit scores by {by} (paper Fig 9)", fig_dir / f"scores_by_{by}")
    from .report.html import write_apply_html
    write_apply_html(out, title or Path(out).name, note)
    log(f"written to {out}: report.html, scores.parquet/.csv, values.csv/.md, site_folds.csv, "
        f"congruence.csv, tree_depth*_rules.csv/.md, figures/ (PNG and PDF)")


# ---------------------------------------------------------------------- examples
EXAMPLES = {
    "star": dict(
        text="Tennessee Project STAR, kindergarten 1985-86 (shipped: simstudy/data/star_k.csv): "
             "pupils randomised to small (13-17) vs regular (22-25) classes within 79 schools; "
             "outcome = reading + math scaled score (Stanford Achievement Test).",
        data="star", outcome="scorek", outcomes=("scorek", "readk", "mathk"), treatment="small",
        site="school", covariates=["female", "black", "age", "free_lunch", "urbanicity"],
        moderators=["female", "black", "age", "free_lunch"], by="urbanicity", drop_sites=True),
    "thornton": dict(
        text="Thornton (2008), rural Malawi (shipped: simstudy/data/thornton_hiv.csv): a "
             "randomised cash incentive (any vs none) to learn one's HIV test result; people in "
             "119 villages; outcome = learned the result (0/1).",
        data="thornton", outcome="got", outcomes=("got",), treatment="any", site="village",
        covariates=["age", "distvct", "hiv2004"], moderators=["age", "distvct", "hiv2004"],
        by="hiv2004", drop_sites=True),
    "simulated": dict(
        text="A SIMULATED multisite trial (Suk & Park Design 2, J = 40 sites of 60 pupils; "
             "docs/designs.md): NOT real data.",
        data=None, outcome="Y", outcomes=("Y",), treatment="T", site="site",
        covariates=["X1", "X2", "X3", "X4", "X5"], moderators=["X3", "X4", "X5"],
        by="X4_group", drop_sites=False),
}


def example(name: str, seed: int = 1) -> tuple[pd.DataFrame, dict]:
    """(data, spec) of a built-in example: the shipped STAR / Thornton files or a simulated trial."""
    if name not in EXAMPLES:
        raise DataError(f"--example {name!r}: available examples {sorted(EXAMPLES)}")
    ex = EXAMPLES[name]
    spec = {k: ex[k] for k in ("outcome", "treatment", "site", "covariates", "moderators", "by")}
    spec["drop_sites"] = ex["drop_sites"]
    if ex["data"] is not None:
        from . import data
        return data.load(ex["data"]), spec
    from .designs import make_design, preset
    rep = make_design(preset("design2")).simulate(np.random.default_rng(seed), 40, 60)
    df = rep.train.copy()
    df["X4_group"] = np.where(df["X4"] > df["X4"].median(), "high", "low")
    return df, spec


MAX_GROUPS = 20
SIM_REPS = 100          # --simulate: replicates per scenario
MAX_LEVELS = 50         # a categorical covariate's levels (each is a column)
MAX_ABS = 1e100         # |value| beyond this overflows squared sums


# ---------------------------------------------------------------- the options and the request
def request(options: dict, log=print) -> dict:
    """Every option of `simstudy apply` checked and the data read and prepared, before any
    fit: the keyword arguments of `analyse`. A problem is a ConfigError / DataError naming
    the option and the fix."""
    opts = fill_options({k: options.get(k) for k in OPTIONS} | {k: v for k, v in options.items()
                                                                if k in OPTIONS})
    if bool(opts["data"]) == bool(opts["example"]):
        raise DataError("give exactly one of --data FILE or --example NAME")
    if opts["out"]:
        recover_out(Path(opts["out"]))
    out = check_apply_out(opts["out"])
    if opts["example"]:
        df, spec = example(opts["example"])
        log(EXAMPLES[opts["example"]]["text"])
        spec = {**spec, **{k: v for k, v in opts.items() if k in spec and v}}
        drop_sites = spec.pop("drop_sites") or opts["drop_sites"]
    else:
        df = load(opts["data"], ids=(opts["site"], opts["by"]))
        spec = dict(outcome=opts["outcome"], treatment=opts["treatment"], site=opts["site"],
                    covariates=opts["covariates"], moderators=opts["moderators"], by=opts["by"])
        lacking = [f"--{k}" for k, v in spec.items() if k != "by" and not v]
        if lacking:
            raise DataError(f"{' '.join(lacking)} required with --data")
        drop_sites = opts["drop_sites"]
    from .methods import REGISTRY, available
    unknown = [m for m in opts["methods"] if m not in available()]
    if unknown:
        raise DataError(f"--methods {unknown} not registered; choose from {available()}")
    depths = [2, 3] if opts["depths"] is None else [int(d) for d in opts["depths"]]
    for d in depths:                       # PT's own declared range of depth
        try:
            REGISTRY["PT"][0].check_options({"depth": d})
        except ValueError as exc:
            raise DataError(f"--depths: {exc}") from None
    frame, cov, mod = prepare(df, spec["outcome"], spec["treatment"], spec["site"],
                              spec["covariates"], spec["moderators"], spec.get("by"),
                              opts["treated"], opts["dropna"], drop_sites)
    by = spec.get("by")
    if by and frame[by].nunique() > MAX_GROUPS:
        raise DataError(f"--by {by}: {frame[by].nunique()} distinct values; Figs 8-9 draw one "
                        f"group each, so use a column with at most {MAX_GROUPS} (cut a "
                        f"continuous column into bands first)")
    sim = simulate_options(opts, opts["methods"])                  # --simulate, before any fit
    K = 5 if opts["value_folds"] is None else int(opts["value_folds"])
    site_folds(frame[spec["site"]].unique(), K, opts["seed"])      # K vs sites, before any fit
    return dict(simulate=sim, title=opts["example"] or Path(str(opts["data"])).stem,
                df=frame, outcome=spec["outcome"], treatment=spec["treatment"],
                site=spec["site"], cov=cov, mod=mod, methods=opts["methods"], by=by,
                seed=opts["seed"], depths=depths, value_folds=K, out=out)


def simulate_options(opts: dict, methods) -> dict | None:
    """apply's --simulate options, checked before any fit: the settings of `simulate`, or None
    without --simulate (a simulation option without it is an error, not ignored)."""
    given = [k for k in ("scenarios", "sim_reps", "plan_sites", "plan_sizes", "plan_target",
                         "n_jobs")
             if opts.get(k) is not None]
    if not opts.get("simulate"):
        if given:
            raise DataError(f"--{given[0].replace('_', '-')} is an option of --simulate; add "
                            f"--simulate (or drop it)")
        return None
    scenarios = list(opts.get("scenarios") or SCENARIOS)
    bad = [s for s in scenarios if s not in SCENARIOS]
    if bad or len(set(scenarios)) != len(scenarios):
        raise DataError(f"--scenarios {' '.join(map(str, scenarios))}: choose distinct names "
                        f"from {', '.join(SCENARIOS)}")
    reps = SIM_REPS if opts.get("sim_reps") is None else int(opts["sim_reps"])
    if reps < 2:
        raise DataError(f"--sim-reps {reps}: at least 2 replicates (MC SEs need them)")
    plan = [int(j) for j in (opts.get("plan_sites") or [])]
    if any(j < 2 for j in plan) or len(set(plan)) != len(plan):
        raise DataError(f"--plan-sites {' '.join(map(str, plan))}: distinct numbers of sites, "
                        f"each at least 2 (a multisite model needs 2 sites)")
    sizes = [int(n) for n in (opts.get("plan_sizes") or [])]
    if sizes and not plan:
        raise DataError("--plan-sizes needs --plan-sites (the numbers of sites to plan over)")
    if any(n < 2 for n in sizes) or len(set(sizes)) != len(sizes):
        raise DataError(f"--plan-sizes {' '.join(map(str, sizes))}: distinct mean site sizes, "
                        f"each at least 2")
    target = 0.9 if opts.get("plan_target") is None else float(opts["plan_target"])
    if not 0 < target < 1:
        raise DataError(f"--plan-target {target}: an accuracy strictly between 0 and 1")
    n_jobs = 2 if opts.get("n_jobs") is None else int(opts["n_jobs"])
    if n_jobs < 1:
        raise DataError(f"--n-jobs {n_jobs}: at least 1")
    from .methods import REGISTRY
    rules = [m for m in methods if m in REGISTRY and m not in ("oracle", "treat-all",
                                                               "treat-none")]
    return {"scenarios": scenarios, "reps": reps, "plan_sites": sorted(plan),
            "plan_sizes": sorted(sizes),
            "target": target, "n_jobs": n_jobs,
            "methods": rules + (["PT"] if "PT" not in rules else [])
            + ["oracle", "treat-all", "treat-none"]}


# the options of `simstudy apply` (name: argparse's settings; the command line adds --name)
OPTIONS = {
    "config": dict(help="a YAML file with any of these options (data, outcome, treatment, "
                   "site, covariates, moderators, methods, by, out, ...); options given on the "
                   "command line win"),
    "data": dict(help="csv or parquet file, one row per individual"),
    "example": dict(help="a built-in example: star (Project STAR, shipped), thornton "
                    "(Thornton 2008, shipped) or simulated (NOT real data); its columns are "
                    "preset, any option given here overrides them (e.g. --example star "
                    "--outcome mathk)"),
    "outcome": dict(), "treatment": dict(),
    "treated": dict(help="the treated label when the treatment is not 0/1"),
    "site": dict(),
    "covariates": dict(nargs="+", default=None),
    "moderators": dict(nargs="+", default=None),
    "methods": dict(nargs="+", default=None, help="default: the 14 estimators"),
    "depths": dict(nargs="*", type=int, default=None,
                   help="policy-tree depths (default 2 3; none: --depths with no value)"),
    "by": dict(help="grouping column for Figs 8-9 (shares and scores by group)"),
    "dropna": dict(action="store_true", help="drop rows with missing values"),
    "drop_sites": dict(action="store_true",
                       help="drop sites with one person or everyone / no one treated"),
    "value_folds": dict(type=int, default=None,
                        help="K folds of sites for the cross-fitted values (default 5)"),
    "seed": dict(type=int, default=None, help="default 2024"),
    "out": dict(),
    "simulate": dict(action="store_true",
                     help="then calibrate a multisite design to this trial and ask which rule "
                          "to trust on trials like it (a study per heterogeneity scenario; "
                          "outputs beside --out in OUT_simulate/ and in the report)"),
    "scenarios": dict(nargs="+", default=None,
                      help="--simulate: effect shapes (linear tree smooth none; default all)"),
    "sim_reps": dict(type=int, default=None,
                     help="--simulate: replicates per scenario (default 100)"),
    "plan_sites": dict(nargs="+", type=int, default=None,
                       help="--simulate: also a sweep over the number of sites J (e.g. 10 25 50 "
                            "100): accuracy against J and the J each rule needs"),
    "plan_sizes": dict(nargs="+", type=int, default=None,
                       help="--simulate --plan-sites: also vary the mean site size (Poisson "
                            "sizes of each mean, e.g. 20 50 100; default: the trial's sizes)"),
    "plan_target": dict(type=float, default=None,
                        help="--simulate: the accuracy the planning asks for (default 0.9)"),
    "n_jobs": dict(type=int, default=None, help="--simulate: workers (default 2)"),
}


def fill_options(opts: dict) -> dict:
    """Options not given on the command line from the `config` file (YAML), each typed and
    checked as on the command line (`typed_option`); then the defaults."""
    opts = dict(opts)
    if opts.get("config"):
        import yaml
        path = Path(opts["config"])
        if not path.is_file():
            raise DataError(f"--config {path}: no such file")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"--config {path} is not valid YAML "
                            f"({str(exc).splitlines()[0]})") from None
        if not isinstance(cfg, dict):
            raise DataError(f"--config {path}: must be a YAML mapping of options (key: value)")
        cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
        unknown = sorted(set(cfg) - set(OPTIONS) | ({"config"} & set(cfg)))
        if unknown:
            raise DataError(f"--config {path}: unknown keys {unknown}; allowed "
                            f"{sorted(k for k in OPTIONS if k != 'config')}")
        for key, value in cfg.items():
            if value is None:
                continue
            if opts.get(key) in (None, False):
                opts[key] = typed_option(key, value, f"--config {path}")
    if opts.get("methods") is not None and not opts["methods"]:
        raise DataError("--methods: the list is empty; name at least one method")
    opts["methods"] = opts.get("methods") or DEFAULT_METHODS
    opts["seed"] = 2024 if opts.get("seed") is None else int(opts["seed"])
    if opts["seed"] < 0:
        raise DataError(f"seed {opts['seed']}: must be an integer >= 0")
    if opts.get("value_folds") is not None and opts["value_folds"] < 2:
        raise DataError(f"value_folds {opts['value_folds']}: must be an integer >= 2")
    return opts


def typed_option(key: str, value, where: str):
    """One option of apply's --config YAML, typed as the command line types it."""
    from .options import parse_bool
    names = ("covariates", "moderators", "methods")
    if key in ("dropna", "drop_sites"):
        return parse_bool(value, f"{where}: {key}")
    if key in ("simulate",):
        return parse_bool(value, f"{where}: {key}")
    if key == "plan_target":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where}: {key}: {value!r} must be a number")
        return float(value)
    if key in ("scenarios", "plan_sites", "plan_sizes"):
        value = [value] if not isinstance(value, list) else value
        kind = int if key in ("plan_sites", "plan_sizes") else str
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: {key}: {value!r} must be a list of "
                            f"{'integers' if kind is int else 'names'}")
        return value
    if key in ("value_folds", "seed", "sim_reps", "n_jobs"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: {key}: {value!r} must be an integer")
        return value
    if key == "depths":
        value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise DataError(f"{where}: depths: {value!r} must be a list of integers (PT's depth), "
                            f"e.g. [2, 3] ([] for no trees)")
        return value
    if key in names:
        value = value.split() if isinstance(value, str) else value
        if not isinstance(value, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: {key}: {value!r} must be a list of names, e.g. [X1, X2]")
        if not value:
            raise DataError(f"{where}: {key}: the list is empty; name at least one")
        return [str(v) for v in value]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: {key}: {value!r} must be a single name")
    return str(value)
