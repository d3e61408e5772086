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
