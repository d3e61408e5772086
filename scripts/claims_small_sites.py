"""Value claims where sites are small (docs/metrics.md "The value a rule claims"): on the
`unequal` design (lognormal site sizes, at least 5 people) many sites have one treated or one
control person. Every rule must claim a value in every replicate; the claims table shows how many
replicates claimed (`reps`), the bias and the coverage of the 95% interval with MC SEs.

Before the learning half kept a site's lone treated/control person (CHANGELOG 2026-12-05), PT's
and W-augID's claims here were missing in 175 of 200 replicates (coverage 1.00 on the 25 left).

    python scripts/claims_small_sites.py                      # 200 replicates, ~20 s on 2 cores
    python scripts/claims_small_sites.py --reps 50 --out /tmp/cs
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from simstudy.api import run_study
from simstudy.errors import report
from simstudy.report.study import value_claims
from simstudy.report.tables import to_markdown
from simstudy.store import read_metrics

METHODS = ["Q-fe", "W-augID", "PT", "treat-all", "treat-none"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--J", type=int, default=25)
    ap.add_argument("--n-j", type=int, default=10)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--out", default=None, help="the study's store (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="claims_small_sites_"))
    try:                                          # a bad value: one line, exit 2
        run_study("unequal", J=args.J, n_j=args.n_j, reps=args.reps, methods=METHODS,
                  value_claims="site", out=out, progress=False, n_jobs=args.n_jobs)
    except (Exception, KeyboardInterrupt) as exc:               # noqa: BLE001
        sys.exit(report(exc, prog="claims_small_sites.py"))
    table = value_claims(read_metrics(out))
    cols = ["method", "reps", "value_true", "bias", "bias_mcse", "coverage", "coverage_mcse"]
    print(f"unequal design, J={args.J}, n_j={args.n_j}, {args.reps} replicates; store {out}\n")
    print(to_markdown(table[cols].round(3)))


if __name__ == "__main__":
    main()
