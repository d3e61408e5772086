"""The benefit scores of every rule on the paper-store sample (designs 1-4 x J, n_j in {25, 150}
x replicates 0-3, the default study's rules), saved to one .npz, and the comparison of two such
files: the exactness check of a speed change (issue 27: every decision identical, every score
within 1e-8 relative to the largest score of its rule and replicate).

    python scripts/score_snapshot.py save /tmp/before.npz      # on the commit before
    python scripts/score_snapshot.py save /tmp/after.npz       # on the commit after
    python scripts/score_snapshot.py compare /tmp/before.npz /tmp/after.npz
"""
import sys

import numpy as np
import yaml

from simstudy.config import StudyConfig
from simstudy.fitting import fit_and_score, method_seed
from simstudy.methods.registry import shared_reads
from simstudy.runner import one_thread, simulate_replicate

DESIGNS = ["design1", "design2", "design3", "design4"]
SIZES = [(25, 25), (25, 150), (150, 25), (150, 150)]
REPS = 4
METHODS = [m for m in yaml.safe_load(open("conf/config.yaml"))["methods"]
           if m not in ("oracle", "treat-all", "treat-none")]


def save(path: str) -> None:
    scores = {}
    with one_thread():
        for name in DESIGNS:
            cfg = StudyConfig.from_config({"design": {"name": name}, "J": [25], "n_j": [25],
                                           "reps": REPS, "methods": METHODS})
            design = cfg.designs[0]
            for J, n in SIZES:
                for r in range(REPS):
                    rep = simulate_replicate(cfg, design, J, n, r)
                    with shared_reads():
                        for m in cfg.methods:
                            seed = method_seed(cfg.seed, design.name, J, n, r, m)
                            fit = fit_and_score(m, rep.train, rep.test, seed)
                            key = f"{name}|{J}|{n}|{r}|{m}"
                            scores[key] = (fit.score if fit.error is None
                                           else np.array([np.nan]))
        print(f"{len(scores)} score vectors", flush=True)
    np.savez_compressed(path, **scores)


def compare(a: str, b: str, rel: float = 1e-8) -> int:
    A, B = np.load(a), np.load(b)
    bad, flips, worst = [], 0, 0.0
    for key in A.files:
        x, y = A[key], B[key]
        if x.shape != y.shape:
            bad.append(f"{key}: shape {x.shape} vs {y.shape}")
            continue
        if np.isnan(x).any() or np.isnan(y).any():
            if not np.array_equal(np.isnan(x), np.isnan(y)):
                bad.append(f"{key}: a failed fit in one of them")
            continue
        scale = max(np.abs(x).max(), 1e-300)
        d = np.abs(x - y).max() / scale
        worst = max(worst, d)
        f = int(np.count_nonzero((x > 0) != (y > 0)))
        flips += f
        if d > rel or f:
            bad.append(f"{key}: max relative difference {d:.2e}, {f} decisions differ")
    same = sum(np.array_equal(A[k], B[k]) for k in A.files)
    print(f"{len(A.files)} score vectors: {same} bit-identical; largest relative difference "
          f"{worst:.2e}; {flips} decisions differ")
    for line in bad[:20]:
        print("  ", line)
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "save":
        save(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
