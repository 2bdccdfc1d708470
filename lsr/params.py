"""The vocabulary of a search and of a build, defined once: choices, bounds, defaults and their checks.

Every edge (Python calls, the CLI, the HTTP schemas, the web page through ``GET /ui/config``) derives its
choices from here and validates a request once, into a :class:`SearchParams`; the layers below trust it.

* :class:`SearchParams`: ``k``, ``mode``, ``speed``, ``fusion`` and ``filter`` of one search.
* :class:`FusionSpec`: how hybrid mode fuses its retrievers (RRF or convex with a normalisation).
* :class:`BuildConfig`: how ``lsr index`` builds a collection (encoders, quantization, blocks, retrievers).

Example:
    >>> from lsr.params import SearchParams
    >>> p = SearchParams.check(k=5, mode="hybrid", fusion={"method": "rrf"})
    >>> p.k, p.mode, p.fusion.method
    (5, 'hybrid', 'rrf')
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from lsr.filters import Filter, Schema
from lsr.retrievers import KINDS

#: retriever kinds, in the order an index lists them (registered in :mod:`lsr.retrievers`)
RETRIEVERS: tuple[str, ...] = tuple(KINDS)
#: search modes: hybrid (fuse every retriever the collection has) or one retriever
MODES: tuple[str, ...] = ("hybrid", *RETRIEVERS)
#: query-processing presets -> keywords of :meth:`lsr.index.SparseIndex.search`. "safe" returns exactly
#: what "exact" returns, faster (block-max pruning); "fast" and "fastest" bound blocks with only the
#: heaviest 80% / 60% of the query terms (query term pruning), trading a little recall for speed.
SPEEDS: dict[str, dict[str, Any]] = {
    "exact": {"algorithm": "exact"},
    "safe": {"algorithm": "bmp", "alpha": 1.0, "beta": 1.0},
    "fast": {"algorithm": "bmp", "alpha": 1.0, "beta": 0.8},
    "fastest": {"algorithm": "bmp", "alpha": 1.0, "beta": 0.6},
}
DEFAULT_SPEED = "safe"
#: hits per query: Python and CLI, and the HTTP API (whose answers carry texts)
K_MAX = 100_000
K_MAX_HTTP = 1_000
DEFAULT_K = 10
FUSION_METHODS = ("rrf", "convex")
NORMALIZATIONS = ("minmax", "zscore", "tmm")
#: largest RRF ``k``: beyond it every rank's ``1 / (k + rank)`` is nearly the same
MAX_RRF_K = 1e6
DEFAULT_RRF_K = 60.0
DEFAULT_DEPTH = 100
MAX_DEPTH = 10_000

DEFAULT_MODEL = "splade-tiny"
DEFAULT_DENSE_MODEL = "minilm"
DEFAULT_MAX_LENGTH = 256
QUANTIZATIONS = ("uint8", "float32")
DENSE_KINDS = ("flat", "hnsw", "ivf")
BM25_ANALYZERS = ("wordpiece", "porter")
MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, DEFAULT_BLOCK_SIZE = 8, 256, 8


def speed_params(speed: str) -> dict:
    """The ``SparseIndex.search`` keywords of a speed preset (``exact``, ``safe``, ``fast``, ``fastest``).

    Example:
        >>> speed_params("fast")["beta"]
        0.8
    """
    try:
        return dict(SPEEDS[speed])
    except (KeyError, TypeError):
        raise ValueError(f"unknown speed {speed!r}: use one of {', '.join(SPEEDS)}") from None


def check_k(k: Any, *, limit: int = K_MAX, name: str = "k") -> int:
    """``k`` as an int in 1..limit, else ValueError naming the bound."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
        raise ValueError(f"{name} must be an integer between 1 and {limit}, got {k!r}")
    return k


def _number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float))


@dataclass(frozen=True)
class FusionSpec:
    """How hybrid mode fuses its retrievers' lists; built by :meth:`check` (bounded, normalised).

    ``weights``: ``((retriever, weight), ...)``: convex weights sum to 1, RRF weights are scaled so the
    largest is 1 (the same rankings; fused scores cannot overflow). ``depth``: hits taken per retriever.

    Example:
        >>> FusionSpec.check({"weights": {"sparse": 3, "dense": 1}}, ["sparse", "dense"]).weights
        (('sparse', 0.75), ('dense', 0.25))
    """

    method: str = "convex"
    weights: tuple[tuple[str, float], ...] = ()
    normalization: str = "minmax"
    k: float = DEFAULT_RRF_K
    depth: int = DEFAULT_DEPTH
    tuned: Any = None

    @classmethod
    def default(cls, available: Sequence[str]) -> "FusionSpec":
        """Equal-weight min-max convex fusion of ``available``."""
        return cls.check({}, available)

    @classmethod
    def check(cls, fusion: Any, available: Sequence[str] | None = None) -> "FusionSpec":
        """Check a fusion setting (Python, CLI JSON, HTTP or a manifest); ValueError names the problem.

        ``available``: the retrievers of the collection (None: any known retriever; weights default to
        the available ones)."""
        if isinstance(fusion, FusionSpec):
            fusion = fusion.to_dict()
        if not isinstance(fusion, Mapping):
            raise ValueError("fusion must be an object like {'method': 'rrf'}, got "
                             f"{type(fusion).__name__}")
        unknown = set(fusion) - {"method", "weights", "normalization", "k", "depth", "tuned"}
        if unknown:
            raise ValueError(f"unknown fusion field(s) {sorted(unknown)}: use method, weights, "
                             "normalization, "
                             "k, depth")
        method = fusion.get("method", "convex")
        if method not in FUSION_METHODS:
            raise ValueError(f"fusion method must be one of {FUSION_METHODS}, got {method!r}")
        normalization = fusion.get("normalization", "minmax")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"fusion normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        k = fusion.get("k", DEFAULT_RRF_K)
        if not _number(k) or not 0 <= k <= MAX_RRF_K:
            raise ValueError(f"fusion k (RRF) must be a number in 0..{MAX_RRF_K:.0f}, got {k!r} (with a "
                             "larger k every rank scores about the same)")
        known = RETRIEVERS if available is None else tuple(available)
        weights = fusion.get("weights") or {s: 1.0 for s in known}
        if not isinstance(weights, Mapping) or not weights:
            raise ValueError("fusion weights must be an object {retriever: weight}")
        for name, w in weights.items():
            if name not in RETRIEVERS:
                raise ValueError(f"fusion weight for unknown retriever {name!r}: use {', '.join(RETRIEVERS)}")
            if name not in known:
                raise ValueError(f"fusion weight for {name!r}, which this index does not have "
                                 f"(it has {', '.join(known)})")
            if not _number(w) or not 0 <= w < math.inf:
                raise ValueError(f"fusion weight for {name!r} must be a finite number >= 0, got {w!r}")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("fusion weights must not all be 0")
        names = list(weights)
        top = max(float(weights[n]) for n in names)
        values = [float(weights[n]) / top for n in names]  # largest 1: no sum overflows
        for name, v in zip(names, values):
            if weights[name] > 0 and v == 0.0:
                raise ValueError(f"fusion weight for {name!r} ({weights[name]!r}) is too small next to the "
                                 f"largest ({top!r}) to count; use 0 to leave it out")
        if method == "convex":
            total = sum(values)
            values = [v / total for v in values]
        depth = fusion.get("depth", DEFAULT_DEPTH)
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"fusion depth must be an integer in 1..{MAX_DEPTH}, got {depth!r}")
        return cls(method=method, weights=tuple(zip(names, values)), normalization=normalization,
                   k=float(k), depth=depth, tuned=fusion.get("tuned"))

    def for_retrievers(self, available: Sequence[str]) -> "FusionSpec":
        """This fusion checked against a collection's retrievers (ValueError if it names another)."""
        missing = [n for n, _ in self.weights if n not in available]
        if missing:
            raise ValueError(f"fusion weight for {missing[0]!r}, which this index does not have "
                             f"(it has {', '.join(available)})")
        return self

    @property
    def used(self) -> list[str]:
        """The retrievers with a weight above 0, in order."""
        return [n for n, w in self.weights if w > 0]

    def to_dict(self) -> dict:
        """The JSON form (what the manifest, ``/search`` and ``lsr search --fusion`` take)."""
        out: dict[str, Any] = {"method": self.method, "weights": dict(self.weights)}
        if self.method == "convex":
            out["normalization"] = self.normalization
        else:
            out["k"] = self.k
        out["depth"] = self.depth
        if self.tuned is not None:
            out["tuned"] = self.tuned
        return out


@dataclass(frozen=True)
class SearchParams:
    """One search's parameters, checked once at the edge by :meth:`check`; inner layers trust them.

    ``mode`` None means the collection's default (hybrid where it has several retrievers); ``fusion`` None
    means the collection's default fusion (hybrid only); ``filter``: a :class:`~lsr.filters.Filter` checked
    against the collection's metadata schema (None: every document).

    Example:
        >>> SearchParams.check(k=3, speed="fast").kernel
        {'algorithm': 'bmp', 'alpha': 1.0, 'beta': 0.8}
    """

    k: int = DEFAULT_K
    mode: str | None = None
    speed: str = DEFAULT_SPEED
    fusion: FusionSpec | None = None
    filter: Filter | None = None

    @classmethod
    def check(cls, *, k: Any = DEFAULT_K, mode: Any = None, speed: Any = DEFAULT_SPEED, fusion: Any = None,
              k_max: int = K_MAX, available: Sequence[str] | None = None,
              default_fusion: "FusionSpec | None" = None, filter: Any = None,
              schema: Schema | None = None) -> "SearchParams":
        """Validated parameters (ValueError naming the problem). ``available``: the collection's
        retrievers, to check the mode and fusion against them and resolve the default mode;
        ``default_fusion``: hybrid's fusion when none is given (the collection's); ``filter``: a filter's
        JSON form (object or text) or a Filter, checked against ``schema``, the collection's metadata
        schema (a filter without a schema that has fields: ValueError)."""
        check_k(k, limit=k_max)
        speed_params(speed)
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
        if available is not None:
            modes = available_modes(available)
            mode = modes[0] if mode is None else mode
            if mode not in modes:
                raise ValueError(f"mode {mode!r} is not available: this index has {', '.join(modes)}")
        spec = None
        if fusion is not None:
            if mode is not None and mode != "hybrid":  # refused with a single-retriever mode, not ignored
                raise ValueError(f"fusion applies only to mode 'hybrid', not {mode!r}: leave fusion out or "
                                 "use mode 'hybrid'")
            spec = FusionSpec.check(fusion, available)
        elif mode == "hybrid":
            spec = default_fusion
        checked = None if filter is None else Filter.check(filter, schema)
        return cls(k=k, mode=mode, speed=speed, fusion=spec, filter=checked)

    @property
    def kernel(self) -> dict:
        """The sparse kernels' keywords of :attr:`speed`."""
        return dict(SPEEDS[self.speed])

    def replace(self, **changes: Any) -> "SearchParams":
        """A copy with ``changes`` (already valid values)."""
        return dataclasses.replace(self, **changes)


def available_modes(retrievers: Sequence[str]) -> list[str]:
    """The modes of a collection with these retrievers: "hybrid" first when there is more than one."""
    return (["hybrid"] if len(retrievers) > 1 else []) + list(retrievers)


@dataclass(frozen=True)
class BuildConfig:
    """How to build a collection (``lsr index``, :func:`lsr.indexing.index_corpus`, ``lsr eval``).

    ``dense``: the dense model (None: no dense retriever); ``bm25``: build BM25; ``sparse_idf``: the
    inference-free query side over the SPLADE document vectors (idf-weighted query tokens, no model).

    Example:
        >>> BuildConfig(dense=None).retrievers
        ('sparse', 'bm25', 'sparse-idf')
    """

    model: str = DEFAULT_MODEL
    max_length: int = DEFAULT_MAX_LENGTH
    batch_size: int = 32
    quantization: str = "uint8"
    block_size: int = DEFAULT_BLOCK_SIZE
    reorder: bool = True
    dense: str | None = DEFAULT_DENSE_MODEL
    dense_kind: str = "flat"
    bm25: bool = True
    bm25_analyzer: str = "wordpiece"
    sparse_idf: bool = True

    def __post_init__(self) -> None:
        for name in ("max_length", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name.replace('_', ' ')} must be an integer >= 1, got {v!r}")
        b = self.block_size
        if isinstance(b, bool) or not isinstance(b, int) or not MIN_BLOCK_SIZE <= b <= MAX_BLOCK_SIZE:
            raise ValueError(f"block_size must be an integer between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}, "
                             f"got {b!r}")
        for name, choices in (("quantization", QUANTIZATIONS), ("dense_kind", DENSE_KINDS),
                              ("bm25_analyzer", BM25_ANALYZERS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name.replace('_', ' ')} must be one of {choices}, "
                                 f"got {getattr(self, name)!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a model name or folder, got {self.model!r}")
        if self.dense is not None and (not isinstance(self.dense, str) or not self.dense):
            raise ValueError(f"dense must be a model name or None, got {self.dense!r}")

    @property
    def retrievers(self) -> tuple[str, ...]:
        """The retrievers this configuration builds, in :data:`RETRIEVERS` order."""
        on = {"sparse": True, "dense": self.dense is not None, "bm25": self.bm25,
              "sparse-idf": self.sparse_idf}
        return tuple(r for r in RETRIEVERS if on.get(r, False))  # a new kind: add its field here

    def settings(self) -> dict:
        """The JSON form recorded in the manifest's provenance."""
        return dataclasses.asdict(self)
