"""Request and response models of the HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

#: the speed presets of lsr.searcher.SPEEDS
Speed = Literal["exact", "safe", "fast", "fastest"]


class SearchRequest(BaseModel):
    """Body of ``POST /search``."""

    query: str = Field(description="the query text", examples=["how do vaccines work"])
    k: int = Field(default=10, ge=1, le=1000, description="number of hits (1..1000)")
    speed: Speed = Field(default="safe", description=(
        "exact: exhaustive scoring; safe: block-max pruning, same results as exact; "
        "fast / fastest: approximate, a little recall traded for speed"))

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
