"""Compare two study stores exactly (every metric and congruence value; the `seconds` column
aside): the bit-identity check of a refactor or a speed change.

    python scripts/compare_stores.py STORE_A STORE_B

e.g. the paper-store sample run by the commit before and after a change:
    simstudy run -m design=design1,design2,design3,design4 'J=[25,150]' 'n_j=[25,150]' reps=4 \
        progress=false figures=false out=/tmp/sample_after
"""
import sys

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


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
