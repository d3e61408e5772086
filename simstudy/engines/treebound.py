"""Compiled branch and bound for the exact policy-tree search of `treesearch.py` (docs/policy_tree.md): the
kernels behind `PolicyTreeSearch`, on a node given as its own arrays (`_gather`).

The search is compiled (numba) and works on per-feature histograms of the scores over the
candidate bins: a depth-1 search of a node is one prefix-sum pass over p x B bins; a depth-2
search adds the node's rows bucket by bucket (in the order of the top feature) to left-hand
histograms and runs both children's depth-1 searches at every top candidate, so it costs
O(p (n p + B_2 p B_1) D) instead of re-sorting every child. Levels 3 and 4 search their
children as nodes of their own (rows gathered, bins renumbered to those present).

Branch and bound (exact: the same optimum; ties go to the lowest feature and cut, as in a plain
scan): a node's reward is at most the perfect allocation's; the best tree one level shallower
is an incumbent; cuts are searched as intervals between computed neighbours, each bounded by
how much moving rows across the cut can change the children's rewards (`_cuts2`); children get
cutoffs and abort below them; in exact mode the optimum on a coarse grid seeds the incumbent
(`PolicyTreeSearch._floor`); with discrete features (<= MEMO_BINS values) a memo keyed by row
set (Zobrist hashing) answers subproblems met along different paths. `prune=False` gives the
plain search.
"""
from __future__ import annotations

import numba
import numpy as np

_TOL = 1e-12
_TIE = 1e-9          # relative: sums of the same scores in another order (`_tied`)


@numba.njit(cache=True)
def _better(r, best):
    return r > best + _TOL * max(1.0, abs(r))


@numba.njit(cache=True)
def _tied(a, b, scale):
    """a and b equal up to rounding: sums of the same scores taken in another order (a child's
    histogram as node minus left, rows added and removed) differ in the last bits, and the order
    of categories must not depend on which way a sum was taken."""
    return abs(a - b) <= _TIE * scale


@numba.njit(cache=True)
def _column_sums(G):
    """G.sum(0), in numba's order (row by row), as a loop (numba's axis sum and array max
    compile their generic machinery: seconds of a first run)."""
    out = np.zeros(G.shape[1])
    for r in range(G.shape[0]):
        for d in range(G.shape[1]):
            out[d] += G[r, d]
    return out


@numba.njit(cache=True)
def _vmax(v):
    """v.max() of a non-empty float vector (NaN if one is NaN), as numba computes it."""
    top = v[0]
    for i in range(v.shape[0]):
        if np.isnan(v[i]):
            return v[i]
        if v[i] > top:
            top = v[i]
    return top


@numba.njit(cache=True)
def _imax(a):
    """a.max() of a non-empty int vector, as a loop."""
    top = a[0]
    for i in range(a.shape[0]):
        top = max(top, a[i])
    return top


@numba.njit(cache=True)
def _imax2(a):
    """a.max() of a non-empty int matrix, as a loop."""
    top = a[0, 0]
    for i in range(a.shape[0]):
        top = max(top, _imax(a[i]))
    return top


@numba.njit(cache=True)
def _lead(v):
    """The best action for the category order: the lowest d whose total is tied with the
    largest (`_tied`), so that every path to a node's totals picks the same action."""
    top = _vmax(v)
    scale = 1.0
    for d in range(v.shape[0]):
        scale = max(scale, abs(v[d]))
    for d in range(v.shape[0]):
        if v[d] >= top or _tied(v[d], top, scale):
            return d
    return _argmax(v)


@numba.njit(cache=True)
def _cat_order(H, C, B):
    """Categories present in a node (H: (B, D) score sums, C: counts) ordered by decreasing
    mean contrast of the node's best action (`_lead` of the totals) against the mean of the
    other actions; contrasts tied up to rounding (`_tied`) keep the categories' code order
    (mcf's rule for unordered features; with D = 2 it is the order by mean Gamma_1 - Gamma_0)."""
    D = H.shape[1]
    tot = np.zeros(D)
    m = 0
    for c in range(B):
        if C[c] > 0:
            m += 1
            for d in range(D):
                tot[d] += H[c, d]
    best = _lead(tot)
    keys = np.empty(m)
    cats = np.empty(m, np.int64)
    i = 0
    scale = 1.0
    for c in range(B):
        if C[c] > 0:
            s = 0.0
            for d in range(D):
                s += H[c, d]
            contrast = (H[c, best] - (s - H[c, best]) / (D - 1)) / C[c]
            keys[i] = -contrast
            cats[i] = c
            scale = max(scale, abs(contrast))
            i += 1
    # insertion sort (a node has few categories): ascending key, ties in code order
    for i in range(1, m):
        k, c = keys[i], cats[i]
        t = i - 1
        while t >= 0 and keys[t] > k and not _tied(keys[t], k, scale):
            keys[t + 1], cats[t + 1] = keys[t], cats[t]
            t -= 1
        keys[t + 1], cats[t + 1] = k, c
    return cats


@numba.njit(cache=True)
def _argmax(v):
    a = 0
    for d in range(1, v.shape[0]):
        if v[d] > v[a]:
            a = d
    return a


@numba.njit(cache=True)
def _hist(codes, nb, G):
    """Per-feature histograms of a node (all of G's rows): H[k, b, d] = sum of Gamma_d over the
    rows in bin b of feature k, C[k, b] their count, and the node's totals."""
    p = codes.shape[0]
    D = G.shape[1]
    H = np.zeros((p, _imax(nb), D))
    C = np.zeros((p, _imax(nb)), np.int64)
    tot = np.zeros(D)
    for r in range(G.shape[0]):
        _add_row(H, C, tot, codes, G, r)
    return H, C, tot


@numba.njit(cache=True, inline="always")
def _add_row(H, C, tot, codes, G, r):
    """Add row r's scores to the node totals and to every feature's histogram bin."""
    D = G.shape[1]
    for d in range(D):
        tot[d] += G[r, d]
    for k in range(codes.shape[0]):
        b = codes[k, r]
        C[k, b] += 1
        for d in range(D):
            H[k, b, d] += G[r, d]


@numba.njit(cache=True)
def _best1(Ha, Ca, Hb, Cb, nb, iscat, tot, n, min_leaf):
    """Best tree of depth <= 1 from a node's histograms H = Ha - Hb, C = Ca - Cb (a right-hand
    child is node minus left; Hb = 0 otherwise): one prefix-sum pass per feature.
    Returns (reward, feature, cut) -- cut i: the first i + 1 bins of the feature's order go
    left (ordered: bins 0..i; categorical: the node's category order); feature -1 = a leaf."""
    p = Ha.shape[0]
    D = Ha.shape[2]
    abest = _argmax(tot)
    best, bk, bi = tot[abest], -1, -1
    left = np.empty(D)
    none = np.empty(0, np.int64)          # (no allocation per ordered feature)
    for k in range(p):
        if iscat[k]:
            order = _cat_order(Ha[k] - Hb[k], Ca[k] - Cb[k], nb[k])
            m = order.shape[0]
        else:
            order = none
            m = nb[k]
        left[:] = 0.0
        cl = 0
        for i in range(m - 1):
            b = order[i] if iscat[k] else i
            c = Ca[k, b] - Cb[k, b]
            if c == 0:
                continue
            for d in range(D):
                left[d] += Ha[k, b, d] - Hb[k, b, d]
            cl += c
            if cl < min_leaf:
                continue
            if n - cl < min_leaf:
                break
            bl, br = -np.inf, -np.inf
            for d in range(D):
                if left[d] > bl:
                    bl = left[d]
                if tot[d] - left[d] > br:
                    br = tot[d] - left[d]
            if _better(bl + br, best):
                best, bk, bi = bl + br, k, i
    return best, bk, bi


@numba.njit(cache=True)
def _gather(codes, nbs, G, Z, rows, L, same):
    """A node as its own arrays: its rows' scores, their hash keys (Z) and, per level 1..L, the
    bin codes renumbered to the bins present in the node (order kept), so that every scan costs
    the node's distinct values, not the data's; a level with the grid of the level below
    (same[l]) is copied."""
    p = codes.shape[1]
    m = rows.shape[0]
    D = G.shape[1]
    c = np.empty((L, p, m), np.int64)
    nb = np.zeros((L, p), np.int64)
    mark = np.empty(max(_imax2(nbs), 1), np.int64)
    for lev in range(L):
        if lev > 0 and same[lev + 1]:
            for k in range(p):            # the same grid as the level below (exact mode)
                nb[lev, k] = nb[lev - 1, k]
                for q in range(m):
                    c[lev, k, q] = c[lev - 1, k, q]
            continue
        for k in range(p):
            B = nbs[lev, k]
            for b in range(B):
                mark[b] = -1
            for q in range(m):
                mark[codes[lev, k, rows[q]]] = 0
            u = 0
            for b in range(B):
                if mark[b] == 0:
                    mark[b] = u
                    u += 1
            nb[lev, k] = u
            for q in range(m):
                c[lev, k, q] = mark[codes[lev, k, rows[q]]]
    g = np.empty((m, D))
    z = np.empty(m, np.int64)
    for q in range(m):
        z[q] = Z[rows[q]]
        for d in range(D):
            g[q, d] = G[rows[q], d]
    return c, nb, g, z


# Subproblem memo (low-cardinality features, where the same row set is reached along different
# paths: x1 = 0 & x2 = 1 and x2 = 1 & x1 = 0): a row set is keyed by the XOR of its rows' random
# 64-bit keys (Zobrist hashing; prefix XORs give every cut's children for free), its size and
# the depth. Exact rewards are stored under the key, "no tree beats u" bounds under key ^ _BOUND.
_BOUND = 0x5BD1E995


@numba.njit(cache=True)
def _key(h, m, level):
    return h ^ (m * -7046029254386353131) ^ (level * 7640891576956012809)


@numba.njit(cache=True)
def _xor(z):
    h = 0
    for q in range(z.shape[0]):
        h ^= z[q]
    return h


@numba.njit(cache=True)
def _memo_get(memo, use, key, cutoff):
    """(hit, value): an exact reward (value = max(reward, cutoff) as the node search returns)
    or a stored bound <= cutoff (value = cutoff)."""
    if use:
        if key in memo:
            v = memo[key]
            return True, (v if v > cutoff else cutoff)
        kb = key ^ _BOUND
        if kb in memo and memo[kb] <= cutoff:
            return True, cutoff
    return False, 0.0


@numba.njit(cache=True)
def _memo_put(memo, use, key, value, cutoff):
    if use:
        if value > cutoff:
            memo[key] = value
        else:
            kb = key ^ _BOUND
            if kb not in memo or memo[kb] > cutoff:
                memo[kb] = cutoff


@numba.njit(cache=True)
def _node_facts(G):
    """Totals, best single action and the perfect allocation's reward (perf = sum_i max_d
    Gamma_id, an upper bound on the reward of any tree of the node)."""
    m, D = G.shape
    tot = np.zeros(D)
    perf = 0.0
    for q in range(m):
        hi = G[q, 0]
        for d in range(D):
            tot[d] += G[q, d]
            hi = max(hi, G[q, d])
        perf += hi
    return tot, _argmax(tot), perf


@numba.njit(cache=True)
def _nested(same, level):
    """Is every tree of depth level - 1 also a candidate at depth `level`? Only if every level's
    grid equals the one below (the shallower tree's level-l splits sit at level l + 1)."""
    for lev in range(2, level + 1):
        if not same[lev]:
            return False
    return True


@numba.njit(cache=True)
def _threshold(tot, abest, cutoff, dummy, dummy_exact, prune, same_level):
    """Rewards <= thr cannot win: the leaf, the caller's cutoff and -- where the shallower tree
    (dummy) is a candidate of this level too (`_nested`) -- the dummy, less a tie margin."""
    thr = max(tot[abest], cutoff)
    if prune and same_level and dummy_exact:
        thr = max(thr, dummy - 4 * _TOL * max(1.0, abs(dummy)))
    return thr


@numba.njit(cache=True)
def _feature_order(top_j, B, cat, G):
    """Rows of a node by bin of feature j (counting sort): (srt, start, order, mo) -- bin b's
    rows are srt[start[b]:start[b + 1]]; the bins in split order are 0..B-1 (ordered) or
    order[0..mo-1] (categorical: by mean contrast, `_cat_order`)."""
    m, D = G.shape
    if cat:
        Hj = np.zeros((B, D))
        Cj = np.zeros(B, np.int64)
        for q in range(m):
            Cj[top_j[q]] += 1
            for d in range(D):
                Hj[top_j[q], d] += G[q, d]
        order = _cat_order(Hj, Cj, B)
        mo = order.shape[0]
    else:
        order = np.arange(B)
        mo = B
    start = np.zeros(B + 1, np.int64)
    for q in range(m):
        start[top_j[q] + 1] += 1
    for b in range(B):
        start[b + 1] += start[b]
    fill = start[:-1].copy()
    srt = np.empty(m, np.int64)
    for q in range(m):
        b = top_j[q]
        srt[fill[b]] = q
        fill[b] += 1
    return srt, start, order, mo


@numba.njit(cache=True)
def _side_rows(srt, start, order, lo, hi, n):
    """Rows of the bins order[lo:hi] (one side of a cut)."""
    out = np.empty(n, np.int64)
    k = 0
    for t in range(lo, hi):
        b = order[t]
        for s in range(start[b], start[b + 1]):
            out[k] = srt[s]
            k += 1
    return out


# Cut scans of one feature j at a node of depth l. Position k (1 <= k < number of bins) puts the
# first k bins in split order into the left child; its reward is R(left, l - 1) + R(right, l - 1).
# Each side is bounded before it is computed (min_leaf = 1, where restricted or extended trees
# stay feasible): moving rows M from right to left,
#     R(left + M) <= R(left) + sum_M max_d Gamma_id,   R(right - M) <= R(right) - sum_M min_d Gamma_id
# ("use last rewards", Cussens et al. 2025), from BOTH computed neighbours of k: positions are
# searched as intervals whose ends are known (at first the empty left child, R(right) = R(node,
# l - 1) = the dummy, and the empty right child), each interval's best-bounded position is
# computed next and splits it, and an interval whose bounds cannot beat the incumbent is dropped
# whole. The left child is computed first, the right one only if left + bound(right) can still
# win (children of depth >= 2 get the cutoff incumbent - left and abort below it). With
# min_leaf > 1, or children whose levels' grids do not nest (halved grids, depth >= 3), positions
# run in order. Ties: the lowest position wins, as in a plain scan.
# Returns (best reward, cut = k - 1) among positions beating thr and rec (cut -1: none).
# Levels 3 and 4 are written out: numba cannot cache recursive functions.

@numba.njit(cache=True)
def _positions(srt, start, order, mo, G, z, min_leaf):
    """Per position k: rows on the left (NL), prefix sums of max_d and min_d Gamma (PMX, PMN),
    prefix XOR of the rows' keys (PH) and whether k is a distinct cut leaving min_leaf rows on
    each side."""
    m, D = G.shape
    NL = np.zeros(mo + 1, np.int64)
    PH = np.zeros(mo + 1, np.int64)
    PMX = np.zeros(mo + 1)
    PMN = np.zeros(mo + 1)
    valid = np.zeros(mo + 1, np.bool_)
    for k in range(1, mo + 1):
        b = order[k - 1]
        hi_s, lo_s = 0.0, 0.0
        h = PH[k - 1]
        for s in range(start[b], start[b + 1]):
            q = srt[s]
            h ^= z[q]
            lo, hi = G[q, 0], G[q, 0]
            for d in range(1, D):
                lo = min(lo, G[q, d])
                hi = max(hi, G[q, d])
            hi_s += hi
            lo_s += lo
        PH[k] = h
        NL[k] = NL[k - 1] + start[b + 1] - start[b]
        PMX[k] = PMX[k - 1] + hi_s
        PMN[k] = PMN[k - 1] + lo_s
        valid[k] = (k < mo and NL[k] > NL[k - 1] and NL[k] >= min_leaf and m - NL[k] >= min_leaf)
    return NL, PMX, PMN, PH, valid


@numba.njit(cache=True)
def _can_win(ub, k, thr, best_r, best_k):
    """Could a position with upper bound ub be recorded (beats thr; beats the best, or ties it
    from a lower position)?"""
    if ub <= thr:
        return False
    if best_k < 0 or k > best_k:
        return ub > best_r
    return ub >= best_r - 4 * _TOL * max(1.0, abs(best_r))


@numba.njit(cache=True)
def _bar(k, thr, best_r, best_k):
    """The reward a position k must exceed to be recorded (`_can_win`): children get it, less
    the other side, as cutoff."""
    if best_k < 0 or k > best_k:
        return max(thr, best_r)
    return max(thr, best_r - 4 * _TOL * max(1.0, abs(best_r)))


@numba.njit(cache=True)
def _records(r, k, thr, best_r, best_k):
    if r <= thr:
        return False
    if best_k < 0 or k > best_k:
        return _better(r, best_r)
    return _better(r, best_r) or not _better(best_r, r)


@numba.njit(cache=True)
def _next_position(interval, stack, sp, k, KL, KR, PMX, PMN, valid, thr, best_r, best_k):
    """The next position to compute: (k, a, b, bound on its right child, sp); k = -1 when done.
    Interval search: pops intervals (a, b) with known ends until one holds a position whose
    bound can win, and returns the best-bounded one. Otherwise: the next valid position."""
    mo = KL.shape[0] - 1
    if not interval:
        k += 1
        while k < mo and not valid[k]:
            k += 1
        return (k if k < mo else -1), 0, 0, PMX[mo] - PMX[min(k, mo)], sp
    while sp > 0:
        sp -= 1
        a, b = stack[sp, 0], stack[sp, 1]
        bk, bub, bubr = -1, -np.inf, 0.0
        for t in range(a + 1, b):
            if not valid[t]:
                continue
            ubl = min(KL[a] + PMX[t] - PMX[a], KL[b] - (PMN[b] - PMN[t]))
            ubr = min(KR[a] - (PMN[t] - PMN[a]), KR[b] + (PMX[b] - PMX[t]))
            if ubl + ubr > bub and _can_win(ubl + ubr, t, thr, best_r, best_k):
                bk, bub, bubr = t, ubl + ubr, ubr
        if bk >= 0:
            return bk, a, b, bubr, sp
    return -1, 0, 0, 0.0, sp


@numba.njit(cache=True)
def _scan_state(mo, dummy, interval):
    """Known (upper bounds of) left and right rewards per position -- the empty left child
    (0, dummy) and the empty right child (dummy, 0) -- and the interval stack."""
    KL = np.empty(mo + 1)
    KR = np.empty(mo + 1)
    KL[0], KR[0], KL[mo], KR[mo] = 0.0, dummy, dummy, 0.0
    stack = np.empty((mo + 1, 2), np.int64)
    stack[0, 0], stack[0, 1] = 0, mo
    return KL, KR, stack, (1 if interval else 0)


@numba.njit(cache=True)
def _move_left(HL, CL, totL, botT, G, srt, start, order, cur, k):
    """Left-hand histograms from position cur to position k (adding or removing bins); botT:
    the bottom level's codes row-major (n, p), read row by row."""
    D = G.shape[1]
    while cur != k:
        if cur < k:
            b, sign = order[cur], 1.0
            cur += 1
        else:
            cur -= 1
            b, sign = order[cur], -1.0
        for s in range(start[b], start[b + 1]):
            r = srt[s]
            for d in range(D):
                totL[d] += sign * G[r, d]
            for f in range(botT.shape[1]):
                bb = botT[r, f]
                CL[f, bb] += int(sign)
                for d in range(D):
                    HL[f, bb, d] += sign * G[r, d]
    return cur


@numba.njit(cache=True)
def _cuts2(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, tot, dummy, Ht, Ct,
           botT, memo, use):
    """Level 2: children are depth-1 searches on histograms (right = node - left), O(p B D),
    built only for children not in the memo."""
    m, D = G.shape
    srt, start, order, mo = _feature_order(c[1, j], nb[1, j], iscat[j], G)
    NL, PMX, PMN, PH, valid = _positions(srt, start, order, mo, G, z, min_leaf)
    if not valid.any():
        return rec, -1
    # moving-rows bounds: with 3+ actions a depth-1 child's categorical cut follows an order of
    # its own rows' categories (not every partition), so they are kept to ordered features
    interval = prune and min_leaf == 1 and not (D > 2 and iscat.any())
    KL, KR, stack, sp = _scan_state(mo, dummy, interval)
    HL = np.zeros((0, 0, D))              # left histograms: built at the first memo miss
    CL = np.zeros((0, 0), np.int64)
    Z = np.zeros((0, 0, D))
    Zc = np.zeros((0, 0), np.int64)
    totL = np.zeros(D)
    totR = np.empty(D)
    best_r, best_k, k, cur = rec, np.int64(-1), np.int64(0), np.int64(0)   # not literals
    while True:
        k, a, b, ubr, sp = _next_position(interval, stack, sp, k, KL, KR, PMX, PMN, valid, thr,
                                          best_r, best_k)
        if k < 0:
            break
        keyl = _key(PH[k], NL[k], 1)
        hit, v = _memo_get(memo, use, keyl, -np.inf)
        KL[k] = v
        if not hit:
            if HL.shape[0] == 0:
                HL, CL, Z, Zc = np.zeros_like(Ht), np.zeros_like(Ct), np.zeros_like(Ht), np.zeros_like(Ct)
            cur = _move_left(HL, CL, totL, botT, G, srt, start, order, cur, k)
            KL[k] = _best1(HL, CL, Z, Zc, nb[0], iscat, totL, NL[k], min_leaf)[0]
            _memo_put(memo, use, keyl, KL[k], -np.inf)
        if prune and not _can_win(KL[k] + ubr, k, thr, best_r, best_k):
            KR[k] = ubr
        else:
            keyr = _key(PH[mo] ^ PH[k], m - NL[k], 1)
            hit, v = _memo_get(memo, use, keyr, -np.inf)
            KR[k] = v
            if not hit:
                if HL.shape[0] == 0:
                    HL, CL, Z, Zc = np.zeros_like(Ht), np.zeros_like(Ct), np.zeros_like(Ht), np.zeros_like(Ct)
                cur = _move_left(HL, CL, totL, botT, G, srt, start, order, cur, k)
                for d in range(D):
                    totR[d] = tot[d] - totL[d]
                KR[k] = _best1(Ht, Ct, HL, CL, nb[0], iscat, totR, m - NL[k], min_leaf)[0]
                _memo_put(memo, use, keyr, KR[k], -np.inf)
            if _records(KL[k] + KR[k], k, thr, best_r, best_k):
                best_r, best_k = KL[k] + KR[k], k
        if interval:
            stack[sp, 0], stack[sp, 1], stack[sp + 1, 0], stack[sp + 1, 1] = a, k, k, b
            sp += 2
    return best_r, best_k - 1 if best_k > 0 else -1


# Levels 3 and 4: children are node searches on their gathered rows. The scan is a small state
# machine (`_deep_*`) asking its caller for one child's reward at a time, so that the two levels
# differ only in the child search they call (numba cannot cache recursive functions).

@numba.njit(cache=True)
def _deep_begin(level, j, c, nb, iscat, G, z, min_leaf, prune, rec, dummy, same):
    """The scan's state: the feature's order and positions, the known ends (KL, KR), the
    interval stack, ints [best_k, k, a, b, sp, side] and floats [best_r, ubr, bar, cutoff of the
    requested child]."""
    srt, start, order, mo = _feature_order(c[level - 1, j], nb[level - 1, j], iscat[j], G)
    NL, PMX, PMN, PH, valid = _positions(srt, start, order, mo, G, z, min_leaf)
    # the moving-rows bounds restrict a child's tree to fewer rows; a split left with an empty
    # side leaves a shallower tree, a candidate only where the children's grids nest. Not with
    # categorical features: a child's categorical cuts follow an order of ITS rows' categories,
    # so its optimum over fewer rows is not bounded by the one over more (a counterexample of
    # the pruned-vs-plain property test: depth 4, 3 actions, reward 31.597 vs 31.800)
    interval = prune and min_leaf == 1 and _nested(same, level - 1) and not iscat.any()
    KL, KR, stack, sp = _scan_state(mo, dummy, interval)
    ints = np.array([-1, 0, 0, 0, sp, 0], np.int64)
    flts = np.array([rec, 0.0, 0.0, 0.0])
    return srt, start, order, mo, NL, PMX, PMN, PH, valid, interval, KL, KR, stack, ints, flts


@numba.njit(cache=True)
def _deep_request(st, level, thr, prune):
    """The next child to compute: (wanted, rows, cutoff, key); wanted = False when done. Positions
    whose left child leaves the right one no chance are closed here (bound as its value)."""
    srt, start, order, mo, NL, PMX, PMN, PH, valid, interval, KL, KR, stack, ints, flts = st
    m = srt.shape[0]
    while True:
        k = ints[1]
        if ints[5] == 1:                      # the left child of k is known: the right one?
            if prune and not _can_win(KL[k] + flts[1], k, thr, flts[0], ints[0]):
                KR[k] = flts[1]
                _deep_close(st)
                continue
            ints[5] = 2
            flts[3] = flts[2] - KL[k]
            return (True, _side_rows(srt, start, order, k, mo, m - NL[k]), flts[3],
                    _key(PH[mo] ^ PH[k], m - NL[k], level - 1))
        k, a, b, ubr, sp = _next_position(interval, stack, ints[4], k, KL, KR, PMX, PMN, valid,
                                          thr, flts[0], ints[0])
        ints[1], ints[2], ints[3], ints[4] = k, a, b, sp
        if k < 0:
            return False, np.empty(0, np.int64), 0.0, 0
        flts[1] = ubr
        flts[2] = _bar(k, thr, flts[0], ints[0]) if prune else -np.inf
        ints[5] = 1
        flts[3] = flts[2] - ubr
        return (True, _side_rows(srt, start, order, 0, k, NL[k]), flts[3],
                _key(PH[k], NL[k], level - 1))


@numba.njit(cache=True)
def _deep_answer(st, value, thr):
    """Record the requested child's reward: exact above its cutoff; at the cutoff it is only a
    bound (no tree of the child beats it), the position's total is then at most the bar it had
    to beat, so the position is closed without being recorded."""
    KL, KR, ints, flts = st[10], st[11], st[13], st[14]
    k = ints[1]
    exact = value > flts[3]
    if ints[5] == 1:
        KL[k] = value
        if not exact:
            KR[k] = flts[1]
            _deep_close(st)
        return
    KR[k] = value
    if exact and _records(KL[k] + KR[k], k, thr, flts[0], ints[0]):
        flts[0], ints[0] = KL[k] + KR[k], k
    _deep_close(st)


@numba.njit(cache=True)
def _deep_close(st):
    """Position k is done: split its interval."""
    interval, stack, ints = st[9], st[12], st[13]
    if interval:
        sp = ints[4]
        stack[sp, 0], stack[sp, 1], stack[sp + 1, 0], stack[sp + 1, 1] = ints[2], ints[1], \
            ints[1], ints[3]
        ints[4] = sp + 2
    ints[5] = 0


@numba.njit(cache=True)
def _cuts3(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy, same, memo,
           use):
    st = _deep_begin(3, j, c, nb, iscat, G, z, min_leaf, prune, rec, dummy, same)
    while True:
        wanted, rows, cutoff, key = _deep_request(st, 3, thr, prune)
        if not wanted:
            break
        hit, v = _memo_get(memo, use, key, cutoff)
        if not hit:
            cc, cnb, cg, cz = _gather(c, nb, G, z, rows, 2, same)
            v = _node2(cc, cnb, iscat, cg, cz, min_leaf, prune, cutoff, same, memo, use)[0]
        _deep_answer(st, v, thr)
    return st[14][0], st[13][0] - 1 if st[13][0] > 0 else -1


@numba.njit(cache=True)
def _cuts4(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy, same, memo,
           use):
    st = _deep_begin(4, j, c, nb, iscat, G, z, min_leaf, prune, rec, dummy, same)
    while True:
        wanted, rows, cutoff, key = _deep_request(st, 4, thr, prune)
        if not wanted:
            break
        hit, v = _memo_get(memo, use, key, cutoff)
        if not hit:
            cc, cnb, cg, cz = _gather(c, nb, G, z, rows, 3, same)
            v = _node3(cc, cnb, iscat, cg, cz, min_leaf, prune, cutoff, same, memo, use)[0]
        _deep_answer(st, v, thr)
    return st[14][0], st[13][0] - 1 if st[13][0] > 0 else -1


# Node searches: the best tree of depth <= l of a node given as its own arrays (`_gather`):
# (reward, feature, cut), features scanned in order sharing the incumbent. The reward is exact
# when it exceeds `cutoff`; otherwise `cutoff` is returned (no tree of the node beats it).

@numba.njit(cache=True)
def _leaf_or_cutoff(G, cutoff):
    v = _vmax(_column_sums(G))
    return (v, -1, -1) if v > cutoff else (cutoff, -1, -1)


@numba.njit(cache=True)
def _node1(c, nb, iscat, G, min_leaf, cutoff):
    m = G.shape[0]
    if m < 2 * min_leaf:
        return _leaf_or_cutoff(G, cutoff)
    H, C, tot = _hist(c[0], nb[0], G)
    v, k, i = _best1(H, C, np.zeros_like(H), np.zeros_like(C), nb[0], iscat, tot, m, min_leaf)
    return (v, k, i) if v > cutoff else (cutoff, -1, -1)


@numba.njit(cache=True)
def _prep2(c, nb, iscat, G, z, min_leaf, prune, cutoff, same, memo, use):
    tot, abest, perf = _node_facts(G)
    m = G.shape[0]
    Ht, Ct, _ = _hist(c[0], nb[0], G)
    key = _key(_xor(z), m, 1)
    hit, dummy = _memo_get(memo, use, key, -np.inf)
    if not hit:
        dummy = _best1(Ht, Ct, np.zeros_like(Ht), np.zeros_like(Ct), nb[0], iscat, tot, m,
                       min_leaf)[0]
        _memo_put(memo, use, key, dummy, -np.inf)
    thr = _threshold(tot, abest, cutoff, dummy, True, prune, _nested(same, 2))
    return tot, abest, perf, Ht, Ct, dummy, thr, c[0].T.copy()


@numba.njit(cache=True)
def _node2(c, nb, iscat, G, z, min_leaf, prune, cutoff, same, memo, use):
    m = G.shape[0]
    if m < 2 * min_leaf:
        return _leaf_or_cutoff(G, cutoff)
    key = _key(_xor(z), m, 2)
    hit, v = _memo_get(memo, use, key, cutoff)
    if hit:
        return v, -1, -1
    tot, abest, perf, Ht, Ct, dummy, thr, botT = _prep2(c, nb, iscat, G, z, min_leaf, prune,
                                                        cutoff, same, memo, use)
    rec, bj, bi = tot[abest], -1, -1
    if not (prune and (perf <= thr or rec >= perf)):
        for j in range(c.shape[1]):
            r, i = _cuts2(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, tot, dummy, Ht, Ct, botT, memo, use)
            if i >= 0:
                rec, bj, bi, thr = r, j, i, r
                if prune and rec >= perf:
                    break                     # the perfect allocation: nothing beats it
    _memo_put(memo, use, key, rec, cutoff)
    return (rec, bj, bi) if rec > cutoff else (cutoff, -1, -1)


@numba.njit(cache=True)
def _node3(c, nb, iscat, G, z, min_leaf, prune, cutoff, same, memo, use):
    m = G.shape[0]
    if m < 2 * min_leaf:
        return _leaf_or_cutoff(G, cutoff)
    key = _key(_xor(z), m, 3)
    hit, v = _memo_get(memo, use, key, cutoff)
    if hit:
        return v, -1, -1
    tot, abest, perf = _node_facts(G)
    dummy = _node2(c[:2].copy(), nb[:2].copy(), iscat, G, z, min_leaf, prune, cutoff, same,
                   memo, use)[0]
    thr = _threshold(tot, abest, cutoff, dummy, dummy > cutoff, prune, _nested(same, 3))
    rec, bj, bi = tot[abest], -1, -1
    if not (prune and (perf <= thr or rec >= perf)):
        for j in range(c.shape[1]):
            r, i = _cuts3(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy,
                          same, memo, use)
            if i >= 0:
                rec, bj, bi, thr = r, j, i, r
                if prune and rec >= perf:
                    break
    _memo_put(memo, use, key, rec, cutoff)
    return (rec, bj, bi) if rec > cutoff else (cutoff, -1, -1)


# The search's root, features in parallel: each feature starts from the same incumbent (leaf,
# shallower tree, floor) and the results merge in feature order, so the tree is the same for any
# number of threads. With the memo (one dict, not thread-safe) the features run in order and
# share the incumbent, as in a node search (the same tree: ties go to the lowest feature). Depth 2
# has its own root, so that PT's depth-2 search compiles only its kernels. Each root is compiled
# twice from one body (`_twins`): for one thread (a study's replicates: numba's parallel
# lowering adds ~10 s to PT's first compile and nothing on one thread) and for several.

@numba.njit(cache=True)
def _merge(rj, ij, leaf):
    """The best feature's cut; ties to the lowest feature (independent of threads)."""
    best, bj, bi = leaf, -1, -1
    for j in range(rj.shape[0]):
        if ij[j] >= 0 and _better(rj[j], best):
            best, bj, bi = rj[j], j, ij[j]
    return best, bj, bi


@numba.njit(cache=True)
def _floored(thr, floor, prune):
    """A known achievable reward (a coarser search's optimum) raises the threshold."""
    return max(thr, floor - 4 * _TOL * max(1.0, abs(floor))) if prune else thr


def _root2_body(c, nb, iscat, G, z, min_leaf, prune, same, floor, memo, use):
    tot, abest, perf, Ht, Ct, dummy, thr, botT = _prep2(c, nb, iscat, G, z, min_leaf, prune,
                                                        -np.inf, same, memo, use)
    thr = _floored(thr, floor, prune)
    p, leaf = c.shape[1], tot[abest]
    rj, ij = np.full(p, -np.inf), np.full(p, -1, np.int64)
    if not (prune and leaf >= perf):
        if use:                           # in order, sharing the incumbent (as a node)
            rec, bj, bi = leaf, -1, -1
            for j in range(p):
                r, i = _cuts2(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, tot,
                                      dummy, Ht, Ct, botT, memo, use)
                if i >= 0:
                    rec, bj, bi, thr = r, j, i, r
            return rec, bj, bi
        else:
            for j in numba.prange(p):
                rj[j], ij[j] = _cuts2(j, c, nb, iscat, G, z, min_leaf, prune, thr, leaf, tot,
                                      dummy, Ht, Ct, botT, memo, use)
    return _merge(rj, ij, leaf)


@numba.njit(cache=True)
def _cuts34(level, j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy, same,
            memo, use):
    if level == 3:
        return _cuts3(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy, same,
                      memo, use)
    return _cuts4(j, c, nb, iscat, G, z, min_leaf, prune, thr, rec, dummy, same,
                  memo, use)


def _root34_body(level, c, nb, iscat, G, z, min_leaf, prune, same, floor, memo, use):
    tot, abest, perf = _node_facts(G)
    if level == 3:
        dummy = _node2(c[:2].copy(), nb[:2].copy(), iscat, G, z, min_leaf, prune, -np.inf, same,
                       memo, use)[0]
    else:
        dummy = _node3(c[:3].copy(), nb[:3].copy(), iscat, G, z, min_leaf, prune, -np.inf, same,
                       memo, use)[0]
    thr = _floored(_threshold(tot, abest, -np.inf, dummy, True, prune, _nested(same, level)),
                   floor, prune)
    p, leaf = c.shape[1], tot[abest]
    rj, ij = np.full(p, -np.inf), np.full(p, -1, np.int64)
    if not (prune and leaf >= perf):
        if use:                           # in order, sharing the incumbent (as a node)
            rec, bj, bi = leaf, -1, -1
            for j in range(p):
                r, i = _cuts34(level, j, c, nb, iscat, G, z, min_leaf, prune, thr, rec,
                               dummy, same, memo, use)
                if i >= 0:
                    rec, bj, bi, thr = r, j, i, r
            return rec, bj, bi
        else:
            for j in numba.prange(p):
                rj[j], ij[j] = _cuts34(level, j, c, nb, iscat, G, z, min_leaf, prune, thr, leaf,
                                       dummy, same, memo, use)
    return _merge(rj, ij, leaf)


def _twins(body):
    """(one-thread, threaded) compiled versions of a root's body (`numba.prange` is `range`
    in the first). The threaded one is a renamed copy, so numba's on-disk cache keeps the two
    apart (its files are named after the function); it compiles only when first called."""
    import types
    name = body.__name__.removesuffix("_body")
    twin = types.FunctionType(body.__code__.replace(co_name=f"{name}_threads"),
                              body.__globals__, f"{name}_threads", body.__defaults__)
    twin.__qualname__ = f"{name}_threads"
    return numba.njit(cache=True)(body), numba.njit(cache=True, parallel=True)(twin)


_root2, _root2_threads = _twins(_root2_body)
_root34, _root34_threads = _twins(_root34_body)


def root(level: int, threads: int):
    """The root search of `level` (2, or 3-4 taking `level` first) for `threads` numba threads."""
    if level == 2:
        return _root2 if threads <= 1 else _root2_threads
    return _root34 if threads <= 1 else _root34_threads


_NO_MEMO = []


def _memo(use: bool):
    """A fresh memo, or (use = False) one shared empty dict that is never written; made on first
    need (a typed dict costs ~0.3 s of numba setup, not worth paying at import)."""
    if use:
        return numba.typed.Dict.empty(numba.types.int64, numba.types.float64)
    if not _NO_MEMO:
        _NO_MEMO.append(numba.typed.Dict.empty(numba.types.int64, numba.types.float64))
    return _NO_MEMO[0]
