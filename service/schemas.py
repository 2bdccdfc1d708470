"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

#: the speed presets of lsr.searcher.SPEEDS
Speed = Literal["exact", "safe", "fast", "fastest"]
#: the search modes of lsr.hybrid.MODES
Mode = Literal["hybrid", "sparse", "dense", "bm25"]


class SearchRequest(BaseModel):
    """Body of ``POST /search``."""

    query: str = Field(description="the query text", examples=["how do vaccines work"])
    k: int = Field(default=10, ge=1, le=1000, description="number of hits (1..1000)")
    speed: Speed = Field(default="safe", description=(
        "exact: exhaustive scoring; safe: block-max pruning, same results as exact; "
        "fast / fastest: approximate, a little recall traded for speed"))
    mode: Mode | None = Field(default=None, description=(
        "hybrid (default when the index has several retrievers), sparse (SPLADE), dense, bm25"))
    fusion: dict[str, Any] | None = Field(default=None, description=(
        'hybrid fusion, e.g. {"method": "rrf"} or {"method": "convex", "weights": {"sparse": 0.6, '
        '"dense": 0.4}, "normalization": "minmax"}; default: the index\'s (tuned) fusion'))

    @field_validator("query")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is empty")
        return v


class HitOut(BaseModel):
    id: str
    score: float
    rank: int
    title: str
    text: str


class SearchResponse(BaseModel):
    query: str
    speed: Speed
    mode: Mode
    fusion: dict[str, Any] | None = None
    took_ms: float
    hits: list[HitOut]


class DocumentOut(BaseModel):
    id: str
    title: str
    text: str


class Health(BaseModel):
    status: str
    documents: int
    format_version: int | None
    encoder: str | None
    quantization: str | None


class ErrorOut(BaseModel):
    error: str
    detail: list | str | None = None
