"""The app factory: settings and (optionally) a backend in, a FastAPI app out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from . import ui
from .auth import BearerAuth
from .backends import Backend
from .errors import install_error_handlers
from .middleware import RequestContext
from .openapi import install_openapi
from .routes import ROUTERS
from .runtime import ServiceState
from .settings import Settings

if TYPE_CHECKING:
    from .frontend import InferenceLink

DESCRIPTION = (
    "DAT (Vision Transformer with Deformable Attention) behind HTTP. Concurrent requests "
    "are batched into one forward pass; errors are JSON with a clear message. The same "
    "models are served over the Open Inference Protocol (v2) for Triton and KServe clients."
)


def create_app(
    settings: Settings | None = None,
    *,
    backend: Backend | None = None,
    detector: Backend | None = None,
    load_before_serving: bool = False,
    link: InferenceLink | None = None,
) -> FastAPI:
    """``backend`` / ``detector`` replace the classifier's / detector's backend the settings
    describe (tests pass instrumented ones). ``load_before_serving``: startup waits for the
    models (a worker sharing a port must not take connections it can only refuse). ``link``: a
    front end's, whose models run in the inference process (``service.frontend``)."""
    settings = settings or Settings()
    service = ServiceState(settings, backend, detector, link)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        if load_before_serving:
            await service.wait_ready()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(title="DAT model server", description=DESCRIPTION, version="0.1.0", lifespan=lifespan)
    app.state.service = service
    install_error_handlers(app)
    open_paths = BearerAuth.open_paths_for(settings.protect_health, settings.protect_metrics)
    if settings.ui:  # the page asks for the key itself; a browser cannot send one to load it
        open_paths |= ui.PATHS
    if settings.api_key_list:  # inside RequestContext: refusals are logged and counted
        app.add_middleware(BearerAuth, keys=settings.api_key_list, open_paths=open_paths)
    app.add_middleware(RequestContext, metrics=service.metrics)
    install_openapi(app, settings, open_paths)
    for router in ROUTERS:
        app.include_router(router)
    if settings.ui:
        app.include_router(ui.router)
    return app
