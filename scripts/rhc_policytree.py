"""Policy trees on real data: the right heart catheterisation study (Bodory, Mascolo & Lechner
2024, Study 2; ../shared/data/DATA_POLICYTREE.md), with our tree search.

    python scripts/rhc_policytree.py [--data ../shared/data/rhc.csv] [--out results/rhc_policytree]

Outcome: survival (1 - dth30), treatment swang1 (RHC), the paper's split (sklearn
train_test_split, random_state 42): 80% learn scores and trees, 20% evaluate. The paper's
scores are mcf forest IATEs; here (no forest) they are cross-fitted doubly robust scores for
OBSERVATIONAL data: Gamma_i(t) = mu_t(X_i) + 1(T_i = t)(Y_i - mu_t(X_i)) / e_t(X_i), with mu_t
from OLS of Y on the 55 confounders within arm t and e(X) from a logistic regression (clipped
to [0.02, 0.98]), 5-fold cross-fitted on the training rows; the evaluation rows' scores use
nuisance models fitted on all training rows. Trees: the paper's features (age, surv2md1, aps1,
adld3pc, scoma1, meanbp1, dnr1 ordered; cat1 unordered), A = 100, min leaf 0.1 n / (2 depth);
depths 2 and 3 and sequential 2+1, 3+1. Welfare = mean score of an allocation on the
evaluation rows (Table 2's layout). Differences from the paper's numbers come from the scores
(linear/logistic AIPW here vs mcf's forest) -- reported, not tuned.
"""
import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import train_test_split

from simstudy.engines.treesearch import (PolicyTreeSearch, rules_table, sequential_tree,
                                         welfare_table)
from simstudy.report.figures import policy_tree
from simstudy.report.tables import to_markdown

ORDERED = ["adld3pc", "age", "alb1", "amihx", "aps1", "bili1", "card", "cardiohx", "cat2_miss",
           "chfhx", "chrpulhx", "crea1", "das2d3pc", "dementhx", "edu", "gastr", "gibledhx",
           "hema", "hema1", "hrt1", "immunhx", "income", "liverhx", "malighx", "meanbp1", "meta",
           "neuro", "ortho", "paco21", "pafi1", "ph1", "pot1", "psychhx", "renal", "renalhx",
           "resp", "resp1", "scoma1", "seps", "sex", "sod1", "surv2md1", "temp1", "transhx",
           "trauma", "urin1", "urin1_miss", "wblc1", "wtkilo1", "dnr1"]
UNORDERED = ["ca", "cat1", "cat2", "ninsclas", "race"]
FEATURES = ["age", "surv2md1", "aps1", "adld3pc", "scoma1", "meanbp1", "dnr1", "cat1"]


def _nuisance(X, T, y):
    ps = LogisticRegression(max_iter=5000).fit(X, T)
    mu = [LinearRegression().fit(X[T == t], y[T == t]) for t in (0, 1)]
    return ps, mu


def _scores(models, X, T, y):
    ps, mu = models
    e = np.clip(ps.predict_proba(X)[:, 1], 0.02, 0.98)
    m = np.column_stack([mu[0].predict(X), mu[1].predict(X)])
    G = m.copy()
    G[:, 1] += T * (y - m[:, 1]) / e
    G[:, 0] += (1 - T) * (y - m[:, 0]) / (1 - e)
    return G


def dr_scores(X, T, y, folds=5, seed=0):
    """Cross-fitted: each fold's scores from nuisance models fitted on the other folds."""
    fold = np.random.default_rng(seed).permutation(np.resize(np.arange(folds), len(y)))
    G = np.empty((len(y), 2))
    for k in range(folds):
        te, tr = fold == k, fold != k
        G[te] = _scores(_nuisance(X[tr], T[tr], y[tr]), X[te], T[te], y[te])
    return G


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).parents[1] / ".." / "shared" / "data" / "rhc.csv"))
    ap.add_argument("--out", default="results/rhc_policytree")
    args = ap.parse_args()
    df = pd.read_csv(args.data)
    df["survival"] = 1 - df["dth30"]
    train, evaluate = train_test_split(df, test_size=0.2, random_state=42)
    design = pd.get_dummies(df[ORDERED + UNORDERED].astype({c: "category" for c in UNORDERED}),
                            drop_first=True, dtype=float)
    Xtr, Xev = design.loc[train.index].to_numpy(), design.loc[evaluate.index].to_numpy()
    mean, sd = Xtr.mean(0), Xtr.std(0) + 1e-12
    Xtr, Xev = (Xtr - mean) / sd, (Xev - mean) / sd
    Gtr = dr_scores(Xtr, train["swang1"].to_numpy(), train["survival"].to_numpy(float))
    Ttr, ytr = train["swang1"].to_numpy(), train["survival"].to_numpy(float)
    Gev = _scores(_nuisance(Xtr, Ttr, ytr), Xev, evaluate["swang1"].to_numpy(),
                  evaluate["survival"].to_numpy(float))      # nuisances from the training rows
    Ftr, Fev = train[FEATURES].to_numpy(float), evaluate[FEATURES].to_numpy(float)
    cat = [FEATURES.index("cat1")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    acts = ["No RHC", "RHC"]
    rows, md = [], []
    for label, depth, second in [("optimal depth 2", 2, 0), ("optimal depth 3", 3, 0),
                                 ("sequential 2+1", 2, 1), ("sequential 3+1", 3, 1)]:
        min_leaf = int(0.1 * len(Ftr) / (2 * (depth + second)))
        t0 = time.perf_counter()
        if second:
            tree = sequential_tree(Ftr, Gtr, depth, second, min_leaf=min_leaf, split_points=100,
                                   categorical=cat)
        else:
            tree = PolicyTreeSearch(depth, min_leaf, 100, cat).fit(Ftr, Gtr)
        sec = time.perf_counter() - t0
        w = welfare_table(tree, Fev, Gev, evaluate["swang1"].to_numpy(), acts).set_index("policy")
        if not rows:
            rows += [{"policy": p, "welfare %": 100 * w.loc[p, "welfare"],
                      **{f"{a} %": 100 * w.loc[p, f"share_{a}"] for a in acts}, "seconds": np.nan}
                     for p in ("observed", "random")]
        rows.append({"policy": label, "welfare %": 100 * w.loc["tree", "welfare"],
                     **{f"{a} %": 100 * w.loc["tree", f"share_{a}"] for a in acts}, "seconds": sec})
        stem = label.replace(" ", "_").replace("+", "p")
        policy_tree(tree, FEATURES, acts, f"RHC, {label} (training rows)", out / stem)
        rules = rules_table(tree, Ftr, Gtr, FEATURES, acts)
        md.append(f"## {label}\n\n" + to_markdown(rules, digits=3))
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    (out / "welfare.md").write_text(
        "RHC: welfare (survival %, cross-fitted AIPW on the 20% evaluation rows) and shares "
        "(`python scripts/rhc_policytree.py`). Paper Table 2 (mcf forest scores): observed 68.23, "
        "random 67.88, depth 2 69.99 (RHC 19.21%), depth 3 69.95 (17.27%), 2+1 69.98, 3+1 69.97."
        "\n\n" + to_markdown(table, digits=2) + "\n" + "\n".join(md))


if __name__ == "__main__":
    main()
