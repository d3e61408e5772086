"""The Python API for notebooks and scripts: `run_study(...)` runs (or resumes) a study exactly as
`simstudy run` does: it composes the same study spec (conf/config.yaml, the design preset, the
settings; `compose`) and runs it on the same path (`execute`, which the command line calls
with Hydra's composition), so the two give identical stores; `load(out)` returns a stored study
as one object. It never goes through the command line.

    import simstudy
    study = simstudy.run_study(design="design2", J=25, n_j=[25, 150], reps=50,
                               methods=["Q-base", "Q-rs", "W-augID", "oracle"], out="results/d2")
    study.summary()                 # mean, SD and MC SE per metric, method and condition
    study.compare("Q-base")         # paired differences from a reference method
    study.plot("accuracy")          # the paper's boxplots (a matplotlib figure per design)
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pandas as pd

from .errors import ConfigError


def compose(design: str | None = None, design_params: Mapping | None = None,
            method_options: Mapping | None = None, **keys) -> tuple[dict, dict[str, str]]:
    """The study spec of these settings: the plain mapping `simstudy run` gets from Hydra
    (conf/config.yaml's keys, the design preset's parameters, then the settings given) and its
    swept keys (key -> canonical value; the sweep point is those not at their default). A
    mapping value replaces the mapping at its key, as on the command line (issue 45, class 4).
    Every wrong name or type is a ConfigError."""
    import copy
    import difflib

    from .config import NOT_POINT, STUDY_KEYS, study_defaults
    from .designs import preset
    from .options import canonical
    from .options import plain as _plain

    def mapping(value, what: str, example: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{what}={value!r}: must be a mapping, e.g. {what}={example}")
        return {str(k): v for k, v in value.items()}

    name = "design1" if design is None else design
    if not isinstance(name, str):
        raise ConfigError(f"design={design!r}: give a preset's name, e.g. design='design2' "
                          f"(`simstudy designs` lists them)")
    presets = sorted(p.stem for p in Path(_conf(), "design").glob("*.yaml"))
    if name not in presets:
        close = difflib.get_close_matches(name, presets, n=1)
        raise ConfigError(f"unknown design preset {name!r}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; presets: {', '.join(presets)} (conf/design/)")
    plain = copy.deepcopy(study_defaults())
    plain["design"] = preset(name)
    swept: dict[str, str] = {}
    for key, value in mapping(design_params, "design_params", "{'beta1': 0.2}").items():
        plain["design"][key] = _plain(value)            # checked by the design's own rules
        if f"design.{key}" not in NOT_POINT:
            swept[f"design.{key}"] = canonical(_plain(value))
    options = plain.get("method_options") or {}
    for method, opts in mapping(method_options, "method_options",
                                "{'W-aug': {'nfolds': 10}}").items():
        opts = mapping(opts, f"method_options[{method!r}]", "{'nfolds': 10}")
        options[method] = {**(options.get(method) or {}), **_plain(opts)}
        swept.update({f"method_options.{method}.{k}": canonical(_plain(v))
                      for k, v in opts.items()})
    plain["method_options"] = options
    for key, value in keys.items():
        if key not in STUDY_KEYS:
            close = difflib.get_close_matches(key, [*STUDY_KEYS], n=1)
            raise ConfigError(f"unknown key {key!r}" + (f" -- did you mean {close[0]!r}?"
                                                        if close else "")
                              + f"; the study keys: {', '.join(STUDY_KEYS)}")
        plain[key] = _plain(value.as_posix() if isinstance(value, Path) else value)
        if key not in NOT_POINT:
            swept[key] = canonical(plain[key])
    return plain, swept


def _conf() -> str:
    from importlib import resources
    return str(resources.files("simstudy.conf"))


def execute(plain: dict, swept: Mapping[str, str], design: str | None = None,
            echo=print) -> Path:
    """Run (or resume) the study of a spec and write its report: the one path of both doors
    (`simstudy run` gives Hydra's composition, `run_study` `compose`'s). `swept`: the swept
    keys; the sweep point is those not at their default for the preset `design`."""
    from .config import StudyConfig, check_out, point_of_keys, run_flags
    from .report.tables import write_report
    from .runner import run_study as run
    flags = run_flags(plain)
    study = StudyConfig.from_config(plain, point=point_of_keys(swept, design),
                                    point_keys=swept)
    out = check_out(plain.get("out"))
    for line in study.blind_rules():
        echo(f"simstudy: warning: {line}")
    if flags["dry_run"]:
        from .runner import dry_run
        echo(dry_run(study, out, overwrite=flags["overwrite"]))
        return out
    run(study, out, overwrite=flags["overwrite"], progress=flags["progress"], run_config=plain,
        probe=flags["probe"], retry_errors=flags["retry_errors"])
    write_report(out, figures=flags["figures"], designs=[d.name for d in study.designs],
                 point=study.label, n_jobs=study.n_jobs)
    echo(f"simstudy: study stored in {out}; summary table: {out / 'summary.md'} (and "
         f"summary.csv)" + (f", figures: {out / 'figures'}" if flags["figures"] else "")
         + f"; print the table with `simstudy report {out}`")
    return out


def run_study(design: str | None = None, *, out: str | Path, design_params: dict | None = None,
              method_options: dict | None = None, progress: bool | None = None,
              figures: bool = False, **keys) -> "Study | None":
    """Run or resume a study as `simstudy run` would with these keys (`J`, `n_j`, `reps`,
    `methods`, `seed`, `n_jobs`, ...; `design_params={"beta1": 0.2}` for design.KEY,
    `method_options={"W-aug": {"nfolds": 10}}`), then load it: the same spec, seeds, sweep
    point and store as the command line (`compose`, `execute`), without the command line (no
    argv, no signal handlers: it runs in any thread). A bad value raises ConfigError.
    `dry_run=True` prints the plan and the estimated time, writes nothing, returns None.
    `progress` (None: on in a terminal or a notebook) shows replicates done, rate, time left;
    `figures=True` draws the report's figures too (`Study.plot` draws one on demand)."""
    import os
    if out is None or not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise ConfigError(f"out={out!r}: give the study's directory as a path, e.g. "
                          f"out='results/d2'")
    if progress is None:        # shown where someone sees it: a terminal or a notebook
        import sys
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)()) \
            or "ipykernel" in sys.modules
    plain, swept = compose(design, design_params, method_options, out=str(out),
                           progress=progress, figures=figures, **keys)
    execute(plain, swept, design or "design1")
    from .config import run_flags
    return None if run_flags(plain)["dry_run"] else load(out)


def _keys_doc() -> str:
    """The study keys run_study takes, from their one declaration (config.STUDY_KEYS)."""
    from .config import STUDY_KEYS
    from .options import canonical
    return "\n\n    Study keys (keyword arguments; default in brackets):\n" + "\n".join(
        f"      {k}: {key.help} [{canonical(key.default)}]" for k, key in STUDY_KEYS.items()
        if k != "out")


run_study.__doc__ = (run_study.__doc__ or "").rstrip() + _keys_doc()


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
        import difflib

        from .metrics import METRICS
        from .report.figures import boxplots, use_families
        have = [m for m in METRICS if m in self.metrics and self.metrics[m].notna().any()]
        designs = sorted(set(self.metrics["design"].astype(str)))
        for what, value, allowed in (("metric", metric, have), ("design", design, designs)):
            if value is not None and value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1)
                raise ConfigError(f"{what} {value!r} is not in {self.out}"
                                  + (f" (did you mean {close[0]!r}?)" if close else "")
                                  + f"; its {what}s: {', '.join(allowed)}")
        use_families({m: (v or {}).get("family")
                      for m, v in (self.config.get("methods") or {}).items()})
        design = design or designs[0]
        return boxplots(self.metrics, design, metric)


def load(out: str | Path) -> Study:
    """A stored study (the `out` of `simstudy run` or `run_study`)."""
    import os
    if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
        raise ConfigError(f"load({out!r}): give a study's directory as a path, e.g. "
                          f"simstudy.load('results/default')")
    return Study(out)
