"""Benchmark: our policy-tree search vs mcf's OptimalPolicy (policy tree) on the same scores.

    python scripts/bench_policytree.py --mcf-python /path/to/mcf-venv/bin/python [--timeout 900]

mcf is not a dependency: install it in a separate virtual environment, e.g.
    python3.12 -m venv /tmp/mcfvenv && /tmp/mcfvenv/bin/python -m pip install mcf psutil
(mcf 0.9 needs Python >= 3.12). Each case draws X ~ N(0, I_p) and scores
Gamma_d = X_d + N(0, 1) (d < D), writes them to a file, runs mcf in a subprocess
(scripts/_mcf_worker.py, one process, `gen_mp_parallel=1`) and our search in this process,
single-threaded as mcf, with the same candidate thresholds: A = 100 order statistics at evenly
spaced ranks at EVERY level (mcf 0.9's code; `halve_split_points=False`) and mcf's default
minimum leaf size 0.1 n / (2 depth). Our search is exact over those candidates and mcf's tree
is one of them, so our welfare must be >= mcf's; the table checks it. Depth 1 = one split
(mcf 0.9's `pt_depth_tree_1` counts the same way; `pt_depth_tree_2=0`). Also printed: our time with 2 threads and with the paper's per-level
halving (A, A/2, A/4: simstudy's default).

mcf is slow (minutes for depth 2 at n = 1000): a case that exceeds --timeout is reported as
"> timeout" and the ratio as a lower bound; larger n with the same (p, D, depth) is then not
attempted (mcf's time grows with n) and also reported as a lower bound. A second block runs
depth 3 with A = 10 where mcf finishes, to give measured depth-3 ratios.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from simstudy.engines.treesearch import PolicyTreeSearch

WORKER = Path(__file__).with_name("_mcf_worker.py")


def case_data(n, p, D, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    G = X[:, :D] + rng.normal(size=(n, D))
    return X, G


def ours(X, G, depth, A, min_leaf, threads, halve=False):
    numba.set_num_threads(threads)
    search = PolicyTreeSearch(depth, min_leaf, A, halve_split_points=halve)
    t = time.perf_counter()
    tree = search.fit(X, G)
    return time.perf_counter() - t, tree.predict(X)


def run_mcf(python, X, G, depth, A, min_leaf, timeout, tmp):
    case, out = Path(tmp) / "case.npz", Path(tmp) / "out.json"
    out.unlink(missing_ok=True)
    np.savez(case, X=X, G=G, depth=depth, A=A, min_leaf=min_leaf, threads=1)
    try:
        proc = subprocess.run([python, str(WORKER), str(case), str(out)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, None, None
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"mcf failed:\n{proc.stderr[-3000:]}")
    res = json.loads(out.read_text())
    return res["seconds"], np.asarray(res["allocation"]), res["version"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mcf-python", required=True, help="python of a venv with mcf installed")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per mcf run")
    ap.add_argument("--out", default="results/bench_policytree.md", help="markdown copy of the table")
    ap.add_argument("--blocks", default="a100,a10", help="which case blocks: a100, a10 or both")
    args = ap.parse_args()
    X, G = case_data(200, 3, 2, 0)                       # compile the kernels
    ours(X, G, 3, 10, 5, 1)
    ours(X, G, 3, 10, 5, 2)
    blocks = [("a100", "A = 100", 100, [(n, p, D, depth) for depth in (2, 3) for p in (5, 10)
                                        for D in (2, 3) for n in (1000, 5000, 20000)]),
              ("a10", "A = 10 (depth 3 where mcf finishes)", 10,
               [(n, p, D, 3) for p in (5, 10) for D in (2, 3) for n in (1000, 5000)])]
    wanted = set(args.blocks.split(","))
    blocks = [b[1:] for b in blocks if b[0] in wanted]
    head = (f"| {'n':>6} | {'p':>3} | {'D':>2} | depth | {'ours s':>8} | {'ours 2 thr s':>12} | "
            f"{'ours halving s':>14} | {'mcf s':>9} | {'ratio':>9} | {'welfare ours':>12} | "
            f"{'welfare mcf':>11} | ours >= mcf |")
    rule = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    lines = []
    version = None

    def emit(line):
        print(line, flush=True)
        lines.append(line)

    with tempfile.TemporaryDirectory() as tmp:
        for title, A, cases in blocks:
            emit(f"\n{title}\n")
            emit(head)
            emit(rule)
            timed_out = set()
            for n, p, D, depth in cases:
                X, G = case_data(n, p, D, seed=n + 10 * p + 100 * D + 1000 * depth)
                min_leaf = max(1, int(0.1 * n / (2 * depth)))
                t1, a1 = ours(X, G, depth, A, min_leaf, 1)
                t2, a2 = ours(X, G, depth, A, min_leaf, 2)
                assert np.array_equal(a1, a2), "thread count changed the tree"
                th, _ = ours(X, G, depth, A, min_leaf, 2, halve=True)
                w_ours = G[np.arange(n), a1].mean()
                key = (p, D, depth)
                if key in timed_out:
                    tm, am = None, None
                else:
                    tm, am, v = run_mcf(args.mcf_python, X, G, depth, A, min_leaf,
                                        args.timeout, tmp)
                    version = v or version
                    if tm is None:
                        timed_out.add(key)
                if tm is None:
                    mcf_s, ratio = f"> {args.timeout:.0f}", f"> {args.timeout / t1:.0f}x"
                    w_mcf, ok = "-", "-"
                else:
                    w = G[np.arange(n), am].mean()
                    mcf_s, ratio = f"{tm:.1f}", f"{tm / t1:.0f}x"
                    w_mcf, ok = f"{w:.5f}", "yes" if w_ours >= w - 1e-12 else "NO"
                emit(f"| {n:>6} | {p:>3} | {D:>2} | {depth:>5} | {t1:>8.3f} | {t2:>12.3f} | "
                     f"{th:>14.3f} | {mcf_s:>9} | {ratio:>9} | {w_ours:>12.5f} | {w_mcf:>11} | "
                     f"{ok:>11} |")
    note = (f"\nmcf {version or '(version not reached)'} in {args.mcf_python}; one run per case on "
            f"this machine; timeout {args.timeout:.0f} s per mcf run.\n")
    emit(note)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("# Policy-tree search: simstudy vs mcf\n\n"
                              "`python scripts/bench_policytree.py --mcf-python "
                              f"{args.mcf_python} --timeout {args.timeout:.0f}`\n"
                              + "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
