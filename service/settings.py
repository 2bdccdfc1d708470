"""Service settings: ``LSR_*`` environment variables, a ``--config`` file (TOML or JSON), or arguments,
behind a cached ``get_settings()`` that tests and embedders override.

Precedence, highest first: arguments, environment, config file, defaults.

Example:
    >>> Settings(index_path="my-index", port=9000).port
    9000
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    JsonConfigSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from lsr.errors import LsrError


class Settings(BaseSettings):
    """Settings of the HTTP service (each is also ``LSR_<NAME>`` in the environment).

    Example:
        >>> Settings(index_path="my-index", threads=2).threads
        2
    """

    model_config = SettingsConfigDict(env_prefix="LSR_", extra="ignore")

    index_path: Path = Field(default=Path("index"), description="index folder to serve")
    model: str | None = Field(default=None, description="encoder override (default: the manifest's)")
    device: str = Field(default="auto", description="auto, cpu, cuda, ...")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    threads: int = Field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)), ge=1, le=256,
                         description="search worker threads (health and metrics never wait for them)")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="larger request bodies get 413")
    max_query_chars: int = Field(default=4096, ge=1, description="longer queries get 422")
    max_batch: int = Field(default=256, ge=1, description="queries per POST /search/batch")
    max_filter_ids: int = Field(default=10_000, ge=1, description="ids per filter_ids allow-list")
    admin_token: SecretStr | None = Field(default=None, description=(
        "enables /admin/* and the writes (POST /documents, DELETE /documents/{id}) with this bearer token; "
        "the service is then the collection's one writer"))
    max_write_documents: int = Field(default=1000, ge=1, le=100_000,
                                     description="documents per POST /documents")
    background_merge: bool = Field(default=True, description=(
        "after each write, merge segments by the tiered policy in one background thread"))
    latency_window: int = Field(default=10_000, ge=100, description="latencies kept for /stats percentiles")
    micro_batch_ms: float = Field(default=0.0, ge=0.0, le=100.0, description=(
        "encode sparse queries that arrive within this many ms in one batch (0: off)"))
    keep_alive_s: float = Field(default=65.0, gt=0, le=3600, description=(
        "seconds an idle connection stays open; longer than clients' and proxies' own idle limits (httpx 5, "
        "AWS ALB 60), so that the server never closes a connection just as a client reuses it"))
    access_log: bool = Field(default=False, description=(
        "log a line per request (uvicorn's access log); /metrics counts every request either way"))
    fast_search: bool = Field(default=True, description=(
        "answer well-formed POST /search bodies without FastAPI's request machinery (errors: the same)"))
    inline_model_free: bool = Field(default=True, description=(
        "run searches of model-free modes (sparse-idf, bm25) on the event loop, not a worker thread"))

    @classmethod
    def load(cls, config: str | os.PathLike | None = None, **overrides) -> "Settings":
        """Settings from ``config`` (``.toml`` or ``.json``; unknown keys refused), the environment and
        ``overrides``. Raises LsrError naming the setting (and the file) and the problem, in one line."""
        if config is None:
            try:
                return cls(**overrides)
            except ValidationError as e:
                raise LsrError(_one_line(e, overrides)) from None
        path = Path(config)
        if not path.is_file():
            raise LsrError(f"{path}: no such config file")
        sources = {".toml": TomlConfigSettingsSource, ".json": JsonConfigSettingsSource}
        source = sources.get(path.suffix.lower())
        if source is None:
            raise LsrError(f"{path}: a config file is .toml or .json")
        try:
            data = source(cls, path)()
        except Exception as e:  # a parse error of either format
            raise LsrError(f"{path}: unreadable config ({str(e).splitlines()[0]})") from None
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise LsrError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(cls.model_fields)})")

        class FromFile(cls):  # the file ranks below the environment and the arguments
            @classmethod
            def settings_customise_sources(cls_, settings_cls, init_settings, env_settings, dotenv_settings,
                                           file_secret_settings):
                return init_settings, env_settings, source(settings_cls, path)

        try:
            return cls(**FromFile(**overrides).model_dump())
        except ValidationError as e:
            raise LsrError(_one_line(e, overrides, path)) from None


def _one_line(e: ValidationError, overrides: dict, path: Path | None = None) -> str:
    """The first problem of a ValidationError as one line naming the setting and where its value came from:
    ``setting port (from the arguments): Input should be less than or equal to 65535, got 70000``."""
    err = e.errors()[0]
    name = ".".join(map(str, err["loc"])) or "?"
    env = f"LSR_{name.upper()}"
    if name in overrides:
        origin = "from the arguments"
    elif env in os.environ:
        origin = f"from the environment variable {env}"
    elif path is not None:
        origin = f"from the config file {path}"
    else:
        origin = "default"
    got = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    return f"setting {name} ({origin}): {err['msg']}{got}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (override with ``app.dependency_overrides[get_settings]``)."""
    return Settings()
