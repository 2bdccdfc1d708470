"""Dense side: DenseIndex against a numpy brute-force oracle; DenseEncoder against sentence-transformers."""

import numpy as np
import pytest

from lsr.errors import IndexFormatError, ModelNotFoundError
from lsr.index.dense import DenseIndex


def unit_rows(rng, n, dim):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle(x, q, k):
    s = q @ x.T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, rows, 1), rows


def recall(rows, ref):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows.tolist(), ref.tolist())])


def test_flat_equals_numpy_oracle(tmp_path):
    rng = np.random.default_rng(0)
    x, q = unit_rows(rng, 500, 24), unit_rows(rng, 40, 24)
    ix = DenseIndex.build(x)
    D, rows = ix.search(q, k=10)
    ref_s, ref_rows = oracle(x, q, 10)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(D, ref_s, rtol=1e-5, atol=1e-6)
    ix.save(tmp_path)
    again = DenseIndex.load(tmp_path)
    assert again.describe() == ix.describe() and len(again) == 500 and again.dim == 24
    np.testing.assert_array_equal(again.search(q, k=10)[1], rows)


@pytest.mark.parametrize("kind,params,floor", [("hnsw", dict(M=16, ef_search=64), 0.95),
                                               ("ivf", dict(nlist=20, nprobe=8), 0.7)])
def test_approximate_kinds_recall_against_oracle(tmp_path, kind, params, floor):
    rng = np.random.default_rng(1)
    x, q = unit_rows(rng, 2000, 32), unit_rows(rng, 50, 32)
    ix = DenseIndex.build(x, kind=kind, **params)
    _, ref = oracle(x, q, 10)
    _, rows = ix.search(q, k=10)
    assert recall(rows, ref) >= floor
    ix.save(tmp_path)
    assert recall(DenseIndex.load(tmp_path).search(q, k=10)[1], ref) >= floor
    if kind == "ivf":  # every list probed: exact
        assert recall(ix.search(q, k=10, nprobe=20)[1], ref) == 1.0


def test_k_above_rows_and_bad_input(tmp_path):
    x = np.eye(3, dtype=np.float32)
    D, rows = DenseIndex.build(x).search(x[0], k=50)
    assert rows.shape == (1, 3) and rows[0, 0] == 0
    with pytest.raises(ValueError, match="dimension 2, the index has 3"):
        DenseIndex.build(x).search(np.ones((1, 2)), k=1)
    with pytest.raises(ValueError, match="kind must be one of"):
        DenseIndex.build(x, kind="lsh")
    with pytest.raises(ValueError, match="finite"):
        DenseIndex.build(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="k must be"):
        DenseIndex.build(x).search(x, k=0)
    with pytest.raises(IndexFormatError, match="no readable dense index"):
        DenseIndex.load(tmp_path)


@pytest.fixture(scope="module")
def minilm():
    from lsr.encoders import DenseEncoder

    try:
        return DenseEncoder.from_pretrained("minilm", device="cpu")
    except ModelNotFoundError as e:  # pragma: no cover - the models extra is part of the test set-up
        pytest.skip(str(e))


def test_dense_encoder_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    texts = ["Glaciers carve deep valleys.", "How do vaccines train the immune system?", "bread", ""]
    ours = minilm.encode(texts, batch_size=3)
    assert ours.shape == (4, minilm.dim) == (4, 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, rtol=1e-5)
    st = SentenceTransformer(minilm.describe()["path"], device="cpu")
    ref = st.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="single str"):
        minilm.encode("one text")


def test_dense_encoder_unknown_model_one_line():
    from lsr.encoders import DenseEncoder

    with pytest.raises(ModelNotFoundError, match="not a known alias") as e:
        DenseEncoder.from_pretrained("no-such-org/no-such-model")
    assert "\n" not in str(e.value)
