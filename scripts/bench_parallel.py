"""Wall time of the same study run with n_jobs=1 and with n_jobs=2 (issue 14: n_jobs=2 at least
1.8x n_jobs=1 on the (150,150) study). Whole `simstudy run` commands into fresh stores, as a
user runs them: start-up, probe, replicates, report with figures, exit. The two are run
alternately, --pairs times, so both sides see the same machine state; each pair's ratio is
measured in that pair.

Also printed: the sum of the per-method fit seconds stored in each run. Their ratio (n_jobs=2
over n_jobs=1) is how much slower the same fits are when two processes share the machine
(caches, memory bandwidth), which no scheduling can win back.

    python scripts/bench_parallel.py [--pairs 3] [--reps 500] [--paper]
                                     [--out results/bench_parallel.md]

--paper runs the paper's (150,150) condition of all four designs (experiments/paper.yaml,
4 x 500 replicates) instead of Design 1 alone.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from simstudy.store import read_metrics


def run(n_jobs: int, reps: int, paper: bool, out: Path) -> float:
    cmd = ["simstudy", "run"]
    if paper:
        cmd += ["-m", "--config-dir", "experiments", "--config-name", "paper"]
    else:
        cmd += [f"reps={reps}"]
    cmd += ["J=[150]", "n_j=[150]", f"n_jobs={n_jobs}", "progress=false", f"out={out}"]
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--paper", action="store_true")
    ap.add_argument("--out", default="results/bench_parallel.md")
    args = ap.parse_args()
    study = ("the paper's (150,150) condition, 4 designs x 500 replicates" if args.paper
             else f"Design 1, (J, n_j) = (150, 150), {args.reps} replicates")
    load = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.pairs):
            pair = {}
            for n_jobs in (1, 2):
                out = Path(tmp) / f"s{n_jobs}"
                shutil.rmtree(out, ignore_errors=True)
                wall = run(n_jobs, args.reps, args.paper, out)
                fits = read_metrics(out)["seconds"].sum()
                pair[n_jobs] = (wall, fits)
                print(f"pair {k + 1}, n_jobs={n_jobs}: {wall:.1f} s", flush=True)
            rows.append(pair)
    ratios = [p[1][0] / p[2][0] for p in rows]
    lines = [f"# n_jobs=2 against n_jobs=1: {study}, 18 rules, report and figures", "",
             f"Machine load average at the start (1, 5, 15 min): {load[0]:.2f}, {load[1]:.2f}, "
             f"{load[2]:.2f}; {os.cpu_count()} cores. `python scripts/bench_parallel.py"
             + (" --paper" if args.paper else f" --reps {args.reps}") + "`.", "",
             "| pair | n_jobs=1 (s) | n_jobs=2 (s) | speed-up | fit seconds, 2 over 1 |",
             "|---|---|---|---|---|"]
    for k, (p, r) in enumerate(zip(rows, ratios), 1):
        lines.append(f"| {k} | {p[1][0]:.1f} | {p[2][0]:.1f} | {r:.2f}x | "
                     f"{p[2][1] / p[1][1]:.3f} |")
    lines += ["", f"Median speed-up {np.median(ratios):.2f}x (min {min(ratios):.2f}x, max "
              f"{max(ratios):.2f}x)."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
