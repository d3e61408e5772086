"""simstudy against the authors' R pipeline, measured side by side (issue 27): per round and size,
the authors' generator + 14 estimators (lm, lme4, personalized/glmnet; Rscript, one BLAS thread)
and then simstudy's `run_replicate` with the same 14 estimators (one thread), ALTERNATING, so both
see the same machine load. Prints and writes the median seconds per replicate of each and the
ratios R / simstudy in wall and CPU time, with the load average of each round.

Needs R and the authors' pipeline: ../shared/tools/install_authors_r.sh PERSONALIZED_GIT
MULTISITEOTR_GIT WORK (both repositories fetched with the search tool) — WORK is --work here.

    python scripts/bench_vs_r.py --work ~/authors_r [--rounds 3] [--sizes 25x25,150x150]
"""
import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug",
           "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID"]


def r_side(work: Path, J: int, n: int, reps: int, seed: int) -> tuple[float, float, float]:
    """Median wall and CPU seconds per replicate of the authors' pipeline (first one dropped:
    it warms the R process), and the wall seconds its measured replicates spanned."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "r.csv")
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        subprocess.run(["Rscript", "authors_pipeline.R", "full", "1", str(J), str(n),
                        str(reps + 1), str(seed), str(out)], cwd=work, env=env, check=True,
                       capture_output=True)
        R = pd.read_csv(out).groupby("rep")[["seconds", "cpu_seconds"]].first().iloc[1:]
    return float(R.seconds.median()), float(R.cpu_seconds.median()), float(R.seconds.sum())


def py_side(J: int, n: int, reps: int, window: float = 0.0) -> tuple[float, float]:
    """Median wall and CPU seconds per replicate of simstudy (data + the 14 + metrics), one
    thread, after a warm-up replicate: at least `reps` replicates and, after them, more until
    `window` seconds have passed, so the median covers as long a stretch of the machine's
    weather as R's does (on a shared virtual machine the speed of a core drifts by 1.5x over
    seconds; a half-second sample against R's ten would pair one moment with another)."""
    from simstudy.config import StudyConfig
    from simstudy.runner import one_thread, run_replicate
    cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [J], "n_j": [n],
                                   "reps": reps + 1, "methods": METHODS})
    design = cfg.designs[0]
    wall, cpu = [], []
    with one_thread():
        run_replicate(cfg, design, J, n, 0)
        start, r = time.perf_counter(), 0
        while r < reps or time.perf_counter() - start < window:
            r += 1
            t0, c0 = time.perf_counter(), time.process_time()
            run_replicate(cfg, design, J, n, r)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return float(np.median(wall)), float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", required=True, help="the directory install_authors_r.sh made")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="25x25,25x150,150x25,150x150")
    ap.add_argument("--out", default="results/bench_vs_r.md")
    args = ap.parse_args()
    work = Path(args.work).expanduser()
    if not (work / "authors_pipeline.R").exists():
        raise SystemExit(f"{work} has no authors_pipeline.R: run ../shared/tools/"
                         f"install_authors_r.sh first (see this script's docstring)")
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for rnd in range(1, args.rounds + 1):
        for J, n in sizes:
            reps = 6 if J * n <= 1000 else 4 if J * n <= 5000 else 2
            load = os.getloadavg()[0]
            rw, rc, span_s = r_side(work, J, n, reps, 700 + rnd)
            pw, pc = py_side(J, n, 3 * reps, window=span_s)
            rows.append({"round": rnd, "J": J, "n_j": n, "load": load, "R_wall_s": rw,
                         "R_cpu_s": rc, "simstudy_wall_ms": 1e3 * pw,
                         "simstudy_cpu_ms": 1e3 * pc, "ratio_wall": rw / pw, "ratio_cpu": rc / pc})
            r = rows[-1]
            print(f"round {rnd} ({J},{n}): R {rw:.3f} s wall / {rc:.3f} s cpu; simstudy "
                  f"{1e3 * pw:.1f} ms wall / {1e3 * pc:.1f} ms cpu; ratio {r['ratio_wall']:.0f}x "
                  f"wall, {r['ratio_cpu']:.0f}x cpu (load {load:.2f})", flush=True)
    df = pd.DataFrame(rows)
    agg = df.groupby(["J", "n_j"], sort=False).agg(
        R_wall_s=("R_wall_s", "median"), simstudy_wall_ms=("simstudy_wall_ms", "median"),
        wall_min=("ratio_wall", "min"), wall_max=("ratio_wall", "max"),
        cpu_min=("ratio_cpu", "min"), cpu_max=("ratio_cpu", "max"),
        load=("load", "mean")).reset_index()
    lines = ["# simstudy vs the authors' R pipeline, paired (R and simstudy alternating per round "
             "and size, each side's median over as long a window; Design 1; generator + the 14 "
             "estimators; one thread each)", "",
             f"`python scripts/bench_vs_r.py --work WORK --rounds {args.rounds}`, "
             f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores.", "",
             "| (J, n_j) | R s / replicate | simstudy ms / replicate | R / simstudy, wall "
             "(min-max over rounds) | R / simstudy, CPU | load average |",
             "|---|---|---|---|---|---|"]
    def span(lo, hi):
        return f"{lo:.0f}x" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}x"
    for _, a in agg.iterrows():
        lines.append(f"| ({int(a.J)}, {int(a.n_j)}) | {a.R_wall_s:.3f} | {a.simstudy_wall_ms:.1f} | "
                     f"{span(a.wall_min, a.wall_max)} | {span(a.cpu_min, a.cpu_max)} | "
                     f"{a.load:.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    df.to_csv(Path(args.out).with_suffix(".csv"), index=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
