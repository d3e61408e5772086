# R grf's causal forest with site clusters as a simstudy method (issue 44, worked example b): the
# reference implementation simstudy's CF is compared with (scripts/compare_grf.py), in one study:
#   R_LIBS=~/R-grf simstudy run design=tree J=25 n_j=40 reps=20 'methods=[CF,R-CF]' \
#       'plugins=[r:experiments/r/R-CF.R]'
# (grf from ../shared/tools/install_grf.sh or CRAN). causal_forest(X, Y, W, W.hat = the site's
# treated share, clusters = site), grf's own Y.hat; benefit score = tau(x). set.seed (done by
# simstudy before fit) fixes grf's seed argument, so a replicate is reproducible.

defaults <- list(covariates = c("X1", "X2", "X3", "X4", "X5"), num_trees = 500L)

fit <- function(train, options) {
  suppressPackageStartupMessages(library(grf))
  X <- as.matrix(train[, options$covariates, drop = FALSE])
  W.hat <- ave(train$T, train$site)                       # randomisation within sites
  forest <- causal_forest(X, train$Y, train$T, W.hat = W.hat,
                          clusters = as.integer(factor(train$site)),
                          num.trees = as.integer(options$num_trees),
                          seed = sample.int(.Machine$integer.max, 1))
  list(forest = forest, covariates = options$covariates)
}

score <- function(fitted, frame) {
  X <- as.matrix(frame[, fitted$covariates, drop = FALSE])
  predict(fitted$forest, X)$predictions
}
