"""Benchmark: our weighted lasso + 5-fold CV vs scikit-learn LassoCV on the same data and folds.

    python scripts/bench_lasso.py

For (J, n_j) in {25,150}^2 builds the W-augID design (x~ = T~(1, X3..X5), weights 1/p_j,
augmented outcome) and the WS-augID design (plus J-1 site dummies, dense for sklearn), runs
cv_lasso and LassoCV (100 lambdas, the same fold ids, sample weights) and prints the times and
their ratio from one run; then times all seven W estimators on one (150,150) replicate.
"""
import time
import warnings

import numpy as np
from sklearn.linear_model import LassoCV
from sklearn.model_selection import PredefinedSplit

from simstudy import Design, make
from simstudy.engines.lasso import cv_lasso, make_folds


def best_of(f, k=3):
    t = np.inf
    for _ in range(k):
        t0 = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - t0)
    return t


def designs(train):
    codes = train["site"].to_numpy()
    T = train["T"].to_numpy(float)
    Tt = 2 * T - 1
    share = np.bincount(codes, weights=T) / np.bincount(codes)
    p = share[codes]
    w = 1 / (Tt * p + (1 - Tt) / 2)
    m = make("W-augID")
    y = train["Y"].to_numpy() - m._augmentation(train, codes)
    V = train[["X3", "X4", "X5"]].to_numpy()
    dense = Tt[:, None] * np.column_stack([np.ones(len(V)), V])
    J = codes.max() + 1
    S = np.zeros((len(V), J - 1))
    rows = codes > 0
    S[np.flatnonzero(rows), codes[rows] - 1] = Tt[rows]
    return {"W-augID": (dense, np.r_[0, 1, 1, 1.0]),
            "WS-augID": (np.column_stack([dense, S]), np.r_[0, 0, 0, 0, np.ones(J - 1)])}, y, w


def main():
    design = Design(name="design2", beta1=0.2)
    warm = design.simulate(np.random.default_rng(0), 5, 20).train
    make("WS-augID").fit(warm)                                     # compile numba kernels
    print(f"{'J':>4} {'n_j':>4} {'design':>9} {'p':>4} {'ours ms':>8} {'LassoCV ms':>11} {'ratio':>7}")
    for J in (25, 150):
        for n_j in (25, 150):
            train = design.simulate(np.random.default_rng(J + n_j), J, n_j).train
            mats, y, w = designs(train)
            folds = make_folds(len(y), 5, np.random.default_rng(1))
            for name, (X, pf) in mats.items():
                t_ours = best_of(lambda: cv_lasso(X, y, w, pf, foldid=folds, intercept=False))
                # sklearn has no penalty factors: it penalises every column (a simpler problem)
                sk = LassoCV(alphas=100, cv=PredefinedSplit(folds - 1), fit_intercept=False,
                             tol=1e-7, max_iter=100000)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t_sk = best_of(lambda: sk.fit(X, y, sample_weight=w), 1)
                print(f"{J:>4} {n_j:>4} {name:>9} {X.shape[1]:>4} {t_ours * 1e3:>8.1f} "
                      f"{t_sk * 1e3:>11.1f} {t_sk / t_ours:>6.1f}x")
    rep = design.simulate(np.random.default_rng(7), 150, 150)
    names = ["W-base", "W-noaug", "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]
    each = {n: best_of(lambda: make(n, {"random_state": 1}).fit(rep.train).benefit_score(rep.test))
            for n in names}
    print(f"\nall seven W estimators, one (150,150) replicate incl. 5-fold CV: "
          f"{sum(each.values()) * 1e3:.1f} ms")
    print("  " + ", ".join(f"{n} {s * 1e3:.1f}" for n, s in each.items()))


if __name__ == "__main__":
    main()
