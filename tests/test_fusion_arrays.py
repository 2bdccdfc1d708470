"""Fusion on arrays (``lsr.fusion.fuse_ranked``, what the Searcher runs) against the run-dict functions
``rrf`` and ``convex`` (what ranx-style callers use) on random runs: the same order and scores."""

import numpy as np
import pytest

from lsr.fusion import convex, fuse_ranked, rrf
from lsr.params import FusionSpec
from lsr.retrievers.base import Ranked

NAMES = ("sparse", "dense", "bm25")
MINS = {"sparse": 0.0, "dense": -1.0, "bm25": 0.0}


def random_case(rng, n_rows: int, n_queries: int, n_lists: int, depth: int):
    """Random ids (their order is not the rows'), and per list: Ranked arrays and the same run as a dict.
    Lists are long, short, single or empty, overlapping or disjoint, with tied scores; each is sorted by
    score then id, as the dict functions rank a run."""
    ids = np.array([f"d{x:04d}" for x in rng.permutation(n_rows * 3)[:n_rows]])
    id_rank = np.empty(n_rows, np.int64)
    id_rank[np.argsort(ids, kind="stable")] = np.arange(n_rows)
    parts, runs = [], []
    for r in range(n_lists):
        lists, run = [], {}
        for q in range(n_queries):
            kind = rng.integers(6)
            n = {0: 0, 1: 1}.get(int(kind), int(rng.integers(1, depth + 1)))
            pool = np.arange(n_rows) if kind != 5 else np.arange(r, n_rows, n_lists)  # 5: disjoint lists
            rows = rng.choice(pool, size=min(n, pool.size), replace=False)
            if rng.random() < 0.5:  # ties: a few distinct values
                scores = rng.integers(0, 4, rows.size).astype(np.float32) * np.float32(0.5)
            else:
                scores = rng.normal(0, 3, rows.size).astype(np.float32)
            if MINS[NAMES[r]] == 0.0:
                scores = np.abs(scores)
            order = np.lexsort((id_rank[rows], -scores))
            rows, scores = rows[order], scores[order]
            lists.append((rows, scores))
            run[f"q{q}"] = {str(ids[x]): float(s) for x, s in zip(rows, scores)}
        parts.append(Ranked.from_lists(lists, k=depth))
        runs.append(run)
    return ids, id_rank, parts, runs


def as_run(ranked: Ranked, ids: np.ndarray) -> dict:
    return {f"q{q}": dict(zip(ids[ranked[q][0]].tolist(), ranked[q][1].tolist())) for q in range(len(ranked))}


def assert_same(got: dict, want: dict, *, strict: bool = True):
    """The same fused lists: ids in the same order, scores equal (rtol 1e-12). ``strict=False``: two
    documents whose fused scores differ by rounding only (a tie in exact arithmetic) may come in either
    order, also across the cut."""
    assert list(got) == list(want)
    for q in want:
        np.testing.assert_allclose(list(got[q].values()), list(want[q].values()), rtol=1e-12, atol=1e-15)
        if strict:
            assert list(got[q]) == list(want[q]), q
            continue
        last = min(want[q].values(), default=None)
        for d, s in got[q].items():  # each id its own score, or one tied with the last one kept
            np.testing.assert_allclose(s, want[q][d] if d in want[q] else last, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("method, normalization", [("rrf", None), ("convex", "minmax"), ("convex", "zscore"),
                                                   ("convex", "tmm")])
def test_fuse_ranked_equals_the_run_functions(method, normalization):
    rng = np.random.default_rng(12)
    cases = 0
    for trial in range(60):
        n_lists = 1 + trial % 3
        names = NAMES[:n_lists]
        n_rows, depth, top = int(rng.integers(5, 60)), int(rng.integers(1, 12)), int(rng.integers(1, 15))
        ids, id_rank, parts, runs = random_case(rng, n_rows, 8, n_lists, depth)
        equal = trial % 4 == 0  # equal weights: both sides use exactly the same ones
        raw = {n: 1.0 if equal else float(rng.choice([1.0, 2.0, 0.5, rng.uniform(0.01, 3)])) for n in names}
        fusion = {"method": method, "weights": raw, "k": float(rng.choice([0, 1, 60]))}
        if normalization:
            fusion["normalization"] = normalization
        spec = FusionSpec.check(fusion, names)
        weights = [w for _, w in spec.weights]
        mins = [MINS[n] for n in names]
        got = fuse_ranked(parts, weights=weights, method=spec.method, normalization=spec.normalization,
                          k=spec.k, mins=mins, n_rows=n_rows, top=top, tiebreak=id_rank)
        assert got.rows.shape == (8, top) and (got.counts <= top).all()
        if method == "rrf":
            want = rrf(runs, k=spec.k, weights=weights, top=top)
        else:
            want = convex(runs, weights=weights, normalization=normalization, theoretical_mins=mins, top=top)
        # convex() renormalises the weights it is given (an ulp off FusionSpec's): exact ties may then break
        # by rounding on one side only
        assert_same(as_run(got, ids), want, strict=method == "rrf" or equal)
        cases += sum(len(v) > 1 for v in want.values())
    assert cases > 100


def test_ties_go_to_the_smaller_id_not_the_smaller_row():
    ids = np.array(["b", "a", "c"])  # row 1 has the smallest id
    one = Ranked.from_lists([(np.array([0, 1, 2]), np.array([1.0, 1.0, 1.0]))], k=3)
    rank = np.array([1, 0, 2])
    by_id = fuse_ranked([one], weights=[1.0], normalization="minmax", n_rows=3, top=3, tiebreak=rank)
    assert ids[by_id[0][0]].tolist() == ["a", "b", "c"]
    assert fuse_ranked([one], weights=[1.0], n_rows=3, top=3)[0][0].tolist() == [0, 1, 2]  # default: rows


def test_rrf_ranks_tied_scores_by_id_as_the_run_functions_do():
    # one list with a tie: RRF's ranks follow the list order, so the array form needs the list sorted as
    # the run functions sort it (score, then id) to give the same fused order
    ids = np.array(["z", "a", "m"])
    a = Ranked.from_lists([(np.array([0, 1, 2]), np.array([2.0, 2.0, 1.0]))], k=3)  # tie listed by row
    b = Ranked.from_lists([(np.array([2]), np.array([5.0]))], k=3)
    runs = [as_run(a, ids), as_run(b, ids)]
    want = rrf(runs, k=1, top=3)["q0"]
    assert list(want) == ["m", "a", "z"]
    rank = np.array([2, 0, 1])
    order = np.lexsort((rank[a.rows[0]], -a.scores[0]))
    a_sorted = Ranked.from_lists([(a.rows[0][order], a.scores[0][order])], k=3)
    got = fuse_ranked([a_sorted, b], weights=[1.0, 1.0], method="rrf", k=1, n_rows=3, top=3, tiebreak=rank)
    assert ids[got[0][0]].tolist() == list(want)


def test_searcher_rrf_equals_rrf_of_its_single_runs(mini_searcher):
    queries = {"volcano": "why does a volcano erupt lava", "oxygen": "how does blood carry oxygen",
               "bread": "bake bread with yeast"}
    names = ("sparse", "dense", "bm25")
    runs = [mini_searcher.batch_search(queries, k=100, mode=n) for n in names]
    fusion = {"method": "rrf", "weights": dict.fromkeys(names, 1)}
    got = mini_searcher.batch_search(queries, k=30, fusion=fusion)
    want = rrf(runs, top=30)
    assert_same(got, want)
