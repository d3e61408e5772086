#!/usr/bin/env bash
# Beyond the paper, round 2 (issue 41; experiments/beyond2.yaml): Design 2, tree and smooth at
# (25, 25) and (150, 25), 200 replicates, the 14 estimators + PT + CF, DR, PT-CF + references,
# four sweep points in one store (the same training data in all but who is treated):
#   1. the trial's sites, value claims, budget 0.3      (questions 2, 3, 4)
#   2. design.test_sites=new                            (question 1)
#   3. design.confounding={X1: 0.8}, the site share      (question 5)
#   4. the same with propensity=estimated for every rule that uses one and for the claims
# then the report and READING.md (scripts/beyond2_reading.py). Needs the ml extra. Resumable.
# Extra arguments are Hydra overrides for every part (e.g. n_jobs=4, reps=50); BEYOND2_OUT
# moves the outputs (default results/beyond2).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${BEYOND2_OUT:-results/beyond2}
out=$dest/store
start=$(date +%s)
run() { simstudy run -m --config-dir experiments --config-name beyond2 "out=$out" "$@"; }
run "$@"
run design.test_sites=new value_claims=none "$@"
C='design.confounding={X1: 0.8}'
run "$C" "$@"
E=()
for m in W-noaug W-aug W-augID WS-noaug WS-aug WS-augID PT CF DR PT-CF; do
  E+=("++method_options.$m.propensity=estimated")
done
run "$C" value_claims=estimated "${E[@]}" "$@"
simstudy report "$out" --reference Q-fe
mkdir -p "$dest"
cp "$out"/summary.csv "$out"/summary.md "$out"/failures.csv "$out"/config.yaml \
   "$out"/comparison.csv "$out"/comparison.md "$out"/measures.csv "$out"/report.html \
   "$out"/headline.csv "$out"/warnings.csv "$dest"/
[ -f "$out"/value_claims.csv ] && cp "$out"/value_claims.csv "$dest"/
rm -rf "$dest"/figures && cp -r "$out"/figures "$dest"/
python scripts/beyond2_reading.py "$dest"
echo "beyond2 study finished in $(( $(date +%s) - start )) s; outputs in $dest/"
