"""Run mcf's OptimalPolicy (policy tree) on one benchmark case; used by bench_policytree.py.

Runs in a separate virtual environment that has `mcf` installed (it is not a dependency of
simstudy). Usage: python _mcf_worker.py CASE.npz OUT.json
CASE.npz holds X (n x p), G (n x D), depth (ours: 1 = one split), A, min_leaf, threads.
Prints nothing; writes {"seconds": solve time, "allocation": [...], "version": mcf version}.
"""
import json
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from importlib.metadata import version
from mcf import OptimalPolicy


def main(case, out):
    z = np.load(case)
    X, G = z["X"], z["G"]
    n, p = X.shape
    D = G.shape[1]
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(p)])
    for d in range(D):
        df[f"score{d}"] = G[:, d]
    df["id"] = np.arange(n)
    with tempfile.TemporaryDirectory() as tmp:
        op = OptimalPolicy(
            gen_method="policy_tree", var_polscore_name=[f"score{d}" for d in range(D)],
            var_x_name_ord=[f"x{j}" for j in range(p)], var_id_name="id",
            pt_depth_tree_1=int(z["depth"]),   # mcf 0.9: depth 1 = two leaves, as ours
            pt_depth_tree_2=0,                  # no second (sequential) tree
            pt_min_leaf_size=int(z["min_leaf"]),
            pt_no_of_evalupoints=int(z["A"]), gen_mp_parallel=int(z["threads"]),
            gen_outpath=tmp, _int_with_output=False, _int_report=False,
            gen_variable_importance=False)
        t0 = time.perf_counter()
        res = op.solve(df, data_title="train")
        seconds = time.perf_counter() - t0
    alloc = res["allocation_df"]["Policy Tree"].to_numpy().astype(int).tolist()
    json.dump({"seconds": seconds, "allocation": alloc, "version": version("mcf")}, open(out, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
