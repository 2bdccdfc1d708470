"""``GET /``: the search page (plain HTML and a small script from ``service/static``, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

STATIC = Path(__file__).resolve().parent.parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def page():
    index = STATIC / "index.html"
    if not index.is_file():
        return HTMLResponse("<p>lsr-engine: the web page is not installed; the API is at <a href='/docs'>"
                            "/docs</a></p>")
    return FileResponse(index, media_type="text/html")
