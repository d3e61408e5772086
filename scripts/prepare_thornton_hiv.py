"""Build thornton_hiv.csv: Thornton (2008) HIV-results incentive experiment, rural Malawi.

Source: Python package `causaldata` (PyPI, tested with 0.1.5; needs statsmodels and pandas),
data set `thornton_hiv` (the file used in Cunningham's *Causal Inference: The Mixtape*).

    pip install causaldata==0.1.5 pandas statsmodels
    python scripts/prepare_thornton_hiv.py     # writes simstudy/data/thornton_hiv.csv
    python scripts/prepare_thornton_hiv.py --out other.csv

One row per person who was tested for HIV in 2004 and drew an incentive voucher. Treatment
`any` = 1 if the voucher was worth more than zero, 0 for a zero voucher; outcome `got` = 1 if the
person went to the results centre and learned the HIV result. Site = village. Rows missing the
outcome, the village, age or a determinate HIV result are dropped, each count printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import causaldata


def build(log=print) -> pd.DataFrame:
    raw = causaldata.thornton_hiv.load_pandas().data
    log(f"causaldata.thornton_hiv: {len(raw)} rows x {raw.shape[1]} columns")
    d = raw[raw["any"].notna()].copy()
    log(f"kept {len(d)} rows with an incentive voucher drawn (dropped {len(raw) - len(d)} rows "
        f"with no voucher data: not part of the incentive experiment)")
    steps = [("the outcome got (and HIV result)", d["got"].isna()),
             ("the village id", d["villnum"].isna()),
             ("age", d["age"].isna()),
             ("a determinate HIV result (hiv2004 = -1 in the source)", d["hiv2004"] == -1)]
    for name, miss in steps:
        miss = miss.reindex(d.index)
        if miss.any():
            log(f"dropped {int(miss.sum())} rows missing {name}; {int((~miss).sum())} remain")
        d = d[~miss]
    out = pd.DataFrame({
        "village": d["villnum"].astype(int),
        "got": d["got"].astype(int),
        "any": d["any"].astype(int),
        "tinc": d["tinc"].astype(float).round(5),
        "distvct": d["distvct"].astype(float).round(4),
        "age": d["age"].astype(int),
        "hiv2004": d["hiv2004"].astype(int),
    })
    return out.sort_values(["village"], kind="stable").reset_index(drop=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "simstudy" / "data"
                                         / "thornton_hiv.csv"))
    args = ap.parse_args()
    df = build()
    df.to_csv(args.out, index=False)
    t = df.groupby("village")["any"].agg(n="size", treated_share="mean")
    print(f"wrote {args.out}: {len(df)} rows, {df['village'].nunique()} villages, "
          f"{int(df['any'].sum())} any incentive / {int((1 - df['any']).sum())} zero incentive")
    print(f"per-village n: min {t['n'].min()}, median {t['n'].median():.0f}, max {t['n'].max()}; "
          f"treated share: min {t['treated_share'].min():.2f}, median "
          f"{t['treated_share'].median():.2f}, max {t['treated_share'].max():.2f}; "
          f"villages with everyone treated {(t['treated_share'] == 1).sum()} "
          f"({t.loc[t['treated_share'] == 1, 'n'].sum()} rows), no one treated "
          f"{(t['treated_share'] == 0).sum()} ({t.loc[t['treated_share'] == 0, 'n'].sum()} rows), "
          f"one person {(t['n'] < 2).sum()}")


if __name__ == "__main__":
    main()
