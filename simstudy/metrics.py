"""Performance metrics of a benefit score against the truth (docs/metrics.md; paper Section 5).

Pure functions of arrays; no I/O. Decisions are d_hat = I{score > 0}. Undefined cases
(one class only, constant scores) give NaN, never an exception.
"""
from __future__ import annotations

import itertools

import numba
import numpy as np

from .engines.groups import writable

# the reference rules (methods/reference.py): bounds, not estimators; reps=auto does not target them
REFERENCE_RULES = ("oracle", "treat-all", "treat-none")
DECISION_METRICS = ("accuracy", "f1", "spearman", "auc", "value", "regret", "treated_share")
# beyond the decision (issue 41, items 3-4): the rule under a budget, its ranking's targeting
# operator characteristic, and the rule site by site (`targeting`)
TARGETING_METRICS = ("value_at_budget", "autoc", "qini", "worst_site_accuracy",
                     "site_accuracy_sd", "sites_below_constant")
# the value a rule claims (issue 41, item 2; claims.py): its AIPW estimate on held-out data with
# its SE, and its true value; NaN unless the study sets value_claims
VALUE_METRICS = ("value_hat", "value_se", "value_true")
METRICS = DECISION_METRICS + TARGETING_METRICS + VALUE_METRICS
# per-fit facts a method reports (Method.diagnostics): the weighting lasso's number of fits
# (docs/estimators.md) and a warning text (non-convergence, a singular mixed model, a constant rule)
DIAGNOSTICS = ("fits", "warning")


EXTRA_METRICS: dict = {}      # name -> fn(score, truth, test) -> float (register_metric)
METRIC_OWNERS: dict[str, set] = {}   # name -> the plugin modules whose import registered it
PLUGIN_LOADING: list[str] = []       # the plugin module being imported (methods.load_plugins)
# names a metric column cannot take: the store's keys and built-in columns (issue 29, class 4)
RESERVED = ("point", "design", "J", "n_j", "replicate", "method", "method_a", "method_b",
            "agreement", *METRICS, "seconds", "status", "error", *DIAGNOSTICS)


def _origin(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def register_metric(name: str):
    """Decorator: a performance measure of your own, `fn(score, truth, test) -> float` (score:
    the method's benefit scores on the test rows; truth: Delta, Y0, Y1, d_opt; test: the test
    frame). Computed for every method and replicate, stored as a column `name`, summarised by
    the report like the built-in metrics. Load it with plugins=[module] (a module that the
    plugin imports may register it too)."""
    from .errors import ConfigError

    def deco(fn):
        if not isinstance(name, str) or not name.isidentifier() or name in RESERVED \
                or name.startswith("_"):
            raise ConfigError(f"register_metric({name!r}) in {fn.__module__}: the name is taken "
                              f"by a column of the store or is not an identifier; reserved: "
                              f"{', '.join(RESERVED)}; choose another name")
        old = EXTRA_METRICS.get(name)
        if old is not None and _origin(old) != _origin(fn):
            raise ConfigError(f"register_metric({name!r}): registered by {_origin(old)} and "
                              f"again by {_origin(fn)}; rename one of them")
        EXTRA_METRICS[name] = fn
        METRIC_OWNERS.setdefault(name, set()).update({fn.__module__, *PLUGIN_LOADING[:1]})
        return fn
    return deco


def claim_metrics(plugin: str, module) -> None:
    """After `plugin` was imported: it also owns the metrics of the modules it imported (also
    those imported earlier, whose registration ran before this plugin was loading)."""
    import inspect
    used = {plugin}
    for v in vars(module).values():
        if inspect.ismodule(v):
            used.add(v.__name__)
        elif callable(v) and isinstance(getattr(v, "__module__", None), str):
            used.add(v.__module__)
    for name, fn in EXTRA_METRICS.items():
        if fn.__module__ in used:
            METRIC_OWNERS.setdefault(name, set()).add(plugin)


def extra_metrics(score, truth, test, plugins=()) -> dict[str, float]:
    """The registered metrics of the study's plugin modules for one method's scores (a metric
    some other import registered is not the study's: results never depend on what else the
    process imported). A metric must return one real number (NaN when undefined): anything
    else, or an exception, stops the study naming the metric (ConfigError), not the method."""
    from .errors import ConfigError
    out = {}
    for name, fn in EXTRA_METRICS.items():
        if not METRIC_OWNERS.get(name, set()) & set(plugins):
            continue
        try:
            v = fn(score, truth, test)
        except Exception as exc:                                   # noqa: BLE001
            raise ConfigError(f"metric {name!r} ({_origin(fn)}) raised {type(exc).__name__}: "
                              f"{exc}; a metric must return a number (NaN when undefined)"
                              ) from None
        if isinstance(v, np.ndarray) and v.shape == ():
            v = v.item()                                  # a 0-d array is one number
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                 np.floating)):
            raise ConfigError(f"metric {name!r} ({_origin(fn)}) returned {v!r:.60} "
                              f"({type(v).__name__}); a metric must return one number "
                              f"(NaN when undefined)")
        if np.isinf(v):
            raise ConfigError(f"metric {name!r} ({_origin(fn)}) returned {v}; a metric must "
                              f"be finite (NaN when undefined)")
        out[name] = float(v)
    return out


def decisions(score) -> np.ndarray:
    """d_hat = I{f(x) > 0}."""
    return (np.asarray(score, dtype=float) > 0).astype(np.int64)


def accuracy(d_hat, d_opt) -> float:
    """mean I{d_hat = d_opt}."""
    d_hat, d_opt = np.asarray(d_hat), np.asarray(d_opt)
    return float(np.count_nonzero(d_hat == d_opt) / d_hat.size) if d_hat.size else np.nan


def f1(d_hat, d_opt) -> float:
    """F1 = 2 TP / (2 TP + FP + FN), treat class positive; NaN when TP + FP + FN = 0."""
    d_hat, d_opt = np.asarray(d_hat) == 1, np.asarray(d_opt) == 1
    tp = np.count_nonzero(d_hat & d_opt)
    denom = np.count_nonzero(d_hat) + np.count_nonzero(d_opt)       # 2 TP + FP + FN
    return float(2 * tp / denom) if denom > 0 else np.nan


def average_ranks(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy's rankdata 'average'), one sort."""
    x = writable(np.ascontiguousarray(x, dtype=float))   # _metrics passes writable ones
    return _tied_ranks(x, np.argsort(x))


@numba.njit(cache=True)
def _tied_ranks(x, order):
    """Rank (start + end + 1) / 2 for each run [start, end) of equal values in sorted order."""
    n = order.size
    ranks = np.empty(n)
    start = 0
    while start < n:
        end = start + 1
        while end < n and not (x[order[end]] != x[order[end - 1]]):
            end += 1
        r = (start + end + 1) / 2.0
        for k in range(start, end):
            ranks[order[k]] = r
        start = end
    return ranks


def spearman(score, delta, delta_ranks=None, score_ranks=None) -> float:
    """Spearman rank correlation of the score with the true Delta (average ranks for ties)."""
    a = average_ranks(score) if score_ranks is None else score_ranks
    b = average_ranks(delta) if delta_ranks is None else delta_ranks
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / den) if den > 0 else np.nan


def auc(score, d_opt, score_ranks=None) -> float:
    """ROC AUC of the score for the label d_opt (Mann-Whitney with average ranks for ties)."""
    d_opt = np.asarray(d_opt) == 1
    n1, n0 = int(d_opt.sum()), int((~d_opt).sum())
    if n1 == 0 or n0 == 0:
        return np.nan
    r = average_ranks(score) if score_ranks is None else score_ranks
    return float((r[d_opt].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def value(d_hat, y0, y1) -> float:
    """Value of the rule: mean of Y(d_hat) from the true potential outcomes."""
    d_hat = np.asarray(d_hat)
    return float(np.mean(np.where(d_hat == 1, y1, y0))) if d_hat.size else np.nan


def regret(d_hat, d_opt, delta) -> float:
    """mean (d_opt - d_hat) * Delta >= 0."""
    return float(np.mean((np.asarray(d_opt) - np.asarray(d_hat)) * np.asarray(delta)))


def evaluate(score, truth, delta_ranks=None) -> dict[str, float]:
    """All per-replicate metrics of one method's test-set scores; `truth` has Delta, Y0, Y1, d_opt
    (`delta_ranks`: Delta's average ranks, computed once per replicate by the runner). One
    compiled pass (`_metrics`) gives the numbers of the functions above, bit for bit."""
    score = np.asarray(score, dtype=float)
    d_opt = np.asarray(truth["d_opt"])
    delta = np.asarray(truth["Delta"], dtype=float)
    if score.shape != d_opt.shape:
        raise ValueError(f"benefit_score returned shape {score.shape}, expected {d_opt.shape}")
    if not np.isfinite(score).all():
        raise ValueError(f"benefit_score returned {np.sum(~np.isfinite(score))} non-finite values")
    if delta_ranks is None:
        delta_ranks = average_ranks(delta)
    score = np.ascontiguousarray(score)
    values = _metrics(score, np.argsort(score), np.ascontiguousarray(d_opt == 1),
                      np.ascontiguousarray(delta), np.ascontiguousarray(delta_ranks, dtype=float),
                      np.ascontiguousarray(truth["Y0"], dtype=float),
                      np.ascontiguousarray(truth["Y1"], dtype=float))
    return dict(zip(METRICS, values))


@numba.njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's pairwise_sum of a[lo:lo + n] for n <= 128: 8 accumulators, then the rest."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@numba.njit(cache=True)
def _np_sum(a):
    """numpy's sum of the 1-d array a, bit for bit: its pairwise summation (blocks of up to 128
    by `_block_sum`; a longer run is split in halves rounded down to a multiple of 8, each
    summed alike), evaluated with an explicit stack instead of recursion."""
    n = a.size
    if n <= 128:
        return 0.0 + _block_sum(a, np.int64(0), n)     # not a literal: one compile
    todo_lo = np.empty(128, np.int64)        # nodes still to visit: (lo, n, combine?)
    todo_n = np.empty(128, np.int64)
    todo_up = np.empty(128, np.bool_)
    vals = np.empty(128)
    t = v = 0
    todo_lo[0], todo_n[0], todo_up[0] = 0, n, False
    t = 1
    while t > 0:
        t -= 1
        lo, m, up = todo_lo[t], todo_n[t], todo_up[t]
        if up:                                # both halves done: left + right
            v -= 1
            vals[v - 1] = vals[v - 1] + vals[v]
        elif m <= 128:
            vals[v] = _block_sum(a, lo, m)
            v += 1
        else:
            m2 = m // 2
            m2 -= m2 % 8
            todo_lo[t], todo_n[t], todo_up[t] = lo, m, True
            todo_lo[t + 1], todo_n[t + 1], todo_up[t + 1] = lo + m2, m - m2, False
            todo_lo[t + 2], todo_n[t + 2], todo_up[t + 2] = lo, m2, False
            t += 3
    return 0.0 + vals[0]


@numba.njit(cache=True)
def _metrics(score, order, d_opt, delta, delta_ranks, y0, y1):
    """(accuracy, f1, spearman, auc, value, regret, treated_share) as the functions above
    compute them (numpy's summation order), d_hat = I{score > 0}; NaN where undefined.
    `order`: np.argsort(score) (numba's own sort would add seconds to the first compile)."""
    n = score.size
    nan = np.nan
    if n == 0:
        return nan, nan, nan, nan, nan, nan, nan
    same = tp = n_hat = n_opt = 0
    picked = np.empty(n)           # Y(d_hat)
    lost = np.empty(n)             # (d_opt - d_hat) Delta
    for i in range(n):
        h = score[i] > 0
        o = d_opt[i]
        same += h == o
        tp += h and o
        n_hat += h
        n_opt += o
        picked[i] = y1[i] if h else y0[i]
        lost[i] = (int(o) - int(h)) * delta[i]
    accuracy = same / n
    f1 = 2 * tp / (n_hat + n_opt) if n_hat + n_opt > 0 else nan
    ranks = _tied_ranks(score, order)
    ma = _np_sum(ranks) / n
    mb = _np_sum(delta_ranks) / n
    a = ranks - ma
    b = delta_ranks - mb
    den = np.sqrt(_np_sum(a * a) * _np_sum(b * b))
    spearman = _np_sum(a * b) / den if den > 0 else nan
    n0 = n - n_opt
    auc = nan
    if n_opt > 0 and n0 > 0:
        r1 = np.empty(n_opt)
        k = 0
        for i in range(n):
            if d_opt[i]:
                r1[k] = ranks[i]
                k += 1
        auc = (_np_sum(r1) - n_opt * (n_opt + 1) / 2) / (n_opt * n0)
    return (accuracy, f1, spearman, auc, _np_sum(picked) / n, _np_sum(lost) / n, n_hat / n)


def congruence(decisions_by_method: dict[str, np.ndarray]) -> list[tuple[str, str, float]]:
    """Share of rows with the same decision for every unordered pair of methods (paper Fig 2)."""
    names = list(decisions_by_method)
    if not names:
        return []
    n = np.asarray(decisions_by_method[names[0]]).size
    D = np.empty((len(names), n))
    for i, m in enumerate(names):
        D[i] = decisions_by_method[m]
    # equal decisions of every pair at once: both treat (D D') plus both do not
    # (n - s_a - s_b + D D'); exact integer counts, divided by n as np.mean would
    both = D @ D.T
    treated = np.diag(both)
    same = n - treated[:, None] - treated[None, :] + 2 * both
    return [(names[i], names[j], float(same[i, j] / n) if n else np.nan)
            for i, j in itertools.combinations(range(len(names)), 2)]


def tie_means(score, delta, order=None) -> np.ndarray:
    """Delta in the order of decreasing score, each run of equal scores replaced by its mean:
    what a ranking gives in expectation when its ties are broken at random."""
    score = np.asarray(score, float)
    order = np.argsort(-score, kind="stable") if order is None else order[::-1]
    s, d = score[order], np.asarray(delta, float)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    sums = np.add.reduceat(d, starts)
    counts = np.diff(np.r_[starts, s.size])
    return np.repeat(sums / counts, counts)


def toc_integrals(score, delta, order=None) -> tuple[float, float]:
    """(AUTOC, Qini) of the ranking by `score` against the TRUE Delta (grf's
    rank_average_treatment_effect with the truth in place of the doubly robust scores):
    TOC(q) = mean Delta of the top q - mean Delta, at q = k/n for k = 1..n;
    AUTOC = mean_k TOC(k/n), Qini = mean_k (k/n) TOC(k/n); ties broken at random in
    expectation (`tie_means`). A constant score has both 0."""
    d = tie_means(score, delta, order)
    n = d.size
    if n == 0:
        return np.nan, np.nan
    k = np.arange(1, n + 1)
    toc = np.cumsum(d) / k - d.mean()
    return float(toc.mean()), float((toc * k / n).mean())


def value_at_budget(score, y0, y1, q: float, order=None) -> float:
    """Mean of Y(d_q) where d_q treats the q n people with the highest scores among those with
    score > 0 (the rule's own decision, capped at a share q; at q = 1 it is `value`); a tie at
    the cut is treated in part (its expected value under random tie-breaking)."""
    score = np.asarray(score, float)
    y0, y1 = np.asarray(y0, float), np.asarray(y1, float)
    n = score.size
    if n == 0:
        return np.nan
    order = np.argsort(-score, kind="stable") if order is None else order[::-1]
    s, gain = score[order], (y1 - y0)[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])      # runs of equal scores
    size = np.diff(np.r_[starts, n]).astype(float)
    before = np.r_[0.0, np.cumsum(size)[:-1]]                   # people ranked above a run
    take = np.clip((q * n - before) / size, 0.0, 1.0) * (s[starts] > 0)
    return float((y0.sum() + (take * np.add.reduceat(gain, starts)).sum()) / n)


def across_sites(d_hat, d_opt, y0, y1, codes, n_sites: int) -> tuple[float, float, float]:
    """(worst site accuracy, SD of the site accuracies, share of sites where the rule's true
    value is below the better constant rule's), on the test rows of each site; the better
    constant rule is the one (treat-all or treat-none) with the higher value on the whole test
    set, evaluated in each site."""
    codes = np.asarray(codes)
    n = np.bincount(codes, minlength=n_sites).astype(float)
    seen = n > 0
    right = np.bincount(codes, weights=(np.asarray(d_hat) == np.asarray(d_opt)).astype(float),
                        minlength=n_sites)[seen] / n[seen]
    y = np.where(np.asarray(d_hat) == 1, y1, y0)
    const = y1 if np.mean(y1) >= np.mean(y0) else y0
    v_rule = np.bincount(codes, weights=y, minlength=n_sites)[seen] / n[seen]
    v_const = np.bincount(codes, weights=const, minlength=n_sites)[seen] / n[seen]
    sd = float(right.std(ddof=1)) if right.size > 1 else np.nan
    return float(right.min()), sd, float(np.mean(v_rule < v_const - 1e-12))


def targeting(score, truth: dict, codes, n_sites: int, budget: float = 1.0,
              order=None) -> dict[str, float]:
    """TARGETING_METRICS of one method's test-set scores (issue 41): the value under a budget,
    the ranking's AUTOC and Qini against the true Delta, and the rule site by site."""
    score = np.asarray(score, float)
    order = np.argsort(score, kind="stable") if order is None else order
    y0, y1 = np.asarray(truth["Y0"], float), np.asarray(truth["Y1"], float)
    autoc, qini = toc_integrals(score, truth["Delta"], order)
    worst, sd, below = across_sites((score > 0).astype(np.int64), truth["d_opt"], y0, y1,
                                    codes, n_sites)
    return {"value_at_budget": value_at_budget(score, y0, y1, budget, order),
            "autoc": autoc, "qini": qini, "worst_site_accuracy": worst,
            "site_accuracy_sd": sd, "sites_below_constant": below}
