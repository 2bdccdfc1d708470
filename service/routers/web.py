"""``GET /``: the search page (plain HTML and a small script from ``service/static``, no build step), its
icon at ``/favicon.ico`` and ``GET /ui/config``: the choices and limits the page offers and respects (modes,
speeds, the largest ``k``, fusion methods ...), from :mod:`lsr.params` and the served index, so that they
are written down once.

Example:
    >>> import httpx                                                           # doctest: +SKIP
    >>> httpx.get("http://127.0.0.1:8000/ui/config").json()["k_max"]           # doctest: +SKIP
    1000
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from lsr.filters import FIELD_TYPES, RANGE_OPS
from lsr.params import DEFAULT_K, DEFAULT_SPEED, FUSION_METHODS, K_MAX_HTTP, MODES, NORMALIZATIONS, SPEEDS
from lsr.service.errors import ApiError
from lsr.service.routers.deps import SettingsDep, StateDep

STATIC = Path(__file__).resolve().parent.parent / "static"
ICON = STATIC / "favicon.svg"
router = APIRouter(include_in_schema=False)


def _first_sentence(doc: str | None) -> str:
    text = " ".join((doc or "").strip().split("\n\n")[0].split()).replace("``", "")
    return text.split(". ")[0].rstrip(".")


def mode_help(searcher) -> dict[str, str]:
    """A line on each mode of ``searcher``: the first sentence of its retriever class's docstring."""
    out = {"hybrid": "fuses every retriever of the index"}
    for name in searcher.retrievers:
        out[name] = _first_sentence(type(searcher.retriever(name)).__doc__) or name
    return {m: out[m] for m in searcher.modes if m in out}


@router.get("/")
async def page():
    index = STATIC / "index.html"
    if not index.is_file():
        return HTMLResponse("<p>lsr-engine: the web page is not installed; the API is at <a href='/docs'>"
                            "/docs</a></p>")
    return FileResponse(index, media_type="text/html")


@router.get("/favicon.ico")
async def favicon():
    """The page's icon (an SVG; browsers that ask for /favicon.ico get it too)."""
    if not ICON.is_file():
        raise ApiError(404, "the web page's icon is not installed")
    return FileResponse(ICON, media_type="image/svg+xml")


@router.get("/ui/config")
async def config(settings: SettingsDep, state: StateDep) -> dict:
    """What the page offers and respects: the index's modes (``all_modes``: every known one) with a line on
    each, the speeds, the largest ``k`` (``max_k``: its former name), the longest query, fusion choices,
    the collection's metadata ``fields`` (name -> type; the page offers a filter when there are some)."""
    searcher = state.searcher
    fields = searcher.collection.stats().get("fields") or {}
    return {"modes": list(searcher.modes), "default_mode": searcher.default_mode, "all_modes": list(MODES),
            "mode_help": mode_help(searcher), "speeds": list(SPEEDS), "default_speed": DEFAULT_SPEED,
            "k_max": K_MAX_HTTP, "max_k": K_MAX_HTTP, "default_k": DEFAULT_K,
            "max_query_chars": settings.max_query_chars, "fusion_methods": list(FUSION_METHODS),
            "normalizations": list(NORMALIZATIONS), "fields": fields,
            "filter_ops": {t: ["eq", "in", "exists", *(RANGE_OPS if t in ("integer", "float") else ())]
                           for t in FIELD_TYPES}}
