"""The v2 health probes, and the server's and each model's metadata and readiness."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse

from export import triton

from ...runtime import ServiceState
from ...schemas import V2Live, V2ModelMetadata, V2ModelReady, V2Ready, V2ServerMetadata
from ..deps import Service
from .api import MODEL_ERRORS, READY_ERRORS, VERSION, v2_router
from .catalog import find, input_specs, output_specs

EXTENSIONS = ["binary_tensor_data", "classification"]
# Triton's platform names, by our backend's name
PLATFORMS = {"torch": "pytorch_libtorch", **{name: p for name, (p, _) in triton.PLATFORMS.items()}}

router = v2_router()


@router.get("", response_model=V2ServerMetadata, summary="Server metadata and extensions")
async def server_metadata(request: Request) -> V2ServerMetadata:
    return V2ServerMetadata(name="dat-serve", version=request.app.version, extensions=EXTENSIONS)


@router.get(
    "/health/live",
    response_model=V2Live,
    responses={503: {"model": V2Live}},
    summary="200 while the process runs; 503 as /health/live (an inference thread dead or stuck)",
)
async def live(service: Service) -> JSONResponse:
    problem = service.liveness_problem()
    if problem is None:
        return JSONResponse({"live": True})
    return JSONResponse({"live": False, "reason": problem[1]}, status_code=503)


@router.get(
    "/health/ready",
    response_model=V2Ready,
    responses={503: {"model": V2Ready}},
    summary="200 once every model is loaded and warmed up; 503 before, while draining and "
    "while a model's batches keep failing",
)
async def ready(service: Service) -> JSONResponse:
    problem = service.not_ready()
    if problem is None:
        return JSONResponse({"ready": True})
    return JSONResponse({"ready": False, "reason": problem[1]}, status_code=503, headers={"Retry-After": "1"})


def _metadata(service: ServiceState, name: str, version: str | None) -> V2ModelMetadata:
    runtime = find(service, name, version)
    return V2ModelMetadata(
        name=runtime.meta.name,
        versions=[VERSION],
        platform=PLATFORMS.get(runtime.backend.name, runtime.backend.name),
        inputs=[t.to_dict() for t in input_specs(runtime)],
        outputs=[t.to_dict() for t in output_specs(runtime)],
    )


@router.get(
    "/models/{model_name}",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
    summary="Model metadata: versions, platform, input and output tensors",
)
async def model_metadata(service: Service, model_name: str) -> V2ModelMetadata:
    return _metadata(service, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}",
    response_model=V2ModelMetadata,
    responses=MODEL_ERRORS,
    summary="Model metadata of one version",
)
async def model_version_metadata(service: Service, model_name: str, model_version: str) -> V2ModelMetadata:
    return _metadata(service, model_name, model_version)


def _ready(service: ServiceState, name: str, version: str | None) -> JSONResponse:
    runtime = find(service, name, version)
    problem = service.not_ready(runtime)
    if problem is None:
        return JSONResponse({"name": runtime.meta.name, "ready": True})
    return JSONResponse(
        {"name": runtime.meta.name, "ready": False, "reason": problem[1]},
        status_code=503,
        headers={"Retry-After": "1"},
    )


@router.get(
    "/models/{model_name}/ready",
    response_model=V2ModelReady,
    responses=READY_ERRORS,
    summary="200 when the model can take requests; 503 while loading, draining or while its "
    "batches keep failing",
)
async def model_ready(service: Service, model_name: str) -> JSONResponse:
    return _ready(service, model_name, None)


@router.get(
    "/models/{model_name}/versions/{model_version}/ready",
    response_model=V2ModelReady,
    responses=READY_ERRORS,
    summary="Readiness of one model version",
)
async def model_version_ready(service: Service, model_name: str, model_version: str) -> JSONResponse:
    return _ready(service, model_name, model_version)
