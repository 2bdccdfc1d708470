"""``GET /documents/{id}``: a stored document (in whichever segment holds it); with the admin token,
``POST /documents`` (add or replace a batch, encoded here, committed) and ``DELETE /documents/{id}``.

The writes are disabled (404) unless ``LSR_ADMIN_TOKEN`` is set, like ``/admin/*``; then they need
``Authorization: Bearer <token>``. A write answers once its commit is durable: searches that start after the
answer see it.

Example:
    >>> import httpx                                                                     # doctest: +SKIP
    >>> httpx.post(url + "/documents", headers={"Authorization": "Bearer s3cret"},
    ...            json={"documents": [{"id": "n1", "text": "new text", "metadata": {"lang": "en"}}]}
    ...            ).json()["generation"]                                                # doctest: +SKIP
    2
"""

from __future__ import annotations

import time
from typing import Annotated, Callable

from fastapi import APIRouter, Header

from lsr.errors import LsrError
from lsr.service.errors import ApiError
from lsr.service.routers.admin import check_token
from lsr.service.routers.deps import SettingsDep, StateDep
from lsr.service.schemas import AddDocumentsRequest, CommitOut, DocumentOut, ErrorOut

router = APIRouter(tags=["documents"])
WRITE_ERRORS = {401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                409: {"model": ErrorOut}, 413: {"model": ErrorOut}, 422: {"model": ErrorOut}}


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
def document(doc_id: str, state: StateDep) -> DocumentOut:
    """A stored document by its id."""
    doc = state.searcher.document(doc_id)
    if doc is None:
        raise ApiError(404, f"no document with id {doc_id!r}")
    return DocumentOut(id=doc.id, title=doc.title, text=doc.text)


async def write(state, fn: Callable, *args):
    """``fn(collection, *args)`` as the service's one write at a time; errors as JSON answers: a bad
    document 422, another writer or a collection that takes no writes 409."""
    writes = state.writes
    async with writes.lock:
        try:
            return await writes.run(fn, *args)
        except ValueError as e:
            raise ApiError(422, str(e)) from None
        except LsrError as e:  # another writer holds the lock, an old format, a conflicting change
            raise ApiError(409, str(e)) from None


@router.post("/documents", response_model=CommitOut, response_model_exclude_none=True,
             responses=WRITE_ERRORS)
async def add_documents(body: AddDocumentsRequest, state: StateDep, settings: SettingsDep,
                        authorization: Annotated[str | None, Header()] = None) -> CommitOut:
    """Add documents (an id the collection has is replaced): encoded here, committed; the answer is the
    commit (searches started after it see the documents)."""
    check_token(settings, authorization)
    if len(body.documents) > settings.max_write_documents:
        raise ApiError(422, f"{len(body.documents)} documents in one request; at most "
                            f"{settings.max_write_documents}")
    docs = [d.model_dump(exclude_none=True) for d in body.documents]
    t0 = time.perf_counter()
    info = await write(state, state.writes.add, docs)
    return CommitOut(**info.to_dict(), took_ms=round((time.perf_counter() - t0) * 1000, 3))


@router.delete("/documents/{doc_id:path}", response_model=CommitOut, response_model_exclude_none=True,
               responses=WRITE_ERRORS)
async def delete_document(doc_id: str, state: StateDep, settings: SettingsDep,
                          authorization: Annotated[str | None, Header()] = None) -> CommitOut:
    """Delete a document; 404 when the collection has no document with that id."""
    check_token(settings, authorization)
    t0 = time.perf_counter()
    info = await write(state, state.writes.delete, doc_id)
    if info is None:
        raise ApiError(404, f"no document with id {doc_id!r}")
    return CommitOut(**info.to_dict(), took_ms=round((time.perf_counter() - t0) * 1000, 3))
