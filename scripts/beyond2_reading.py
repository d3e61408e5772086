"""READING.md of the round-2 study beyond the paper (issue 41; scripts/run_beyond2.sh): the five
questions, each answered from the store with paired differences and Monte Carlo SEs.

  1. new sites: accuracy with test_sites=new minus the trial's own sites, per replicate (the
     training data are the same in both points);
  2. the value each rule claims: bias, empirical and model SE, coverage (report.study);
  3. budget: the value when a rule treats at most the budget's share, the ranking's AUTOC and
     Qini against the true Delta, beside the oracle and the constant rules;
  4. across sites: the accuracy in the worst test site and the share of sites where the rule
     is below the better constant rule;
  5. confounding on X1: accuracy with the site share and with estimated propensities (paired:
     the same data), and the claims' bias under each.

    python scripts/beyond2_reading.py [results/beyond2]
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from simstudy.report.study import value_claims
from simstudy.report.tables import to_markdown
from simstudy.store import read_config, read_metrics

SHOWN = ["Q-fe", "Q-rs", "W-augID", "PT", "CF", "DR", "PT-CF"]
CELL = ["design", "J", "n_j"]


def roles(store: Path) -> dict[str, str]:
    """Sweep point label -> its role: same, new, confounded (site share), estimated."""
    out = {}
    for label, point in read_config(store)["points"].items():
        keys = {k: str(v) for k, v in (point.get("keys") or {}).items()}
        if keys.get("design.test_sites") == "new":
            out[label] = "new"
        elif keys.get("value_claims") == "estimated":
            out[label] = "estimated"
        elif any(k.endswith("confounding") for k in keys):
            out[label] = "confounded"
        else:
            out[label] = "same"
    return out


def paired(m: pd.DataFrame, a: str, b: str, metric: str) -> pd.DataFrame:
    """Per cell and method: mean of `metric` in role a and b, and the paired mean of b - a with
    its MC SE (replicates present in both)."""
    rows = []
    for key, g in m[m["method"].isin(SHOWN)].groupby(CELL + ["method"], sort=True):
        w = g.pivot_table(index="replicate", columns="role", values=metric)
        if a not in w or b not in w:
            continue
        d = (w[b] - w[a]).dropna()
        rows.append({**dict(zip(CELL + ["method"], key)), a: w[a].mean(), b: w[b].mean(),
                     f"{b} - {a}": d.mean(),
                     "MC SE": d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else np.nan,
                     "reps": len(d)})
    return pd.DataFrame(rows)


def means(m: pd.DataFrame, metrics: list[str], methods: list[str]) -> pd.DataFrame:
    """Per cell and method: 'mean (MC SE)' of each metric."""
    rows = []
    for key, g in m[m["method"].isin(methods)].groupby(CELL + ["method"], sort=True):
        row = dict(zip(CELL + ["method"], key))
        for x in metrics:
            v = g[x].dropna().to_numpy(float)
            row[x] = (f"{v.mean():.3f} ({v.std(ddof=1) / math.sqrt(v.size):.3f})"
                      if v.size > 1 else "")
        rows.append(row)
    return pd.DataFrame(rows)


HEAD = ["Q-fe", "Q-rs", "PT", "CF"]


def headline(same, q1, claims, q5, bias) -> pd.DataFrame:
    """One row per cell and rule of HEAD: the five answers side by side (strings)."""
    rows = []

    def pick(t, key):
        if t is None or not len(t):
            return None
        hit = t[(t[CELL + ["method"]] == pd.Series(key, index=CELL + ["method"])).all(axis=1)]
        return hit.iloc[0] if len(hit) else None
    for key, g in same[same["method"].isin(HEAD)].groupby(CELL + ["method"], sort=True):
        row = dict(zip(CELL + ["method"], key))
        row["accuracy"] = f"{g['accuracy'].mean():.3f}"
        r = pick(q1, key)
        row["(1) new - same"] = "" if r is None else f"{r['new - same']:+.3f} ({r['MC SE']:.3f})"
        r = pick(claims, key)
        row["(2) coverage"] = "" if r is None else f"{r['coverage']:.3f} ({r['coverage_mcse']:.3f})"
        row["(3) AUTOC"] = f"{g['autoc'].mean():.3f}"
        row["(4) worst site"] = f"{g['worst_site_accuracy'].mean():.3f}"
        if bias is not None:
            b = [pick(bias[bias["propensity"] == r], key) for r in ("confounded", "estimated")]
            row["(5) claim bias"] = ("" if any(x is None for x in b) else
                                     f"{b[0]['bias']:+.3f} -> {b[1]['bias']:+.3f}")
            r = pick(q5, key)
            row["(5) accuracy gain"] = ("" if r is None else
                                        f"{r['estimated - confounded']:+.3f} ({r['MC SE']:.3f})")
        rows.append(row)
    return pd.DataFrame(rows)


def main(folder: Path) -> str:
    store = folder / "store"
    m = read_metrics(store)
    m = m[m["status"] == "ok"].assign(role=lambda d: d["point"].map(roles(store)))
    same = m[m["role"] == "same"]
    parts = ["# Beyond the paper, round 2: the five questions\n",
             f"Written by `python scripts/beyond2_reading.py {folder}` from {store} "
             "(`bash scripts/run_beyond2.sh`). Means over replicates with Monte Carlo SEs; "
             "paired differences are on the same replicates.\n"]
    q1 = paired(m, "same", "new", "accuracy")
    parts += ["## 1. New sites: accuracy on people of sites the rule never saw\n",
              to_markdown(q1, digits=4) if len(q1) else "(no test_sites=new point)\n"]
    claims = value_claims(same)
    if len(claims):
        claims = claims[claims["method"].isin(SHOWN + ["treat-all", "treat-none"])]
        parts += ["## 2. The value each rule claims (AIPW on held-out training data)\n",
                  to_markdown(claims[CELL + ["method", "reps", "bias", "bias_mcse", "emp_se",
                                             "model_se", "coverage", "coverage_mcse"]],
                              digits=3)]
    refs = ["oracle", "treat-all", "treat-none"]
    parts += ["## 3. A budget, and the ranking (from the true effects)\n",
              to_markdown(means(same, ["value", "value_at_budget", "autoc", "qini"],
                                SHOWN + refs)),
              "## 4. Across sites\n",
              to_markdown(means(same, ["accuracy", "worst_site_accuracy", "site_accuracy_sd",
                                       "sites_below_constant"], SHOWN + refs))]
    q5 = paired(m, "confounded", "estimated", "accuracy")
    if len(q5):
        c = {r: value_claims(m[m["role"] == r]) for r in ("confounded", "estimated")}
        bias = pd.concat([t.assign(propensity=r) for r, t in c.items() if len(t)])
        bias = bias[bias["method"].isin(SHOWN + ["treat-all"])]
        parts += ["## 5. Treatment that depends on X1: the site share against estimated "
                  "propensities\n", to_markdown(q5, digits=4),
                  "\nThe claimed values under each:\n\n",
                  to_markdown(bias[["propensity"] + CELL + ["method", "reps", "bias",
                                                             "bias_mcse", "coverage"]],
                              digits=3)]
    head = headline(same, q1, claims, q5, bias if len(q5) else None)
    parts[2:2] = ["## Headline: the five answers for four rules\n",
                  "Per cell: accuracy on the trial's sites; (1) accuracy on new sites minus "
                  "that (paired, MC SE); (2) coverage of the 95% interval of the value the "
                  "rule claims; (3) AUTOC of its ranking (true Delta); (4) accuracy in the "
                  "worst test site; (5) under confounding on X1, the bias of the claimed "
                  "value with the site share -> with estimated propensities, and the "
                  "accuracy gained by estimating them (paired, MC SE).\n",
                  to_markdown(head), ""]
    text = "\n".join(parts)
    (folder / "READING.md").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/beyond2")))
