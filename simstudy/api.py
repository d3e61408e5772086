"""The Python API for notebooks and scripts: `run_study(...)` runs (or resumes) a study exactly as
`simstudy run` does (the same Hydra composition, seeds, sweep-point rule and store, so the two
give identical stores), and `load(out)` returns a stored study as one object.

    import simstudy
    study = simstudy.run_study(design="design2", J=25, n_j=[25, 150], reps=50,
                               methods=["Q-base", "Q-rs", "W-augID", "oracle"], out="results/d2")
    study.summary()                 # mean, SD and MC SE per metric, method and condition
    study.compare("Q-base")         # paired differences from a reference method
    study.plot("accuracy")          # the paper's boxplots (a matplotlib figure per design)
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import ConfigError


def _value(v: Any) -> str:
    """A Python value as a Hydra override value (lists and mappings in flow style)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str) and any(c in v for c in " ,[]{}=:'\""):
        return json.dumps(v)
    return str(v)


def overrides(design: str | None = None, design_params: dict | None = None,
              method_options: dict | None = None, **keys) -> list[str]:
    """The `simstudy run` arguments of these settings."""
    args = [f"design={design}"] if design else []
    args += [f"design.{k}={_value(v)}" for k, v in (design_params or {}).items()]
    for name, opts in (method_options or {}).items():
        args += [f"+method_options.{name}.{k}={_value(v)}" for k, v in opts.items()]
    args += [f"{k}={_value(v)}" for k, v in keys.items()]
    return args


def run_study(design: str | None = None, *, out: str | Path, design_params: dict | None = None,
              method_options: dict | None = None, progress: bool = False,
              figures: bool = False, **keys) -> "Study":
    """Run or resume a study as `simstudy run` would with these keys (`J`, `n_j`, `reps`,
    `methods`, `seed`, `n_jobs`, ...; `design_params={"beta1": 0.2}` for design.KEY,
    `method_options={"W-aug": {"nfolds": 10}}`), then load it. A bad value raises ConfigError
    with the command line's one-line message."""
    from .cli import main
    args = overrides(design, design_params, method_options, out=str(out), progress=progress,
                     figures=figures, **keys)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["run", *args])
    if code != 0:
        text = err.getvalue().strip() or f"simstudy run exited with {code}"
        if code == 2:
            raise ConfigError(text)
        raise RuntimeError(text)
    return load(out)


class Study:
    """A stored study: its tables and what the report computes from them."""

    def __init__(self, out: str | Path):
        from .store import read_config, read_congruence, read_metrics
        self.out = Path(out)
        self.config = read_config(self.out)
        self.metrics: pd.DataFrame = read_metrics(self.out)
        self.congruence: pd.DataFrame = read_congruence(self.out)

    def __repr__(self) -> str:
        cells = self.metrics[["point", "design", "J", "n_j"]].drop_duplicates()
        return (f"Study({str(self.out)!r}: {len(cells)} cells, "
                f"{self.metrics['method'].nunique()} methods, "
                f"{self.metrics[['point', 'design', 'J', 'n_j', 'replicate']].drop_duplicates().shape[0]}"
                f" replicates)")

    @property
    def methods(self) -> list[str]:
        from .store import study_methods
        return study_methods(self.config)

    def summary(self) -> pd.DataFrame:
        """One row per (point, design, J, n_j, method): reps, errors, mean / SD / MC SE."""
        from .report.tables import summary
        return summary(self.metrics, self.methods)

    def compare(self, reference: str) -> pd.DataFrame:
        """Each method minus `reference` on the same replicates: mean difference, its MC SE,
        95% interval, wins / ties / losses, per cell and metric."""
        from .report.study import paired
        if reference not in set(self.metrics["method"]):
            raise ConfigError(f"reference {reference!r} is not a method of {self.out}: "
                              f"{self.methods}")
        return paired(self.metrics, reference)

    def plot(self, metric: str = "accuracy", design: str | None = None):
        """The paper's boxplots of `metric` for a design (the first one by default): a figure,
        a row per (J, n_j), a panel per family."""
        from .report.figures import boxplots, use_families
        use_families({m: (v or {}).get("family")
                      for m, v in (self.config.get("methods") or {}).items()})
        design = design or str(self.metrics["design"].iloc[0])
        return boxplots(self.metrics, design, metric)


def load(out: str | Path) -> Study:
    """A stored study (the `out` of `simstudy run` or `run_study`)."""
    return Study(out)
