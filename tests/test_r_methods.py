"""Estimators written in R (issue 44): the R method adapter (simstudy/methods/rmethod.py) with
the paper's Q-rs in lme4 (experiments/r/R-Q-rs.R) as the worked example. Tests that run R skip
without R and rpy2 (`pip install 'simstudy[r]'`, Debian's r-base-core and r-cran-lme4); the
refusal without them runs everywhere."""
import builtins
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simstudy import ConfigError, make
from simstudy.designs import make_design

ROOT = Path(__file__).resolve().parents[1]
Q_RS = ROOT / "experiments" / "r" / "R-Q-rs.R"


def _r_available() -> bool:
    try:                              # through the adapter, which keeps the environment clean
        from simstudy.methods.rmethod import _r
        return bool(_r().r("isTRUE(requireNamespace('lme4', quietly = TRUE))")[0])
    except Exception:                                                # noqa: BLE001
        return False


needs_r = pytest.mark.skipif(not _r_available(), reason="R, rpy2 or lme4 not installed")


def test_without_rpy2_an_r_method_is_refused_naming_what_to_install(monkeypatch, tmp_path):
    from simstudy.methods import rmethod
    real = builtins.__import__

    def no_rpy2(name, *args, **kw):
        if name.startswith("rpy2"):
            raise ImportError("No module named 'rpy2'")
        return real(name, *args, **kw)
    monkeypatch.setattr(builtins, "__import__", no_rpy2)
    monkeypatch.setattr(rmethod, "_SOURCED", {})
    with pytest.raises(ConfigError, match=r"apt-get install r-base-core.*pip install "
                                          r"'simstudy\[r\]'"):
        rmethod.register_r("R-none", Q_RS)
    with pytest.raises(ConfigError, match="no R file"):
        rmethod.register_r("R-none", tmp_path / "missing.R")
    with pytest.raises(ConfigError, match="ending in .R"):
        rmethod.register_r_plugin("r:experiments/r/R-Q-rs.py")


@pytest.fixture(scope="module")
def r_methods(tmp_path_factory):
    """R-Q-rs and three small R methods: one that draws from R's RNG, one that fails on some
    replicates and warns on others, and one whose score is wrong on request."""
    from simstudy import register_r
    d = tmp_path_factory.mktemp("r")
    (d / "R-random.R").write_text(
        "fit <- function(train, options) list(shift = rnorm(1))\n"
        "score <- function(fitted, frame) frame$X3 + fitted$shift\n")
    (d / "R-moody.R").write_text(
        "defaults <- list(moderators = c('X3'), fail_above = 0.5)\n"
        "fit <- function(train, options) {\n"
        "  if (train$Y[1] > options$fail_above) stop('deliberate R failure')\n"
        "  if (train$Y[1] < 0) warning('deliberate R warning')\n"
        "  list(m = options$moderators)\n}\n"
        "score <- function(fitted, frame) frame[[fitted$m[1]]]\n")
    (d / "R-wrong.R").write_text(
        "defaults <- list(how = 'short')\n"
        "fit <- function(train, options) options$how\n"
        "score <- function(fitted, frame) switch(fitted, short = c(1, 2, 3),\n"
        "  na = rep(NA_real_, nrow(frame)), text = rep('a', nrow(frame)))\n")
    register_r("R-Q-rs", Q_RS, family="Q-learning")
    for name in ("R-random", "R-moody", "R-wrong"):
        register_r(name, d / f"{name}.R")
    return d


@needs_r
def test_an_r_method_passes_every_registered_methods_contract(r_methods):
    sys.path.insert(0, str(ROOT / "experiments"))
    from test_design_plugins import test_method_contract
    rep = make_design({}).simulate(np.random.default_rng(7), 8, 24)
    for name in ("R-Q-rs", "R-random"):
        test_method_contract(name, rep)


@needs_r
def test_r_q_rs_decides_as_simstudys_q_rs(r_methods):
    """lme4's lmer and simstudy's Q-rs on the same replicates: decisions identical on at least
    99.9% of test rows (Design 2, (25, 25); (150, 150) in scripts/bench_r_method.py)."""
    agree, rows = 0, 0
    for r in range(5):
        rep = make_design({"beta1": 0.2}).simulate(np.random.default_rng(r), 25, 25)
        a = make("R-Q-rs").fit(rep.train).benefit_score(rep.test)
        b = make("Q-rs").fit(rep.train).benefit_score(rep.test)
        agree += int(((a > 0) == (b > 0)).sum())
        rows += len(a)
        assert np.abs(a - b).max() < 1e-3
    assert agree / rows >= 0.999


@needs_r
def test_r_options_defaults_seed_warnings_errors_and_wrong_scores(r_methods):
    m = make("R-moody", {"moderators": ["X4"]}, {"covariates": ["X1"]})
    assert m.moderators == ["X4"] and m.fail_above == 0.5 and not hasattr(m, "covariates")
    rep = make_design({}).simulate(np.random.default_rng(1), 6, 20)
    # the same seed, the same R draws; another seed, others
    s1 = make("R-random", {"random_state": 5}).fit(rep.train).benefit_score(rep.test)
    s2 = make("R-random", {"random_state": 5}).fit(rep.train).benefit_score(rep.test)
    s3 = make("R-random", {"random_state": 6}).fit(rep.train).benefit_score(rep.test)
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    train = rep.train.copy()
    train.loc[0, "Y"] = 9.0
    with pytest.raises(RuntimeError, match="R method 'R-moody': fit\\(\\) stopped with: "
                                           "deliberate R failure"):
        make("R-moody").fit(train)
    train.loc[0, "Y"] = -1.0
    warned = make("R-moody").fit(train)
    assert warned.diagnostics() == {"warning": "deliberate R warning"}
    assert make("R-moody").fit(rep.train.assign(Y=0.1)).diagnostics() == {}
    for how, says in (("short", "returned 3 values for 120 rows"),
                      ("na", "120 NA or infinite values"), ("text", "not a numeric vector")):
        with pytest.raises(ValueError, match=f"R method 'R-wrong': score\\(\\) .*{says}"):
            make("R-wrong", {"how": how}).fit(rep.train).benefit_score(rep.test)
    with pytest.raises(ConfigError, match="unknown keys"):
        make("R-moody", {"nfolds": 3})


@needs_r
def test_an_r_study_error_rows_warnings_and_n_jobs(tmp_path, monkeypatch):
    """A study with plugins=[r:...]: R-Q-rs beside Q-rs, and an R method that fails on some
    replicates (error rows with R's message) and warns on others (the warning column);
    n_jobs=2 stores what n_jobs=1 stores."""
    from simstudy.cli import main
    from simstudy.store import read_metrics, read_congruence
    monkeypatch.chdir(ROOT)
    moody = tmp_path / "R-moody.R"
    moody.write_text(
        "fit <- function(train, options) {\n"
        "  if (train$Y[1] > 3) stop('deliberate R failure')\n"
        "  if (train$Y[1] < 0) warning('deliberate R warning')\n  NULL\n}\n"
        "score <- function(fitted, frame) frame$X3\n")
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"s{jobs}"
        code = main(["run", "design=design2", "J=10", "n_j=20", "reps=8", f"n_jobs={jobs}",
                     "methods=[Q-rs,R-Q-rs,R-moody]", f"plugins=[r:{Q_RS},r:{moody}]",
                     "progress=false", "figures=false", "probe=false", f"out={out}"])
        assert code == 0
        runs[jobs] = read_metrics(out).sort_values(["replicate", "method"]).reset_index(drop=True)
    m = runs[2]
    pd.testing.assert_frame_equal(m.drop(columns="seconds"), runs[1].drop(columns="seconds"))
    # a study stopped after 3 replicates and resumed stores what one run stores
    out = tmp_path / "resumed"
    for reps in (3, 8):
        assert main(["run", "design=design2", "J=10", "n_j=20", f"reps={reps}", "n_jobs=2",
                     "methods=[Q-rs,R-Q-rs,R-moody]", f"plugins=[r:{Q_RS},r:{moody}]",
                     "progress=false", "figures=false", "probe=false", f"out={out}"]) == 0
    resumed = read_metrics(out).sort_values(["replicate", "method"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), m.drop(columns="seconds"))
    moody_rows = m[m.method == "R-moody"]
    failed = moody_rows[moody_rows.status == "error"]
    assert len(failed) and failed["error"].str.contains("deliberate R failure").all()
    assert moody_rows["warning"].fillna("").str.contains("deliberate R warning").any()
    agree = read_congruence(tmp_path / "s2").query("method_a == 'Q-rs' and method_b == 'R-Q-rs'")
    assert agree["agreement"].min() >= 0.99


def _grf_available() -> bool:
    try:
        from simstudy.methods.rmethod import _r
        return bool(_r().r("isTRUE(requireNamespace('grf', quietly = TRUE))")[0])
    except Exception:                                                # noqa: BLE001
        return False


@pytest.mark.skipif(not _grf_available(), reason="R's grf not installed "
                    "(../shared/tools/install_grf.sh, then R_LIBS=~/R-grf)")
def test_r_grf_causal_forest_beside_simstudys_cf():
    """experiments/r/R-CF.R: grf's causal_forest with site clusters, seeded by simstudy; on the
    tree design its CATE ranks people as simstudy's CF does (Spearman > 0.7) and its rule
    beats the constant rules (accuracy 0.5) by far."""
    from scipy.stats import spearmanr
    from simstudy import register_r
    register_r("R-CF", ROOT / "experiments" / "r" / "R-CF.R")
    rep = make_design({"effect": "tree", "name": "tree"}).simulate(np.random.default_rng(3),
                                                                   25, 40)
    a = make("R-CF", {"random_state": 4, "num_trees": 200}).fit(rep.train)
    s = a.benefit_score(rep.test)
    again = make("R-CF", {"random_state": 4, "num_trees": 200}).fit(rep.train)
    assert np.array_equal(s, again.benefit_score(rep.test))
    cf = make("CF", {"random_state": 4, "num_trees": 200}).fit(rep.train).benefit_score(rep.test)
    assert spearmanr(s, cf)[0] > 0.7
    assert np.mean((s > 0) == rep.truth["d_opt"].to_numpy()) > 0.65


@needs_r
def test_a_broken_r_file_is_refused_in_one_line_naming_it(tmp_path):
    from simstudy import register_r
    (tmp_path / "bad.R").write_text("fit <- function(train, options) {\n")
    (tmp_path / "half.R").write_text("fit <- function(train, options) NULL\n")
    with pytest.raises(ConfigError, match=r"bad.R: sourcing it failed: .*unexpected end of "
                                          r"input.*; fix the file") as err:
        register_r("R-bad", tmp_path / "bad.R")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"half.R defines no function score\(\)"):
        register_r("R-half", tmp_path / "half.R")
