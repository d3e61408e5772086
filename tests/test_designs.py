import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from hydra import compose, initialize_config_dir
from scipy.stats import norm

from simstudy import ConfigError, Design
from simstudy.cli import config_dir


def load(name, overrides=()):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"design={name}", *overrides])
    from omegaconf import OmegaConf
    return Design.from_config(OmegaConf.to_container(cfg.design, resolve=True))


@pytest.mark.parametrize("name,beta1,nonlinear,R_sd", [
    ("design1", 0, 0, 0.9), ("design2", 0.2, 0, 0.9), ("design3", 0, 1, 0.9), ("design4", 0, 0, 1.5)])
def test_presets_match_spec_table(name, beta1, nonlinear, R_sd):
    d = load(name)
    assert (d.name, d.beta1, d.nonlinear, d.R_sd, d.prevalence) == (name, beta1, nonlinear, R_sd, 0.5)
    assert d.delta == {"intercept": 0.2, "X3": 0.5, "X4": -0.2, "X5": -0.2}
    assert d.main == {"intercept": 0.7, "X1": 1.0, "X2": 1.0, "X3": -2.0, "X4": 1.0, "X5": 0.5}
    assert d.cluster_main == 2.5 and d.treat_R == 0.8


def test_design5_from_overrides_without_python():
    d = load("design1", ["design.beta1=0.35", "design.name=design5", "design.R_sd=1.2"])
    assert (d.name, d.beta1, d.R_sd) == ("design5", 0.35, 1.2)


def test_replicate_structure_and_truth():
    d = load("design2")
    rep = d.simulate(np.random.default_rng(3), J=7, n_j=11)
    assert rep.train.shape[0] == rep.test.shape[0] == 77
    assert list(rep.train.columns) == ["site", "X1", "X2", "X3", "X4", "X5", "T", "Y"]
    assert set(rep.test["site"]) == set(rep.train["site"]) == set(range(7))
    share = rep.train.groupby("site")["T"].mean()
    assert ((share > 0) & (share < 1)).all()
    t = rep.truth
    assert np.array_equal(t["d_opt"], (t["Delta"] > 0).astype(int))
    assert np.allclose(t["Y1"] - t["Y0"], t["Delta"])
    assert np.allclose(rep.test["Y"], np.where(rep.test["T"] == 1, t["Y1"], t["Y0"]))
    # the cluster moderator U_j is shared by train and test: Delta - linear part is constant per site
    X = rep.test[["X3", "X4", "X5"]].to_numpy()
    resid = t["Delta"] - (0.2 + X @ [0.5, -0.2, -0.2])
    per_site = resid.groupby(rep.test["site"]).agg(["min", "max"])
    assert np.allclose(per_site["min"], per_site["max"])
    assert resid.std() > 0.05              # beta1 = 0.2 makes it vary across sites


def test_outcome_model_recovered_by_statsmodels():
    """Large Design 1 sample: OLS on the generated data recovers the SPEC coefficients."""
    d = load("design1")
    rep = d.simulate(np.random.default_rng(11), J=200, n_j=200)
    df = rep.train
    X = df[["X1", "X2", "X3", "X4", "X5"]]
    T = df["T"]
    design = sm.add_constant(np.column_stack([X, T, T * df["X3"], T * df["X4"], T * df["X5"],
                                              np.eye(200)[df["site"]][:, 1:]]))
    fit = sm.OLS(df["Y"], design).fit()
    # intercept is confounded with the site effects; slopes and interactions are not
    truth = np.array([1, 1, -2, 1, 0.5, 0.2, 0.5, -0.2, -0.2])
    assert np.all(np.abs(fit.params[1:10] - truth) < 4.5 * fit.bse[1:10])
    assert abs(np.sqrt(fit.scale) - 1.0) < 0.02


def test_treatment_prevalence_closed_form():
    """Marginal P(T=1) = E[expit(0.8 R)], R ~ N(0, R_sd^2): 0.5 by symmetry; per-site logits
    follow logit(0.5) + 0.8 R_j, so the SD of site logits is about 0.8 * R_sd."""
    d = load("design4")
    rep = d.simulate(np.random.default_rng(5), J=400, n_j=400)
    assert abs(rep.train["T"].mean() - 0.5) < 0.03
    p = rep.train.groupby("site")["T"].mean().clip(1e-3, 1 - 1e-3)
    sd_logit = np.log(p / (1 - p)).std()
    assert abs(sd_logit - 0.8 * 1.5) < 0.15


def test_oracle_treated_share_closed_form():
    d = load("design1")
    rep = d.simulate(np.random.default_rng(9), J=100, n_j=300)
    expected = norm.cdf(0.2 / np.sqrt(0.5**2 + 0.2**2 + 0.2**2))
    assert abs(rep.truth["d_opt"].mean() - expected) < 0.01


def test_rejection_redraws_until_no_pure_cluster():
    d = Design(R_sd=2.0, name="extreme")
    draws = []
    for s in range(10):
        rep = d.simulate(np.random.default_rng(s), J=10, n_j=8)
        share = rep.train.groupby("site")["T"].mean()
        assert ((share > 0) & (share < 1)).all()
        draws.append(rep.draws)
    assert max(draws) > 1                   # rejection did happen
    with pytest.raises(RuntimeError, match="all or no individuals treated"):
        Design(R_sd=50.0, max_draws=3).simulate(np.random.default_rng(0), J=50, n_j=2)


@pytest.mark.parametrize("kw,msg", [
    ({"prevalence": 1.0}, "prevalence"), ({"prevalence": 0}, "prevalence"),
    ({"R_sd": -1}, "R_sd"), ({"delta": {"X9": 1.0}}, "unknown terms")])
def test_bad_design_values(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        Design(**kw)


def test_unknown_design_key():
    with pytest.raises(ConfigError, match="unknown keys.*betal"):
        Design.from_config({"name": "x", "betal": 0.2})


def test_every_preset_names_every_parameter_of_its_family():
    """`design.KEY=value` works for every parameter (Hydra refuses a key a preset lacks), and a
    preset composed from design1 (defaults list) is the design it was when it listed them all."""
    from dataclasses import fields
    from pathlib import Path

    from simstudy.cli import config_dir
    from simstudy.designs import DESIGNS, make_design, preset
    for path in sorted(Path(config_dir(), "design").glob("*.yaml")):
        params = preset(path.stem)
        cls = DESIGNS[params.get("family", "multisite")]
        missing = sorted({f.name for f in fields(cls)} - set(params))
        assert not missing, f"{path.stem} lacks {missing}"
        make_design(params)                                  # and it is a valid design


def test_site_sizes_is_a_key_of_the_command_line(tmp_path):
    from simstudy.cli import main
    from simstudy.store import read_metrics
    code = main(["run", "design.site_sizes=poisson", "J=3", "n_j=8", "reps=1", "n_jobs=1",
                 "progress=false", "figures=false", "methods=[Q-base]", f"out={tmp_path / 'o'}"])
    assert code == 0 and len(read_metrics(tmp_path / "o")) == 1


# ---------------------------------------------------------------- effect shapes (issue 24)
def _tree_truth(x1, x2):
    """The tree preset's Delta written as the tree it is (independent of designs.multisite)."""
    out = []
    for a, b in zip(x1, x2):
        if a <= 0:
            out.append(0.5 if b > 0.5 else -0.5)
        else:
            out.append(0.5 if b > -0.5 else -0.5)
    return np.array(out)


@pytest.mark.parametrize("name,truth,share", [
    ("step", lambda f: np.where(f.X1 > 0.5, 0.5, -0.5), 1 - 0.6915),
    ("tree", lambda f: _tree_truth(f.X1, f.X2), 0.5 * 0.3085 + 0.5 * 0.6915),
    ("smooth", lambda f: 0.5 - 0.5 * f.X1 ** 2, 0.6827),
    ("interaction", lambda f: 0.5 * f.X1 * f.X2, 0.5)])
def test_effect_shape_presets_truth(name, truth, share):
    """Delta of each shape preset equals its formula (conf/design/NAME.yaml) on the test rows,
    Y1 - Y0 = Delta, d_opt = 1{Delta > 0}, and the treated share of d_opt is the closed-form
    probability under X ~ N(0, I) (within 4 binomial SEs)."""
    d = load(name)
    rep = d.simulate(np.random.default_rng(11), 40, 50)
    f, t = rep.test, rep.truth
    np.testing.assert_allclose(t.Delta.to_numpy(), truth(f), rtol=0, atol=1e-12)
    np.testing.assert_allclose((t.Y1 - t.Y0).to_numpy(), t.Delta.to_numpy(), atol=1e-12)
    assert (t.d_opt.to_numpy() == (t.Delta.to_numpy() > 0)).all()
    n = len(t)
    assert abs(t.d_opt.mean() - share) < 4 * np.sqrt(share * (1 - share) / n)
    assert "W" not in rep.train.columns


def test_site_moderator_preset_observed_and_in_delta():
    """W_j is a column of train and test, constant within a site, the same site value in both,
    N(0, 1) across sites, and Delta = 0.2 + 0.5 X3 - 0.2 X4 - 0.2 X5 + 0.4 W exactly."""
    d = load("site_moderator")
    rep = d.simulate(np.random.default_rng(5), 200, 10)
    tr, te, t = rep.train, rep.test, rep.truth
    assert tr.groupby("site").W.nunique().max() == 1
    w_train = tr.groupby("site").W.first()
    w_test = te.groupby("site").W.first()
    np.testing.assert_array_equal(w_train.loc[w_test.index].to_numpy(), w_test.to_numpy())
    assert abs(w_train.mean()) < 4 / np.sqrt(200) and abs(w_train.std() - 1) < 0.2
    expect = 0.2 + 0.5 * te.X3 - 0.2 * te.X4 - 0.2 * te.X5 + 0.4 * te.W
    np.testing.assert_allclose(t.Delta.to_numpy(), expect.to_numpy(), atol=1e-12)


def test_w_term_needs_site_covariate():
    with pytest.raises(ConfigError, match="W needs site_covariate: true"):
        Design(delta={"intercept": 0.1, "W": 0.4})
    with pytest.raises(ConfigError, match="design.effect='wave'"):
        Design(effect="wave")


def test_shape_leaves_design1_draws_unchanged_but_delta():
    """A shape changes Delta only: same seed, same X, T and site columns as Design 1."""
    a = load("design1").simulate(np.random.default_rng(3), 6, 30)
    b = load("design1", ["design.effect=tree"]).simulate(np.random.default_rng(3), 6, 30)
    pd.testing.assert_frame_equal(a.train.drop(columns="Y"), b.train.drop(columns="Y"))
    assert not np.allclose(a.truth.Delta, b.truth.Delta)


def test_each_design_parameter_is_declared_once_with_help_and_rule():
    """Issue 25: a design family's parameters are its fields (default, help, rule); the
    design1 preset carries every one of them with the field's default (so `design.KEY=` works
    for each and the two cannot drift), and `simstudy run --help` lists each with its rule."""
    from simstudy.config import keys_help
    from simstudy.designs import DESIGNS, preset, schema
    params = schema(DESIGNS["multisite"])
    values = {k: v for k, v in preset("design1").items() if k != "family"}
    assert set(values) == set(params)
    for name, (default, help, rule) in params.items():
        assert values[name] == default, name
        assert help, name
        assert rule is not None or name in ("delta", "main", "rules", "confounding"), name  # the family's check
    text = keys_help()
    for name, (_, help, rule) in params.items():
        assert f"design.{name}" in text and help in text
        if rule is not None:
            assert rule.describe() in text
    for name, (_, help, _) in schema(DESIGNS["plasmode"]).items():
        assert help, name


@pytest.mark.parametrize("key,value,says", [
    ("prevalence", 1.0, "design.prevalence=1.0: must be a finite number in (0, 1)"),
    ("prevalence", 0, "design.prevalence=0: must be a finite number in (0, 1)"),
    ("R_sd", -0.1, "design.R_sd=-0.1: must be a finite number >= 0"),
    ("noise_sd", float("nan"), "design.noise_sd=nan: must be a finite number >= 0"),
    ("test_size", 0.0, "design.test_size=0.0: must be a finite number > 0"),
    ("site_size_spread", 10, "design.site_size_spread=10: must be a finite number in [0, 10)"),
    ("beta1", float("inf"), "design.beta1=inf: must be a finite number"),
    ("beta1", True, "design.beta1=True: must be a finite number"),
    ("n_covariates", 2.5, "design.n_covariates=2.5: must be an integer >= 1"),
    ("min_site_size", 1, "design.min_site_size=1: must be an integer >= 2"),
    ("effect", "wave", "design.effect='wave': allowed ['linear', 'step', 'tree', 'smooth', "
                       "'interaction']"),
    ("name", 3, "design.name=3: must be a string")])
def test_design_rules_name_the_key_the_value_and_what_is_allowed(key, value, says):
    from simstudy.designs import make_design
    with pytest.raises(ConfigError) as err:
        make_design({key: value})
    assert str(err.value) == says


def test_design_rules_accept_the_edges_they_allow():
    from simstudy.designs import make_design
    d = make_design({"R_sd": 0, "noise_sd": 0.0, "site_size_spread": 0, "prevalence": 0.999,
                     "max_draws": 10_000, "min_site_size": 2, "beta1": -3})
    assert d.R_sd == 0 and d.max_draws == 10_000
