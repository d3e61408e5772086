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
    argv = forced_mappings(argv) + own_out(argv)
    sys.argv = ["simstudy run", *argv]
    try:
        job()
    except SystemExit as exc:
        code = int(exc.code or status["code"])
        # Hydra itself exits 1 for a bad override (unknown key, bad grammar) before the job
        # runs: that is the user's input, so exit 2 as every other input error
        return 2 if code == 1 and not status.get("ran") else code
    return status["code"]


def forced_mappings(argv: list[str]) -> list[str]:
    """A mapping given whole (`design.rules={moderators: [X1, X2]}`) as Hydra's `++KEY=`, which
    sets it whatever keys the preset's mapping has (plain `KEY=` stops with Hydra's "not in
    struct" dump for a key the preset's mapping lacks); `replace_mappings` then makes it the
    mapping given, as documented."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    parser = OverridesParser.create()
    out = []
    for a in argv:
        if a.startswith(("-", "~", "++")) or "=" not in a or a.split("=", 1)[0].startswith(
                ("hydra", "+hydra")):
            out.append(a)
            continue
        try:
            (o,) = parser.parse_overrides([a])
            whole = isinstance(o.value(), dict) and not o.is_sweep_override()
        except Exception:                                          # noqa: BLE001
            whole = False                       # Hydra reports a malformed override itself
        out.append("++" + a.lstrip("+") if whole else a)
    return out


def own_out(argv: list[str]) -> list[str]:
    """`out=results/<name>` for a run without out= whose study is not the default one, so a
    smoke test never lands in (and changes) results/default: the name is the identity
    overrides (those that change what is computed: design, grid, replicates, methods, seed,
    options; not n_jobs, progress, ...), readable and hashed; the same command finds the same
    folder again. [] when out= is given, a config file of the user's is used (it may set out),
    extend=true asks for results/default, or every override is at its default."""
    import hashlib
    import re

    from .config import NOT_IDENTITY, flat_defaults
    from .options import canonical
    if any(a.startswith(("out=", "+out=", "++out=", "--config", "-cd", "-cn", "-cp",
                         "hydra.searchpath")) or a in ("-cd", "-cn", "-cp") for a in argv):
        return []
    from .options import parse_bool

    def true(value) -> bool:
        try:
            return parse_bool(value, "extend")
        except Exception:                                          # noqa: BLE001
            return False                     # refused with its message by the run itself
    if any(a.split("=", 1)[0].lstrip("+") == "extend" and true(a.split("=", 1)[1])
           for a in argv if "=" in a):
        return []
    design = next((a.split("=", 1)[1] for a in argv if a.startswith("design=")), "design1")
    defaults = flat_defaults(design.split(",")[0] if "," not in design else None)
    mine = []
    for a in argv:
        if a.startswith("-") or "=" not in a:
            continue
        key, value = a.split("=", 1)
        key = key.lstrip("+~")
        if key.startswith("hydra") or key in NOT_IDENTITY:
            continue
        if key == "design" and value == "design1":
            continue
        if key != "design" and "," not in value and defaults.get(key) == canonical(value):
            continue
        mine.append(f"{key}={value}")
    if not mine:
        return []
    mine.sort()
    slug = "_".join(re.sub(r"[^A-Za-z0-9.]+", "", m) for m in mine)[:48].strip("_.")
    digest = hashlib.sha256("\n".join(mine).encode()).hexdigest()[:8]
    out = f"results/{slug}-{digest}"
    print(f"simstudy: out= not given and this is not the default study, so it is stored in "
          f"{out} (results/default is left as it is; the same command resumes it there; "
          f"out=DIR chooses, extend=true adds to results/default)")
    return [f"out={out}"]


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
    from .options import plain as as_plain
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
            node[path[-1]] = as_plain(value)
        if isinstance(value, dict):
            replaced.append(key)
    return plain


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
        minutes = table['wall_minutes'].sum()
        took = f"{minutes:.1f} minutes" if minutes >= 1 else f"{minutes * 60:.0f} s"
        print(f"in all: {int(table['more_reps'].sum())} more replicates, about {took}; "
              f"run them with `simstudy run ... "
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
    from .workers import stop_idle_workers
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
            stop_idle_workers(kill=stopped or code in (129, 130))
        except BaseException:                                     # noqa: BLE001
            pass
    late = pending_signal()
    if late is not None and code == 0:
        from .errors import EXIT_CODES, SIGNAL_WORDS
        print(f"simstudy {cmd}: {SIGNAL_WORDS.get(late, 'interrupted')} while shutting down; "
              f"the command's work was complete and is saved", file=sys.stderr)
        code = EXIT_CODES.get(late, 130)
    return code


def _methods(rest: list[str]) -> int:
    """`simstudy methods`: one line each (family, first line); `simstudy methods NAME`: the
    family, the whole description, the preset and every option with its default;
    `plugins=[...]` (as `simstudy run` takes it) lists the plugins' methods too."""
    import inspect

    from .errors import ConfigError
    from .methods import FAMILIES, REGISTRY, load_plugins
    from .methods.registry import SUMMARIES
    plugins = [a for a in rest if a.startswith("plugins=")]   # as `simstudy run` takes them
    rest = [a for a in rest if not a.startswith("plugins=")]
    for arg in plugins:
        load_plugins([p.strip() for p in arg[len("plugins="):].strip("[]").split(",")
                      if p.strip()])
    if not rest:
        width = max(map(len, REGISTRY)) + 1
        for name in sorted(REGISTRY, key=lambda n: (FAMILIES.get(n, ""), n)):
            fam = FAMILIES.get(name, "Other")
            print(f"{name:{width}s} {fam:17s} {SUMMARIES.get(name, '')}")
        print("`simstudy methods NAME` describes one, with its options; plugins=[...] adds a "
              "study's plugin methods (modules, r:FILE.R)")
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
    seen: set = set()               # each option once, with the default that applies
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.name in ("self", "kw", "kwargs", "args") or p.name in preset or p.name in seen:
                continue
            seen.add(p.name)
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
def apply_parser():
    """`simstudy apply`'s parser, from the options apply.py declares (apply.OPTIONS)."""
    import argparse

    from .apply import OPTIONS
    from .apply import __doc__ as apply_doc
    ap = argparse.ArgumentParser(prog="simstudy apply", description=apply_doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, spec in OPTIONS.items():
        ap.add_argument("--" + name.replace("_", "-"), **spec)
    return ap


def _apply(argv) -> int:
    """`simstudy apply`: the command line over the library simstudy.apply (`request` checks
    every option and reads the data before any fit, `analyse` fits and writes)."""
    from .apply import analyse, request
    from .errors import ConfigError
    try:
        req = request(vars(apply_parser().parse_args(argv)))
    except (ConfigError, OSError, ValueError) as exc:
        print(f"simstudy apply: {exc}", file=sys.stderr)
        return 2
    sim, title = req.pop("simulate", None), req.pop("title", "")
    res = analyse(**req)
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
    if sim:
        from .calibrate import simulate
        try:
            simulate(req, sim, title)
        except (ConfigError, OSError, ValueError) as exc:
            print(f"simstudy apply --simulate: {exc} (the apply output above is written)",
                  file=sys.stderr)
            return 2
    return 1 if len(res["errors"]) == len(res["values"]) - 2 else 0


if __name__ == "__main__":
    sys.exit(main())
