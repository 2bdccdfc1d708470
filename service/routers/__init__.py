"""The API's routers: search (and encode), documents, health (and stats, metrics), admin, web page."""

from lsr.service.routers import admin, documents, health, search, web

__all__ = ["admin", "documents", "health", "search", "web"]
