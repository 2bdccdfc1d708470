"""``GET /``: the search page (plain HTML and a small script from ``service/static``, no build step), its
icon at ``/favicon.ico`` and ``GET /ui/config``: the limits the page must respect, read from the API's own
request models, so that they are written down once.

Example:
    >>> import httpx                                                           # doctest: +SKIP
    >>> httpx.get("http://127.0.0.1:8000/ui/config").json()["max_k"]           # doctest: +SKIP
    1000
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from lsr.service.errors import ApiError
from lsr.service.routers.deps import SettingsDep
from lsr.service.schemas import SearchRequest

STATIC = Path(__file__).resolve().parent.parent / "static"
ICON = STATIC / "favicon.svg"
router = APIRouter(include_in_schema=False)


def max_k() -> int:
    """The largest ``k`` that ``POST /search`` accepts (the ``le`` bound of :class:`SearchRequest`)."""
    bounds = [m.le for m in SearchRequest.model_fields["k"].metadata if getattr(m, "le", None) is not None]
    return int(min(bounds))


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
async def config(settings: SettingsDep) -> dict:
    """What the page needs to know: the most hits one search returns and the longest query."""
    return {"max_k": max_k(), "max_query_chars": settings.max_query_chars}
