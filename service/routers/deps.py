"""Dependencies shared by the routers: the service state and the settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lsr.service.settings import Settings, get_settings
from lsr.service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    """The state opened by the app's lifespan (its Searcher may be swapped by a reload)."""
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
