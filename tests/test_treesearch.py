"""Policy-tree search against brute force over all trees on small inputs (hypothesis), and
invariances."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from simstudy.engines.treesearch import PolicyTreeSearch


def all_trees(X, depth, D, categorical=()):
    """Every tree of depth <= `depth` as a prediction function (independent of the search)."""
    leaves = [lambda Z, a=a: np.full(len(Z), a) for a in range(D)]
    if depth == 0:
        return leaves
    splits = []
    for j in range(X.shape[1]):
        vals = np.unique(X[:, j])
        if j in categorical:
            for k in range(1, len(vals)):
                for S in itertools.combinations(vals, k):
                    splits.append(lambda Z, j=j, S=S: np.isin(Z[:, j], S))
        else:
            for s in (vals[:-1] + vals[1:]) / 2:
                splits.append(lambda Z, j=j, s=s: Z[:, j] <= s)
    sub = all_trees(X, depth - 1, D, categorical)
    trees = list(leaves)
    for split in splits:
        for left in sub:
            for right in sub:
                def tree(Z, split=split, left=left, right=right):
                    go = split(Z)
                    out = np.empty(len(Z), int)
                    out[go] = left(Z[go])
                    out[~go] = right(Z[~go])
                    return out
                trees.append(tree)
    return trees


def brute(X, G, depth, min_leaf=1, categorical=()):
    best = -np.inf
    for tree in all_trees(X, depth, G.shape[1], categorical):
        a = tree(X)
        best = max(best, G[np.arange(len(G)), a].sum())
    return best


small = st.integers(0, 10_000)


@settings(max_examples=25, deadline=None)
@given(seed=small, depth=st.sampled_from([1, 2]), D=st.sampled_from([2, 3]))
def test_equals_brute_force_with_ties(seed, depth, D):
    rng = np.random.default_rng(seed)
    n = 7 if depth == 2 else 12
    X = rng.integers(0, 4, size=(n, 2)).astype(float)          # many ties
    G = np.round(rng.normal(size=(n, D)), 1)
    tree = PolicyTreeSearch(depth=depth).fit(X, G)
    assert tree.reward == pytest.approx(brute(X, G, depth))
    assert tree.reward == pytest.approx(G[np.arange(n), tree.predict(X)].sum())


@settings(max_examples=25, deadline=None)
@given(seed=small)
def test_categorical_depth1_equals_all_subsets(seed):
    """Two actions, depth 1: ordering categories by mean score difference finds the best set."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.integers(0, 5, 14), rng.normal(size=14)])
    G = rng.normal(size=(14, 2))
    tree = PolicyTreeSearch(depth=1, categorical=[0]).fit(X, G)
    assert tree.reward == pytest.approx(brute(X, G, 1, categorical=[0]))


def test_min_leaf_respected_and_invariances():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    G = np.column_stack([np.zeros(300), X[:, 0] - 0.5 * X[:, 1] + rng.normal(size=300)])
    t = PolicyTreeSearch(depth=2, min_leaf=40, split_points=40).fit(X, G)
    assert min(leaf.n for _, leaf in t.leaves()) >= 40
    perm = PolicyTreeSearch(depth=2, min_leaf=40, split_points=40).fit(X[:, [2, 0, 1]], G)
    assert perm.reward == pytest.approx(t.reward)
    mono = X.copy()
    mono[:, 0] = np.exp(3 * mono[:, 0])                            # monotone transform
    assert (PolicyTreeSearch(depth=2, min_leaf=40, split_points=40).fit(mono, G).reward
            == pytest.approx(t.reward))
    deeper = PolicyTreeSearch(depth=3, min_leaf=40, split_points=40).fit(X, G)
    assert deeper.reward >= t.reward - 1e-9
    assert deeper.reward == pytest.approx(G[np.arange(300), deeper.predict(X)].sum())


def test_bad_input():
    with pytest.raises(ValueError, match="depth=5"):
        PolicyTreeSearch(depth=5)
    with pytest.raises(ValueError, match="at least 2"):
        PolicyTreeSearch().fit(np.zeros((3, 1)), np.zeros((3, 1)))


def test_pt_method_aipw_scores_unbiased_and_scores_from_leaves():
    """Mean AIPW contrast estimates the ATE (closed form: E[Delta] = 0.2 in Design 1); the
    benefit score is constant within a leaf and equals that leaf's mean contrast."""
    from simstudy import Design, make
    rep = Design().simulate(np.random.default_rng(5), 40, 100)
    m = make("PT", {"random_state": 2, "depth": 2}).fit(rep.train)
    contrast = m.scores_[:, 1] - m.scores_[:, 0]
    se = contrast.std() / np.sqrt(len(contrast))
    assert abs(contrast.mean() - 0.2) < 4 * se
    F = rep.train[["X3", "X4", "X5"]].to_numpy()
    leaf = m.tree_.apply(F)
    score = m.benefit_score(rep.train)
    for k in np.unique(leaf):
        assert np.allclose(score[leaf == k], contrast[leaf == k].mean())
    acc = np.mean((m.benefit_score(rep.test) > 0) == rep.truth["d_opt"])
    assert acc > 0.75                           # a depth-2 tree on a linear rule


def test_sequential_tree_is_at_least_the_first_and_consistent():
    from simstudy.engines.treesearch import sequential_tree
    rng = np.random.default_rng(7)
    X = rng.normal(size=(200, 2))
    G = np.column_stack([np.zeros(200), X[:, 0] * X[:, 1] + 0.3 * rng.normal(size=200)])
    first = PolicyTreeSearch(1, min_leaf=10, split_points=30).fit(X, G)
    seq = sequential_tree(X, G, 1, 1, min_leaf=10, split_points=30)
    assert seq.reward >= first.reward - 1e-9
    assert seq.reward == pytest.approx(G[np.arange(200), seq.predict(X)].sum())
    assert max(len(p) for p, _ in seq.leaves()) == 2


def test_constraint_caps_the_treated_share_and_tables_add_up():
    from simstudy.engines.treesearch import constrained_tree, rules_table, welfare_table
    rng = np.random.default_rng(8)
    X = rng.normal(size=(300, 2))
    G = np.column_stack([np.zeros(300), 0.5 + X[:, 0] + rng.normal(size=300)])
    free = PolicyTreeSearch(2, min_leaf=15, split_points=30).fit(X, G)
    assert np.mean(free.predict(X)) > 0.5
    tree, cost, share = constrained_tree(X, G, 2, [1.0, 0.3], min_leaf=15, split_points=30)
    assert share[1] <= 0.3 + 1e-12 and np.mean(tree.predict(X)) == pytest.approx(share[1])
    assert cost[1] > 0 and cost[0] == 0
    rules = rules_table(tree, X, G, ["a", "b"], ["control", "treat"])
    assert rules["n"].sum() == 300 and rules["share"].sum() == pytest.approx(1.0)
    T = rng.integers(0, 2, 300)
    w = welfare_table(tree, X, G, T, ["control", "treat"]).set_index("policy")
    assert w.loc["observed", "welfare"] == pytest.approx(G[np.arange(300), T].mean())
    assert w.loc["tree", "share_treat"] == pytest.approx(share[1])
    assert w.loc["random", "welfare"] == pytest.approx(np.mean(T) * G[:, 1].mean())
