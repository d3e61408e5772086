"""Benchmark: our EXACT policy-tree search (every distinct value a candidate, min node size 1)
against the two R exact solvers on the same X and Gamma, in one run: grf-labs' policytree
(policy_tree, C++) and fastpolicytree (Cussens et al. 2025; C). Not dependencies: build them
with `../shared/tools/install_tree_anchors.sh POLICYTREE_GIT TAILORING_GIT LIBDIR` (R from
Debian; sources from the public repositories) and pass --r-lib LIBDIR.

    python scripts/bench_exact_tree.py --r-lib ~/R-tree-anchors [--timeout 300]

Cases are those of issue 18: X ~ N(0, 1) (or Bernoulli(1/2) for the binary case), Gamma_d =
X_d + N(0, 1). Each R solver runs in its own Rscript (time of the solve only, elapsed); ours runs
single-threaded in this process after a warm-up. Welfare = sum of Gamma at each solver's
predicted action on the same rows; "equal" checks ours against every solver that finished.
Writes results/bench_exact_tree.md.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from simstudy.engines.treesearch import PolicyTreeSearch

CASES = [  # (depth, n, p, D, binary X)
    (2, 1000, 5, 2, False), (2, 5000, 10, 2, False), (2, 20000, 5, 2, False),
    (3, 500, 5, 2, False), (3, 1000, 5, 2, False), (4, 500, 30, 2, True),
    (2, 20000, 10, 3, False)]

R_CODE = r"""
args <- commandArgs(trailingOnly = TRUE)
pkg <- args[1]; dir <- args[2]; depth <- as.integer(args[3])
suppressMessages({library(policytree); if (pkg == "fastpolicytree") library(fastpolicytree)})
X <- as.matrix(read.csv(file.path(dir, "X.csv"), header = FALSE))
G <- as.matrix(read.csv(file.path(dir, "G.csv"), header = FALSE))
t0 <- proc.time()[["elapsed"]]
tree <- if (pkg == "policytree") policy_tree(X, G, depth = depth, min.node.size = 1) else
        fastpolicytree(X, G, depth = depth, min.node.size = 1)
el <- proc.time()[["elapsed"]] - t0
a <- predict(tree, X)
cat(sprintf('{"seconds": %.6f, "welfare": %.10f}\n', el, sum(G[cbind(seq_len(nrow(G)), a)])))
"""


def data(n, p, D, binary, seed=1):
    rng = np.random.default_rng(seed)
    X = (rng.random((n, p)) < 0.5).astype(float) if binary else rng.normal(size=(n, p))
    return X, X[:, :D] + rng.normal(size=(n, D))


def run_r(pkg, tmp, depth, lib, timeout):
    env = {**os.environ, "R_LIBS": str(lib)}
    try:
        out = subprocess.run(["Rscript", str(Path(tmp) / "solve.R"), pkg, tmp, str(depth)],
                             capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None, None
    if out.returncode != 0:
        raise RuntimeError(f"{pkg} failed: {out.stderr[-500:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    return res["seconds"], res["welfare"]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--r-lib", required=True, help="library with policytree and fastpolicytree")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default="results/bench_exact_tree.md")
    args = ap.parse_args()
    numba.set_num_threads(1)
    for depth in (2, 3, 4):                                               # compile
        PolicyTreeSearch(depth, 1, None).fit(*data(60, 3, 2, False))
        PolicyTreeSearch(depth, 1, None).fit(*data(60, 3, 2, True))       # the memo's path
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "solve.R").write_text(R_CODE)
        for depth, n, p, D, binary in CASES:
            X, G = data(n, p, D, binary)
            np.savetxt(Path(tmp) / "X.csv", X, delimiter=",", fmt="%.17g")
            np.savetxt(Path(tmp) / "G.csv", G, delimiter=",", fmt="%.17g")
            t0 = time.perf_counter()
            tree = PolicyTreeSearch(depth, 1, None).fit(X, G)
            ours = time.perf_counter() - t0
            w_ours = float(G[np.arange(n), tree.predict(X)].sum())
            res = {pkg: run_r(pkg, tmp, depth, args.r_lib, args.timeout)
                   for pkg in ("fastpolicytree", "policytree")}
            equal = all(abs(w - w_ours) <= 1e-6 * max(1, abs(w_ours))
                        for _, w in res.values() if w is not None)
            rows.append((depth, n, p, D, binary, res, ours, equal))
            print(rows[-1], flush=True)
    fmt = lambda s: f"> {args.timeout:.0f}" if s is None else f"{s:.3f}"        # noqa: E731
    lines = ["# Exact policy trees: simstudy vs policytree and fastpolicytree (same X, Gamma, "
             "min node size 1)", "",
             f"`python scripts/bench_exact_tree.py --r-lib LIB --timeout {args.timeout:.0f}`; "
             f"one run per case, seconds of the solve, ours single-threaded; load average at the "
             f"end {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores.", "",
             "| case | policytree | fastpolicytree | simstudy | fastpolicytree / simstudy | "
             "policytree / simstudy | welfare equal |", "|---|---|---|---|---|---|---|"]
    for depth, n, p, D, binary, res, ours, equal in rows:
        (tf, _), (tp, _) = res["fastpolicytree"], res["policytree"]
        rf = f"{tf / ours:.2f}x" if tf is not None else f"> {args.timeout / ours:.1f}x"
        rp = f"{tp / ours:.1f}x" if tp is not None else f"> {args.timeout / ours:.1f}x"
        lines.append(f"| depth {depth}, n={n}, p={p}{' binary X' if binary else ''}, D={D} | "
                     f"{fmt(tp)} | {fmt(tf)} | {ours:.3f} | {rf} | {rp} | "
                     f"{'yes' if equal else 'NO'} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
