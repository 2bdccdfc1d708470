"""BM25 encoder against a toy example computed by hand, and through the sparse index."""

import math

import numpy as np
import pytest

from lsr.bm25 import BM25Encoder, shattered
from lsr.index import SparseIndex

DOCS = ["The cat sat.", "A cat and a dog", "Dogs, dogs, dogs and birds!"]
# porter terms: d0 [cat, sat] dl 2; d1 [cat, dog] dl 2; d2 [dog, dog, dog, bird] dl 4; avgdl 8/3, N 3
IDF_COMMON = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # cat, dog: df 2
IDF_RARE = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # sat, bird: df 1


def norm(dl, k1=0.9, b=0.4):
    return k1 * (1 - b + b * dl / (8 / 3))


def test_porter_bm25_hand_values(tmp_path):
    enc = BM25Encoder.fit(DOCS, analyzer="porter")
    assert enc.n_docs == 3 and enc.avgdl == pytest.approx(8 / 3)
    vocab = {w: i for i, w in enumerate(enc.decode_terms(range(enc.vocab_size)))}
    assert set(vocab) == {"cat", "sat", "dog", "bird"}
    docs = enc.encode_documents(DOCS).to_dicts()
    assert docs[0] == {vocab["cat"]: pytest.approx(IDF_COMMON / (1 + norm(2))),
                       vocab["sat"]: pytest.approx(IDF_RARE / (1 + norm(2)))}
    assert docs[2][vocab["dog"]] == pytest.approx(IDF_COMMON * 3 / (3 + norm(4)))
    assert docs[2][vocab["bird"]] == pytest.approx(IDF_RARE / (1 + norm(4)))
    q = enc.encode_queries(["the dogs", "CAT cat sat", "unknown words only", ""]).to_dicts()
    assert q[0] == {vocab["dog"]: 1.0} and q[1] == {vocab["cat"]: 1.0, vocab["sat"]: 1.0}
    assert q[2] == {} and q[3] == {}
    index = SparseIndex.build(enc.encode_documents(DOCS), ["d0", "d1", "d2"], tmp_path / "bm25",
                              quantization="float32", reorder=False)
    ids, scores = index.search(enc.encode_queries(["dog"]), k=3)
    assert ids.tolist() == ["d2", "d1"]
    assert scores[0] == pytest.approx(IDF_COMMON * 3 / (3 + norm(4)), rel=1e-6)
    ids, scores = index.search(enc.encode_queries(["cat sat"]), k=3)
    assert ids.tolist() == ["d0", "d1"]
    assert scores[0] == pytest.approx((IDF_COMMON + IDF_RARE) / (1 + norm(2)), rel=1e-6)


def test_json_round_trip_and_params():
    enc = BM25Encoder.fit(DOCS, analyzer="porter", k1=1.2, b=0.75)
    again = BM25Encoder.from_json(enc.to_json())
    a, b = enc.encode_documents(DOCS), again.encode_documents(DOCS)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.values, b.values)
    assert again.k1 == 1.2 and again.b == 0.75
    with pytest.raises(ValueError, match="b must be a number in"):
        BM25Encoder.fit(DOCS, analyzer="porter", b=2)
    with pytest.raises(ValueError, match="analyzer must be one of"):
        BM25Encoder.fit(DOCS, analyzer="whitespace")
    with pytest.raises(ValueError, match="needs the encoder's tokenizer"):
        BM25Encoder.fit(DOCS)
    with pytest.raises(ValueError, match="non-empty list"):
        BM25Encoder.fit([], analyzer="porter")


def test_wordpiece_analyzer_uses_the_splade_vocabulary():
    from transformers import AutoTokenizer

    from lsr.encoders import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("splade-tiny"))
    enc = BM25Encoder.fit(DOCS, tokenizer=tok)
    assert enc.vocab_size == len(tok)
    q = enc.encode_queries(["cat"]).to_dicts()[0]
    assert list(q) == tok.convert_tokens_to_ids(["cat"]) and q[tok.convert_tokens_to_ids("cat")] == 1.0
    assert enc.encode_queries(["zebra"]).to_dicts() == [{}]  # a token no document has
    docs = enc.encode_documents(DOCS)
    assert docs.to_dicts()[0][tok.convert_tokens_to_ids("cat")] > 0
    again = BM25Encoder.from_json(enc.to_json(), tokenizer=tok)
    np.testing.assert_array_equal(again.encode_documents(DOCS).values, docs.values)


def test_match_shares_hand_values(tmp_path):
    enc = BM25Encoder.fit(DOCS, analyzer="porter")
    index = SparseIndex.build(enc.encode_documents(DOCS), ["d0", "d1", "d2"], tmp_path / "bm25",
                              quantization="float32", reorder=False)
    rows = np.array([0, 1, 2])
    np.testing.assert_allclose(enc.match_shares(index, "cat sat", rows),
                               [1.0, IDF_COMMON / (IDF_COMMON + IDF_RARE), 0.0], rtol=1e-6)
    unknown = math.log1p((3 + 0.5) / 0.5)  # a word no document has weighs the most
    np.testing.assert_allclose(enc.match_shares(index, "the cat and a unicorn", rows),
                               [IDF_COMMON / (IDF_COMMON + unknown)] * 2 + [0.0], rtol=1e-6)


def test_shattered_words():
    assert shattered(["z", "##z", "##q", "##x", "##j"]) == [True] * 5
    assert shattered(["x", "##86", "d", "copy", "tree"]) == [False] * 5  # a letter alone is a word
    assert shattered(["vp", "##s", "##9", "##a", "z", "##q"]) == [False] * 4 + [True] * 2


@pytest.fixture(scope="module")
def wordpiece():
    from transformers import AutoTokenizer

    from lsr.encoders import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("splade-tiny"))


def test_shattered_word_dropped_unless_a_document_holds_it(tmp_path, wordpiece):
    docs = ["the z axis and the q factor of x rays in j units", "the cx3cr1 receptor",
            "zz top is a band"]
    enc = BM25Encoder.fit(docs, tokenizer=wordpiece)
    index = SparseIndex.build(enc.encode_documents(docs), ["a", "b", "c"], tmp_path / "bm25",
                              quantization="float32", reorder=False)
    q = enc.encode_queries(["zzqxj"], index=index)
    assert q.nnz == 0 and index.search(q, k=3)[0].size == 0  # no hits on its single letters
    assert enc.encode_queries(["zzqxj"]).nnz > 0  # without the index nothing is dropped
    # a word some document holds whole is kept, even when shattered ("zz" -> z ##z)
    assert index.search(enc.encode_queries(["zz"], index=index), k=1)[0].tolist() == ["c"]
    normal = ["cx3cr1 receptor", "x rays of the z axis"]
    assert enc.encode_queries(normal, index=index).to_dicts() == enc.encode_queries(normal).to_dicts()


def test_bm25_mode_nonsense_and_weak_matches(mini_searcher, mini_queries):
    assert mini_searcher.search("zzqxj", 10, mode="bm25") == []
    hits = mini_searcher.search("zzqxj lava", 10, mode="bm25", explain=True)
    assert hits and all(h.weak for h in hits)  # "lava" is a small part of what was asked
    index, enc = (mini_searcher.retriever("bm25").index, mini_searcher.retriever("bm25").encoder)
    for q in mini_queries.values():  # normal queries: the same terms, the best hit not weak
        assert enc.encode_queries([q["text"]], index=index).to_dicts() == \
            enc.encode_queries([q["text"]]).to_dicts()
        best = mini_searcher.search(q["text"], 1, mode="bm25")[0]
        assert best.id in q["relevant"] and best.weak is False
    batch = mini_searcher.batch_hits(["zzqxj lava", mini_queries["q-volcano"]["text"]], 1, mode="bm25")
    assert [h[0].weak for h in batch] == [True, False]
    assert all(h.weak is None for h in mini_searcher.search("lava", 3, mode="sparse"))
