"""Service settings: environment variables ``LSR_*`` or arguments, behind a cached ``get_settings()``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Settings of the HTTP service.

    Example:
        >>> Settings(index_path="my-index", port=9000).port
        9000
    """

    model_config = SettingsConfigDict(env_prefix="LSR_", extra="ignore")

    index_path: Path = Field(default=Path("index"), description="index folder to serve")
    model: str | None = Field(default=None, description="encoder override (default: the manifest's)")
    device: str = "auto"
    default_k: int = Field(default=10, ge=1)
    max_query_chars: int = Field(default=4096, ge=1)
    host: str = "127.0.0.1"
    port: int = 8000


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (override in tests with ``app.dependency_overrides``)."""
    return Settings()
