"""What a result was computed with (issue 26): simstudy's version and source commit, Python, the
numerical libraries and their BLAS, the machine and the date. Stored in a study's config.yaml
(`provenance`, with the run's wall and CPU time) and shown in summary.md and report.html."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("numpy", "pandas", "scipy", "statsmodels", "scikit-learn", "numba", "joblib",
            "hydra-core", "matplotlib")


def version(pkg: str) -> str | None:
    from importlib import metadata
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit of the simstudy source tree when it is a git checkout (an editable install),
    marked when its code or config has uncommitted changes."""
    here = Path(__file__).resolve().parents[1]
    if not (here / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--",
                                "simstudy", "conf"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def blas() -> str | None:
    """The BLAS numpy calls (threadpoolctl's view: library and version)."""
    try:
        from threadpoolctl import threadpool_info
        libs = [f"{i.get('internal_api')} {i.get('version') or ''}".strip()
                for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(dict.fromkeys(libs)) or None
    except Exception:                                              # noqa: BLE001
        return None


def facts() -> dict[str, str]:
    """Plain strings only (config.yaml stays readable)."""
    out = {"simstudy": version("simstudy") or "unknown", "source commit": git_commit(),
           "python": sys.version.split()[0], "platform": platform.platform(),
           "cores": str(os.cpu_count()), "blas": blas(),
           "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    out.update({pkg: version(pkg) for pkg in PACKAGES})
    return {k: str(v) for k, v in out.items() if v is not None}
