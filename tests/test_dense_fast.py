"""The fast dense query path (ONNX Runtime graph of the BERT forward) against the plain transformers path:
the vectors agree, the fallbacks and the forced plain path work, and the graph cache is written atomically."""

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from lsr.encoders import _fast
from lsr.encoders._fast import ENV_VAR, RuntimeUnavailableError, cache_file, load_query_path, resolve_runtime
from lsr.errors import LsrError, ModelNotFoundError

TEXTS = ["fever", "what is the role of vitamin d in bone health",
         "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
         "Glaciers carve deep valleys; rivers then widen them over thousands of years.", ""]


def cosines(a, b):
    return (a * b).sum(1)


@pytest.fixture(scope="module")
def plain():
    """MiniLM loaded with the plain path forced through the environment variable."""
    from lsr.encoders import DenseEncoder

    old = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = "torch"
    try:
        return DenseEncoder.from_pretrained("minilm", device="cpu")
    except ModelNotFoundError as e:  # pragma: no cover - the models extra is part of the test set-up
        pytest.skip(str(e))
    finally:
        if old is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = old


@pytest.fixture(scope="module")
def fast(plain, tmp_path_factory):
    """MiniLM with the default fast path (int8), its graph cached in a temporary folder."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from lsr.encoders import DenseEncoder

    mp = pytest.MonkeyPatch()
    mp.setenv("LSR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    mp.delenv(ENV_VAR, raising=False)
    try:
        yield DenseEncoder.from_pretrained("minilm", device="cpu")
    finally:
        mp.undo()


def encoder_with(plain, fast_path=None, note=None):
    from lsr.encoders import DenseEncoder

    return DenseEncoder(name=plain.name, path=plain.describe()["path"], model=plain._model,
                        tokenizer=plain._tokenizer, device=plain.device, max_length=256, fast=fast_path,
                        runtime_note=note)


def test_runtime_names_and_environment(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_runtime() == "auto" and resolve_runtime("onnx-fp32") == "onnx-fp32"
    monkeypatch.setenv(ENV_VAR, "Torch")
    assert resolve_runtime("auto") == "torch"
    assert resolve_runtime("onnx-int8") == "onnx-int8"  # a runtime asked for by name wins
    monkeypatch.setenv(ENV_VAR, "tensorrt")
    with pytest.raises(ValueError, match=f"{ENV_VAR} must be one of auto, onnx-int8, onnx-fp32, torch"):
        resolve_runtime()
    with pytest.raises(ValueError, match="query_runtime must be one of"):
        resolve_runtime("onnx")


def test_forced_plain_path(plain):
    assert plain.query_runtime == "torch" and plain.describe()["query_runtime"] == "torch"
    assert "query_runtime_note" not in plain.describe()
    np.testing.assert_array_equal(plain.encode_queries(TEXTS), plain.encode(TEXTS))


def test_fast_path_agrees_with_plain(plain, fast):
    assert fast.query_runtime == "onnx-int8" and fast.describe()["query_runtime"] == "onnx-int8"
    assert "onnx-int8" in repr(fast)
    ref = plain.encode(TEXTS)
    got = fast.encode_queries(TEXTS)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert cosines(got[:-1], ref[:-1]).min() > 0.99  # the empty text ([CLS] [SEP] only) is near: > 0.95
    assert cosines(got[-1:], ref[-1:])[0] > 0.95
    # int8 runs one text per call: a text's vector does not depend on its batch
    np.testing.assert_allclose(fast.encode_queries(TEXTS[1:2]), got[1:2], atol=1e-6)
    # documents keep the plain path
    np.testing.assert_array_equal(fast.encode(TEXTS), ref)
    assert fast.encode_queries([]).shape == (0, 384)
    with pytest.raises(TypeError, match="single str"):
        fast.encode_queries("one text")


def test_fp32_graph_reproduces_the_plain_path_in_padded_batches(plain, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    fp32 = load_query_path(plain._model, plain._tokenizer, precision="fp32", sha256=None, threads=1)
    enc = encoder_with(plain, fp32)
    assert enc.query_runtime == "onnx-fp32"
    ref = plain.encode(TEXTS)
    got = enc.encode_queries(TEXTS, batch_size=3)  # texts of different lengths: padded and masked
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert cosines(got, ref).min() > 0.99999


def test_fallback_when_onnxruntime_is_missing(plain, monkeypatch, tmp_path):
    from lsr.encoders.dense import _query_path

    monkeypatch.setenv("LSR_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    path = plain.describe()["path"]
    got, note, sha = _query_path(plain._model, plain._tokenizer, path, plain.device, "auto", 1)
    assert got is None and "needs onnxruntime" in note and sha == plain.describe()["weights_sha256"]
    with pytest.raises(RuntimeUnavailableError, match="needs onnxruntime") as e:
        _query_path(plain._model, plain._tokenizer, path, plain.device, "onnx-int8", 1)
    assert "\n" not in str(e.value) and isinstance(e.value, LsrError)
    enc = encoder_with(plain, None, note)
    assert enc.query_runtime == "torch" and "needs onnxruntime" in enc.describe()["query_runtime_note"]
    np.testing.assert_array_equal(enc.encode_queries(TEXTS), plain.encode(TEXTS))
    assert list(tmp_path.iterdir()) == []


def test_gpu_and_unsupported_models_fall_back(plain):
    import torch

    from lsr.encoders.dense import _query_path

    cuda = torch.device("cuda")  # only its type is read: no GPU needed
    got, note, _ = _query_path(plain._model, plain._tokenizer, "x", cuda, "auto", 1)
    assert got is None and "CPU only" in note
    with pytest.raises(RuntimeUnavailableError, match="runs on the CPU only"):
        _query_path(plain._model, plain._tokenizer, "x", cuda, "onnx-fp32", 1)
    roberta = SimpleNamespace(config=SimpleNamespace(model_type="roberta"))
    assert "not bert" in _fast.unsupported(roberta.config)
    with pytest.raises(RuntimeUnavailableError, match="BERT encoders only"):
        load_query_path(roberta, None, precision="int8", sha256=None, threads=1)


def test_cache_is_written_atomically_and_reused(plain, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model, tok = plain._model, plain._tokenizer
    sha = "ab" * 32
    target = cache_file(tmp_path, sha, "int8", model.config)
    # a failed write leaves neither the file nor a temporary one, and the graph still serves
    real_replace = os.replace

    def failing_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_fast.os, "replace", failing_replace)
    built = load_query_path(model, tok, precision="int8", sha256=sha, threads=1, folder=tmp_path)
    assert built.source.startswith("built (not cached: No space left")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(_fast.os, "replace", real_replace)
    built = load_query_path(model, tok, precision="int8", sha256=sha, threads=1, folder=tmp_path)
    assert built.source == "built" and [p.name for p in tmp_path.iterdir()] == [target.name]
    cached = load_query_path(model, tok, precision="int8", sha256=sha, threads=1, folder=tmp_path)
    assert cached.source == "cache"
    ids = np.array(tok(["fever and cough"])["input_ids"])
    np.testing.assert_array_equal(cached(ids, np.ones_like(ids)), built(ids, np.ones_like(ids)))
    # a cached graph runs without onnx; building one needs it
    onnx = sys.modules["onnx"]
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert load_query_path(model, tok, precision="int8", sha256=sha, threads=1,
                           folder=tmp_path).source == "cache"
    with pytest.raises(RuntimeUnavailableError, match="needs onnx"):
        load_query_path(model, tok, precision="int8", sha256="cd" * 32, threads=1, folder=tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", onnx)
    # a damaged cache entry is rebuilt and replaced
    target.write_bytes(b"not an onnx graph")
    again = load_query_path(model, tok, precision="int8", sha256=sha, threads=1, folder=tmp_path)
    assert again.source == "built" and target.stat().st_size > 1_000_000
    np.testing.assert_array_equal(again(ids, np.ones_like(ids)), built(ids, np.ones_like(ids)))
    # another recipe (precision) is another file
    assert cache_file(tmp_path, sha, "fp32", model.config) != target
