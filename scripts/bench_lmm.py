"""Benchmark: our mixed-model engine vs statsmodels MixedLM (REML) on the same data.

    python scripts/bench_lmm.py [--reps-ours 5]

For (J, n_j) in {25,150}^2 and the random-intercept / random-slope models of Q-ri / Q-rs,
fits the same Design-2 replicate with both, prints times, the ratio and the largest difference
in fixed effects; then times all seven Q estimators together on one (150,150) replicate.
"""
import argparse
import time
import warnings

import numpy as np
import statsmodels.api as sm

from simstudy import Design, make
from simstudy.engines.lmm import fit_lmm


def timed(f, reps):
    best = np.inf
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--reps-ours", type=int, default=5, help="timing repetitions (best of) for ours")
    args = ap.parse_args()
    design = Design(name="design2", beta1=0.2)
    warmup = design.simulate(np.random.default_rng(0), 5, 10).train      # compile the kernel
    fit_lmm(np.ones((50, 1)), warmup["Y"], warmup["site"], np.ones((50, 2)) * [1, 0] + [0, 1] * warmup[["T"]].to_numpy())
    print(f"{'J':>4} {'n_j':>4} {'model':>6} {'ours ms':>9} {'statsmodels ms':>15} {'ratio':>7} "
          f"{'max |d beta|':>13}  statsmodels converged")
    for J in (25, 150):
        for n_j in (25, 150):
            d = design.simulate(np.random.default_rng(J * 1000 + n_j), J, n_j).train
            T = d["T"].to_numpy()
            V = d[["X3", "X4", "X5"]].to_numpy()
            X = np.column_stack([np.ones(len(d)), d[["X1", "X2", "X3", "X4", "X5"]], T, T[:, None] * V])
            for model in ("ri", "rs"):
                Z = np.column_stack([np.ones(len(d)), T]) if model == "rs" else np.ones((len(d), 1))
                t_ours, ours = timed(lambda: fit_lmm(X, d["Y"], d["site"], Z), args.reps_ours)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t_sm, ref = timed(lambda: sm.MixedLM(d["Y"].to_numpy(), X, d["site"].to_numpy(),
                                                         exog_re=Z).fit(reml=True), 1)
                diff = np.max(np.abs(ours.beta - ref.fe_params))
                print(f"{J:>4} {n_j:>4} {model:>6} {t_ours * 1e3:>9.1f} {t_sm * 1e3:>15.1f} "
                      f"{t_sm / t_ours:>6.0f}x {diff:>13.2e}  {ref.converged}"
                      f"{'' if ours.loglik >= ref.llf - 1e-6 else '  (statsmodels found a higher REML loglik!)'}")
    rep = design.simulate(np.random.default_rng(7), 150, 150)
    names = ["Q-base", "Q-fe", "Q-ri", "Q-rs", "Q-dm", "Q-dm-ri", "Q-dm-rs"]
    def all_q():
        for n in names:
            make(n).fit(rep.train).benefit_score(rep.test)
    all_q()
    t, _ = timed(all_q, args.reps_ours)
    each = {n: timed(lambda: make(n).fit(rep.train).benefit_score(rep.test), args.reps_ours)[0]
            for n in names}
    print(f"\nall seven Q estimators, one (150,150) replicate (fit + score): {t * 1e3:.1f} ms")
    print("  " + ", ".join(f"{n} {s * 1e3:.1f}" for n, s in each.items()))


if __name__ == "__main__":
    main()
