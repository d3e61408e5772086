"""Where a first run's compile time goes: every numba kernel the default study's rules compile,
timed by numba's own compile events, in one process from an empty cache (a temporary
NUMBA_CACHE_DIR, so the project's cache is not touched). Prints the kernels by their own
compile time (nested compiles excluded) and the total per engine module.

    python scripts/compile_times.py [--methods PT,W-aug] [--top 25]
"""
from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="", help="comma-separated (default: the default study's)")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()
    os.environ["NUMBA_CACHE_DIR"] = cache = tempfile.mkdtemp(prefix="numba-cold-")
    atexit.register(shutil.rmtree, cache, True)            # however the script ends
    from numba.core import event

    from simstudy.config import StudyConfig, study_defaults
    from simstudy.runner import one_thread, run_replicate

    spans: list[tuple[str, float, float]] = []          # (kernel, start, end)
    opened: dict[int, tuple[str, float]] = {}

    class Listener(event.Listener):
        def on_start(self, ev):
            opened[id(ev.data["dispatcher"])] = (ev.data["dispatcher"].py_func.__module__.rsplit(
                ".", 1)[-1] + "." + ev.data["dispatcher"].py_func.__name__, time.perf_counter())

        def on_end(self, ev):
            name, t0 = opened.pop(id(ev.data["dispatcher"]))
            spans.append((name, t0, time.perf_counter()))

    from simstudy.errors import ConfigError
    methods = a.methods.split(",") if a.methods else list(study_defaults()["methods"])
    try:
        cfg = StudyConfig.from_config({"design": {"name": "design1"}, "J": [4], "n_j": [8],
                                       "reps": 1, "methods": methods})
    except ConfigError as exc:
        raise SystemExit(f"compile_times.py: {exc}") from None
    t0 = time.perf_counter()
    with event.install_listener("numba:compile", Listener()), one_thread():
        run_replicate(cfg, cfg.designs[0], 4, 8, 0)
    wall = time.perf_counter() - t0
    # own time: a span minus the spans nested inside it
    own = {}
    for i, (name, s, e) in enumerate(spans):
        inner = sum(e2 - s2 for j, (_, s2, e2) in enumerate(spans)
                    if j != i and s <= s2 and e2 <= e and not any(
                        k not in (i, j) and s <= s3 <= s2 and e2 <= e3 <= e
                        for k, (_, s3, e3) in enumerate(spans)))
        own[name] = own.get(name, 0.0) + (e - s - inner)
    print(f"{len(spans)} compiles, {sum(own.values()):.1f} s of {wall:.1f} s "
          f"(one replicate of {', '.join(methods)}; J=4, n_j=8)")
    for name, t in sorted(own.items(), key=lambda kv: -kv[1])[:a.top]:
        print(f"{t:7.2f} s  {name}")
    mods: dict[str, float] = {}
    for name, t in own.items():
        mods[name.split(".")[0]] = mods.get(name.split(".")[0], 0.0) + t
    print("by module: " + ", ".join(f"{m} {t:.1f} s" for m, t in
                                     sorted(mods.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    sys.exit(main())
