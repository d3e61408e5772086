"""simstudy's causal forest (engines/grf.py) against R grf's causal_forest on the same replicates,
ALTERNATING the two in one process (R embedded through rpy2, so both see the same load), one
thread each, equal numbers of trees (issue 43). Benchmark and validation only; tests never need R.

Both forests get the same centred inputs: Y.hat = simstudy's m(x, site) (cross-fitted boosting
plus the site's mean residual), W.hat = the site's treated share, clusters = sites; grf's other
options at its defaults (honesty, stabilize.splits, alpha 0.05, min.node.size 5, sample.fraction
0.5, ci.group.size 2). A "fit" is what a study needs: the forest, its out-of-bag CATEs on the
training rows and its CATEs on the test rows (grf: causal_forest() + predict(newdata); ours:
fit + predict OOB + predict). Accuracy = share of test rows where sign(tau_hat) = sign(Delta).

    R_LIBS=~/R-grf python scripts/bench_vs_grf.py [--reps 3] [--trees 500] \
        [--datasets 30] [--acc-trees 2000] [--out results/bench_vs_grf.md]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("R_LIBS", str(Path.home() / "R-grf"))
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[var] = "1"

from simstudy.designs import make_design, preset                      # noqa: E402
from simstudy.engines import forest as F                              # noqa: E402
from simstudy.methods.rmethod import _r                               # noqa: E402
from simstudy.report.tables import to_markdown                        # noqa: E402

SIZES = [(25, 25), (25, 150), (150, 25), (150, 150)]
ACCURACY = {"design2": 5, "tree": 5, "smooth": 5, "site_moderator": 6}   # covariates X1..X5 (+ W)


def prepare(design: str, J: int, n_j: int, seed: int):
    """One replicate with the inputs both forests share."""
    rep = make_design(preset(design)).simulate(np.random.default_rng(seed), J, n_j)
    cov = [f"X{k}" for k in range(1, 6)] + (["W"] if ACCURACY.get(design) == 6 else [])
    tr = rep.train
    codes = pd.factorize(tr["site"], sort=True)[0]
    X, Xt = tr[cov].to_numpy(float), rep.test[cov].to_numpy(float)
    T, y = tr["T"].to_numpy(float), tr["Y"].to_numpy(float)
    e = (np.bincount(codes, weights=T) / np.bincount(codes))[codes]
    folds = np.random.default_rng(seed).permutation(np.arange(len(y)) % 5)
    m = F.outcome_mean(X, y, codes, J, folds, seed)
    return dict(X=X, Xt=Xt, T=T, y=y, e=e, m=m, codes=codes, J=J, seed=seed,
                delta=rep.truth["Delta"].to_numpy())


def to_r(d) -> None:
    """The replicate into R's global environment (outside the timed region)."""
    ro = _r()
    from rpy2.robjects import FloatVector, IntVector
    mat = ro.r["matrix"]
    ro.globalenv["X"] = mat(FloatVector(d["X"].ravel(order="F")), nrow=d["X"].shape[0])
    ro.globalenv["Xt"] = mat(FloatVector(d["Xt"].ravel(order="F")), nrow=d["Xt"].shape[0])
    for name in ("T", "y", "e", "m"):
        ro.globalenv[name] = FloatVector(d[name])
    ro.globalenv["cl"] = IntVector(d["codes"])


def run_grf(d, trees: int) -> tuple[float, np.ndarray]:
    ro = _r()
    to_r(d)
    t = time.perf_counter()
    tau = ro.r(f"cf <- causal_forest(X, y, T, Y.hat = m, W.hat = e, clusters = cl, "
               f"num.trees = {trees}, num.threads = 1, seed = {d['seed']}); "
               f"predict(cf, Xt)$predictions")
    return time.perf_counter() - t, np.asarray(tau)


def run_ours(d, trees: int) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    forest = F.ClusterCausalForest(trees, seed=d["seed"]).fit(
        d["X"], d["T"] - d["e"], d["y"] - d["m"], d["codes"], d["J"])
    forest.predict(d["X"], d["codes"])
    tau = forest.predict(d["Xt"])
    return time.perf_counter() - t, tau


def paired(d, trees: int, order: int) -> dict:
    """Both fits on one replicate, grf first when order is even."""
    runs = {}
    for name in (("grf", "ours") if order % 2 == 0 else ("ours", "grf")):
        runs[name] = (run_grf if name == "grf" else run_ours)(d, trees)
    acc = {k: float(np.mean((tau > 0) == (d["delta"] > 0))) for k, (_, tau) in runs.items()}
    cor = {k: float(np.corrcoef(tau, d["delta"])[0, 1]) for k, (_, tau) in runs.items()}
    return {"s_grf": runs["grf"][0], "s_ours": runs["ours"][0], "acc_grf": acc["grf"],
            "acc_ours": acc["ours"], "cor_grf": cor["grf"], "cor_ours": cor["ours"]}


def mc(x) -> str:
    x = np.asarray(x, float)
    return f"{x.mean():+.4f} ({x.std(ddof=1) / np.sqrt(x.size):.4f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="replicates per size (speed)")
    ap.add_argument("--trees", type=int, default=500, help="trees, both sides (speed)")
    ap.add_argument("--datasets", type=int, default=30, help="datasets per design (accuracy)")
    ap.add_argument("--acc-trees", type=int, default=2000, help="trees, both sides (accuracy)")
    ap.add_argument("--out", default="results/bench_vs_grf.md")
    args = ap.parse_args()
    ro = _r()
    ro.r("suppressPackageStartupMessages(library(grf))")
    version = str(ro.r('as.character(packageVersion("grf"))')[0])
    run_ours(prepare("tree", 8, 10, 1), 4)                                   # compile / load
    lines = [f"# simstudy's causal forest vs R grf {version}, alternating, one thread each\n",
             f"`R_LIBS=~/R-grf python scripts/bench_vs_grf.py --reps {args.reps} --trees "
             f"{args.trees} --datasets {args.datasets} --acc-trees {args.acc_trees}`"
             f" on {os.cpu_count()} cores. Same data and centred inputs for both (Y.hat = simstudy's m, "
             "W.hat = site share, clusters = sites); a fit = the forest + its OOB CATEs + test CATEs. "
             "grf first on even replicates, simstudy first on odd ones.\n",
             "## Seconds per fit (`tree` design, equal trees)\n"]
    rows = []
    for J, n_j in SIZES:
        load0 = os.getloadavg()[0]
        got = [paired(prepare("tree", J, n_j, 100 + r), args.trees, r) for r in range(args.reps)]
        g = pd.DataFrame(got)
        rows.append({"(J, n_j)": f"({J}, {n_j})", "trees": args.trees,
                     "grf s": round(g.s_grf.median(), 3), "simstudy s": round(g.s_ours.median(), 3),
                     "grf / simstudy": round(float(np.median(g.s_grf / g.s_ours)), 2),
                     "ms per tree grf": round(1000 * g.s_grf.median() / args.trees, 2),
                     "ms per tree simstudy": round(1000 * g.s_ours.median() / args.trees, 2),
                     "accuracy grf": round(g.acc_grf.mean(), 4),
                     "accuracy simstudy": round(g.acc_ours.mean(), 4),
                     "load (start, end)": f"{load0:.2f}, {os.getloadavg()[0]:.2f}"})
        print(rows[-1], flush=True)
    lines += [to_markdown(pd.DataFrame(rows)), "\nMedians over the replicates; the ratio is the "
              "median of the per-replicate ratios.\n",
              f"## Accuracy at (150, 25), {args.datasets} datasets per design, "
              f"{args.acc_trees} trees (grf's default) on both sides\n"]
    acc = []
    for design in ACCURACY:
        got = pd.DataFrame([paired(prepare(design, 150, 25, 1000 + k), args.acc_trees, k)
                            for k in range(args.datasets)])
        z = (got.acc_ours - got.acc_grf).mean() / ((got.acc_ours - got.acc_grf).std(ddof=1)
                                                    / np.sqrt(len(got)))
        acc.append({"design": design, "accuracy grf": round(got.acc_grf.mean(), 4),
                    "accuracy simstudy": round(got.acc_ours.mean(), 4),
                    "simstudy - grf (MC SE)": mc(got.acc_ours - got.acc_grf),
                    "diff / SE": round(float(z), 2),
                    "cor(tau, Delta) simstudy - grf": mc(got.cor_ours - got.cor_grf),
                    "s per fit grf / simstudy": round(float(np.median(got.s_grf / got.s_ours)), 2)})
        print(acc[-1], flush=True)
    lines += [to_markdown(pd.DataFrame(acc)), ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
