"""The numerical kernels' first compile, in one place: whether they are cached on disk, what each
method's family costs to compile, and the schedule a first run follows (each family compiled
once, by one worker, the costliest first: runner._parallel, apply's warm-up). numba compiles a
kernel the first time it runs and caches it (NUMBA_CACHE_DIR or __pycache__ beside
simstudy/engines); `scripts/compile_times.py` measures the costs."""
from __future__ import annotations

import os

from .methods.registry import FAMILIES, REGISTRY


def kernels_cached(*kernels: str) -> bool:
    """Are the compiled numba kernels on disk (numba's cache: NUMBA_CACHE_DIR, or __pycache__
    beside simstudy/engines)? False on a first run, or after the engines changed. `kernels`:
    more to look for (module.function, e.g. the deeper tree levels apply searches)."""
    from pathlib import Path
    root = os.environ.get("NUMBA_CACHE_DIR")
    where = Path(root) if root else Path(__file__).parent / "engines" / "__pycache__"
    return where.is_dir() and all(any(where.rglob(f"{k}*.nbi"))
                                  for k in ("treebound", "lasso", *kernels))


def compile_cost(name: str) -> float:
    """The registered method's `compile_cost` (1 for a name not registered)."""
    cls = REGISTRY.get(name, (None,))[0]
    return float(getattr(cls, "compile_cost", 1.0))


# what every compiling process pays besides the methods' own kernels (imports, the design's
# data generation, the metrics, the seeds), seconds on the reference machine
COMPILE_BASE = 5.0


def compile_families(methods) -> list[list[str]]:
    """The methods grouped by family (a family's methods share their engine's kernels), the
    costliest family first: the order in which a first run compiles them."""
    groups: dict[str, list] = {}
    for m in methods:
        groups.setdefault(FAMILIES.get(m, m), []).append(m)
    return sorted(groups.values(), key=lambda ms: -max(map(compile_cost, ms)))


def compile_seconds(methods, workers: int) -> float:
    """Seconds a first run spends compiling `methods`' kernels on `workers` processes (on the
    reference machine): the families, costliest first, each to the worker free first, as the
    warm-up hands them out; every worker pays COMPILE_BASE."""
    load = [COMPILE_BASE] * max(1, int(workers))
    for ms in compile_families(methods):
        i = load.index(min(load))
        load[i] += max(map(compile_cost, ms))
    return max(load)
