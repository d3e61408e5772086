# R side of scripts/compare_grf.py (issue 24): for each dataset DIR/<k>_train.csv / _test.csv
# fit grf's causal_forest(X, Y, W, W.hat = the site's treated share, clusters = site) twice —
# with grf's own Y.hat (its regression forest on X, clusters) and with simstudy's Y.hat (column
# m) — and write DIR/<k>_grf.csv (test CATEs) and DIR/<k>_grf_ate.csv (ATE, SE), plus the
# policytree on double_robust_scores(cf) (depth 2, split.step for ~100 split points) and its
# actions on the test rows. Needs grf and policytree (../shared/tools/install_grf.sh).
#   R_LIBS=~/R-grf Rscript scripts/compare_grf.R DIR NUM_TREES
suppressPackageStartupMessages({library(grf); library(policytree)})
args <- commandArgs(trailingOnly = TRUE)
dir <- args[1]; num.trees <- as.integer(args[2])
for (f in sort(Sys.glob(file.path(dir, "*_train.csv")))) {
  k <- sub("_train.csv$", "", basename(f))
  tr <- read.csv(f); te <- read.csv(file.path(dir, paste0(k, "_test.csv")))
  xs <- grep("^(X[0-9]+|W)$", names(tr), value = TRUE)
  X <- as.matrix(tr[, xs]); Xt <- as.matrix(te[, xs])
  seed <- as.integer(sub(".*_", "", k))
  cf_own <- causal_forest(X, tr$Y, tr$T, W.hat = tr$e, clusters = tr$site,
                          num.trees = num.trees, seed = seed)
  cf_m <- causal_forest(X, tr$Y, tr$T, Y.hat = tr$m, W.hat = tr$e, clusters = tr$site,
                        num.trees = num.trees, seed = seed)
  step <- max(1, floor(nrow(tr) / 100))
  pt <- policy_tree(X, double_robust_scores(cf_m), depth = 2, split.step = step)
  out <- data.frame(tau_own = predict(cf_own, Xt)$predictions,
                    tau_m = predict(cf_m, Xt)$predictions,
                    pt_action = predict(pt, Xt) - 1)
  write.csv(out, file.path(dir, paste0(k, "_grf.csv")), row.names = FALSE)
  a1 <- average_treatment_effect(cf_own); a2 <- average_treatment_effect(cf_m)
  write.csv(data.frame(ate_own = a1[[1]], se_own = a1[[2]], ate_m = a2[[1]], se_m = a2[[2]]),
            file.path(dir, paste0(k, "_grf_ate.csv")), row.names = FALSE)
}
