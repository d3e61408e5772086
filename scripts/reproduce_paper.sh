#!/usr/bin/env bash
# Reproduce Suk & Park's simulation study (4 designs x 4 sizes x 500 replicates x 14 estimators)
# and its report. Resumable: run it again after an interruption and only the missing replicates
# are computed. Extra arguments are Hydra overrides, e.g. `n_jobs=4` or `reps=100`.
#   bash scripts/reproduce_paper.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/paper/store
start=$(date +%s)
simstudy run -m --config-dir experiments --config-name paper "out=$out" "$@"
# our numbers beside every statement of the paper's Section 5 / Appendix A; the report links it
python scripts/compare_paper.py "$out" "$out/COMPARISON.md"
simstudy report "$out" --reference Q-fe      # paired comparisons against Q-fe
# the small outputs that are committed: tables, figures, resolved config (not the Parquet store)
mkdir -p results/paper
cp "$out"/summary.csv "$out"/summary.md "$out"/failures.csv "$out"/config.yaml \
   "$out"/comparison.csv "$out"/comparison.md "$out"/measures.csv "$out"/nested_loop_accuracy.csv \
   "$out"/report.html "$out"/COMPARISON.md "$out"/headline.csv "$out"/warnings.csv \
   results/paper/
rm -rf results/paper/figures results/paper/congruence
cp -r "$out"/figures "$out"/congruence results/paper/
echo "reproduction finished in $(( $(date +%s) - start )) s; outputs in results/paper/"
