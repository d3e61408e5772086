"""Write tests/fixtures/design_hashes.json: sha256 of the replicates the four paper designs draw
for fixed seeds and sizes. Made once from the code BEFORE the design registry (issue 15), so
tests/test_design_plugins.py can check that the registry and the new design options left the
paper designs' draws bit-identical (a regression guard, beside the independent design tests).

    python scripts/make_design_hashes.py
"""
import hashlib
import json
from pathlib import Path

import numpy as np

from simstudy.config import StudyConfig
from simstudy.runner import simulate_replicate

CASES = [(d, J, n, r) for d in ("design1", "design2", "design3", "design4")
         for J, n in ((25, 25), (6, 40)) for r in (0, 7)]


def digest(rep) -> str:
    h = hashlib.sha256()
    for frame in (rep.train, rep.test, rep.truth):
        h.update(",".join(frame.columns).encode())
        h.update(np.ascontiguousarray(frame.to_numpy(float)).tobytes())
    return h.hexdigest()


def hashes() -> dict:
    from simstudy.designs import preset
    out = {}
    for d, J, n, r in CASES:
        cfg = StudyConfig.from_config({"design": preset(d),
                                       "J": [J], "n_j": [n], "reps": r + 1, "methods": ["oracle"]})
        out[f"{d}/{J}x{n}/{r}"] = digest(simulate_replicate(cfg, cfg.designs[0], J, n, r))
    return out


if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "design_hashes.json"
    path.write_text(json.dumps(hashes(), indent=1) + "\n")
    print(f"wrote {path}")
