"""A study from Python, top to bottom (issue 28): run it, load it, read it, plot it.

    python experiments/api_example.py [--out results/api_example] [--reps 30]

The tree-shaped design (docs/designs.md): a depth-2 tree is the right rule, the paper's linear
Q-learning is not. Compares Q-fe, W-augID and the policy tree PT (+ the causal forest CF and
its policy tree PT-CF, 100 trees) against the oracle; writes the store,
report.html and a figure, and prints the summary and the paired differences from Q-fe.
"""
import argparse

import simstudy

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--out", default="results/api_example")
ap.add_argument("--reps", type=int, default=30)
args = ap.parse_args()

# 1. run (or resume: the same call again computes only what is missing)
# (the tree preset's `rules` give every rule X1..X5: no option needed for them to see the effect)
methods = ["Q-fe", "W-augID", "PT", "oracle"]
methods[3:3] = ["CF", "PT-CF"]                           # the causal forest and its policy tree
options = {"CF": {"num_trees": 100}, "PT-CF": {"num_trees": 100}}
study = simstudy.run_study("tree", J=25, n_j=25, reps=args.reps, n_jobs=2, methods=methods,
                           method_options=options, out=args.out, figures=True)

# 2. read: mean, SD and Monte Carlo SE per method (one row per method and condition)
summary = study.summary()
print(summary[["method", "reps", "accuracy_mean", "accuracy_se", "regret_mean"]]
      .to_string(index=False))

# 3. compare on the same replicates: each method minus Q-fe, with its MC SE and 95% interval
comp = study.compare("Q-fe")
print(comp[comp.metric == "accuracy"][["method", "mean_diff", "mcse", "ci_low", "ci_high"]]
      .to_string(index=False))

# 4. plot: the paper's boxplots (a matplotlib figure) and the one-page report
fig = study.plot("accuracy")
fig.savefig(f"{args.out}/accuracy_tree.png", dpi=120)
print(f"figure: {args.out}/accuracy_tree.png; open {args.out}/report.html for the full report")
