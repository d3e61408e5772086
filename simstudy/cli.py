"""Command line: `simstudy run [hydra overrides]`, `simstudy report DIR`, `simstudy methods`."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

USAGE = """usage: simstudy COMMAND [...]

commands (simstudy --version prints the version):
  run [KEY=VALUE ...]      run or resume a study (Hydra overrides; -m for sweeps;
                           `simstudy run --help` lists every key)
  report DIR [DIR ...]     summary table (mean, SD, Monte Carlo SE per metric, method and
                           condition) printed and written to DIR/summary.csv and summary.md
  status DIR               replicates done per cell (point, design, J, n_j) of the planned ones,
                           and the missing replicate ids
  plan DIR --target SE     replicates each cell needs for a Monte Carlo SE, from a pilot store,
                           and the wall time
  repair DIR               move unreadable (truncated) Parquet files to DIR/quarantine; the
                           next run recomputes their replicates
  merge SRC [SRC ...] DEST add stores of the same study (e.g. gaps run on another machine)
                           into DEST; a replicate already in DEST is never duplicated
  apply --data F ...       the estimators, policy trees and rule values on one multisite
                           trial (`simstudy apply --help`; `--example star`, `thornton`,
                           `simulated`)
  methods [NAME]           the registered methods (NAME: its description and options)
  designs [NAME]           the design presets in conf/design (NAME: every key)
"""


from .options import canonical  # noqa: E402,F401  (one spelling per value; sweep points)


def config_dir() -> str:
    """Absolute path of the packaged Hydra config tree (top-level conf/ in the source)."""
    return str(resources.files("simstudy.conf"))


def _run(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf

    from .api import execute
    from .config import check_out
    from .errors import ConfigError, report

    status = {"code": 0}

    @hydra.main(config_path=config_dir(), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> None:
        # the error boundary sits inside the Hydra job (Hydra would print a traceback)
        status["ran"] = True
        resume = None
        from .cluster import in_job
        in_job()                   # inside a SLURM job: SIGTERM (scancel) is the clean stop
        try:
            plain = replace_mappings(OmegaConf.to_container(cfg, resolve=True),
                                     HydraConfig.get().overrides.task)
            out = check_out(plain.get("out"))
            resume = f"`simstudy status {out}` shows what is missing"
            execute(plain, swept_keys(), HydraConfig.get().runtime.choices.get("design"))
        except BaseException as exc:                              # noqa: BLE001
            if isinstance(exc, SystemExit):
                raise
            status["code"] = report(exc, "simstudy", resume)
            raise SystemExit(status["code"]) from None

    bad = [a for a in argv if not a.startswith(("-", "~")) and "=" not in a
           and a not in ("run",)]
    if bad and not any(a.startswith("--config") or a in ("-cd", "-cn", "-cp") for a in argv):
        raise ConfigError(f"{bad[0]!r} is not KEY=VALUE; a value with a space must be quoted as "
                          f"a whole, e.g. \"out='my results'\" (and lists as 'J=[25,150]')")
    if any(a in ("--help", "-h") for a in argv):
        from .config import keys_help
        print(USAGE_RUN + "\n" + keys_help())
        return 0
    if check_launcher(argv) in ("slurm", "submitit_slurm"):
        from .cluster import use_simstudy_launch
        use_simstudy_launch()
    if not any(a.startswith(("--config", "hydra.searchpath")) or a in ("-cd", "-cn", "-cp")
               for a in argv):
        check_overrides(argv)            # one line with the fix, not Hydra's dump
    sys.argv = ["simstudy run", *argv]
    try:
        job()
    except SystemExit as exc:
        code = int(exc.code or status["code"])
        # Hydra itself exits 1 for a bad override (unknown key, bad grammar) before the job
        # runs: that is the user's input, so exit 2 as every other input error
        return 2 if code == 1 and not status.get("ran") else code
    return status["code"]


def check_launcher(argv: list[str]) -> str | None:
    """A cluster launcher's settings that would fail late or silently, refused before anything
    runs: `hydra/launcher=slurm` without -m (it would run here, not on SLURM) and n_jobs=-1
    with it (sbatch would get --cpus-per-task=-1)."""
    from .errors import ConfigError
    launcher = next((a.split("=", 1)[1] for a in argv if a.startswith("hydra/launcher=")), None)
    if launcher is None or launcher in ("basic", "joblib"):
        return launcher
    if not any(a in ("-m", "--multirun") for a in argv):
        raise ConfigError(f"hydra/launcher={launcher} submits each point of a sweep as a job and "
                          f"needs -m (simstudy run -m hydra/launcher={launcher} "
                          f"design=design1,design2 ...); without -m the study would run here")
    n_jobs = next((a.split("=", 1)[1] for a in argv if a.startswith("n_jobs=")), None)
    if n_jobs is not None:
        try:
            ok = int(n_jobs) >= 1
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"n_jobs={n_jobs} with hydra/launcher={launcher}: a job needs its "
                              f"number of cores (its cpus_per_task), e.g. n_jobs=4; -1 (all "
                              f"cores of this machine) means nothing on a cluster node")
    return launcher


def check_overrides(argv: list[str]) -> None:
    """Unknown keys and design presets of `simstudy run` KEY=VALUE arguments, answered in one line
    with the closest names (Hydra would print a dump, and advise `+key` for a typo). Keys with
    `+`/`~`, hydra.* and configs of the user's own (--config-dir, hydra.searchpath) are left to
    Hydra."""
    import difflib
    from pathlib import Path

    from .config import STUDY_KEYS
    from .designs import preset
    from .errors import ConfigError
    presets = sorted(p.stem for p in Path(config_dir(), "design").glob("*.yaml"))
    design = next((a.split("=", 1)[1] for a in argv if a.startswith("design=")), "design1")
    for name in design.split(","):                        # -m design=design1,design2
        if name and name not in presets:
            close = difflib.get_close_matches(name, presets, n=1)
            raise ConfigError(f"unknown design preset {name!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; presets: {', '.join(presets)} (conf/design/)")
    params = preset(design.split(",")[0])
    for arg in argv:
        if arg.startswith(("-", "+", "~")) or "=" not in arg:
            continue
        key = arg.split("=", 1)[0]
        if key.startswith("hydra") or key == "design":
            continue
        top, _, rest = key.partition(".")
        if top == "design":
            sub, _, term = rest.partition(".")
            if term and isinstance(params.get(sub), dict) and term not in params[sub]:
                raise ConfigError(        # a new term of a mapping (delta, main) needs a `+`
                    f"design.{sub} of the {design.split(',')[0]} preset has no term {term!r} "
                    f"(it has {', '.join(params[sub])}); add one with +{arg}"
                    + (" (and design.site_covariate=true for W)" if term == "W" else ""))
            if sub not in params:
                close = difflib.get_close_matches(sub, sorted(params), n=1)
                raise ConfigError(f"unknown design key 'design.{sub}'"
                                  + (f" -- did you mean 'design.{close[0]}'?" if close else "")
                                  + f"; the {design.split(',')[0]} preset's keys: "
                                  + ", ".join(sorted(params)))
        elif top not in STUDY_KEYS:
            names = [*STUDY_KEYS, "design"]
            close = difflib.get_close_matches(top, names, n=1)
            raise ConfigError(f"unknown key {top!r}"
                              + (f" -- did you mean {close[0]!r}?" if close else "")
                              + "; `simstudy run --help` lists every key")
        elif top in ("method_options",) and rest:
            raise ConfigError(f"{key}: a method option is new to the config, so it needs a "
                              f"leading +: '+{arg}'")


USAGE_RUN = """usage: simstudy run [KEY=VALUE ...] [-m KEY=V1,V2 ...]

Runs (or resumes) a simulation study: every design x J x n_j condition, `reps` replicates each,
every method in `methods`; writes OUT/metrics.parquet, congruence.parquet, config.yaml, the
summary table and figures. Re-running the same command resumes. -m sweeps (Hydra multirun) over
ANY key into one store, e.g. `simstudy run -m design.beta1=0,0.1,0.2`.
Examples:
  simstudy run design=design2 J=25 n_j=150 reps=50 n_jobs=2 out=results/d2
  simstudy run design=design1 design.beta1=0.3 design.name=design5
  simstudy run -m hydra/launcher=slurm design=design1,design2      # SLURM (submitit)
"""


def replace_mappings(plain: dict, task: list[str]) -> dict:
    """A mapping given whole replaces the mapping at its key, as written: Hydra would merge it
    into the preset's (`design.delta={intercept: 0.2, X3: 0.5}` kept X4 and X5's terms: issue
    45, class 4). The overrides are replayed in order from the first such one, so a later
    `+design.delta.X4=1` or `~design.delta.X5` still applies to the replaced mapping."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from .errors import ConfigError
    parsed = OverridesParser.create().parse_overrides(list(task))
    replaced: list[str] = []
    for o in parsed:
        key = o.key_or_group
        if key.startswith("hydra") or "/" in key or key.startswith("-"):
            continue
        path = key.split(".")
        under = any(key == r or key.startswith(r + ".") for r in replaced)
        value = None if o.is_delete() else o.value()
        if not isinstance(value, dict) and not under:
            continue
        node = plain
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{key}: {part!r} is not a mapping, so it has no key "
                                  f"{path[-1]!r}")
            node = node[part]
        if o.is_delete():
            node.pop(path[-1], None)
        else:
            node[path[-1]] = _plain_value(value)
        if isinstance(value, dict):
            replaced.append(key)
    return plain


def _plain_value(v):
    if isinstance(v, dict):
        return {str(k): _plain_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain_value(x) for x in v]
    return v


def swept_keys() -> dict[str, str]:
    """The sweep point of this Hydra job: its command-line overrides other than NOT_POINT
    (e.g. design.beta1=0.2, method_options.W-aug.nfolds=10), key -> canonical value (the point
    itself leaves out keys at their default: `point_of`)."""
    from hydra.core.hydra_config import HydraConfig

    from .config import NOT_POINT
    from hydra.core.override_parser.overrides_parser import OverridesParser
    point = {}
    task = list(HydraConfig.get().overrides.task)
    for item, o in zip(task, OverridesParser.create().parse_overrides(task)):
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if key in NOT_POINT or key.startswith("hydra"):
            continue
        # a whole mapping by its parsed value ({a: 1}; YAML would read "{a:1}" as {'a:1': None})
        point[key] = canonical(o.value() if not o.is_delete() and isinstance(o.value(), dict)
                               else value)
    return point


def _status(argv: list[str]) -> int:
    import argparse

    from .report.tables import status_table
    ap = argparse.ArgumentParser(prog="simstudy status",
                                 description="Replicates done and missing per cell of a store.")
    ap.add_argument("dir")
    args = ap.parse_args(argv)
    table, text = status_table(args.dir)
    print(text)
    return 0


def _merge(argv: list[str]) -> int:
    import argparse

    from .errors import ConfigError
    from .store import Store
    ap = argparse.ArgumentParser(prog="simstudy merge",
                                 description="Merge stores of the same study into DEST.")
    ap.add_argument("sources", nargs="+")
    ap.add_argument("dest")
    args = ap.parse_args(argv)
    from .config import check_out
    from .store import read_config
    for src in args.sources:                 # every source, and the destination, before writing
        read_config(src)
        if Path(src).resolve() == Path(args.dest).resolve():
            raise ConfigError(f"{src} is the destination itself; give another store to merge")
    dest_path = check_out(args.dest)
    with Store(dest_path) as dest:
        for src in args.sources:
            added, present = dest.merge_from(src)
            print(f"{src}: {added} replicates added, {present} already in {args.dest}")
    return 0


def _repair(argv: list[str]) -> int:
    import argparse

    from .store import Store
    ap = argparse.ArgumentParser(prog="simstudy repair", description="Move unreadable Parquet "
                                 "files of a store to DIR/quarantine; the next run recomputes "
                                 "their replicates.")
    ap.add_argument("dir")
    args = ap.parse_args(argv)
    if not Path(args.dir, "config.yaml").exists():
        print(f"simstudy repair: {args.dir} holds no study (no config.yaml)", file=sys.stderr)
        return 2
    with Store(args.dir) as store:
        bad = store.repair()
    print(f"{args.dir}: " + (f"{len(bad)} unreadable file(s) moved to quarantine/: "
                             + ", ".join(f.name for f in bad) + "; re-run the study's command to "
                             "recompute their replicates" if bad else "every file is readable"))
    return 0


def _plan(argv: list[str]) -> int:
    import argparse

    import pandas as pd

    from .errors import ConfigError
    from .report.study import plan
    from .report.tables import _plain_study
    from .store import read_config, read_metrics
    ap = argparse.ArgumentParser(prog="simstudy plan", description="Replicates each cell needs "
                                 "for a target Monte Carlo SE, estimated from the replicates "
                                 "already in a store (a pilot), and the wall time that takes.")
    ap.add_argument("dir")
    ap.add_argument("--target", type=float, required=True, help="MC SE to reach, e.g. 0.001")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--n-jobs", type=int, default=-1,
                    help="workers the time is estimated for (-1 = all cores, capped at them)")
    args = ap.parse_args(argv)
    if not args.target > 0:
        raise ConfigError(f"--target {args.target}: must be > 0")
    read_config(args.dir)
    from .workers import check_n_jobs, resolve_n_jobs
    args.n_jobs = resolve_n_jobs(check_n_jobs(args.n_jobs, "--n-jobs"))
    table = plan(read_metrics(args.dir), args.target, args.metric, args.n_jobs)
    if table.empty:
        raise ConfigError(f"{args.dir} has no successful replicates to plan from")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(f"{args.dir}: replicates per cell for MC SE <= {args.target} of the mean "
              f"{args.metric} (worst method of each cell), at the stored seconds per replicate "
              f"on {args.n_jobs} worker(s)")
        print(_plain_study(table).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        print(f"in all: {int(table['more_reps'].sum())} more replicates, about "
              f"{table['wall_minutes'].sum():.1f} minutes; run them with `simstudy run ... "
              f"reps=auto target_mcse={args.target}` (or reps=N)")
    return 0


def _report(argv: list[str]) -> int:
    from .report.tables import report_main
    return report_main(argv)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `simstudy report DIR | head` is fine
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("--version", "-V", "version"):
        from . import __version__
        print(f"simstudy {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    from .errors import install_sigterm, pending_signal, report, signals_deferred
    install_sigterm()          # every command: SIGINT/SIGTERM 130, SIGHUP 129, a clean stop
    code, stopped = 0, False
    try:
        code = _dispatch(cmd, rest)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except BaseException as exc:                                  # noqa: BLE001
        stopped = isinstance(exc, KeyboardInterrupt)
        code = report(exc, f"simstudy {cmd}")
    with signals_deferred():   # a signal during the shutdown is noted, never a traceback
        try:
            _stop_idle_workers(kill=stopped or code in (129, 130))
        except BaseException:                                     # noqa: BLE001
            pass
    late = pending_signal()
    if late is not None and code == 0:
        from .errors import EXIT_CODES, SIGNAL_WORDS
        print(f"simstudy {cmd}: {SIGNAL_WORDS.get(late, 'interrupted')} while shutting down; "
              f"the command's work was complete and is saved", file=sys.stderr)
        code = EXIT_CODES.get(late, 130)
    return code


def _stop_idle_workers(kill: bool = False) -> None:
    """Stop joblib's reusable worker processes once a command is done (a run, all its sweep
    points and its report): otherwise the exit waits ~0.4 s for their interpreters to tear
    down. Idle workers are asked to exit, not killed: a worker killed between registering a
    semaphore with loky's resource tracker and releasing it left the tracker to print
    "There appear to be 1 leaked semlock objects" at exit (2 of 14 runs of a finished study).
    After a signal (`kill`) busy workers are killed: the command must stop now."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)            # None: no worker was started
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=kill)


def _methods(rest: list[str]) -> int:
    """`simstudy methods`: one line each (family, first line); `simstudy methods NAME`: the
    family, the whole description, the preset and every option with its default."""
    import inspect

    from .errors import ConfigError
    from .methods import FAMILIES, REGISTRY
    if not rest:
        for name, (cls, preset) in sorted(REGISTRY.items(), key=lambda kv: (FAMILIES.get(
                kv[0], ""), kv[0])):
            print(f"{name:12s} {FAMILIES.get(name, 'Other'):12s} "
                  f"{(cls.__doc__ or '').strip().splitlines()[0]}")
        print("`simstudy methods NAME` describes one, with its options")
        return 0
    name = rest[0]
    if name not in REGISTRY:
        import difflib
        close = difflib.get_close_matches(name, sorted(REGISTRY), n=1)
        raise ConfigError(f"unknown method {name!r}" + (f" (did you mean {close[0]!r}?)"
                                                         if close else "")
                          + f"; registered: {', '.join(sorted(REGISTRY))}")
    cls, preset = REGISTRY[name]
    print(f"{name} ({FAMILIES.get(name, 'Other')}; {cls.__module__}.{cls.__qualname__})\n")
    print(inspect.cleandoc(cls.__doc__ or "(no description)"))
    module_doc = inspect.getdoc(sys.modules[cls.__module__]) or ""
    if module_doc:
        print("\n" + module_doc)
    if preset:
        print("\npreset: " + ", ".join(f"{k}={v!r}" for k, v in preset.items()))
    print("\noptions (method_options." + name + ".KEY=VALUE; defaults):")
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name in ("self", "kw", "kwargs", "args") or p.name in preset:
                continue
            default = "" if p.default is inspect.Parameter.empty else f" = {p.default!r}"
            rule = cls.constraints().get(p.name)
            print(f"  {p.name}{default}" + (f"   ({rule.describe()})" if rule else ""))
    return 0


def _designs(rest: list[str]) -> int:
    """`simstudy designs`: the presets; `simstudy designs NAME`: its file with every key."""
    from .errors import ConfigError
    presets = sorted(Path(config_dir(), "design").glob("*.yaml"))
    if not rest:
        for p in presets:
            first = p.read_text().splitlines()[0].lstrip("# ")
            print(f"{p.stem:14s} {first}")
        print("`simstudy designs NAME` shows a preset's keys (formulas: docs/designs.md)")
        return 0
    names = {p.stem: p for p in presets}
    if rest[0] not in names:
        raise ConfigError(f"unknown design preset {rest[0]!r}; presets: {', '.join(names)}")
    from .config import design_lines
    from .designs import DESIGNS, preset
    print(names[rest[0]].read_text().rstrip())
    values = preset(rest[0])
    family = str(values.get("family", "multisite"))
    print(f"\n# composed: every parameter of the {family} family (design.KEY=VALUE changes one; "
          f"the rule in parentheses, the value in brackets):")
    for line in design_lines(DESIGNS[family], values) if family in DESIGNS else \
            [f"  design.{k} [{v}]" for k, v in values.items()]:
        print(line)
    return 0


def _dispatch(cmd: str, rest: list[str]) -> int:
    commands = {"run": _run, "report": _report, "apply": _apply, "status": _status,
                "merge": _merge, "repair": _repair, "plan": _plan, "methods": _methods,
                "designs": _designs}
    if cmd in commands:
        return commands[cmd](rest)
    print(f"simstudy: unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return 2


# ---------------------------------------------------------------------- simstudy apply
def _yaml_value(key: str, value, where: str):
    """One option of apply's --config YAML, typed as the command line types it."""
    from .errors import DataError
    from .options import parse_bool
    names = ("covariates", "moderators", "methods")
    if key in ("dropna", "drop_sites"):
        return parse_bool(value, f"{where}: {key}")
    if key in ("value_folds", "seed"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataError(f"{where}: {key}: {value!r} must be an integer")
        return value
    if key == "depths":
        value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                                  for v in value):
            raise DataError(f"{where}: depths: {value!r} must be a list of integers (PT's depth), "
                            f"e.g. [2, 3] ([] for no trees)")
        return value
    if key in names:
        value = value.split() if isinstance(value, str) else value
        if not isinstance(value, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            raise DataError(f"{where}: {key}: {value!r} must be a list of names, e.g. [X1, X2]")
        if not value:
            raise DataError(f"{where}: {key}: the list is empty; name at least one")
        return [str(v) for v in value]
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise DataError(f"{where}: {key}: {value!r} must be a single name")
    return str(value)


def _from_config(args) -> None:
    from .apply import DEFAULT_METHODS
    from .errors import DataError
    """Fill options not given on the command line from --config FILE (YAML), each typed and
    checked as on the command line; then the defaults."""
    if args.config:
        import yaml
        path = Path(args.config)
        if not path.is_file():
            raise DataError(f"--config {path}: no such file")
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise DataError(f"--config {path} is not valid YAML "
                            f"({str(exc).splitlines()[0]})") from None
        if not isinstance(cfg, dict):
            raise DataError(f"--config {path}: must be a YAML mapping of options (key: value)")
        cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
        unknown = sorted(set(cfg) - set(vars(args)) | ({"config"} & set(cfg)))
        if unknown:
            raise DataError(f"--config {path}: unknown keys {unknown}; allowed "
                            f"{sorted(k for k in vars(args) if k != 'config')}")
        for key, value in cfg.items():
            if value is None:
                continue
            if getattr(args, key) in (None, False):
                setattr(args, key, _yaml_value(key, value, f"--config {path}"))
    if args.methods is not None and not args.methods:
        raise DataError("--methods: the list is empty; name at least one method")
    args.methods = args.methods or DEFAULT_METHODS
    args.seed = 2024 if args.seed is None else int(args.seed)
    if args.seed < 0:
        raise DataError(f"seed {args.seed}: must be an integer >= 0")
    if args.value_folds is not None and args.value_folds < 2:
        raise DataError(f"value_folds {args.value_folds}: must be an integer >= 2")


def _apply(argv) -> int:
    """`simstudy apply`: the command line over the library simstudy.apply."""
    return _apply_main(apply_parser().parse_args(argv))


def apply_parser():
    import argparse

    from .apply import __doc__ as apply_doc
    ap = argparse.ArgumentParser(prog="simstudy apply", description=apply_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="a YAML file with any of these options (data, outcome, "
                    "treatment, site, covariates, moderators, methods, by, out, ...); options "
                    "given on the command line win")
    ap.add_argument("--data", help="csv or parquet file, one row per individual")
    ap.add_argument("--example", help="a built-in example: star (Project STAR, shipped), "
                    "thornton (Thornton 2008, shipped) or simulated (NOT real data); its "
                    "columns are preset, any option given here overrides them "
                    "(e.g. --example star --outcome mathk)")
    ap.add_argument("--outcome")
    ap.add_argument("--treatment")
    ap.add_argument("--treated", help="the treated label when the treatment is not 0/1")
    ap.add_argument("--site")
    ap.add_argument("--covariates", nargs="+", default=None)
    ap.add_argument("--moderators", nargs="+", default=None)
    ap.add_argument("--methods", nargs="+", default=None, help="default: the 14 estimators")
    ap.add_argument("--depths", nargs="*", type=int, default=None,
                    help="policy-tree depths (default 2 3; none: --depths with no value)")
    ap.add_argument("--by", help="grouping column for Figs 8-9 (shares and scores by group)")
    ap.add_argument("--dropna", action="store_true", help="drop rows with missing values")
    ap.add_argument("--drop-sites", action="store_true",
                    help="drop sites with one person or everyone / no one treated")
    ap.add_argument("--value-folds", type=int, default=None,
                    help="K folds of sites for the cross-fitted values (default 5)")
    ap.add_argument("--seed", type=int, default=None, help="default 2024")
    ap.add_argument("--out")
    return ap


def _apply_main(args) -> int:
    from .apply import (EXAMPLES, MAX_GROUPS, analyse, check_apply_out, example, load,
                        prepare, recover_out, site_folds)
    from .errors import ConfigError, DataError
    try:
        _from_config(args)
        if bool(args.data) == bool(args.example):
            raise DataError("give exactly one of --data FILE or --example NAME")
        if args.out:
            recover_out(Path(args.out))
        out = check_apply_out(args.out)
        if args.example:
            df, spec = example(args.example)
            print(EXAMPLES[args.example]["text"])
            spec = {**spec, **{k: v for k, v in vars(args).items() if k in spec and v}}
            drop_sites = spec.pop("drop_sites") or args.drop_sites
        else:
            df = load(args.data, ids=(args.site, args.by))
            spec = dict(outcome=args.outcome, treatment=args.treatment, site=args.site,
                        covariates=args.covariates, moderators=args.moderators, by=args.by)
            lacking = [f"--{k}" for k, v in spec.items() if k != "by" and not v]
            if lacking:
                raise DataError(f"{' '.join(lacking)} required with --data")
            drop_sites = args.drop_sites
        from .methods import available
        unknown = [m for m in args.methods if m not in available()]
        if unknown:
            raise DataError(f"--methods {unknown} not registered; choose from {available()}")
        depths = [2, 3] if args.depths is None else [int(d) for d in args.depths]
        from .methods import REGISTRY
        for d in depths:                       # PT's own declared range of depth
            try:
                REGISTRY["PT"][0].check_options({"depth": d})
            except ValueError as exc:
                raise DataError(f"--depths: {exc}") from None
        frame, cov, mod = prepare(df, spec["outcome"], spec["treatment"], spec["site"],
                                  spec["covariates"], spec["moderators"], spec.get("by"),
                                  args.treated, args.dropna, drop_sites)
        by = spec.get("by")
        if by and frame[by].nunique() > MAX_GROUPS:
            raise DataError(f"--by {by}: {frame[by].nunique()} distinct values; Figs 8-9 draw one "
                            f"group each, so use a column with at most {MAX_GROUPS} (cut a "
                            f"continuous column into bands first)")
        K = 5 if args.value_folds is None else int(args.value_folds)
        site_folds(frame[spec["site"]].unique(), K, args.seed)      # K vs sites, before any fit
    except (ConfigError, OSError, ValueError) as exc:
        print(f"simstudy apply: {exc}", file=sys.stderr)
        return 2
    res = analyse(frame, spec["outcome"], spec["treatment"], spec["site"], cov, mod, args.methods,
                  by, args.seed, depths=depths, value_folds=K, out=out)
    import pandas as pd
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print("\nValue of each rule (mean outcome under the rule; AIPW). in-sample = learnt and "
              "valued on the same rows (optimistic); crossfit = learnt without the fold of sites "
              "it is valued on (SE clustered by site); vs_all = crossfit minus treat-all:")
        cols = {"rule": "rule", "treated_share": "share", "value_insample": "in-sample",
                "se_insample": "(SE)", "value_crossfit": "crossfit", "se_crossfit": "(SE) ",
                "vs_treat_all_crossfit": "vs_all", "se_vs_treat_all": "(SE)  "}
        print(res["values"][list(cols)].rename(columns=cols).to_string(
            index=False, float_format=lambda v: f"{v:.4f}"))
    return 1 if len(res["errors"]) == len(res["values"]) - 2 else 0


if __name__ == "__main__":
    sys.exit(main())
