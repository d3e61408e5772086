"""Our causal forest (CF) and forest policy tree (PT-CF) against R's grf and policytree on the
same data (issue 24; validation only, the tests never need R).

For each design and dataset: simstudy draws a replicate; our CF and PT-CF are fitted; R fits
grf::causal_forest(X, Y, W, W.hat = site share, clusters = site) with grf's own Y.hat and with
ours (column m), and policytree::policy_tree(X, double_robust_scores(cf), depth = 2) on the
latter (scripts/compare_grf.R). Printed and written (results/grf_comparison.md): per design, the
mean over datasets of the ATE and its SE, the CATEs' correlation with and RMSE against the true
Delta on the test rows, the correlation of our CATEs with grf's, and the policy trees' welfare
(mean true outcome under the rule) on the test rows — each with its Monte Carlo SE.

    R_LIBS=~/R-grf python scripts/compare_grf.py [--datasets 15] [--J 150] [--n_j 25]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from simstudy.designs import make_design, preset
from simstudy.engines import forest as F
from simstudy.methods import make
from simstudy.methods.registry import shared_reads
from simstudy.report.tables import to_markdown

DESIGNS = {"design2": ["X1", "X2", "X3", "X4", "X5"], "tree": ["X1", "X2", "X3", "X4", "X5"],
           "site_moderator": ["X1", "X2", "X3", "X4", "X5", "W"]}


def ours(rep, covariates, num_trees, seed):
    """Our CF (test CATEs, ATE + cluster SE from the OOB DR scores) and PT-CF's test actions."""
    opts = {"covariates": covariates, "num_trees": num_trees}
    with shared_reads():
        cf = make("CF", opts)
        cf.random_state = seed
        cf.fit(rep.train)
        tau = cf.benefit_score(rep.test)
        forest, tau_oob, m, e = cf._forest(rep.train)
        pt = make("PT-CF", {**opts, "features": covariates})
        pt.random_state = seed
        pt.fit(rep.train)
        action = pt.decide(rep.test)
    labels, codes = cf._sites(rep.train)
    T, y = rep.train["T"].to_numpy(float), rep.train["Y"].to_numpy(float)
    gamma = tau_oob + (T - e) / (e * (1 - e)) * (y - m - (T - e) * tau_oob)
    ate, se = F.cluster_ate(gamma, codes, labels.size)
    return tau, action, ate, se, m, e


def welfare(truth, action):
    return float(np.mean(truth["Y0"].to_numpy() + action * truth["Delta"].to_numpy()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", type=int, default=15)
    ap.add_argument("--J", type=int, default=150)
    ap.add_argument("--n_j", type=int, default=25)
    ap.add_argument("--num-trees", type=int, default=500)
    ap.add_argument("--out", default="results/grf_comparison.md")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mine = {}
        for design, cov in DESIGNS.items():
            d = make_design(preset(design))
            for k in range(args.datasets):
                seed = 1000 + k
                rep = d.simulate(np.random.default_rng(seed), args.J, args.n_j)
                tau, action, ate, se, m, e = ours(rep, cov, args.num_trees, seed)
                key = f"{design}_{seed}"
                mine[key] = (rep, tau, action, ate, se)
                rep.train.assign(m=m, e=e).to_csv(Path(tmp, f"{key}_train.csv"), index=False)
                rep.test.to_csv(Path(tmp, f"{key}_test.csv"), index=False)
        env = dict(os.environ)
        env.setdefault("R_LIBS", str(Path.home() / "R-grf"))
        subprocess.run(["Rscript", str(Path(__file__).with_name("compare_grf.R")), tmp,
                        str(args.num_trees)], check=True, env=env)
        for key, (rep, tau, action, ate, se) in mine.items():
            g = pd.read_csv(Path(tmp, f"{key}_grf.csv"))
            a = pd.read_csv(Path(tmp, f"{key}_grf_ate.csv")).iloc[0]
            delta = rep.truth["Delta"].to_numpy()
            row = {"design": key.rsplit("_", 1)[0], "true_ate": delta.mean(),
                   "ate_ours": ate, "se_ours": se, "ate_grf": a.ate_m, "se_grf": a.se_m,
                   "ate_grf_own_yhat": a.ate_own, "se_grf_own_yhat": a.se_own}
            for name, t in (("ours", tau), ("grf", g.tau_m.to_numpy()),
                            ("grf_own_yhat", g.tau_own.to_numpy())):
                row[f"cor_{name}"] = np.corrcoef(t, delta)[0, 1]
                row[f"rmse_{name}"] = np.sqrt(np.mean((t - delta) ** 2))
            row["cor_ours_grf"] = np.corrcoef(tau, g.tau_m.to_numpy())[0, 1]
            row["welfare_ptcf_ours"] = welfare(rep.truth, action)
            row["welfare_policytree"] = welfare(rep.truth, g.pt_action.to_numpy())
            row["welfare_oracle"] = welfare(rep.truth, (delta > 0).astype(int))
            rows.append(row)
    table = pd.DataFrame(rows)
    mean = table.groupby("design", sort=False).mean()
    mcse = table.groupby("design", sort=False).std() / np.sqrt(args.datasets)
    shown = mean.round(4).astype(str) + " (" + mcse.round(4).astype(str) + ")"
    diff = (table.welfare_ptcf_ours - table.welfare_policytree).groupby(table.design, sort=False)
    shown["welfare ours - policytree"] = (diff.mean().round(4).astype(str) + " (" +
                                          (diff.std() / np.sqrt(args.datasets)).round(4).astype(str) + ")")
    text = (f"# simstudy CF / PT-CF vs R grf / policytree\n\n"
            f"`R_LIBS=~/R-grf python scripts/compare_grf.py --datasets {args.datasets} --J {args.J} "
            f"--n_j {args.n_j} --num-trees {args.num_trees}`: {args.datasets} datasets per design "
            f"(seeds 1000..), J = {args.J}, n_j = {args.n_j}, {args.num_trees} trees on both sides; "
            f"mean over datasets (Monte Carlo SE). grf = causal_forest(X, Y, W, Y.hat = ours, "
            f"W.hat = site share, clusters = site); grf_own_yhat = the same with grf's own Y.hat. "
            f"cor/rmse: CATE on the test rows against the true Delta; welfare: mean true outcome "
            f"of the test rows under the depth-2 tree.\n\n"
            + to_markdown(shown.T.reset_index().rename(columns={"index": "measure"})) + "\n")
    Path(args.out).write_text(text)
    table.to_csv(Path(args.out).with_suffix(".csv"), index=False)
    print(text)


if __name__ == "__main__":
    main()
