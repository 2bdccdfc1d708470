"""``GET /documents/{id}``: a stored document."""

from __future__ import annotations

from fastapi import APIRouter

from lsr.service.errors import ApiError
from lsr.service.routers.deps import StateDep
from lsr.service.schemas import DocumentOut, ErrorOut

router = APIRouter(tags=["documents"])


@router.get("/documents/{doc_id:path}", response_model=DocumentOut, responses={404: {"model": ErrorOut}})
def document(doc_id: str, state: StateDep) -> DocumentOut:
    """A stored document by its id."""
    doc = state.searcher.document(doc_id)
    if doc is None:
        raise ApiError(404, f"no document with id {doc_id!r}")
    return DocumentOut(id=doc.id, title=doc.title, text=doc.text)
