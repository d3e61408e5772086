"""Policy-tree search against brute force over all trees on small inputs (hypothesis), and
invariances."""
import functools
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


def brute_rec(X, G, depth, min_leaf=1, categorical=()):
    """Optimal reward by plain recursion over EVERY split of every node (no histograms, no
    candidate grids): R(S, l) = max(leaf, max_split R(L, l-1) + R(R, l-1)). Categorical
    features: every subset of the node's categories where the search claims exactness (D = 2
    at the level above the leaves), otherwise the prefixes of the node's order by mean contrast
    (the mcf rule, which is what the search promises there)."""
    def rec(rows, level):
        sums = G[rows].sum(0)
        best = sums.max()
        if level == 0:
            return best
        # the best action: the lowest one tied with the largest up to rounding (1e-9 relative)
        a = int(np.flatnonzero(sums >= sums.max() - 1e-9 * max(1.0, np.abs(sums).max()))[0])
        for j in range(X.shape[1]):
            x = X[rows, j]
            vals = np.unique(x)
            if j in categorical:
                if level == 1 and G.shape[1] == 2:
                    sets = [S for k in range(1, len(vals))
                            for S in itertools.combinations(vals, k)]
                else:
                    Gr = G[rows]
                    con = Gr[:, a] - (Gr.sum(1) - Gr[:, a]) / (G.shape[1] - 1)
                    key = {v: -con[x == v].mean() for v in vals}
                    tol = 1e-9 * max(1.0, max(abs(k) for k in key.values()))

                    def before(u, v):     # by key; keys tied up to rounding: by value
                        if abs(key[u] - key[v]) > tol:
                            return -1 if key[u] < key[v] else 1
                        return -1 if u < v else (1 if u > v else 0)
                    order = np.array(sorted(vals, key=functools.cmp_to_key(before)))
                    sets = [order[:k] for k in range(1, len(vals))]
                lefts = [np.isin(x, S) for S in sets]
            else:
                lefts = [x <= v for v in vals[:-1]]
            for go in lefts:
                if go.sum() < min_leaf or (~go).sum() < min_leaf:
                    continue
                best = max(best, rec(rows[go], level - 1) + rec(rows[~go], level - 1))
        return best
    return rec(np.arange(len(G)), depth)


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
    for X in (np.zeros((0, 2)), np.zeros((4, 0))):          # no rows, no features: named
        with pytest.raises(ValueError, match="at least one row and one feature"):
            PolicyTreeSearch(3).fit(X, np.zeros((len(X), 2)))


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


@settings(max_examples=30, deadline=None)
@given(seed=small, depth=st.sampled_from([1, 2, 3]), D=st.sampled_from([2, 3, 4]),
       min_leaf=st.sampled_from([1, 2, 3]))
def test_equals_recursive_brute_force(seed, depth, D, min_leaf):
    """Depth 1-3, several D, ties in X and in Gamma, minimum leaf sizes."""
    rng = np.random.default_rng(seed)
    n = {1: 20, 2: 12, 3: 9}[depth]
    X = np.column_stack([rng.integers(0, 5, n), rng.normal(size=n), rng.integers(0, 2, n)])
    G = np.round(rng.normal(size=(n, D)), 1)
    tree = PolicyTreeSearch(depth=depth, min_leaf=min_leaf).fit(X, G)
    assert tree.reward == pytest.approx(brute_rec(X, G, depth, min_leaf))
    assert tree.reward == pytest.approx(G[np.arange(n), tree.predict(X)].sum())
    assert min(leaf.n for _, leaf in tree.leaves()) >= min_leaf
    assert max(len(path) for path, _ in tree.leaves()) <= depth


@settings(max_examples=30, deadline=None, derandomize=True)   # the same examples every run: a
# random draw found a tie-breaking bug once in CI (the regression test below); sweeps of many
# random cases: scripts/tree_brute_sweep.py
@given(seed=small, depth=st.sampled_from([1, 2, 3]), D=st.sampled_from([2, 3]))
def test_categorical_equals_recursive_brute_force(seed, depth, D):
    rng = np.random.default_rng(seed)
    n = {1: 16, 2: 12, 3: 9}[depth]
    X = np.column_stack([rng.integers(0, 4, n) * 10.0, rng.integers(0, 3, n)])
    G = np.round(rng.normal(size=(n, D)), 1)
    tree = PolicyTreeSearch(depth=depth, categorical=[0]).fit(X, G)
    assert tree.reward == pytest.approx(brute_rec(X, G, depth, categorical=[0]))
    assert tree.reward == pytest.approx(G[np.arange(n), tree.predict(X)].sum())


def test_split_points_grid():
    """A >= the number of distinct values is the exact search; a coarser grid never beats it;
    the thresholds are data values and the per-level sizes are A, A/2, A/4."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(400, 3))
    G = np.column_stack([np.zeros(400), np.sin(3 * X[:, 0]) + X[:, 1] * X[:, 2]
                         + rng.normal(size=400)])
    exact = PolicyTreeSearch(depth=2, min_leaf=5).fit(X, G)
    same = PolicyTreeSearch(depth=2, min_leaf=5, split_points=1000).fit(X, G)
    assert same.reward == pytest.approx(exact.reward)
    approx = PolicyTreeSearch(depth=3, min_leaf=5, split_points=16)
    t = approx.fit(X, G)
    assert t.reward <= PolicyTreeSearch(depth=3, min_leaf=5, split_points=64).fit(X, G).reward + 1e-9
    assert [len(approx.thr_[level][0]) for level in (1, 2, 3)] == [16, 8, 4]
    for _, leaf in t.leaves():
        assert leaf.n >= 5
    node = t
    while not node.is_leaf:
        assert node.threshold in set(X[:, node.feature])
        node = node.left


def test_drawn_tree_shows_every_split_and_leaf(tmp_path):
    from simstudy.report.figures import policy_tree
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=400), rng.integers(0, 4, 400)])
    G = np.column_stack([np.zeros(400), X[:, 0] * (X[:, 1] - 1.5) + rng.normal(size=400)])
    tree = PolicyTreeSearch(2, 20, 50, categorical=[1]).fit(X, G)
    fig = policy_tree(tree, ["age", "cat1"], ["control", "treat"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    leaves = list(tree.leaves())
    assert sum(t.startswith(("control", "treat")) for t in texts) == len(leaves)
    assert any(t.startswith("age <=") for t in texts) and any("cat1 in {" in t for t in texts)
    assert policy_tree(tree, out=tmp_path / "tree").exists()


@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True)   # the same examples in every run:
# CI must not depend on luck (a random run found the categorical counterexample tested below)
@given(st.integers(0, 10 ** 6), st.sampled_from([2, 3, 4]), st.sampled_from([2, 3]),
       st.booleans(), st.booleans(), st.sampled_from([1, 1, 4]))
def test_pruned_exact_search_equals_the_unpruned_one(seed, depth, D, ties, categorical, min_leaf):
    """The bounds (perfect allocation, incremental from both computed neighbours, cutoffs passed
    to children, the shallower tree as incumbent) skip only what cannot win: welfare and tree
    equal the plain search on adversarial inputs (ties in X, equal scores, categorical
    features, three actions, min_leaf > 1 where only the perfect bound and cutoffs apply),
    exact mode (every value a candidate), depths 2-4."""
    rng = np.random.default_rng(seed)
    n = {2: 300, 3: 120, 4: 40}[depth]
    X = rng.standard_normal((n, 4))
    G = rng.standard_normal((n, D))
    if ties:
        X = np.round(X, 1)
        G = np.round(G, 0)                           # many equal scores
    cat = []
    if categorical:
        X[:, 3] = rng.integers(0, 5, n)
        cat = [3]
    a = PolicyTreeSearch(depth, min_leaf, None, categorical=cat).fit(X, G)
    b = PolicyTreeSearch(depth, min_leaf, None, categorical=cat, prune=False).fit(X, G)
    assert a.reward == pytest.approx(b.reward, abs=1e-9)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.reward == pytest.approx(np.sum(G[np.arange(n), a.predict(X)]), rel=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_coarse_grid_floor_keeps_the_exact_tree(ties):
    """Above 4 x 256 rows the exact depth-2 search starts from the optimum of a 256-point grid
    (its tree is an exact candidate); the result equals the plain search, ties included."""
    rng = np.random.default_rng(11)
    n = 1100
    X = rng.standard_normal((n, 3))
    G = np.column_stack([X[:, 0], -X[:, 0] + X[:, 1]]) + rng.standard_normal((n, 2))
    if ties:
        X, G = np.round(X, 2), np.round(G, 0)
    search = PolicyTreeSearch(2, 1, None)
    a = search.fit(X, G)
    assert search._floor(np.arange(n), 2) > -np.inf          # the floor is in play
    b = PolicyTreeSearch(2, 1, None, prune=False).fit(X, G)
    assert a.reward == pytest.approx(b.reward, abs=1e-9)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_same_tree_for_any_thread_count():
    import numba
    rng = np.random.default_rng(4)
    X = np.round(rng.standard_normal((400, 5)), 1)
    G = np.round(rng.standard_normal((400, 2)), 0)
    before = numba.get_num_threads()
    try:
        trees = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            trees.append(PolicyTreeSearch(3, 1, None).fit(X, G))
    finally:
        numba.set_num_threads(before)
    assert trees[0].reward == trees[1].reward
    np.testing.assert_array_equal(trees[0].predict(X), trees[1].predict(X))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10 ** 6), st.sampled_from([2, 3, 4]), st.sampled_from([2, 3]),
       st.booleans(), st.sampled_from([1, 1, 3]))
def test_subproblem_memo_keeps_the_exact_tree(seed, depth, D, categorical, min_leaf):
    """Discrete features (<= 16 bins: the memo of row sets is in play): the same tree as the
    plain search, with binary and 3-valued features, equal scores and categorical splits."""
    rng = np.random.default_rng(seed)
    n = {2: 200, 3: 120, 4: 60}[depth]
    X = rng.integers(0, rng.integers(2, 4), (n, 5)).astype(float)
    G = np.round(rng.standard_normal((n, D)) + X[:, :1], 0)
    cat = [4] if categorical else []
    search = PolicyTreeSearch(depth, min_leaf, None, categorical=cat)
    a = search.fit(X, G)
    assert search.nbins_.max() <= search.MEMO_BINS           # the memo is used
    b = PolicyTreeSearch(depth, min_leaf, None, categorical=cat, prune=False).fit(X, G)
    assert a.reward == pytest.approx(b.reward, abs=1e-9)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10 ** 6), st.sampled_from([3, 4]), st.sampled_from([2, 3]),
       st.sampled_from([(3, True), (5, True), (4, False)]), st.sampled_from([1, 1, 2]),
       st.booleans())
def test_pruned_grid_search_equals_the_plain_one(seed, depth, D, grid, min_leaf, discrete):
    """Candidate grids (halved per level or not), depths 3-4: the bounds, cutoffs and memo skip
    only what cannot win. Halved grids do not nest (a depth-2 tree is not always a depth-3
    candidate), which once let the moving-rows bound and the shallower-tree incumbent cut real
    optima; small inputs with many ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 40))
    X = (rng.integers(0, 4, (n, 2)).astype(float) if discrete
         else rng.standard_normal((n, 2)))
    G = np.round(rng.standard_normal((n, D)), 0)
    A, halve = grid
    a = PolicyTreeSearch(depth, min_leaf, A, halve_split_points=halve).fit(X, G)
    b = PolicyTreeSearch(depth, min_leaf, A, halve_split_points=halve, prune=False).fit(X, G)
    assert a.reward == pytest.approx(b.reward, abs=1e-9)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))


def test_pruned_search_with_categorical_children_keeps_the_optimum():
    """A counterexample hypothesis found (depth 4, 3 actions, a categorical feature): the
    moving-rows bounds assumed a child's optimum over fewer rows is bounded by the one over
    more, which a categorical cut (an order of the child's own categories) breaks; the pruned
    search reported 31.597 against the plain search's 31.800."""
    rng = np.random.default_rng(2541)
    X, G = rng.standard_normal((40, 4)), rng.standard_normal((40, 3))
    X[:, 3] = rng.integers(0, 5, 40)
    a = PolicyTreeSearch(4, 1, None, categorical=[3]).fit(X, G)
    b = PolicyTreeSearch(4, 1, None, categorical=[3], prune=False).fit(X, G)
    assert a.reward == pytest.approx(b.reward, abs=1e-9)
    assert a.reward == pytest.approx(np.sum(G[np.arange(40), a.predict(X)]), rel=1e-12)


def test_categorical_three_actions_reported_reward_is_achieved():
    """The counterexample CI found (2026-12-02): scores on a 0.1 grid tie two actions' totals and
    two categories' contrasts exactly; the root's children (histograms as node minus left) and
    the children's own searches (sums of their rows) broke the ties differently, so the root
    reported 5.2 for a tree achieving 5.0. Ties up to rounding now go one way (`_tied`)."""
    rng = np.random.default_rng(6833)
    n = 12
    X = np.column_stack([rng.integers(0, 4, n) * 10.0, rng.integers(0, 3, n)])
    G = np.round(rng.normal(size=(n, 3)), 1)
    tree = PolicyTreeSearch(depth=2, categorical=[0]).fit(X, G)
    assert tree.reward == pytest.approx(G[np.arange(n), tree.predict(X)].sum())
    assert tree.reward == pytest.approx(brute_rec(X, G, 2, categorical=[0]))


def test_brute_force_sweep_script_runs_and_agrees():
    """scripts/tree_brute_sweep.py (docs/policy_tree.md points to it): a short sweep of the
    shape that found the tie bug agrees with brute force case by case."""
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "scripts" / "tree_brute_sweep.py"
    res = subprocess.run([sys.executable, str(script), "--cases", "40", "--first-seed", "6820"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 of 40 cases disagree (depth 2, 3 actions" in res.stdout


def test_rules_table_reads_a_binary_split_as_the_tree_figure_draws_it():
    """Issue 40: a 0/1 feature split at 0 is 'x = 0' / 'x = 1' in the rules table, as in the
    drawn tree (it read 'free_lunch <= 0' beside a figure saying 'free_lunch = 0')."""
    from simstudy.engines.treesearch import rules_table
    rng = np.random.default_rng(3)
    b = rng.integers(0, 2, 400).astype(float)
    x = rng.normal(size=400)
    G = np.column_stack([np.zeros(400), np.where(b == 1, 1.0, -1.0) + 0.1 * rng.normal(size=400)])
    tree = PolicyTreeSearch(1, min_leaf=20, split_points=30).fit(np.column_stack([b, x]), G)
    rules = rules_table(tree, np.column_stack([b, x]), G, ["lunch", "x"], ["control", "treat"])
    assert sorted(rules["rule"]) == ["lunch = 0", "lunch = 1"]
    assert rules.set_index("rule").loc["lunch = 1", "action"] == "treat"
