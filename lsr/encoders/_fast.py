"""The fast query path of :class:`~lsr.encoders.DenseEncoder`: the whole BERT forward, mean pooling and L2
normalisation as one ONNX Runtime graph, in int8 (default) or float32.

A short query costs a 6-layer MiniLM a few million multiply-adds per token; in transformers most of a
one-query call is per-call overhead and reading 42 MB of float32 weights. This module writes the forward
as one ONNX graph from the model's own weights (no exporter, no tracing) with ORT's fused CPU kernels
(``MultiHeadAttention``, ``SkipLayerNormalization``, ``Gelu``, one fused QKV projection), and for ``int8``
replaces every projection by ``DynamicQuantizeMatMul``: weights int8 per output channel (symmetric),
activations quantised per call (dynamic quantisation, Jacob et al. 2018).

Before quantising, each projection's input is smoothed: ``x W = (x / s) (s W)`` with
``s_j = amax(x_j)^a / amax(W_j)^(1-a)`` (SmoothQuant, Xiao et al. 2023), the activation maxima measured on
:data:`CALIBRATION_TEXTS` and floored at a quarter of their layer's largest. It moves the outlier channels
of BERT activations into the per-channel weight scales: exact in float32, it cuts the int8 error
(1 - cosine to the plain path) by about 3x here (alpha and floor chosen on SciFact train queries and corpus
sentences). The ``1 / s`` of the attention output's input folds into the value projection (the context is
a convex mix of value rows); the others are one ``Mul`` each.

The graph is built once per weights file and cached, written atomically, under ``$LSR_CACHE_DIR/dense-onnx``
(default ``~/.cache/lsr-engine/dense-onnx``), keyed by the weights' sha256 and the recipe
(:func:`cache_file`).

Building needs ``onnx`` and ``onnxruntime``; running a cached graph needs ``onnxruntime`` only. Only BERT
encoders (absolute positions, GELU) are supported: :func:`unsupported` says why another model is not.

Example:
    >>> from lsr.encoders._fast import resolve_runtime
    >>> resolve_runtime("torch")
    'torch'
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from lsr.errors import LsrError

__all__ = ["RUNTIMES", "ENV_VAR", "RECIPE", "FastQueryPath", "RuntimeUnavailableError", "resolve_runtime",
           "unsupported", "cache_dir", "cache_file", "build_model", "load_query_path"]

#: query runtimes of DenseEncoder: "auto" picks "onnx-int8" where it can run, else "torch" (the plain path)
RUNTIMES = ("auto", "onnx-int8", "onnx-fp32", "torch")
#: environment variable read when the runtime is "auto" (e.g. LSR_DENSE_RUNTIME=torch forces the plain path)
ENV_VAR = "LSR_DENSE_RUNTIME"
#: version of the graph recipe: part of the cache key, bump it when the graph changes
RECIPE = 2
#: SmoothQuant migration strength (0: none, 1: all of the activation range into the weights)
SMOOTH_ALPHA = 1.0
#: calibrated maxima are raised to at least this fraction of their layer's largest: a channel rarely active
#: in the calibration texts (GELU outputs) must not be scaled up as if it never fired
SMOOTH_FLOOR = 0.25
#: texts whose activations set the smoothing scales: short queries and longer sentences, several domains
CALIBRATION_TEXTS = (
    "what is the role of vitamin d in bone health",
    "fever",
    "how long does it take to boil an egg",
    "0-dimensional biomaterials show inductive properties.",
    "ALDH1 expression is associated with poorer prognosis for breast cancer primary tumors.",
    "who wrote the declaration of independence",
    "best budget laptop 2023 for students",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France.",
    "symptoms of type 2 diabetes in adults",
    "python list comprehension with if else",
    "Mutations in BRCA1 increase the risk of ovarian cancer by 40%.",
    "capital city of australia",
    "Barack Obama",
    "how do vaccines train the immune system to recognise a virus?",
    "COVID-19 transmission through aerosols in indoor spaces",
    "the quick brown fox jumps over the lazy dog",
    "Interest rates rose for the third time this year, the central bank said on Tuesday.",
    "weather tomorrow",
    "define photosynthesis",
    "Albert Einstein developed the theory of relativity, one of the two pillars of modern physics.",
    "is coffee bad for your heart",
    "Statins reduce LDL cholesterol and the risk of myocardial infarction in patients with diabetes.",
    "how to reset a forgotten password on windows 10",
    "The river flooded the village after three days of heavy rain; hundreds were evacuated.",
    "CRISPR-Cas9 genome editing off-target effects",
    "what does GDP stand for",
    "Amazon rainforest deforestation rates 1990-2020",
    "Shakespeare's Hamlet, Prince of Denmark: themes of revenge and madness",
)


class RuntimeUnavailableError(LsrError):
    """The dense query runtime asked for cannot run here (a package is missing, or the model is not BERT)."""


def resolve_runtime(runtime: Any = "auto") -> str:
    """The runtime asked for: ``runtime``, or for ``"auto"`` the :data:`ENV_VAR` variable when it is set.

    Raises ValueError naming the allowed values (and the variable, when the bad value came from it).
    """
    if not isinstance(runtime, str) or runtime not in RUNTIMES:
        raise ValueError(f"query_runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env not in RUNTIMES:
            raise ValueError(f"{ENV_VAR} must be one of {', '.join(RUNTIMES)}, got {env!r}")
        runtime = env or "auto"
    return runtime


def unsupported(config: Any) -> str | None:
    """Why the graph cannot reproduce this model (None when it can): BERT, absolute positions, exact GELU."""
    if getattr(config, "model_type", None) != "bert":
        return f"model type {getattr(config, 'model_type', None)!r} is not bert"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position embeddings {config.position_embedding_type!r} are not absolute"
    if getattr(config, "hidden_act", None) != "gelu":
        return f"activation {getattr(config, 'hidden_act', None)!r} is not gelu"
    if config.hidden_size % config.num_attention_heads:
        return "hidden size is not a multiple of the number of heads"
    return None


def cache_dir() -> Path:
    """Where built graphs are cached: ``$LSR_CACHE_DIR/dense-onnx`` (default ``~/.cache/lsr-engine``)."""
    return Path(os.environ.get("LSR_CACHE_DIR", Path.home() / ".cache" / "lsr-engine")) / "dense-onnx"


def cache_file(folder: str | os.PathLike, sha256: str, precision: str, config: Any = None) -> Path:
    """The cache file of a graph: the weights' sha256, the precision and a digest of the recipe (its version,
    the smoothing settings and texts, the model config) in its name."""
    recipe = [RECIPE, precision, SMOOTH_ALPHA, SMOOTH_FLOOR, CALIBRATION_TEXTS,
              config.to_dict() if hasattr(config, "to_dict") else config]
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(folder) / f"{sha256[:32]}-{precision}-{digest}.onnx"


# -- the graph ----------------------------------------------------------------------------------------------


def _weights(model: Any) -> dict[str, np.ndarray]:
    """The BertModel's tensors as float32 numpy arrays, by their state-dict names (no "bert." prefix)."""
    return {k.removeprefix("bert."): v.detach().float().cpu().numpy()
            for k, v in model.state_dict().items()}


def calibrate(model: Any, tokenizer: Any,
              texts: tuple[str, ...] = CALIBRATION_TEXTS) -> dict[str, np.ndarray]:
    """Per input channel, the largest |activation| entering each Linear of ``model`` over ``texts``
    (one text at a time, no padding), keyed by the Linear's module name."""
    import torch

    amax: dict[str, np.ndarray] = {}

    def hook(name: str):
        def record(module, inputs, output):
            a = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float().cpu().numpy()
            amax[name] = np.maximum(amax[name], a) if name in amax else a
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear)]
    try:
        with torch.inference_mode():
            for text in texts:
                ids = tokenizer([text], truncation=True, max_length=128)["input_ids"]
                model(input_ids=torch.tensor(ids, device=model.device))
    finally:
        for h in handles:
            h.remove()
    return {k.removeprefix("bert."): v for k, v in amax.items()}


def _smooth(w: np.ndarray, amax: np.ndarray | None, alpha: float,
            floor: float) -> tuple[np.ndarray, np.ndarray | None]:
    """SmoothQuant (Xiao et al. 2023): ``x W = (x / s)(s W)``; returns ``(s W, 1 / s)`` for W of shape
    (in, out); without ``amax`` the weights unchanged and None."""
    if amax is None:
        return w, None
    amax = np.maximum(amax, floor * float(amax.max()))
    wmax = np.maximum(np.abs(w).max(axis=1), 1e-5)
    s = np.maximum(np.maximum(amax, 1e-5) ** alpha / wmax ** (1.0 - alpha), 1e-5).astype(np.float32)
    return (w * s[:, None]).astype(np.float32), (1.0 / s).astype(np.float32)


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column of ``w`` (in, out): ``(q, scale)`` with ``w ~ q * scale``."""
    scale = (np.abs(w).max(axis=0) / 127.0).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
    return q, scale


class _Graph:
    """Accumulates the nodes and initializers of one ONNX graph (names are made unique by a counter)."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.h = onnx, onnx.helper
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], *, domain: str = "", **attrs: Any) -> str:
        self._n += 1
        out = f"{op_type.lower()}_{self._n}"
        self.nodes.append(self.h.make_node(op_type, inputs, [out], name=f"n{self._n}", domain=domain,
                                           **attrs))
        return out


def _linear(g: _Graph, x: str, name: str, w: np.ndarray, b: np.ndarray, precision: str,
            amax: np.ndarray | None, smooth: tuple[float, float]) -> str:
    """``x @ w + b`` (w of shape (in, out)): MatMul + bias in float32, DynamicQuantizeMatMul in int8."""
    if precision == "fp32":
        return g.op("Add", [g.op("MatMul", [x, g.const(f"{name}.w", w)]), g.const(f"{name}.b", b)])
    w, inv = _smooth(w, amax, *smooth)
    if inv is not None:
        x = g.op("Mul", [x, g.const(f"{name}.inv_s", inv)])
    q, scale = quantize_columns(w)
    return g.op("DynamicQuantizeMatMul", [x, g.const(f"{name}.q", q), g.const(f"{name}.scale", scale),
                                          g.const(f"{name}.zero", np.zeros_like(scale, np.int8)),
                                          g.const(f"{name}.b", b)], domain="com.microsoft")


def _skip_norm(g: _Graph, x: str, skip: str, name: str, W: Mapping[str, np.ndarray], key: str,
               eps: float) -> str:
    """``LayerNorm(x + skip)`` with the LayerNorm ``key`` of the weights (one fused ORT kernel)."""
    return g.op("SkipLayerNormalization", [x, skip, g.const(f"{name}.g", W[key + ".weight"]),
                                           g.const(f"{name}.b", W[key + ".bias"])],
                domain="com.microsoft", epsilon=eps)


def build_model(weights: Mapping[str, np.ndarray], config: Any, *, precision: str = "int8",
                amax: Mapping[str, np.ndarray] | None = None, alpha: float = SMOOTH_ALPHA,
                floor: float = SMOOTH_FLOOR) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``v = normalize(mean-pool(BERT(input_ids, mask)))``.

    ``weights``: the BertModel's state dict as numpy; ``config``: its config; ``amax``: per-Linear input
    maxima from :func:`calibrate` (int8 only; without it no smoothing), ``alpha`` and ``floor`` how they
    smooth (:data:`SMOOTH_ALPHA`, :data:`SMOOTH_FLOOR`). Inputs ``input_ids`` and ``mask``
    (int64, batch x length), output ``vectors`` (float32, batch x hidden).

    Example:
        >>> proto = build_model(_weights(model), model.config, precision="fp32")   # doctest: +SKIP
    """
    import onnx

    if precision not in ("int8", "fp32"):
        raise ValueError(f"precision must be 'int8' or 'fp32', got {precision!r}")
    g = _Graph(onnx)
    amax = amax if precision == "int8" else None  # float32 needs no smoothing
    smooth = (float(alpha), float(floor))
    hidden, heads, eps = config.hidden_size, config.num_attention_heads, float(config.layer_norm_eps)
    W = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    # embeddings: word + position (the first n rows) + token type 0, then LayerNorm
    n = g.op("Shape", ["input_ids"], start=1, end=2)
    pos = g.op("Slice", [g.const("pos_table", W["embeddings.position_embeddings.weight"]),
                         g.const("zero1", np.zeros(1, np.int64)), n, g.const("axis0", np.zeros(1, np.int64))])
    x = g.op("Gather", [g.const("word_table", W["embeddings.word_embeddings.weight"]), "input_ids"])
    type0 = g.const("type0", W["embeddings.token_type_embeddings.weight"][0])
    x = g.op("Add", [g.op("Add", [x, pos]), type0])
    x = g.op("LayerNormalization", [x, g.const("emb.g", W["embeddings.LayerNorm.weight"]),
                                    g.const("emb.b", W["embeddings.LayerNorm.bias"])], axis=-1, epsilon=eps)
    mask_i32 = g.op("Cast", ["mask"], to=onnx.TensorProto.INT32)
    amax = amax or {}

    def linear(x: str, name: str, key: str) -> str:  # the Linear ``key`` of the state dict on x
        return _linear(g, x, name, W[key + ".weight"].T, W[key + ".bias"], precision, amax.get(key), smooth)

    for i in range(config.num_hidden_layers):
        p = f"encoder.layer.{i}."
        qkv_w = np.concatenate([W[p + f"attention.self.{t}.weight"].T for t in ("query", "key", "value")], 1)
        qkv_b = np.concatenate([W[p + f"attention.self.{t}.bias"] for t in ("query", "key", "value")])
        out_w, out_b = W[p + "attention.output.dense.weight"].T, W[p + "attention.output.dense.bias"]
        out_w, inv = _smooth(out_w, amax.get(p + "attention.output.dense"), *smooth)
        if inv is not None:  # the context is a convex mix of value rows: its 1/s folds into v (exact)
            qkv_w[:, 2 * hidden:] *= inv[None, :]
            qkv_b[2 * hidden:] *= inv
        a_qkv = amax.get(p + "attention.self.query")  # q, k and v read the same input
        qkv = _linear(g, x, f"l{i}.qkv", qkv_w, qkv_b, precision, a_qkv, smooth)
        parts = [f"l{i}.{t}" for t in "qkv"]
        g.nodes.append(g.h.make_node("Split", [qkv, g.const(f"l{i}.split", np.full(3, hidden, np.int64))],
                                     parts, name=f"l{i}.split", axis=-1))
        ctx = g.op("MultiHeadAttention", [*parts, "", mask_i32], domain="com.microsoft", num_heads=heads)
        o = _linear(g, ctx, f"l{i}.attn_out", out_w, out_b, precision, None, smooth)
        x = _skip_norm(g, o, x, f"l{i}.ln1", W, p + "attention.output.LayerNorm", eps)
        h = g.op("Gelu", [linear(x, f"l{i}.ffn_in", p + "intermediate.dense")], domain="com.microsoft")
        o = linear(h, f"l{i}.ffn_out", p + "output.dense")
        x = _skip_norm(g, o, x, f"l{i}.ln2", W, p + "output.LayerNorm", eps)
    # mean over valid tokens, then L2 normalisation (torch.nn.functional.normalize: norm clamped at 1e-12)
    m = g.op("Unsqueeze", [g.op("Cast", ["mask"], to=onnx.TensorProto.FLOAT),
                           g.const("axis_last", np.array([-1]))])
    axis1 = g.const("axis1", np.array([1], np.int64))
    total = g.op("ReduceSum", [g.op("Mul", [x, m]), axis1], keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [m, axis1], keepdims=0), g.const("one", np.ones(1, np.float32))])
    pooled = g.op("Div", [total, count])
    norm = g.op("Max", [g.op("ReduceL2", [pooled], axes=[-1], keepdims=1),
                        g.const("eps", np.full(1, 1e-12, np.float32))])
    g.nodes.append(g.h.make_node("Div", [pooled, norm], ["vectors"], name="normalize"))
    T = onnx.TensorProto
    graph = g.h.make_graph(
        g.nodes, "lsr_dense_query",
        [g.h.make_tensor_value_info("input_ids", T.INT64, ["batch", "length"]),
         g.h.make_tensor_value_info("mask", T.INT64, ["batch", "length"])],
        [g.h.make_tensor_value_info("vectors", T.FLOAT, ["batch", hidden])], initializer=g.inits)
    opsets = [g.h.make_opsetid("", 17), g.h.make_opsetid("com.microsoft", 1)]
    return g.h.make_model(graph, opset_imports=opsets, ir_version=8, producer_name="lsr-engine",
                          producer_version=f"dense-query-r{RECIPE}")


# -- running it ---------------------------------------------------------------------------------------------


class FastQueryPath:
    """An ONNX Runtime session of :func:`build_model`'s graph: ``path(input_ids, mask) -> (batch, dim)``.

    Example:
        >>> fast = FastQueryPath.create(model_bytes, precision="int8", threads=1)      # doctest: +SKIP
        >>> fast(np.array([[101, 2054, 102]]), np.ones((1, 3), np.int64)).shape         # doctest: +SKIP
        (1, 384)
    """

    def __init__(self, session: Any, *, precision: str, threads: int, source: str) -> None:
        self.session = session
        self.precision = precision
        self.threads = threads
        self.source = source  # "cache", "built" or "built (not cached: ...)"

    @classmethod
    def create(cls, model: bytes | str | os.PathLike, *, precision: str, threads: int,
               source: str = "built") -> "FastQueryPath":
        """A session on ``model`` (serialized bytes or a file), ``threads`` intra-op threads, no spinning."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        # idle pool threads sleep instead of spinning: the cores stay free for the rest of the search
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        src = os.fspath(model) if isinstance(model, os.PathLike) else model
        session = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
        return cls(session, precision=precision, threads=threads, source=source)

    def __call__(self, input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"input_ids": np.ascontiguousarray(input_ids, np.int64),
                                       "mask": np.ascontiguousarray(mask, np.int64)})[0]

    @property
    def runtime(self) -> str:
        return f"onnx-{self.precision}"


def _write_atomic(path: Path, data: bytes) -> None:
    """``data`` into ``path`` through a temporary file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _missing(*modules: str) -> str | None:
    """The first of ``modules`` that cannot be imported (None when all can)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


def load_query_path(model: Any, tokenizer: Any, *, precision: str, sha256: str | None, threads: int,
                    folder: str | os.PathLike | None = None) -> FastQueryPath:
    """The fast path of ``model`` (a BertModel on the CPU): from the cache when ``sha256`` (of its weights)
    names a cached graph, else built (calibrated for int8) and cached atomically, best effort.

    Raises :class:`RuntimeUnavailableError` (one line) when it cannot run: the model is not BERT, or
    onnxruntime (to run) or onnx (to build) is not installed.
    """
    why = unsupported(model.config)
    if why is not None:
        raise RuntimeUnavailableError(f"the fast dense query path supports BERT encoders only ({why})")
    if _missing("onnxruntime"):
        raise RuntimeUnavailableError("the fast dense query path needs onnxruntime (pip install onnxruntime)")
    target = None if sha256 is None else cache_file(folder if folder is not None else cache_dir(), sha256,
                                                    precision, model.config)
    if target is not None and target.is_file():
        try:
            return FastQueryPath.create(target, precision=precision, threads=threads, source="cache")
        except Exception:  # noqa: BLE001 - an unreadable cache entry is rebuilt and replaced below
            pass
    if _missing("onnx"):
        raise RuntimeUnavailableError("building the fast dense query path needs onnx (pip install onnx)")
    amax = calibrate(model, tokenizer) if precision == "int8" else None
    data = build_model(_weights(model), model.config, precision=precision, amax=amax).SerializeToString()
    source = "built"
    if target is not None:
        try:
            _write_atomic(target, data)
        except OSError as e:
            source = f"built (not cached: {e.strerror or e})"
    return FastQueryPath.create(data, precision=precision, threads=threads, source=source)
