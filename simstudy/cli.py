"""Command line: `simstudy run [hydra overrides]`, `simstudy report DIR`, `simstudy methods`."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

USAGE = """usage: simstudy COMMAND [...]

commands:
  run [KEY=VALUE ...]      run or resume a study (Hydra overrides; -m for sweeps;
                           `simstudy run --help` lists every key)
  report DIR [DIR ...]     summary table (mean, SD, Monte Carlo SE per metric, method and
                           condition) printed and written to DIR/summary.csv and summary.md
  status DIR               replicates done per cell (point, design, J, n_j) of the planned ones,
                           and the missing replicate ids
  merge SRC [SRC ...] DEST add stores of the same study (e.g. gaps run on another machine)
                           into DEST; a replicate already in DEST is never duplicated
  apply --data F ...       the estimators, policy trees and rule values on one multisite
                           trial (`simstudy apply --help`; `--example simulated`)
  methods                  list the registered method names
  designs                  list the design presets in conf/design
"""


def config_dir() -> str:
    """Absolute path of the packaged Hydra config tree (top-level conf/ in the source)."""
    return str(resources.files("simstudy.conf"))


def _run(argv: list[str]) -> int:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from .designs import ConfigError
    from .runner import StudyConfig, run_study

    status = {"code": 0}

    @hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> None:
        plain = OmegaConf.to_container(cfg, resolve=True)
        try:
            study = StudyConfig.from_config(plain, point=swept_keys())
        except ConfigError as exc:
            print(f"simstudy: config error: {exc}", file=sys.stderr)
            status["code"] = 2
            raise SystemExit(2) from None
        out = Path(plain["out"])
        try:
            run_study(study, out, overwrite=bool(plain.get("overwrite")),
                      progress=bool(plain.get("progress", True)), run_config=plain)
        except ConfigError as exc:
            print(f"simstudy: {exc}", file=sys.stderr)
            status["code"] = 2
            raise SystemExit(2) from None
        from .report.tables import write_report
        figures = bool(plain.get("figures", True))
        write_report(out, figures=figures, designs=[d.name for d in study.designs],
                     point=study.label)
        print(f"simstudy: study stored in {out}; summary table: {out / 'summary.md'} "
              f"(and summary.csv)" + (f", figures: {out / 'figures'}" if figures else "")
              + f"; print the table with `simstudy report {out}`")

    sys.argv = ["simstudy run", *argv]
    try:
        job()
    except SystemExit as exc:
        return int(exc.code or status["code"])
    return status["code"]


# keys that are not a sweep point: the store has columns for them, or they change how (not
# what) is computed
NOT_POINT = {"design", "design.name", "J", "n_j", "reps", "methods", "out", "n_jobs", "backend",
             "batch_size", "flush_seconds", "progress", "figures", "overwrite", "plugins",
             "dask_address", "replicates"}


def swept_keys() -> dict[str, str]:
    """The sweep point of this Hydra job: its command-line overrides other than NOT_POINT
    (e.g. design.beta1=0.2, method_options.W-aug.nfolds=10), key -> value as written."""
    from hydra.core.hydra_config import HydraConfig
    point = {}
    for item in HydraConfig.get().overrides.task:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in NOT_POINT or key.startswith("hydra"):
            continue
        point[key] = value
    return point


def _status(argv: list[str]) -> int:
    import argparse

    from .report.tables import status_table
    ap = argparse.ArgumentParser(prog="simstudy status",
                                 description="Replicates done and missing per cell of a store.")
    ap.add_argument("dir")
    args = ap.parse_args(argv)
    try:
        table, text = status_table(args.dir)
    except FileNotFoundError as exc:
        print(f"simstudy status: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _merge(argv: list[str]) -> int:
    import argparse

    from .designs import ConfigError
    from .store import Store
    ap = argparse.ArgumentParser(prog="simstudy merge",
                                 description="Merge stores of the same study into DEST.")
    ap.add_argument("sources", nargs="+")
    ap.add_argument("dest")
    args = ap.parse_args(argv)
    with Store(args.dest) as dest:
        for src in args.sources:
            try:
                added, present = dest.merge_from(src)
            except (ConfigError, FileNotFoundError) as exc:
                print(f"simstudy merge: {exc}", file=sys.stderr)
                return 2
            print(f"{src}: {added} replicates added, {present} already in {args.dest}")
    return 0


def _report(argv: list[str]) -> int:
    from .report.tables import report_main
    return report_main(argv)


def main(argv: list[str] | None = None) -> int:
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)      # `simstudy report DIR | head` is fine
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "run":
        return _run(rest)
    if cmd == "report":
        return _report(rest)
    if cmd == "apply":
        from .apply import main as apply_main
        return apply_main(rest)
    if cmd == "status":
        return _status(rest)
    if cmd == "merge":
        return _merge(rest)
    if cmd == "methods":
        from .methods import REGISTRY
        for name, (cls, preset) in sorted(REGISTRY.items()):
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            print(f"{name:14s} {doc}")
        return 0
    if cmd == "designs":
        for p in sorted(Path(config_dir(), "design").glob("*.yaml")):
            first = p.read_text().splitlines()[0].lstrip("# ")
            print(f"{p.stem:10s} {first}")
        return 0
    print(f"simstudy: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
