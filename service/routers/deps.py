"""Dependencies shared by the routers: the service state and the settings.

The search routes read the state with :func:`state_of` instead: with any dependency override on the app
(``create_app`` overrides ``get_settings``), FastAPI analyses every dependency of a route again on every
request, which cost about as much as a model-free search.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lsr.service.settings import Settings, get_settings
from lsr.service.state import ServiceState


async def get_state(request: Request) -> ServiceState:
    """The state opened by the app's lifespan (its Searcher may be swapped by a reload). ``async``: FastAPI
    runs a plain ``def`` dependency on a worker thread, a hop per request that cost more than a search."""
    return request.app.state.service


def state_of(request: Request) -> ServiceState:
    """The state of the app serving ``request`` (what :func:`get_state` gives, without a dependency)."""
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
