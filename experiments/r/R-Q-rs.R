# Q-rs written in R with lme4 (Suk & Park, Section 3.2; docs/estimators.md): the paper's
# random-slope Q-learning rule, as a simstudy method (README "Your estimator in R"):
#   simstudy run ... 'methods=[Q-rs,R-Q-rs]' 'plugins=[r:experiments/r/R-Q-rs.R]'
# lmer(Y ~ X1 + ... + X5 + T + T:X3 + T:X4 + T:X5 + (1 + T | site)), REML (lmer's default);
# benefit score = (b_T + u_1j) + V'b_{T:V}, u_1j the site's predicted random slope (BLUP; 0 for
# a site it never saw).

defaults <- list(covariates = c("X1", "X2", "X3", "X4", "X5"),
                 moderators = c("X3", "X4", "X5"))

fit <- function(train, options) {
  suppressPackageStartupMessages(library(lme4))
  train$site <- factor(train$site)
  rhs <- c(options$covariates, "T", paste0("T:", options$moderators), "(1 + T | site)")
  model <- lmer(reformulate(rhs, response = "Y"), data = train, REML = TRUE)
  list(model = model, moderators = options$moderators)
}

score <- function(fitted, frame) {
  b <- lme4::fixef(fitted$model)
  slope <- lme4::ranef(fitted$model)$site[as.character(frame$site), "T"]
  slope[is.na(slope)] <- 0                          # a new site: the fixed part alone
  m <- fitted$moderators
  terms <- ifelse(paste0("T:", m) %in% names(b), paste0("T:", m), paste0(m, ":T"))  # lme4 may
  V <- as.matrix(frame[, m, drop = FALSE])                                          # write X3:T
  as.numeric(b["T"] + slope + V %*% b[terms])
}
