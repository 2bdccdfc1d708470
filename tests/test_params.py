"""The search and build vocabulary (lsr.params): bounds and messages, FusionSpec's JSON form, and one check of
a search's parameters per request."""

import dataclasses

import pytest

from lsr.params import (
    K_MAX,
    K_MAX_HTTP,
    MAX_DEPTH,
    MODES,
    RETRIEVERS,
    SPEEDS,
    BuildConfig,
    FusionSpec,
    SearchParams,
    available_modes,
)

ALL = ["sparse", "dense", "bm25", "sparse-idf"]


def test_the_vocabulary():
    assert RETRIEVERS == ("sparse", "dense", "bm25", "sparse-idf")
    assert MODES == ("hybrid", *RETRIEVERS)
    assert list(SPEEDS) == ["exact", "safe", "fast", "fastest"]
    assert (K_MAX, K_MAX_HTTP) == (100_000, 1_000)
    assert available_modes(["sparse"]) == ["sparse"]
    assert available_modes(["sparse", "bm25"]) == ["hybrid", "sparse", "bm25"]


@pytest.mark.parametrize("k", [0, -1, K_MAX + 1, True, False, "5", 5.0, None, 1e9])
def test_bad_k(k):
    with pytest.raises(ValueError, match=rf"^k must be an integer between 1 and {K_MAX}, got {k!r}$"):
        SearchParams.check(k=k)


def test_k_bounds():
    assert SearchParams.check(k=1).k == 1 and SearchParams.check(k=K_MAX).k == K_MAX
    assert SearchParams.check(k=K_MAX_HTTP, k_max=K_MAX_HTTP).k == K_MAX_HTTP
    with pytest.raises(ValueError, match=rf"between 1 and {K_MAX_HTTP}, got {K_MAX_HTTP + 1}$"):
        SearchParams.check(k=K_MAX_HTTP + 1, k_max=K_MAX_HTTP)


def test_modes_and_speeds():
    with pytest.raises(ValueError, match=r"^unknown mode 'colbert': use one of hybrid, sparse, dense, bm25, "
                                         r"sparse-idf$"):
        SearchParams.check(mode="colbert")
    for bad in ("turbo", None, 3):
        with pytest.raises(ValueError, match=rf"^unknown speed {bad!r}: use one of exact, safe, fast"):
            SearchParams.check(speed=bad)
    with pytest.raises(ValueError, match=r"^mode 'dense' is not available: this index has hybrid, sparse,"):
        SearchParams.check(mode="dense", available=["sparse", "bm25"])
    assert SearchParams.check(available=["sparse", "bm25"]).mode == "hybrid"
    assert SearchParams.check(available=["sparse"]).mode == "sparse"
    assert SearchParams.check().mode is None  # the collection's default, resolved by the Searcher
    p = SearchParams.check(k=3, mode="bm25", speed="fastest")
    assert (p.k, p.mode, p.speed, p.fusion) == (3, "bm25", "fastest", None)
    assert p.kernel == {"algorithm": "bmp", "alpha": 1.0, "beta": 0.6}
    p.kernel["beta"] = 0.1  # a copy: the preset is not changed
    assert SPEEDS["fastest"]["beta"] == 0.6
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.k = 5


@pytest.mark.parametrize("mode", ["sparse", "dense", "bm25", "sparse-idf"])
def test_fusion_with_a_single_retriever_mode_is_refused(mode):
    with pytest.raises(ValueError, match=rf"^fusion applies only to mode 'hybrid', not '{mode}'"):
        SearchParams.check(mode=mode, fusion={"method": "rrf"})
    p = SearchParams.check(mode="hybrid", fusion={"method": "rrf"}, available=ALL)
    assert p.fusion.method == "rrf" and dict(p.fusion.weights) == dict.fromkeys(ALL, 1.0)


@pytest.mark.parametrize("fusion, message", [
    ({"weights": {"splade": 1}},
     "fusion weight for unknown retriever 'splade': use sparse, dense, bm25, sparse-idf"),
    ({"weights": {"dense": 1}},
     "fusion weight for 'dense', which this index does not have (it has sparse, bm25)"),
    ({"weights": {"sparse": 0, "bm25": 0}}, "fusion weights must not all be 0"),
    ({"weights": {"sparse": -1}}, "fusion weight for 'sparse' must be a finite number >= 0, got -1"),
    ({"weights": {"sparse": float("inf")}}, "must be a finite number >= 0, got inf"),
    ({"weights": {"sparse": float("nan")}}, "must be a finite number >= 0, got nan"),
    ({"weights": {"sparse": "1"}}, "must be a finite number >= 0, got '1'"),
    ({"weights": {"sparse": True}}, "must be a finite number >= 0, got True"),
    ({"weights": {"sparse": 1e308, "bm25": 1e-308}}, "fusion weight for 'bm25' (1e-308) is too small"),
    ({"weights": [1, 2]}, "fusion weights must be an object {retriever: weight}"),
    ({"method": "max"}, "fusion method must be one of ('rrf', 'convex'), got 'max'"),
    ({"normalization": "l2"}, "fusion normalization must be one of ('minmax', 'zscore', 'tmm'), got 'l2'"),
    ({"depth": 0}, f"fusion depth must be an integer in 1..{MAX_DEPTH}, got 0"),
    ({"depth": MAX_DEPTH + 1}, f"fusion depth must be an integer in 1..{MAX_DEPTH}, got {MAX_DEPTH + 1}"),
    ({"depth": True}, "fusion depth must be an integer in 1..10000, got True"),
    ({"depth": 10.0}, "fusion depth must be an integer in 1..10000, got 10.0"),
    ({"method": "rrf", "k": -1}, "fusion k (RRF) must be a number in 0..1000000, got -1"),
    ({"method": "rrf", "k": 1e6 + 1}, "fusion k (RRF) must be a number in 0..1000000, got 1000001.0"),
    ({"method": "rrf", "k": float("nan")}, "got nan"),
    ({"method": "rrf", "k": "60"}, "fusion k (RRF) must be a number in 0..1000000, got '60'"),
    ({"method": "rrf", "k": True}, "got True"),
    ({"weight": {"sparse": 1}},
     "unknown fusion field(s) ['weight']: use method, weights, normalization, k, depth"),
    ("rrf", "fusion must be an object like {'method': 'rrf'}, got str"),
])
def test_bad_fusions(fusion, message):
    with pytest.raises(ValueError) as e:
        FusionSpec.check(fusion, ["sparse", "bm25"])
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ValueError):  # the same through SearchParams
        SearchParams.check(mode="hybrid", fusion=fusion, available=["sparse", "bm25"])


def test_fusion_bounds_accepted():
    assert FusionSpec.check({"depth": 1}).depth == 1
    assert FusionSpec.check({"depth": MAX_DEPTH}).depth == MAX_DEPTH
    assert FusionSpec.check({"method": "rrf", "k": 0}).k == 0.0
    assert FusionSpec.check({"method": "rrf", "k": 1e6}).k == 1e6
    convex = FusionSpec.check({"weights": {"sparse": 3, "dense": 1}}, ["sparse", "dense"])
    assert convex.weights == (("sparse", 0.75), ("dense", 0.25)) and convex.used == ["sparse", "dense"]
    rrf = FusionSpec.check({"method": "rrf", "weights": {"sparse": 4, "dense": 2, "bm25": 0}})
    assert rrf.weights == (("sparse", 1.0), ("dense", 0.5), ("bm25", 0.0)) and rrf.used == ["sparse", "dense"]
    assert FusionSpec.default(["sparse", "bm25"]) == FusionSpec(weights=(("sparse", 0.5), ("bm25", 0.5)))
    with pytest.raises(ValueError, match="fusion weight for 'dense', which this index does not have"):
        convex.for_retrievers(["sparse", "bm25"])
    assert convex.for_retrievers(["sparse", "dense", "bm25"]) is convex


@pytest.mark.parametrize("fusion", [
    {},
    {"method": "rrf"},
    {"method": "rrf", "k": 10, "weights": {"sparse": 2, "dense": 1}, "depth": 500},
    {"method": "convex", "normalization": "zscore", "weights": {"sparse": 0.2, "dense": 0.3, "bm25": 0.5}},
    {"method": "convex", "normalization": "tmm", "weights": {"sparse": 1, "bm25": 0}, "depth": 7},
    {"weights": {"sparse": 0.3, "dense": 0.7}, "tuned": {"metric": "ndcg@10", "value": 0.71, "queries": 300}},
])
def test_fusion_spec_to_dict_round_trip(fusion):
    spec = FusionSpec.check(fusion, ["sparse", "dense", "bm25"])
    d = spec.to_dict()
    again = FusionSpec.check(d, ["sparse", "dense", "bm25"])
    assert (again.method, again.normalization, again.k, again.depth, again.tuned) == \
        (spec.method, spec.normalization, spec.k, spec.depth, spec.tuned)
    assert [n for n, _ in again.weights] == [n for n, _ in spec.weights]
    assert [w for _, w in again.weights] == pytest.approx([w for _, w in spec.weights], rel=1e-15)
    assert FusionSpec.check(again.to_dict(), ["sparse", "dense", "bm25"]).to_dict() == again.to_dict()
    assert ("k" in d) == (spec.method == "rrf") and ("normalization" in d) == (spec.method == "convex")
    assert ("tuned" in d) == (spec.tuned is not None)
    assert FusionSpec.check(spec, ["sparse", "dense", "bm25"]) == again  # a FusionSpec is checked as its dict


@pytest.mark.parametrize("field, value, message", [
    ("max_length", 0, "max length must be an integer >= 1, got 0"),
    ("max_length", True, "max length must be an integer >= 1, got True"),
    ("batch_size", "32", "batch size must be an integer >= 1, got '32'"),
    ("block_size", 7, "block_size must be an integer between 8 and 256, got 7"),
    ("block_size", 257, "block_size must be an integer between 8 and 256, got 257"),
    ("block_size", 8.0, "block_size must be an integer between 8 and 256, got 8.0"),
    ("block_size", True, "got True"),
    ("quantization", "int4", "quantization must be one of ('uint8', 'float32'), got 'int4'"),
    ("dense_kind", "lsh", "dense kind must be one of ('flat', 'hnsw', 'ivf'), got 'lsh'"),
    ("bm25_analyzer", "snowball", "bm25 analyzer must be one of ('wordpiece', 'porter'), got 'snowball'"),
    ("model", "", "model must be a model name or folder, got ''"),
    ("dense", "", "dense must be a model name or None, got ''"),
    ("dense", 5, "dense must be a model name or None, got 5"),
])
def test_bad_build_config(field, value, message):
    with pytest.raises(ValueError) as e:
        BuildConfig(**{field: value})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_build_config_bounds_and_retrievers():
    assert BuildConfig(block_size=8).block_size == 8 and BuildConfig(block_size=256).block_size == 256
    assert BuildConfig().retrievers == ("sparse", "dense", "bm25", "sparse-idf")
    assert BuildConfig(dense=None, bm25=False, sparse_idf=False).retrievers == ("sparse",)
    c = BuildConfig(dense="minilm", dense_kind="hnsw", quantization="float32")
    assert BuildConfig(**c.settings()) == c


# -- one check per request ---------------------------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch):
    """Calls of SearchParams.check, and the fusions FusionSpec.check was given other than the index's default
    (its manifest fusion, which the Searcher re-reads per request)."""
    calls = {"search": 0, "fusion": []}
    real_search, real_fusion = SearchParams.check.__func__, FusionSpec.check.__func__

    def search(cls, **kw):
        calls["search"] += 1
        return real_search(cls, **kw)

    def fusion(cls, spec, *args, **kw):
        calls["fusion"].append(spec)
        return real_fusion(cls, spec, *args, **kw)

    monkeypatch.setattr(SearchParams, "check", classmethod(search))
    monkeypatch.setattr(FusionSpec, "check", classmethod(fusion))

    def take(default: dict):
        out = {"search": calls["search"], "fusion": [f for f in calls["fusion"] if f != default]}
        calls.update(search=0, fusion=[])
        return out

    return take


def test_parameters_are_checked_once_per_request(mini_searcher, counted):
    s = mini_searcher
    default = {"weights": dict.fromkeys(s.collection.manifest.fused_by_default, 1.0)}
    queries = {"a": "glaciers carve valleys", "b": "bake bread with yeast"}
    for mode in ("sparse", "bm25", "sparse-idf", "hybrid"):
        assert s.search("volcano lava", k=3, mode=mode, speed="fast")
        assert counted(default) == {"search": 1, "fusion": []}
        assert s.batch_search(queries, k=5, mode=mode)
        assert counted(default) == {"search": 1, "fusion": []}
        assert s.batch_hits(list(queries.values()), k=5, mode=mode)
        assert counted(default) == {"search": 1, "fusion": []}
    rrf = {"method": "rrf", "weights": {"sparse": 1, "bm25": 1}}  # a request's fusion: checked once too
    assert s.search("volcano lava", k=3, fusion=rrf, explain=True, filter_ids=["geo-1", "geo-2"])
    assert counted(default) == {"search": 1, "fusion": [rrf]}
    assert s.batch_search(queries, k=5, fusion=rrf)
    assert counted(default) == {"search": 1, "fusion": [rrf]}
    assert s.batch_hits(list(queries.values()), k=5, mode="hybrid", fusion=rrf)
    assert counted(default) == {"search": 1, "fusion": [rrf]}
    params = s.params(k=4, fusion=rrf)
    counted(default)
    for _ in range(3):  # checked parameters are trusted
        assert len(s.query(list(queries.values()), params)) == 2
    assert s.query(["volcano"], params, explain=True, filter_ids=["geo-1"])[0].ids.tolist() == ["geo-1"]
    assert counted(default) == {"search": 0, "fusion": []}
    with pytest.raises(ValueError, match="^k must be an integer"):
        s.search("volcano", k=0)
    assert counted(default)["search"] == 1
