"""Write tests/fixtures/design_fingerprints.json: per column of the replicates the four paper
designs draw for fixed seeds and sizes, its length, sum, sum of squares and three values.
tests/test_design_plugins.py checks that the designs still draw these replicates (a regression
guard, beside the independent design tests), to 1e-12 relative.

Why not a hash of the bytes (the guard's first form, made from the code before the design
registry of issue 15): Design 3's nonlinear main effect goes through np.exp, whose last bit
depends on numpy's version and the CPU's vector unit (numpy 2.4 on a newer machine moved
design 3's bytes, not its draws); a fingerprint with a tolerance tells the two apart. This
file was regenerated from the commit whose byte hashes still matched designs 1, 2 and 4.

    python scripts/make_design_fingerprints.py
"""
import json
from pathlib import Path

import numpy as np

from simstudy.config import StudyConfig
from simstudy.runner import simulate_replicate

CASES = [(d, J, n, r) for d in ("design1", "design2", "design3", "design4")
         for J, n in ((25, 25), (6, 40)) for r in (0, 7)]


def fingerprint(rep) -> dict:
    out = {}
    for part in ("train", "test", "truth"):
        frame = getattr(rep, part)
        cols = {}
        for c in frame.columns:
            x = frame[c].to_numpy(float)
            cols[str(c)] = [x.size, float(x.sum()), float(x @ x),
                            *(float(x[i]) for i in (0, x.size // 2, -1))]
        out[part] = cols
    return out


def fingerprints() -> dict:
    from simstudy.designs import preset
    out = {}
    for d, J, n, r in CASES:
        cfg = StudyConfig.from_config({"design": preset(d),
                                       "J": [J], "n_j": [n], "reps": r + 1, "methods": ["oracle"]})
        out[f"{d}/{J}x{n}/{r}"] = fingerprint(simulate_replicate(cfg, cfg.designs[0], J, n, r))
    return out


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "design_fingerprints.json"
    path.write_text(json.dumps(fingerprints(), indent=1) + "\n")
    print(f"wrote {path}")
