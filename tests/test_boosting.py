"""The compiled least-squares boosting (engines/boosting.py) against scikit-learn's
HistGradientBoostingRegressor, the implementation whose algorithm it ports: the same data and
parameters give the same predictions."""
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from simstudy.engines.boosting import Boosting, bin_thresholds


def _data(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    X[:, 3] = rng.integers(0, 4, n)                   # a discrete feature: midpoint thresholds
    X[:, 4] = np.round(X[:, 4], 1)                    # ties
    y = X[:, 0] + np.sin(2 * X[:, 1]) * (X[:, 3] > 1) + rng.standard_normal(n)
    Xt = rng.standard_normal((400, 5)) * 1.5          # beyond the training range too
    Xt[:, 3] = rng.integers(-1, 5, 400)
    return X, y, Xt


@pytest.mark.parametrize("n, leaves, min_leaf, lr, iters", [
    (30, 15, 20, 0.1, 20),           # the root cannot split: every tree a leaf
    (300, 15, 20, 0.1, 100),          # the ML family's nuisance setting
    (1000, 15, 40, 0.05, 100),        # DR's final stage
    (2500, 31, 5, 0.3, 40),           # scikit-learn's default tree size, more than 255 values
])
def test_predictions_equal_scikit_learns(n, leaves, min_leaf, lr, iters):
    X, y, Xt = _data(n, n)
    ref = HistGradientBoostingRegressor(max_iter=iters, learning_rate=lr, max_leaf_nodes=leaves,
                                        min_samples_leaf=min_leaf, early_stopping=False,
                                        random_state=0).fit(X, y)
    ours = Boosting(iters, lr, leaves, min_leaf).fit(X, y)
    np.testing.assert_allclose(ours.predict(Xt), ref.predict(Xt), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=0, atol=1e-10)


def test_bin_thresholds_equal_scikit_learns():
    from sklearn.ensemble._hist_gradient_boosting.binning import _find_binning_thresholds
    rng = np.random.default_rng(3)
    for col in (rng.standard_normal(1000), rng.integers(0, 7, 500).astype(float),
                np.r_[np.zeros(600), rng.standard_normal(400)], np.ones(10)):
        np.testing.assert_array_equal(bin_thresholds(col), _find_binning_thresholds(col, 255))


def test_a_constant_outcome_is_predicted_exactly():
    X, _, Xt = _data(200, 1)
    np.testing.assert_allclose(Boosting().fit(X, np.full(200, 2.5)).predict(Xt), 2.5, atol=1e-12)


@pytest.mark.parametrize("n, leaves, min_leaf", [
    (50, 31, 20),        # stumps and single leaves: slots the trees never use
    (300, 15, 40),       # trees that stop before max_leaf_nodes
    (2000, 64, 3),       # 64 leaves: every bit of the lookup tables' masks
    (2000, 100, 2),      # more than 64 leaves: walked down instead
])
def test_lookup_table_prediction_equals_walking_down_the_trees(n, leaves, min_leaf):
    from simstudy.engines.boosting import _predict_walk, predict_binned
    X, y, Xt = _data(n, n + 1)
    model = Boosting(40, 0.1, leaves, min_leaf).fit(X, y)
    for Z in (Xt, X):
        B = np.ascontiguousarray(model._bin(Z))
        np.testing.assert_array_equal(predict_binned(B, *model.model_),
                                      _predict_walk(B, *model.model_))
    np.testing.assert_array_equal(model.fitted_, model.predict(X))   # the fit's own sums
