"""The HTTP service (FastAPI). Needs the ``serve`` extra: ``pip install 'lsr-engine[serve]'``."""

from lsr.service.app import create_app
from lsr.service.settings import Settings, get_settings

__all__ = ["create_app", "Settings", "get_settings"]
