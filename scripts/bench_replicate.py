"""Milliseconds per replicate, per method and in total, at the paper's four sizes (single
thread, warm numba cache, median over replicates after a warm-up), the share of each family,
and a cProfile breakdown of one size (what is compiled arithmetic, what is Python / pandas /
scipy overhead). Ratios against the authors' R pipeline are NOT computed here: they must be
measured side by side (scripts/bench_vs_r.py, R and simstudy alternating under one load).

    python scripts/bench_replicate.py [--reps 15] [--out results/bench_replicate.md]
    python scripts/bench_replicate.py --ml --reps 5     # + CF, DR, PT-CF (results/bench_replicate_ml.md)
"""
import argparse
import cProfile
import io
import os
import pstats
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simstudy.config import StudyConfig
from simstudy.runner import one_thread, run_replicate

METHODS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug",
           "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID", "PT", "oracle", "treat-all",
           "treat-none"]
ML = ["CF", "DR", "PT-CF"]          # --ml: the machine-learning family at its defaults (500 trees)
FAMILY = {m: ("Q-learning" if m.startswith("Q") else "Weighting" if m.startswith("W")
              else "Policy tree" if m == "PT" else "Machine learning" if m in ML
              else "Reference") for m in METHODS + ML}
SIZES = [(25, 25), (25, 150), (150, 25), (150, 150)]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default=None)
    ap.add_argument("--ml", action="store_true", help="add the machine-learning family")
    args = ap.parse_args()
    args.methods = METHODS + (ML if args.ml else [])
    args.out = args.out or ("results/bench_replicate_ml.md" if args.ml
                            else "results/bench_replicate.md")
    with one_thread():          # one BLAS and one numba thread, as every study replicate
        bench(args)


def bench(args):
    cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [25], "n_j": [25],
                                   "reps": 1000, "methods": args.methods})
    design = cfg.designs[0]
    load = os.getloadavg()
    rows, totals = [], {}
    for J, n in SIZES:
        run_replicate(cfg, design, J, n, 999)                     # warm-up (numba, caches)
        per, tot = {m: [] for m in args.methods}, []
        for r in range(args.reps):
            t0 = time.perf_counter()
            out, _ = run_replicate(cfg, design, J, n, r)
            tot.append(time.perf_counter() - t0)
            for row in out:
                per[row["method"]].append(row["seconds"])
        totals[(J, n)] = 1000 * np.median(tot)
        for m in args.methods:
            rows.append({"J": J, "n_j": n, "method": m, "family": FAMILY[m],
                         "ms": 1000 * np.median(per[m])})
        print(f"(J, n_j) = ({J}, {n}): {totals[(J, n)]:.1f} ms per replicate", flush=True)
    df = pd.DataFrame(rows)
    table = df.pivot_table(index="method", columns=["J", "n_j"], values="ms", sort=False)
    table = table[[c for c in SIZES]]
    lines = [f"# ms per replicate, one core: one BLAS and one numba thread (median of "
             f"{args.reps} replicates after a warm-up; Design 1; data + {len(args.methods)} "
             f"rules + metrics + congruence)", "",
             f"Machine load average at the start (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, "
             f"{load[2]:.2f}; {os.cpu_count()} cores. `python scripts/bench_replicate.py`.", "",
             "Against the authors' R pipeline: paired ratios in results/bench_vs_r.md "
             "(scripts/bench_vs_r.py).", "",
             "| (J, n_j) | total ms | Q % | W % | PT % | ML % |",
             "|---|---|---|---|---|---|"]
    for J, n in SIZES:
        fam = df[(df.J == J) & (df.n_j == n)].groupby("family")["ms"].sum()
        share = 100 * fam / totals[(J, n)]
        lines.append(f"| ({J}, {n}) | {totals[(J, n)]:.1f} | "
                     f"{share.get('Q-learning', 0):.0f} | {share.get('Weighting', 0):.0f} | "
                     f"{share.get('Policy tree', 0):.0f} | "
                     f"{share.get('Machine learning', 0):.0f} |")
    lines += ["", "Per method (ms):", "", "| method | " + " | ".join(f"({J}, {n})" for J, n in SIZES)
              + " |", "|---" * (len(SIZES) + 1) + "|"]
    for m, row in table.iterrows():
        lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in row) + " |")
    prof = cProfile.Profile()
    prof.enable()
    for r in range(args.reps):
        run_replicate(cfg, design, 25, 25, r)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(15)
    lines += ["", "Where the time goes at (25, 25) (cProfile, by own time; compiled kernels are "
              "`_cv_errors` / `_fit_path` (the lasso's cross-validation and path), "
              "`_profiled_deviance` (mixed model), `_root2` (the tree search)):", "",
              "```", *[ln for ln in buf.getvalue().splitlines() if ln.strip()][3:22], "```"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
