# Reference fits from R (lm, lme4::lmer) for the mixed-model engine and the Q-learning estimators.
# Run:  Rscript scripts/make_lme4_fixtures.R   (writes tests/fixtures/lme4_reference.json)
# The test suite reads the JSON; it never needs R.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
out <- list()
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5),
                    check.conv.singular = "ignore")
summarise_lmer <- function(fit) {
  vc <- as.data.frame(VarCorr(fit))
  re <- ranef(fit)[[1]]
  list(fixef = as.list(fixef(fit)), se = as.list(sqrt(diag(as.matrix(vcov(fit))))),
       theta = unname(getME(fit, "theta")), sigma = sigma(fit),
       varcorr = list(grp = vc$grp, var1 = vc$var1, var2 = vc$var2, sdcor = vc$sdcor),
       REML = isREML(fit), criterion = unname(if (isREML(fit)) REMLcrit(fit) else deviance(fit)),
       logLik = as.numeric(logLik(fit)), singular = isSingular(fit),
       ranef_names = colnames(re), ranef_groups = rownames(re), ranef = unname(as.matrix(re)))
}
summarise_lm <- function(fit) {
  cf <- coef(fit)
  list(coef = as.list(ifelse(is.na(cf), "NA", cf)), aliased = names(cf)[is.na(cf)],
       sigma = summary(fit)$sigma)
}
data(sleepstudy)
for (reml in c(TRUE, FALSE)) {
  tag <- if (reml) "REML" else "ML"
  out[[paste0("sleepstudy_ri_", tag)]] <- summarise_lmer(
    lmer(Reaction ~ Days + (1 | Subject), sleepstudy, REML = reml, control = ctrl))
  out[[paste0("sleepstudy_rs_", tag)]] <- summarise_lmer(
    lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = reml, control = ctrl))
}
write.csv(sleepstudy, "tests/fixtures/sleepstudy.csv", row.names = FALSE)

demean <- function(x, g) x - ave(x, g)
for (name in c("design2_25x25", "design1_25x25", "design2_12x40")) {
  d <- read.csv(sprintf("tests/fixtures/%s.csv", name))
  d$site <- factor(d$site)
  f <- Y ~ X1 + X2 + X3 + X4 + X5 + T + T:X3 + T:X4 + T:X5
  dm <- with(d, data.frame(Y = Y, site = site,
    X1 = demean(X1, site), X2 = demean(X2, site), X3 = demean(X3, site), X4 = demean(X4, site),
    X5 = demean(X5, site), T = demean(T, site), TX3 = demean(T * X3, site),
    TX4 = demean(T * X4, site), TX5 = demean(T * X5, site)))
  dm$Ydm <- demean(d$Y, d$site)
  fdm <- ~ X1 + X2 + X3 + X4 + X5 + T + TX3 + TX4 + TX5
  res <- list()
  res$Q_base <- summarise_lm(lm(f, d))
  res$Q_fe <- summarise_lm(lm(update(f, . ~ . + site), d))
  res$Q_ri <- summarise_lmer(lmer(update(f, . ~ . + (1 | site)), d, control = ctrl))
  res$Q_rs <- summarise_lmer(lmer(update(f, . ~ . + (T | site)), d, control = ctrl))
  res$Q_dm <- summarise_lm(lm(update(fdm, Ydm ~ .), dm))
  res$Q_dm_ri <- summarise_lmer(lmer(update(fdm, Y ~ . + (1 | site)), dm, control = ctrl))
  res$Q_dm_rs <- summarise_lmer(lmer(update(fdm, Y ~ . + (T | site)), dm, control = ctrl))
  res$Q_rs_ML <- summarise_lmer(lmer(update(f, . ~ . + (T | site)), d, REML = FALSE, control = ctrl))
  out[[name]] <- res
}
# rank-deficient fixed effects: a copy of X1 and a site-level constant column
d <- read.csv("tests/fixtures/design2_12x40.csv"); d$site <- factor(d$site)
d$X1copy <- 2 * d$X1
out$rankdef_lm <- summarise_lm(lm(Y ~ X1 + X1copy + X2 + T, d))
out$rankdef_lmer <- summarise_lmer(lmer(Y ~ X1 + X1copy + X2 + T + (T | site), d, control = ctrl))
out$versions <- list(R = R.version.string, lme4 = as.character(packageVersion("lme4")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE),
           "tests/fixtures/lme4_reference.json")
