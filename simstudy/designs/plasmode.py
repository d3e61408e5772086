"""Plasmode design: the REAL covariates and site structure of a trial, simulated outcomes.

Each replicate resamples J of the trial's sites with replacement and, within each, people with
replacement (train and test sets: new draws from the same real sites), keeping their real
covariates (standardised: X_k = (column_k - mean) / SD over the file, in the order of
`covariate_columns`, named X1..Xp so every estimator's defaults apply). Treatment, the outcome
and the effect then follow the multisite model of docs/designs.md on these X, so the truth (Delta, Y0,
Y1, d_opt) is known: logit P(T=1) = logit(prevalence) + treat_R R_j, Delta = delta'(1, X) +
beta1 U_j, m = main'(1, X) + cluster_main U_j (+ noise, or logistic for outcome=binary).
Site sizes: `real` (each resampled site keeps its real size), or any rule of the multisite
family with mean n_j.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from ..errors import ConfigError
from ..options import FLAG, TEXT, choice
from .base import data_path, param, register_design
from .multisite import SITE_SIZES, Design


@lru_cache(maxsize=8)
def _load(data: str, site: str, columns: tuple[str, ...], standardize: bool):
    """(X of every row sorted by site, first row of each site, rows per site) of a trial file;
    a column `col==value` is the 0/1 indicator of that value."""
    from .. import data as shipped
    path = shipped.path(data) if data in shipped.FILES else data
    try:
        from ..data import codes_as_read        # site codes as text unless plain integers
        df = codes_as_read(pd.read_csv(path, dtype={site: str}), [site])
    except (OSError, ValueError) as exc:
        raise ConfigError(f"design.data={data!r}: cannot read it ({exc})") from None
    need = [site] + [c.split("==")[0] for c in columns]
    missing = [c for c in dict.fromkeys(need) if c not in df.columns]
    if missing:
        raise ConfigError(f"design.data={data!r} has no column(s) {missing}; it has "
                          f"{list(df.columns)}")
    cols = []
    for c in columns:
        if "==" in c:
            name, value = c.split("==", 1)
            cols.append((df[name].astype(str) == value).astype(float).to_numpy())
        else:
            if not pd.api.types.is_numeric_dtype(df[c]):
                raise ConfigError(f"design.covariate_columns: {c!r} is not numeric; use "
                                  f"'{c}==LEVEL' for an indicator of one of its levels")
            cols.append(df[c].to_numpy(float))
    X = np.column_stack(cols)
    keep = np.isfinite(X).all(axis=1) & df[site].notna().to_numpy()
    X, codes = X[keep], pd.factorize(df.loc[keep, site], sort=True)[0]
    if standardize:
        sd = X.std(axis=0)
        if np.any(sd == 0):
            raise ConfigError(f"design.covariate_columns {[c for c, s in zip(columns, sd) if s == 0]} "
                              f"are constant in {data!r}")
        X = (X - X.mean(axis=0)) / sd
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    start = np.r_[0, np.cumsum(counts)[:-1]]
    return X[order], start, counts


@register_design("plasmode")
@dataclass(frozen=True)
class Plasmode(Design):
    """Real covariates and sites of a trial file, simulated outcomes (see the module doc)."""
    name: str = param("plasmode", "the design's name in the store, tables and figures", TEXT)
    data: str = param("star", "the trial: a CSV path, or a shipped trial (star, thornton)", TEXT)
    site_column: str = param("school", "its site column", TEXT)
    covariate_columns: list = param(
        ["female", "black", "age", "free_lunch", "urbanicity==rural"],
        "its covariate columns, X1..Xp in this order (col==value makes a 0/1 indicator)")
    standardize: bool = param(True, "standardize the covariates (mean 0, SD 1)", FLAG)
    site_sizes: str = param("real", "site sizes: the trial's (real), or as in the multisite "
                            "family", choice("real", *SITE_SIZES))
    # n_covariates is set to len(covariate_columns)

    def validate(self) -> None:
        if not isinstance(self.covariate_columns, (list, tuple)) or not self.covariate_columns:
            raise ConfigError("design.covariate_columns must be a non-empty list of columns")
        object.__setattr__(self, "n_covariates", len(self.covariate_columns))   # X1..Xp
        self._real()                         # the file and its columns, checked first
        super().validate()

    def data_files(self) -> dict[str, str]:
        files = {"data": data_path(str(self.data))}
        return {**super().data_files(), **files}

    def _real(self):
        return _load(str(self.data), str(self.site_column), tuple(map(str, self.covariate_columns)),
                     bool(self.standardize))

    def _sites(self, rng: np.random.Generator, J: int) -> np.ndarray:
        """J real sites drawn with replacement."""
        _, start, counts = self._real()
        return rng.integers(0, counts.size, J)

    def _sizes(self, rng, J, n_j, sites=None) -> np.ndarray:
        if self.site_sizes != "real":
            return super()._sizes(rng, J, n_j, sites)
        _, _, counts = self._real()
        return np.maximum(counts[sites], int(self.min_site_size)).astype(np.int64)

    def _covariates(self, rng, site, sites) -> np.ndarray:
        """People drawn with replacement from the real people of each resampled site."""
        X, start, counts = self._real()
        real = sites[site]
        pick = start[real] + np.floor(rng.random(site.size) * counts[real]).astype(np.int64)
        return X[pick]
