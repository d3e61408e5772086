import numpy as np
import pandas as pd
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


def test_compiled_sum_is_numpys_sum_bit_for_bit():
    """`_np_sum` (inside the compiled metrics) reproduces numpy's pairwise summation exactly:
    lengths around every block edge (8, 128, the halving above) and the paper's test-set sizes."""
    from simstudy.metrics import _np_sum
    rng = np.random.default_rng(7)
    for n in [*range(0, 300), 511, 512, 513, 1000, 1024, 1031, 5000, 8192, 8193, 22500]:
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-4, 5, n)
        assert _np_sum(a) == np.sum(a), n


def test_evaluate_equals_the_metric_functions_exactly():
    """The one compiled pass of `evaluate` gives the numbers of accuracy, f1, spearman, auc,
    value, regret and the treated share computed one by one with numpy, bit for bit (ties,
    one-class truths and all-zero scores included)."""
    from simstudy.metrics import accuracy, auc, average_ranks, evaluate, f1, regret, spearman, value
    rng = np.random.default_rng(11)
    for n in [1, 2, 7, 8, 9, 127, 128, 129, 300, 625, 3750]:
        for case in range(4):
            score = np.round(rng.standard_normal(n), 1 if case == 1 else 8)
            if case == 2:
                score[:] = 0.0
            delta = rng.standard_normal(n) + (5.0 if case == 3 else 0.0)
            truth = {"Delta": delta, "d_opt": (delta > 0).astype(np.int64),
                     "Y0": rng.standard_normal(n), "Y1": rng.standard_normal(n)}
            d_hat = (score > 0).astype(np.int64)
            ranks = average_ranks(score)
            want = {"accuracy": accuracy(d_hat, truth["d_opt"]), "f1": f1(d_hat, truth["d_opt"]),
                    "spearman": spearman(score, delta, None, ranks),
                    "auc": auc(score, truth["d_opt"], ranks),
                    "value": value(d_hat, truth["Y0"], truth["Y1"]),
                    "regret": regret(d_hat, truth["d_opt"], delta),
                    "treated_share": float(d_hat.mean())}
            got = evaluate(score, truth)
            for k, v in want.items():
                assert got[k] == v or (np.isnan(v) and np.isnan(got[k])), (n, case, k, v, got[k])


# ------------------------------------------------------------------ beyond the decision (issue 41)
def _random_tie_breaks(score, n_perm=None):
    """Every ordering of the rows by decreasing score, ties in every order (brute force)."""
    import itertools
    score = np.asarray(score, float)
    groups = [np.flatnonzero(score == v) for v in sorted(set(score), reverse=True)]
    for perms in itertools.product(*[itertools.permutations(g) for g in groups]):
        yield np.concatenate([np.array(p, int) for p in perms])


def test_autoc_and_qini_equal_a_direct_sum_over_q_averaged_over_tie_breaks():
    from simstudy.metrics import toc_integrals
    rng = np.random.default_rng(4)
    for trial in range(30):
        n = int(rng.integers(2, 7))
        score = rng.integers(0, 3, n).astype(float)          # many ties
        delta = rng.normal(size=n)
        autoc, qini = [], []
        for order in _random_tie_breaks(score):
            d = delta[order]
            toc = [d[:k].mean() - delta.mean() for k in range(1, n + 1)]
            autoc.append(np.mean(toc))
            qini.append(np.mean([(k / n) * t for k, t in zip(range(1, n + 1), toc)]))
        a, q = toc_integrals(score, delta)
        assert a == pytest.approx(np.mean(autoc), abs=1e-12)
        assert q == pytest.approx(np.mean(qini), abs=1e-12)
    assert toc_integrals(np.ones(5), rng.normal(size=5)) == pytest.approx((0.0, 0.0), abs=1e-15)


def test_value_at_budget_equals_brute_force_over_tie_breaks():
    from simstudy.metrics import value, value_at_budget
    rng = np.random.default_rng(5)
    for trial in range(30):
        n = int(rng.integers(2, 7))
        score = rng.integers(-1, 3, n).astype(float)
        y0 = rng.normal(size=n)
        y1 = y0 + rng.normal(size=n)
        q = float(rng.choice([0.2, 0.5, 0.75, 1.0]))
        vals = []
        for order in _random_tie_breaks(score):
            d = np.zeros(n, int)
            k = int(np.floor(q * n + 1e-12))
            top = [i for i in order if score[i] > 0][:k]
            d[top] = 1
            vals.append(np.mean(np.where(d == 1, y1, y0)))
        if abs(q * n - round(q * n)) < 1e-12:            # a whole number of people
            assert value_at_budget(score, y0, y1, q) == pytest.approx(np.mean(vals), abs=1e-12)
    s = rng.normal(size=40)
    y0 = rng.normal(size=40)
    y1 = y0 + rng.normal(size=40)
    assert value_at_budget(s, y0, y1, 1.0) == pytest.approx(value((s > 0).astype(int), y0, y1),
                                                            abs=1e-14)


def test_across_sites_equals_pandas():
    from simstudy.metrics import across_sites
    rng = np.random.default_rng(6)
    n = 200
    codes = rng.integers(0, 7, n)
    d_hat, d_opt = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y0 = rng.normal(size=n)
    y1 = y0 + rng.normal(0.3, 1, n)
    worst, sd, below = across_sites(d_hat, d_opt, y0, y1, codes, 7)
    df = pd.DataFrame({"s": codes, "right": d_hat == d_opt, "y": np.where(d_hat == 1, y1, y0),
                       "c": y1 if y1.mean() >= y0.mean() else y0})
    g = df.groupby("s")
    assert worst == pytest.approx(g["right"].mean().min())
    assert sd == pytest.approx(g["right"].mean().std(ddof=1))
    assert below == pytest.approx((g["y"].mean() < g["c"].mean()).mean())
