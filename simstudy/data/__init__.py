"""Real multisite trials shipped with simstudy (see README.md in this folder for sources,
citations, licences, designs, columns and preparation).

    from simstudy.data import load
    star = load("star")          # Project STAR kindergarten: 3730 pupils, 79 schools
    hiv = load("thornton")       # Thornton (2008) Malawi: 2812 people, 119 villages
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

FILES = {"star": "star_k.csv", "thornton": "thornton_hiv.csv"}
# documented facts, checked by tests/test_data.py: rows, sites, site column
FACTS = {"star": (3730, 79, "school"), "thornton": (2812, 119, "village")}


def path(name: str) -> Path:
    """The shipped file of a data set (`star` or `thornton`)."""
    if name not in FILES:
        raise KeyError(f"no shipped data set {name!r}; available: {sorted(FILES)}")
    return Path(str(resources.files(__name__) / FILES[name]))


def load(name: str) -> pd.DataFrame:
    """The shipped data set as a DataFrame (one row per person)."""
    return pd.read_csv(path(name))


def codes_as_read(df: pd.DataFrame, ids) -> pd.DataFrame:
    """ID columns read as text go back to integers where that loses nothing (every code is an
    integer's own spelling: 7, 12, -3), so results on such files are as before; codes like
    `01` beside `1`, or `A7`, stay text."""
    for c in ids:
        if c and c in df.columns and pd.api.types.is_string_dtype(df[c].dtype):
            codes = df[c].dropna().astype(str)
            if len(codes) and codes.str.fullmatch(r"-?(0|[1-9][0-9]{0,17})").all():
                as_int = pd.to_numeric(df[c])
                df[c] = as_int.astype("int64") if df[c].notna().all() else as_int
    return df
