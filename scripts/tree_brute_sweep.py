"""Many random small cases of the policy-tree search against the plain recursion of the tests
(`tests/test_treesearch.py::brute_rec`): the reported reward, the reward the returned tree
achieves and the brute-force optimum must agree. The test suite checks a fixed 30 of these
(derandomized); this sweep is for a change to the search (CI found a tie-breaking bug at 16 in
10,000 cases of the categorical, 3-action, depth-2 shape).

    python scripts/tree_brute_sweep.py --cases 10000 --depth 2 --actions 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_treesearch import brute_rec  # noqa: E402

from simstudy.engines.treesearch import PolicyTreeSearch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--depth", type=int, default=2, choices=[1, 2, 3])
    ap.add_argument("--actions", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    a = ap.parse_args()
    n = {1: 16, 2: 12, 3: 9}[a.depth]
    bad = 0
    for seed in range(a.first_seed, a.first_seed + a.cases):
        rng = np.random.default_rng(seed)
        X = np.column_stack([rng.integers(0, 4, n) * 10.0, rng.integers(0, 3, n)])
        G = np.round(rng.normal(size=(n, a.actions)), 1)        # a 0.1 grid: many exact ties
        tree = PolicyTreeSearch(depth=a.depth, categorical=[0]).fit(X, G)
        achieved = G[np.arange(n), tree.predict(X)].sum()
        best = brute_rec(X, G, a.depth, categorical=[0])
        if not (np.isclose(tree.reward, achieved) and np.isclose(tree.reward, best)):
            bad += 1
            print(f"seed {seed}: reported {tree.reward:.6g}, achieved {achieved:.6g}, "
                  f"brute force {best:.6g}")
    print(f"{bad} of {a.cases} cases disagree (depth {a.depth}, {a.actions} actions, "
          f"n = {n}, seeds {a.first_seed}..{a.first_seed + a.cases - 1})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
