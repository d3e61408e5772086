#!/usr/bin/env bash
# The study beyond the paper (issue 24; experiments/beyond.yaml): 7 designs x (J, n_j) in
# {(25,25), (25,150), (150,25)} x 500 replicates (the paper's protocol) x the 14 estimators + PT + CF, DR, PT-CF + the
# references, into one store, then its report (paired differences against Q-fe). Resumable:
# run it again after an interruption.
# Extra arguments are Hydra overrides for every part, e.g. `n_jobs=4` or `reps=50`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=results/beyond/store
start=$(date +%s)
run() { simstudy run -m --config-dir experiments --config-name beyond "out=$out" "$@"; }
run "$@"                                   # 6 designs at (25, 25) and (25, 150)
run J=150 n_j=25 "$@"                      # ... and at (150, 25)
# the observed site moderator W: offered to every rule as covariate, moderator and tree feature
W=(design=site_moderator 'method_defaults.covariates=[X1,X2,X3,X4,X5,W]'
   'method_defaults.moderators=[X1,X2,X3,X4,X5,W]' 'method_options.PT.features=[X1,X2,X3,X4,X5,W]'
   'method_options.PT-CF.features=[X1,X2,X3,X4,X5,W]')
run "${W[@]}" "$@"
run "${W[@]}" J=150 n_j=25 "$@"
simstudy report "$out" --reference Q-fe
mkdir -p results/beyond
cp "$out"/summary.csv "$out"/summary.md "$out"/failures.csv "$out"/config.yaml \
   "$out"/comparison.csv "$out"/comparison.md "$out"/measures.csv "$out"/report.html \
   "$out"/headline.csv "$out"/warnings.csv results/beyond/
rm -rf results/beyond/figures && cp -r "$out"/figures results/beyond/
python scripts/beyond_reading.py results/beyond           # the headline table: READING.md
echo "beyond study finished in $(( $(date +%s) - start )) s; outputs in results/beyond/"
