# Reference fits from R glmnet for the weighted-lasso engine and the weighting estimators.
# Run:  Rscript scripts/make_glmnet_fixtures.R   (writes tests/fixtures/glmnet_reference.json)
# thresh = 1e-14 so that R's answers are exact to ~1e-10 and a 1e-6 comparison tests our
# engine, not glmnet's default convergence tolerance (1e-7).
suppressPackageStartupMessages({library(glmnet); library(jsonlite)})
set.seed(20240611)
out <- list()
n <- 200; p <- 8
X <- matrix(rnorm(n * p), n, p); X[, 2] <- X[, 2] * 3 + 1; X[, 5] <- rbinom(n, 1, 0.3)
y <- drop(1 + X %*% c(1, -0.5, 0, 0, 0.8, 0, 0.2, 0) + rnorm(n))
w <- runif(n, 0.2, 3)
pf <- c(0, 0, 1, 1, 1, 1, 2, 0.5)
foldid <- sample(rep(1:5, length.out = n))
path_summary <- function(fit) list(lambda = fit$lambda, a0 = unname(fit$a0),
  beta = unname(as.matrix(fit$beta)), dev_ratio = fit$dev.ratio, nulldev = fit$nulldev)
for (intercept in c(TRUE, FALSE)) {
  tag <- if (intercept) "intercept" else "nointercept"
  fit <- glmnet(X, y, weights = w, penalty.factor = pf, intercept = intercept, thresh = 1e-14)
  cv <- cv.glmnet(X, y, weights = w, penalty.factor = pf, intercept = intercept, foldid = foldid,
                  thresh = 1e-14)
  out[[tag]] <- c(path_summary(fit), list(cvm = cv$cvm, cvsd = cv$cvsd,
    lambda_min = cv$lambda.min, lambda_1se = cv$lambda.1se,
    coef_min = unname(as.vector(coef(cv, s = "lambda.min")))))
}
# unweighted, penalty factor 1 (for the scikit-learn comparison too)
fit <- glmnet(X, y, thresh = 1e-14)
out$plain <- path_summary(fit)
# p > n: lambda.min.ratio 1e-2
Xw <- matrix(rnorm(30 * 50), 30, 50); yw <- rnorm(30) + Xw[, 1]
out$wide <- path_summary(glmnet(Xw, yw, thresh = 1e-14))
out$data <- list(X = X, y = y, w = w, pf = pf, foldid = foldid, Xw = Xw, yw = yw)

# the weighting estimators on the Design-2 fixture (SPEC 4): x~ = T~ (1, V), no glmnet intercept,
# weights 1/p (treated) or 1/(1-p), y minus the augmentation, cv.glmnet lambda.min
d <- read.csv("tests/fixtures/design2_25x25.csv")
d$site <- factor(d$site)
Tt <- 2 * d$T - 1
pj <- ave(d$T, d$site)
S <- model.matrix(~ site, d)[, -1]
V <- as.matrix(d[, c("X3", "X4", "X5")])
aug <- fitted(lm(Y ~ X1 + X2 + X3 + X4 + X5, d))
augID <- fitted(lm(Y ~ X1 + X2 + X3 + X4 + X5 + site, d))
fold_w <- sample(rep(1:5, length.out = nrow(d)))
est <- function(p, yadj, M, pfM) {
  xt <- Tt * cbind(1, M)
  wt <- 1 / (Tt * p + (1 - Tt) / 2)
  cv <- cv.glmnet(xt, yadj, weights = wt, intercept = FALSE, penalty.factor = c(0, pfM),
                  foldid = fold_w, thresh = 1e-14)
  list(coef = unname(as.vector(coef(cv, s = "lambda.min")))[-1], lambda_min = cv$lambda.min,
       cvm = cv$cvm, lambda = cv$lambda)
}
pbar <- mean(d$T)
out$weighting <- list(
  foldid = fold_w,
  W_base = est(pbar, d$Y, V, rep(1, 3)),
  W_noaug = est(pj, d$Y, V, rep(1, 3)),
  W_aug = est(pj, d$Y - aug, V, rep(1, 3)),
  W_augID = est(pj, d$Y - augID, V, rep(1, 3)),
  WS_noaug = est(pj, d$Y, cbind(V, S), c(0, 0, 0, rep(1, ncol(S)))),
  WS_aug = est(pj, d$Y - aug, cbind(V, S), c(0, 0, 0, rep(1, ncol(S)))),
  WS_augID = est(pj, d$Y - augID, cbind(V, S), c(0, 0, 0, rep(1, ncol(S)))))
out$versions <- list(R = R.version.string, glmnet = as.character(packageVersion("glmnet")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = FALSE),
           "tests/fixtures/glmnet_reference.json")
