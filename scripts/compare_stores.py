"""Compare two study stores exactly (every metric and congruence value; the `seconds` column
aside): the bit-identity check of a refactor or a speed change.

    python scripts/compare_stores.py STORE_A STORE_B
    python scripts/compare_stores.py STORE_A STORE_B --paired accuracy [--methods CF,PT-CF]
        (a change meant to move numbers: per cell and method, B - A on the same replicates,
        with its Monte Carlo SE and z = diff / SE, as a markdown table)

e.g. the paper-store sample run by the commit before and after a change:
    simstudy run -m design=design1,design2,design3,design4 'J=[25,150]' 'n_j=[25,150]' reps=4 \
        progress=false figures=false out=/tmp/sample_after
"""
import sys

import numpy as np
import pandas as pd

from simstudy.store import KEY, read_congruence, read_metrics


def main(a: str, b: str) -> int:
    ma, mb = read_metrics(a), read_metrics(b)
    ca, cb = read_congruence(a), read_congruence(b)
    try:
        pd.testing.assert_frame_equal(ma.drop(columns="seconds"), mb.drop(columns="seconds"),
                                      check_exact=True, check_dtype=False)
        pd.testing.assert_frame_equal(ca, cb, check_exact=True, check_dtype=False)
    except AssertionError as exc:
        print(f"DIFFERENT: {exc}")
        return 1
    cells = ma[KEY].drop_duplicates()
    print(f"identical: {len(ma)} metric rows ({len(cells)} replicates, "
          f"{ma['method'].nunique()} rules), {len(ca)} congruence rows")
    return 0


def paired(a: str, b: str, metric: str, methods: list[str] | None = None) -> pd.DataFrame:
    """Per (design, J, n_j, method): mean of A and B, mean(B - A) and its MC SE over the
    replicates both stores hold (paired by replicate)."""
    cols = ["design", "J", "n_j", "replicate", "method"]
    ma, mb = (read_metrics(s)[cols + [metric]] for s in (a, b))
    if methods:
        ma, mb = ma[ma.method.isin(methods)], mb[mb.method.isin(methods)]
    both = ma.merge(mb, on=cols, suffixes=("_a", "_b")).dropna()
    both["d"] = both[f"{metric}_b"] - both[f"{metric}_a"]
    out = both.groupby(["design", "J", "n_j", "method"], sort=True).agg(
        reps=("d", "size"), A=(f"{metric}_a", "mean"), B=(f"{metric}_b", "mean"),
        diff=("d", "mean"), sd=("d", "std")).reset_index()
    out["mcse"] = out.sd / np.sqrt(out.reps)
    out["z"] = np.where(out.mcse > 0, out["diff"] / out.mcse.where(out.mcse > 0), 0.0)
    return out.drop(columns="sd")


if __name__ == "__main__":
    if "--paired" in sys.argv:
        from simstudy.report.tables import to_markdown
        k = sys.argv.index("--paired")
        chosen = (sys.argv[sys.argv.index("--methods") + 1].split(",")
                  if "--methods" in sys.argv else None)
        table = paired(sys.argv[1], sys.argv[2], sys.argv[k + 1], chosen)
        print(to_markdown(table.round({"A": 4, "B": 4, "diff": 4, "mcse": 4, "z": 2})))
        sys.exit(0)
    sys.exit(main(*sys.argv[1:3]))
