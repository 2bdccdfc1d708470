"""``POST /admin/reload``: reopen a rebuilt index without dropping requests; ``POST /admin/merge``: merge
the collection's segments.

Disabled (404) unless ``LSR_ADMIN_TOKEN`` is set; then it needs ``Authorization: Bearer <token>``.
The new index is opened on a worker thread while the old one keeps serving; requests that started on
the old one finish on it. A merge runs on the service's merge thread while searches keep answering.
"""

from __future__ import annotations

import hmac
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body, Header

from lsr.errors import LsrError
from lsr.searcher import Searcher
from lsr.service.errors import ApiError
from lsr.service.routers.deps import SettingsDep, StateDep
from lsr.service.schemas import CommitOut, ErrorOut, MergeOut, MergeRequest, Reloaded, ReloadRequest

router = APIRouter(tags=["admin"])


def check_token(settings, authorization: str | None) -> None:
    if settings.admin_token is None:
        raise ApiError(404, "admin routes and writes are disabled (set LSR_ADMIN_TOKEN to enable them)")
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():  # the scheme is case-insensitive (RFC 7235)
        raise ApiError(401, "admin routes need 'Authorization: Bearer <token>'",
                       headers={"WWW-Authenticate": "Bearer"})
    given = token.strip().encode()
    if not hmac.compare_digest(given, settings.admin_token.get_secret_value().encode()):
        raise ApiError(403, "wrong admin token")


@router.post("/admin/reload", response_model=Reloaded,
             responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                        409: {"model": ErrorOut}})
async def reload(state: StateDep, settings: SettingsDep,
                 authorization: Annotated[str | None, Header()] = None,
                 body: Annotated[ReloadRequest | None, Body()] = None) -> Reloaded:
    """Reopen the index (or ``index_path``); the old one serves until the new one is open."""
    check_token(settings, authorization)
    path = Path(body.index_path) if body and body.index_path else Path(state.searcher.info["path"])
    async with state.reload_lock:
        t0 = time.perf_counter()
        try:
            new = await state.run(lambda: Searcher.load(path, model=settings.model, device=settings.device))
            await state.run(new.warm_up)  # its first queries must not wait for Numba either
        except (LsrError, OSError, ValueError) as e:
            raise ApiError(409, f"reload failed, still serving the previous index: {e}") from None
        if state.writes is None:
            state.swap(new)  # the old Searcher is freed once the requests holding it are done
        else:
            async with state.writes.lock:  # between two writes; the new collection becomes the writer
                old = state.swap(new)
                await state.writes.retire(old)
        took = (time.perf_counter() - t0) * 1000
    return Reloaded(status="reloaded", index_path=str(path), documents=new.info["documents"],
                    took_ms=round(took, 3))


@router.post("/admin/merge", response_model=MergeOut, response_model_exclude_none=True,
             responses={401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                        409: {"model": ErrorOut}, 422: {"model": ErrorOut}})
async def merge(state: StateDep, settings: SettingsDep, authorization: Annotated[str | None, Header()] = None,
                body: Annotated[MergeRequest | None, Body()] = None) -> MergeOut:
    """Merge segments: the tiered policy until it has nothing to merge, or the smallest segments until at
    most ``max_segments`` remain. Searches keep answering; they see the merged segment after its commit."""
    check_token(settings, authorization)
    t0 = time.perf_counter()
    try:
        done = await state.writes.merge(body.max_segments if body else None)
    except ValueError as e:
        raise ApiError(422, str(e)) from None
    except LsrError as e:  # another writer holds the lock, a conflicting change
        raise ApiError(409, f"merge failed: {e}") from None
    stats = state.searcher.collection.stats()
    return MergeOut(status="merged" if done else "nothing to merge",
                    merges=[CommitOut(**info.to_dict()) for info in done], segments=stats["segments"],
                    generation=stats["generation"], took_ms=round((time.perf_counter() - t0) * 1000, 3))
