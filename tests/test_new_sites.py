"""test_sites=new (issue 41, item 1): the test set comes from J sites never seen in training,
with freshly drawn site effects, and every method scores them (its new-site option)."""
import numpy as np
import pandas as pd

from simstudy.designs import check_replicate, make_design, preset

from test_hostile import cli


def _site_signal(design_params, J=400, n_j=12, seed=11):
    """Per training site j: its mean outcome; per test site: its mean true Delta, which here is
    beta1 U_j alone (delta has only an intercept of 0): paired by position j."""
    d = make_design({**preset("design1"), "beta1": 1.0, "cluster_main": 3.0, "noise_sd": 0.5,
                     "R_sd": 0.2,
                     "delta": {"intercept": 0.0}, "main": {"intercept": 0.0},
                     **design_params})
    rep = d.simulate(np.random.default_rng(seed), J, n_j)
    check_replicate(rep, d, J, n_j)
    train = rep.train.groupby("site")["Y"].mean().to_numpy()
    test = pd.Series(rep.truth["Delta"].to_numpy()).groupby(rep.test["site"].to_numpy()).mean()
    return rep, train, test.to_numpy()


def test_new_sites_have_fresh_site_effects_and_the_truth_formula():
    rep, train, test = _site_signal({})                         # the paper: the same sites
    assert np.corrcoef(train, test)[0, 1] > 0.8
    rep, train, test = _site_signal({"test_sites": "new"})
    assert abs(np.corrcoef(train, test)[0, 1]) < 0.15           # independent draws (J = 400)
    J = 400
    assert set(rep.test["site"]) == set(range(J, 2 * J))        # sites never seen in training
    assert set(rep.train["site"]) == set(range(J))
    # the truth: Delta is the new site's own effect, constant within the site; Y1 - Y0 = Delta
    spread = pd.Series(rep.truth["Delta"].to_numpy()).groupby(rep.test["site"].to_numpy()).std()
    assert np.allclose(spread.fillna(0), 0)
    assert np.allclose(rep.truth["Y1"] - rep.truth["Y0"], rep.truth["Delta"])
    assert (rep.truth["d_opt"] == (rep.truth["Delta"] > 0)).all()


def test_the_training_data_do_not_depend_on_test_sites():
    same = make_design(preset("design2")).simulate(np.random.default_rng(3), 10, 8)
    new = make_design({**preset("design2"), "test_sites": "new"}).simulate(
        np.random.default_rng(3), 10, 8)
    pd.testing.assert_frame_equal(same.train, new.train)


def test_every_method_scores_sites_it_never_saw(tmp_path, capsys):
    code, _, err = cli(capsys, "run", "design.test_sites=new", "J=6", "n_j=10", "reps=2",
                       "n_jobs=1", "progress=false", "figures=false",
                       "methods=[Q-base,Q-fe,Q-ri,Q-rs,Q-dm-rs,W-aug,WS-augID,PT,oracle]",
                       f"out={tmp_path / 'o'}")
    assert code == 0, err
    from simstudy.store import read_metrics
    m = read_metrics(tmp_path / "o")
    assert (m["status"] == "ok").all() and set(m["point"]) == {"design.test_sites=new"}
