"""Dependencies and helpers shared by the routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Receive

from ..runtime import ServiceState


async def get_service(request: Request) -> ServiceState:
    # async: a plain def dependency would cost every request a hop to the thread pool
    return request.app.state.service


Service = Annotated[ServiceState, Depends(get_service)]


async def client_gone(receive: Receive) -> None:
    """Resolves when the client disconnects (the body has been read by then)."""
    while (await receive())["type"] != "http.disconnect":
        pass
