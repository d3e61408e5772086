"""The R method adapter's cost (issue 44): seconds per fit + score of the paper's Q-rs written
in R (experiments/r/R-Q-rs.R) through the adapter, the same R code in plain Rscript (timed
inside R, start-up excluded), and simstudy's own Q-rs, ALTERNATING the three on the same
replicates; and the adapter's own overhead per call (an R method whose fit and score do
nothing: data.frame conversion, options, seed, the warning/error wrapper). Decisions of R-Q-rs
against Q-rs are counted too. Needs R with lme4 and rpy2 (`pip install -e ".[r]"`).

    python scripts/bench_r_method.py            # writes results/bench_r_method.md
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from simstudy import make, register_r
from simstudy.designs import make_design

ROOT = Path(__file__).resolve().parents[1]
Q_RS = ROOT / "experiments" / "r" / "R-Q-rs.R"
RSCRIPT = """
args <- commandArgs(trailingOnly = TRUE)
env <- new.env(); sys.source(args[1], envir = env)
train <- read.csv(args[2]); test <- read.csv(args[3]); k <- as.integer(args[4])
options <- get("defaults", envir = env)
invisible(env$score(env$fit(train, options), test))          # warm (lme4 loaded)
t0 <- proc.time()[["elapsed"]]
for (i in seq_len(k)) s <- env$score(env$fit(train, options), test)
cat((proc.time()[["elapsed"]] - t0) / k, "\\n")
"""
NOTHING = ("fit <- function(train, options) NULL\n"
           "score <- function(fitted, frame) frame$X3\n")


def timed(fn, k: int) -> float:
    fn()                                                   # warm
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--out", default="results/bench_r_method.md")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "nothing.R").write_text(NOTHING)
    (tmp / "bench.R").write_text(RSCRIPT)
    register_r("R-Q-rs", Q_RS)
    register_r("R-nothing", tmp / "nothing.R")
    design = make_design({"beta1": 0.2})
    rows = []
    for J, n_j in ((25, 25), (150, 150)):
        for r in range(args.reps):
            rep = design.simulate(np.random.default_rng(r), J, n_j)
            rep.train.to_csv(tmp / "train.csv", index=False)
            rep.test.to_csv(tmp / "test.csv", index=False)

            def adapter():
                return make("R-Q-rs").fit(rep.train).benefit_score(rep.test)

            def ours():
                return make("Q-rs").fit(rep.train).benefit_score(rep.test)

            def overhead():
                return make("R-nothing").fit(rep.train).benefit_score(rep.test)
            t_adapter, t_ours, t_over = timed(adapter, args.k), timed(ours, args.k), \
                timed(overhead, args.k)
            t_rscript = float(subprocess.run(
                ["Rscript", str(tmp / "bench.R"), str(Q_RS), str(tmp / "train.csv"),
                 str(tmp / "test.csv"), str(args.k)], capture_output=True, text=True,
                check=True).stdout.split()[0])
            a, b = adapter(), ours()
            rows.append({"J": J, "n_j": n_j, "replicate": r, "R-Q-rs (adapter) s": t_adapter,
                         "same R in Rscript s": t_rscript, "simstudy Q-rs s": t_ours,
                         "adapter overhead s": t_over,
                         "decisions equal": float(np.mean((a > 0) == (b > 0)))})
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    g = df.groupby(["J", "n_j"]).agg("median").drop(columns="replicate").reset_index()
    g["adapter / Rscript"] = g["R-Q-rs (adapter) s"] / g["same R in Rscript s"]
    g["adapter / simstudy Q-rs"] = g["R-Q-rs (adapter) s"] / g["simstudy Q-rs s"]
    g["decisions equal"] = df.groupby(["J", "n_j"])["decisions equal"].mean().to_numpy()
    from simstudy.report.tables import to_markdown
    text = ("# The R method adapter: seconds per fit + score (medians over replicates)\n\n"
            f"`python scripts/bench_r_method.py` ({time.strftime('%Y-%m-%d')}, "
            f"{args.reps} replicates of Design 2 per size, each timed {args.k} times after a "
            "warm-up, the four alternating on the same replicate). `adapter overhead`: an R "
            "method whose fit and score do nothing, through the adapter (data.frame "
            "conversion, options, seed, the wrapper). `decisions equal`: the share of test "
            "rows on which R-Q-rs (lme4) and simstudy's Q-rs decide alike.\n\n"
            + to_markdown(g, digits=4))
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
