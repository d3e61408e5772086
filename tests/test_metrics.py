import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import f1_score, roc_auc_score

from simstudy import metrics as M


@pytest.fixture
def sample():
    rng = np.random.default_rng(1)
    delta = rng.normal(size=200)
    score = delta + rng.normal(size=200)
    score[:20] = np.round(score[:20])            # ties
    y0 = rng.normal(size=200)
    return score, delta, y0, y0 + delta


def test_against_sklearn_and_scipy(sample):
    score, delta, y0, y1 = sample
    d_opt = (delta > 0).astype(int)
    d_hat = (score > 0).astype(int)
    assert M.accuracy(d_hat, d_opt) == pytest.approx(np.mean(d_hat == d_opt))
    assert M.f1(d_hat, d_opt) == pytest.approx(f1_score(d_opt, d_hat))
    assert M.auc(score, d_opt) == pytest.approx(roc_auc_score(d_opt, score))
    assert M.spearman(score, delta) == pytest.approx(spearmanr(score, delta).statistic)


def test_auc_brute_force_with_ties():
    score = np.array([0.1, 0.1, 0.5, -1.0, 0.5, 2.0])
    label = np.array([1, 0, 1, 0, 0, 1])
    pos, neg = score[label == 1], score[label == 0]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert M.auc(score, label) == pytest.approx(brute)


def test_value_and_regret_closed_form():
    delta = np.array([1.0, -2.0, 0.5, -0.1])
    y0 = np.array([0.0, 1.0, 2.0, 3.0])
    d_opt = (delta > 0).astype(int)
    d_hat = np.array([1, 1, 0, 0])
    # Y(d_hat) = [1, -1, 2, 3] ; regret = mean((d_opt - d_hat) * delta) = (0 + 2 + 0.5 + 0) / 4
    assert M.value(d_hat, y0, y0 + delta) == pytest.approx(5 / 4)
    assert M.regret(d_hat, d_opt, delta) == pytest.approx(2.5 / 4)
    assert M.regret(d_opt, d_opt, delta) == 0


def test_degenerate_cases_give_nan_not_errors():
    const = np.ones(10)
    delta = np.linspace(-1, 1, 10)
    assert np.isnan(M.spearman(const, delta))
    assert np.isnan(M.auc(delta, np.ones(10)))            # one class only
    assert np.isnan(M.f1(np.zeros(10), np.zeros(10)))     # no positives anywhere
    truth = {"Delta": np.full(5, 1.0), "d_opt": np.ones(5, int), "Y0": np.zeros(5),
             "Y1": np.ones(5)}
    out = M.evaluate(np.full(5, -1.0), truth)
    assert out["accuracy"] == 0 and np.isnan(out["auc"]) and np.isnan(out["spearman"])
    assert out["f1"] == 0 and out["treated_share"] == 0


def test_evaluate_rejects_bad_scores():
    truth = {"Delta": np.ones(3), "d_opt": np.ones(3, int), "Y0": np.zeros(3), "Y1": np.ones(3)}
    with pytest.raises(ValueError, match="shape"):
        M.evaluate(np.ones(2), truth)
    with pytest.raises(ValueError, match="non-finite"):
        M.evaluate(np.array([1, np.nan, 2]), truth)


def test_congruence_pairs():
    d = {"a": np.array([1, 0, 1, 1]), "b": np.array([1, 1, 1, 0]), "c": np.array([1, 0, 1, 1])}
    pairs = {(a, b): v for a, b, v in M.congruence(d)}
    assert pairs == {("a", "b"): 0.5, ("a", "c"): 1.0, ("b", "c"): 0.5}


def test_average_ranks_equal_scipy():
    from scipy.stats import rankdata
    rng = np.random.default_rng(4)
    x = np.round(rng.normal(size=500), 1)                 # many ties
    np.testing.assert_array_equal(M.average_ranks(x), rankdata(x))


def test_congruence_equals_pairwise_share_of_equal_decisions():
    """All pairs at once (one matrix product) == the share of equal decisions of each pair."""
    import itertools
    from simstudy.metrics import congruence
    rng = np.random.default_rng(3)
    for n in (1, 7, 1000):
        dec = {f"m{k}": (rng.random(n) < rng.random()).astype(np.int64) for k in range(6)}
        dec["all"], dec["none"] = np.ones(n, np.int64), np.zeros(n, np.int64)
        brute = [(a, b, float(np.mean(dec[a] == dec[b])))
                 for a, b in itertools.combinations(dec, 2)]
        assert congruence(dec) == brute
    assert congruence({}) == [] and congruence({"a": np.ones(3)}) == []
