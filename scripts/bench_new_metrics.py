"""What the round-2 metrics cost per replicate (issue 41): the same replicates of Design 2 with the
14 estimators + PT, run (one worker) without and with value claims (every rule refitted on half
of the training data and valued by AIPW) and a budget (value_at_budget, AUTOC, Qini and the
site metrics are computed in every study), ALTERNATING the two so both see the same load.

    python scripts/bench_new_metrics.py [--reps 10] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

METHODS = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs", "W-base", "W-noaug",
           "W-aug", "W-augID", "WS-noaug", "WS-aug", "WS-augID", "PT"]


def one(size, reps, extra, tmp: Path) -> float:
    from simstudy import run_study
    out = tmp / "s"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    run_study("design2", J=size[0], n_j=size[1], reps=reps, methods=METHODS, n_jobs=1,
              out=out, progress=False, **extra)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    configs = {"paper metrics only": {}, "+ value claims, budget 0.3": {"value_claims": "site",
                                                                        "budget": 0.3}}
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((25, 25), (150, 25)):
            one(size, 2, configs["+ value claims, budget 0.3"], Path(tmp))      # warm caches
            times = {k: [] for k in configs}
            for _ in range(a.rounds):
                for k, extra in configs.items():
                    times[k].append(one(size, a.reps, extra, Path(tmp)))
            med = {k: sorted(v)[len(v) // 2] / a.reps for k, v in times.items()}
            base, new = med.values()
            print(f"(J, n_j) = {size}: per replicate {base * 1000:.0f} ms -> {new * 1000:.0f} ms "
                  f"(x{new / base:.2f}; load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
