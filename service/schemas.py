"""Request and response models of the HTTP API.

Their choices, bounds and defaults come from :mod:`lsr.params` (modes, speeds, ``k``, fusion methods and
normalizations), so a new retriever kind or speed shows up here without an edit.

Example:
    >>> SearchRequest(query="sparse retrieval", mode="bm25").k
    10
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from lsr.params import DEFAULT_K, DEFAULT_SPEED, FUSION_METHODS, K_MAX_HTTP, MODES, NORMALIZATIONS, SPEEDS

#: the speed presets of :data:`lsr.params.SPEEDS`
Speed = Literal[tuple(SPEEDS)]  # type: ignore[valid-type]
#: the search modes of :data:`lsr.params.MODES` (hybrid, then every retriever kind)
Mode = Literal[MODES]  # type: ignore[valid-type]
Field_ = Literal["title", "text"]

SPEED_HELP = (f"{', '.join(SPEEDS)}: exact scores every document; safe prunes blocks and returns the same "
              "results; the faster presets trade a little recall for speed")
MODE_HELP = (f"{', '.join(MODES)}; default: hybrid when the index has several retrievers (it fuses them), "
             "else its one retriever")
K_HELP = f"number of hits (1..{K_MAX_HTTP})"
FILTER_HELP = ('metadata filter: {"field": "lang", "eq": "en"}, {"field": "lang", "in": ["en", "fr"]}, '
               '{"field": "year", "gte": 2010, "lt": 2020}, {"field": "x", "exists": true}, {"and": [...]}, '
               '{"or": [...]}, {"not": {...}}; the fields: GET /stats')
_FUSION = (f'hybrid fusion, e.g. {{"method": "rrf"}} or {{"method": "convex", "weights": {{"sparse": 0.6, '
           f'"dense": 0.4}}, "normalization": "minmax"}}; method: {", ".join(FUSION_METHODS)}; normalization '
           f'(convex): {", ".join(NORMALIZATIONS)}; default: the index\'s (tuned) fusion')


def _not_blank(v: str) -> str:
    if not v.strip():
        raise ValueError("query is empty")
    _utf8(v, "text")
    return v


def _utf8(v: str, what: str) -> None:
    """Refuse text without a UTF-8 form (a lone surrogate, JSON "\\ud800"): the tokenizer fails on it."""
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} holds a lone surrogate, not valid Unicode") from None


def _digits(v: Any) -> Any:
    """A query-string integer is written with digits only: "5", not "5.0", " 5", "+5" or "true"."""
    if isinstance(v, str) and not re.fullmatch(r"-?[0-9]+", v):
        raise ValueError(f"Input should be a whole number written with digits, like 10, got {v!r}")
    return v


#: parses an integer query-string parameter strictly; put it after ``Query(...)`` in ``Annotated[int, ...]``
#: (before it, the OpenAPI schema shows ``ge``/``le`` instead of ``minimum``/``maximum``)
DIGITS = BeforeValidator(_digits)


class _Strict(BaseModel):
    """Request bodies: unknown fields refused, no coercion (``k: true``, ``"5"`` or ``10.0`` is refused)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Strict):
    """Body of ``POST /search``."""

    query: str = Field(description="the query text", examples=["how do vaccines work"])
    k: int = Field(default=DEFAULT_K, ge=1, le=K_MAX_HTTP, description=K_HELP)
    speed: Speed = Field(default=DEFAULT_SPEED, description=SPEED_HELP)
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    fusion: dict[str, Any] | None = Field(default=None, description=_FUSION)
    explain: bool = Field(default=False, description=(
        "each hit carries the matched query terms (query weight, document weight, contribution) and, "
        "for hybrid, each retriever's score and rank"))
    fields: list[Field_] = Field(default=["title", "text"], description="stored fields to return")
    filter_ids: list[str] | None = Field(default=None, description=(
        "only these document ids can be hits (an allow-list, scored exactly); unknown ids are ignored"))
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_HELP)

    _check_query = field_validator("query")(_not_blank)


class BatchSearchRequest(_Strict):
    """Body of ``POST /search/batch``: many queries with the same settings, run in parallel."""

    queries: list[str] = Field(min_length=1, description="query texts (up to the service's max_batch)",
                               examples=[["what causes fever", "how do vaccines work"]])
    k: int = Field(default=DEFAULT_K, ge=1, le=K_MAX_HTTP, description=f"hits per query (1..{K_MAX_HTTP})")
    speed: Speed = Field(default=DEFAULT_SPEED, description=SPEED_HELP)
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    fusion: dict[str, Any] | None = Field(default=None, description=_FUSION)
    fields: list[Field_] = Field(default=[], description="stored fields to return (none by default)")
    filter: dict[str, Any] | None = Field(default=None, description=FILTER_HELP)

    @field_validator("queries")
    @classmethod
    def _each(cls, v: list[str]) -> list[str]:
        for i, q in enumerate(v):
            if not q.strip():
                raise ValueError(f"query {i} is empty")
            _utf8(q, f"query {i}")
        return v


class EncodeRequest(_Strict):
    """Body of ``POST /encode``."""

    text: str = Field(description="text to encode as a SPLADE query vector", examples=["sparse retrieval"])
    kind: Literal["query", "document"] = Field(default="query", description="encode as a query or a document")

    _check_text = field_validator("text")(_not_blank)


class DocumentIn(_Strict):
    """One document of ``POST /documents``; an id the collection has is replaced (upsert)."""

    id: str = Field(min_length=1, description="the document's id", examples=["doc-42"])
    title: str = Field(default="", description="optional title (searched with the text)")
    text: str = Field(description="the text to index", examples=["Sparse retrieval with learned weights."])
    metadata: dict[str, Any] | None = Field(default=None, description=(
        "metadata fields for filters: strings, numbers, booleans, nulls and lists of strings; a field's type "
        "is fixed by its first values"))

    @field_validator("id", "title", "text")
    @classmethod
    def _valid_text(cls, v: str, info) -> str:
        _utf8(v, info.field_name)
        return v


class AddDocumentsRequest(_Strict):
    """Body of ``POST /documents``: documents encoded server-side and committed together."""

    documents: list[DocumentIn] = Field(min_length=1, description=(
        "the documents (up to the service's max_write_documents, default 1,000)"))


class CommitOut(BaseModel):
    """A commit point written by a write or a merge (:class:`lsr.writer.CommitInfo`)."""

    generation: int = Field(description="the commit's generation: searches started after it see it")
    added: int
    deleted: int = Field(description="rows deleted (deletions, and replaced documents)")
    segments: int
    documents: int = Field(description="live documents after the commit")
    deleted_rows: int
    seconds: float
    merged: list[str] | None = None
    took_ms: float | None = Field(default=None, description="the whole request (encoding included)")


class MergeRequest(_Strict):
    """Body of ``POST /admin/merge`` (optional)."""

    max_segments: int | None = Field(default=None, ge=1, description=(
        "merge the smallest segments until at most this many remain (default: the tiered policy)"))


class MergeOut(BaseModel):
    status: Literal["merged", "nothing to merge"]
    merges: list[CommitOut]
    segments: int
    generation: int
    took_ms: float


class TermOut(BaseModel):
    term: str
    query_weight: float
    doc_weight: float
    contribution: float


class RetrieverScore(BaseModel):
    score: float
    rank: int


class Explanation(BaseModel):
    terms: list[TermOut] | None = None
    retrievers: dict[str, RetrieverScore | None] | None = None


class HitOut(BaseModel):
    id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    explanation: Explanation | None = None
    weak: bool | None = Field(default=None, description=(
        "bm25 mode: the hit shares only a small part of the query's information (a weak match)"))


class SearchResponse(BaseModel):
    query: str
    speed: Speed
    mode: Mode
    fusion: dict[str, Any] | None = None
    took_ms: float
    truncated: bool = Field(description="the query was longer than the encoder's max length and was cut")
    hits: list[HitOut]
    partial: bool | None = Field(default=None, description="sharded serving: some shards did not answer")
    missing_shards: list[str] | None = Field(default=None, description="sharded serving: those shards")


class BatchResult(BaseModel):
    query: str
    truncated: bool
    hits: list[HitOut]


class BatchSearchResponse(BaseModel):
    speed: Speed
    mode: Mode
    fusion: dict[str, Any] | None = None
    took_ms: float
    results: list[BatchResult]
    partial: bool | None = Field(default=None, description="sharded serving: some shards did not answer")
    missing_shards: list[str] | None = Field(default=None, description="sharded serving: those shards")


class EncodeResponse(BaseModel):
    terms: list[tuple[str, float]] = Field(description="[token, weight], largest weight first")
    nnz: int
    expansion: list[str] = Field(description="tokens of the vector that are not tokens of the text")
    truncated: bool


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    documents: int
    modes: list[str]


class Stats(BaseModel):
    documents: int
    postings: int | None
    index_path: str
    index_bytes: int
    format_version: int | None
    model: str | None
    modes: list[str]
    default_mode: str
    uptime_seconds: float
    queries_served: int
    reloads: int
    latency_ms: dict[str, float | None]
    threads: int
    segments: int = Field(default=1, description="segments of the collection's current commit")
    deleted: int = Field(default=0, description="deleted rows not yet merged away")
    generation: int | None = Field(default=None, description="the current commit point's generation")
    fields: dict[str, str] = Field(default_factory=dict, description="metadata fields and their types")
    writable: bool = Field(default=False, description="writes enabled (admin token set)")
    merges: int = Field(default=0, description="merges committed by this server")
    merging: bool = Field(default=False, description="a merge runs now")


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    index_path: str
    documents: int
    took_ms: float


class ReloadRequest(_Strict):
    index_path: str | None = Field(default=None, description="a new index folder (default: the same)")


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
