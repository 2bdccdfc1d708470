"""Fusion functions against values computed by hand."""

import math

import pytest

from lsr.fusion import convex, fuse, normalize, rrf
from lsr.params import FusionSpec, SearchParams


def check_fusion(fusion, available, *, mode="hybrid"):
    """The checked fusion's JSON form, through the one owner of the check (lsr.params)."""
    if mode != "hybrid":  # refused by the request check
        SearchParams.check(mode=mode, fusion=fusion, available=available)
    return FusionSpec.check(fusion, available).to_dict()

SPARSE = {"q1": {"a": 12.0, "b": 10.0, "c": 4.0}, "q2": {"x": 3.0}}
DENSE = {"q1": {"b": 0.9, "d": 0.7, "a": 0.5}, "q3": {"y": 0.2, "z": 0.1}}


def test_rrf_hand_values():
    run = rrf([SPARSE, DENSE], k=60)
    # q1 ranks: sparse a1 b2 c3; dense b1 d2 a3
    expected = {"a": 1 / 61 + 1 / 63, "b": 1 / 62 + 1 / 61, "c": 1 / 63, "d": 1 / 62}
    assert list(run["q1"]) == ["b", "a", "d", "c"]
    for d, v in expected.items():
        assert run["q1"][d] == pytest.approx(v, rel=1e-15)
    assert run["q2"] == {"x": 1 / 61} and list(run["q3"]) == ["y", "z"]  # queries of either run
    assert list(run) == ["q1", "q2", "q3"]


def test_rrf_weights_k_and_top():
    run = rrf([SPARSE, DENSE], k=0, weights=[2.0, 1.0], top=2)
    # k=0: sparse a=2/1, b=2/2, c=2/3; dense b=1, d=1/2, a=1/3
    assert run["q1"] == {"a": pytest.approx(2 + 1 / 3), "b": pytest.approx(2.0)}


def test_minmax_convex_hand_values():
    run = convex([SPARSE, DENSE], weights=[0.25, 0.75])
    # sparse q1 min-max: a=1, b=(10-4)/8=0.75, c=0; dense: b=1, d=(0.7-0.5)/0.4=0.5, a=0; missing -> 0
    expected = {"a": 0.25 * 1 + 0.75 * 0, "b": 0.25 * 0.75 + 0.75 * 1, "c": 0.0, "d": 0.75 * 0.5}
    assert list(run["q1"]) == ["b", "d", "a", "c"]
    for d, v in expected.items():
        assert run["q1"][d] == pytest.approx(v, rel=1e-12)
    assert run["q2"] == {"x": pytest.approx(0.25)}  # one score: normalised to 1


def test_zscore_and_theoretical_minmax():
    zs, missing = normalize({"a": 1.0, "b": 2.0, "c": 3.0}, "zscore")
    s = math.sqrt(2 / 3)
    assert zs == {"a": pytest.approx(-1 / s), "b": pytest.approx(0.0), "c": pytest.approx(1 / s)}
    assert missing == pytest.approx(-1 / s)
    tmm, missing = normalize({"a": 4.0, "b": 1.0}, "tmm", theoretical_min=0.0)
    assert tmm == {"a": 1.0, "b": 0.25} and missing == 0.0
    tmm, _ = normalize({"a": 0.5, "b": 0.0}, "tmm", theoretical_min=-1.0)  # cosine
    assert tmm == {"a": 1.0, "b": pytest.approx(1 / 1.5)}
    run = convex([SPARSE, DENSE], weights=[0.5, 0.5], normalization="tmm", theoretical_mins=[0.0, -1.0])
    # sparse /12: a=1, b=10/12, c=4/12; dense (s+1)/1.9: b=1, d=1.7/1.9, a=1.5/1.9
    assert run["q1"]["a"] == pytest.approx(0.5 * 1 + 0.5 * 1.5 / 1.9)
    assert run["q1"]["d"] == pytest.approx(0.5 * 1.7 / 1.9)
    zrun = convex([SPARSE, DENSE], normalization="zscore")
    assert zrun["q1"]["c"] < zrun["q1"]["a"]


def test_ties_sorted_by_id_and_equal_scores():
    run = convex([{"q": {"b": 1.0, "a": 1.0}}])
    assert list(run["q"]) == ["a", "b"] and run["q"]["a"] == 1.0
    assert normalize({}, "minmax") == ({}, 0.0)


def test_fuse_dispatch_and_errors():
    assert fuse([SPARSE, DENSE], "rrf") == rrf([SPARSE, DENSE])
    assert fuse([SPARSE, DENSE], "convex", weights=[1, 3]) == convex([SPARSE, DENSE], weights=[0.25, 0.75])
    with pytest.raises(ValueError, match="unknown fusion method 'max'"):
        fuse([SPARSE], "max")
    with pytest.raises(ValueError, match="unknown normalization"):
        convex([SPARSE], normalization="l2")
    with pytest.raises(ValueError, match="2 weights for 1 runs"):
        convex([SPARSE], weights=[1, 1])
    with pytest.raises(ValueError, match="weights must be finite"):
        rrf([SPARSE, DENSE], weights=[-1, 1])
    with pytest.raises(ValueError, match="non-empty list"):
        rrf([])
    with pytest.raises(ValueError, match="non-empty list"):
        rrf(SPARSE)
    with pytest.raises(ValueError, match="k must be"):
        rrf([SPARSE], k=-1)


def test_huge_convex_weights_fuse_like_their_normalised_version():
    """Regression (issue 11, defect 4): weights of 1e308 overflowed their sum to inf, so every weight became
    0, every fused score 0.0 and the ranking alphabetical."""
    for w in ([1e308, 1e308], [1e308, 5e307], [5e-324, 5e-324]):
        for normalization in ("minmax", "zscore", "tmm"):
            got = convex([SPARSE, DENSE], weights=w, normalization=normalization)
            total = sum(x / max(w) for x in w)
            expected = convex([SPARSE, DENSE], weights=[x / max(w) / total for x in w],
                              normalization=normalization)
            assert list(got["q1"]) == list(expected["q1"]), (w, normalization)
            assert got["q1"] == pytest.approx(expected["q1"]), (w, normalization)
            assert all(math.isfinite(v) for v in got["q1"].values())
    assert list(convex([SPARSE, DENSE], weights=[1e308, 1e308])["q1"]) == ["b", "a", "d", "c"]


def test_rrf_huge_weights_stay_finite_and_huge_k_is_refused():
    """Regression (issue 11, defect 4): RRF with k=1e308 gave every document the same score (an
    alphabetical ranking); weights near the float maximum overflowed to inf."""
    run = rrf([SPARSE, DENSE, SPARSE], k=0, weights=[1e308, 1e308, 1e308])
    assert all(math.isfinite(v) for v in run["q1"].values())
    assert list(run["q1"]) == list(rrf([SPARSE, DENSE, SPARSE], k=0)["q1"])
    for k in (1e308, 1e6 + 1, float("inf")):
        with pytest.raises(ValueError, match="k must be"):
            rrf([SPARSE], k=k)
    assert rrf([SPARSE], k=1e6)["q1"]["a"] == pytest.approx(1 / (1e6 + 1))


@pytest.mark.parametrize("fusion, fragment", [
    ({"method": "rrf", "k": 1e308}, "fusion k"),
    ({"method": "rrf", "k": 1e6 + 1}, "fusion k"),
    ({"method": "convex", "weights": {"sparse": 1e308, "dense": 1e-308}}, "too small"),
])
def test_check_fusion_refuses_out_of_range_numbers(fusion, fragment):
    with pytest.raises(ValueError, match=fragment):
        check_fusion(fusion, ["sparse", "dense"])


def test_check_fusion_normalises_weights():
    out = check_fusion({"method": "convex", "weights": {"sparse": 1e308, "dense": 1e308}},
                       ["sparse", "dense"])
    assert out["weights"] == {"sparse": 0.5, "dense": 0.5}
    out = check_fusion({"method": "convex", "weights": {"sparse": 3, "dense": 1, "bm25": 0}},
                       ["sparse", "dense", "bm25"])
    assert out["weights"] == {"sparse": 0.75, "dense": 0.25, "bm25": 0.0}
    assert check_fusion({}, ["sparse", "dense"])["weights"] == {"sparse": 0.5, "dense": 0.5}
    # RRF keeps the original RRF weight 1 for the largest: the scores stay 1 / (k + rank)
    out = check_fusion({"method": "rrf", "weights": {"sparse": 1e308, "dense": 5e307}}, ["sparse", "dense"])
    assert out["weights"] == {"sparse": 1.0, "dense": 0.5} and out["k"] == 60.0
    assert check_fusion({"method": "rrf", "k": 1e6}, ["sparse"])["k"] == 1e6


def test_check_fusion_only_for_hybrid():
    """Regression (issue 11): a fusion given with a single-retriever mode was silently ignored."""
    for mode in ("sparse", "dense", "bm25"):
        with pytest.raises(ValueError, match=f"fusion applies only to mode 'hybrid'.*'{mode}'"):
            check_fusion({"method": "rrf"}, ["sparse", "dense", "bm25"], mode=mode)
    assert check_fusion({"method": "rrf"}, ["sparse", "dense"], mode="hybrid")["method"] == "rrf"


def test_deprecated_check_fusion_warns_and_answers_as_before():
    from lsr.hybrid import check_fusion as old

    with pytest.warns(DeprecationWarning, match="FusionSpec.check"):
        out = old({"weights": {"sparse": 3, "dense": 1}}, ["sparse", "dense"])
    assert out["weights"] == {"sparse": 0.75, "dense": 0.25}
    assert FusionSpec.check({"weights": {"sparse": 3, "dense": 1}}).to_dict() == out
