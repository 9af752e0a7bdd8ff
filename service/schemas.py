"""Response bodies, grouped by route. Requests carry images, so they have no model here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# -- /classify ------------------------------------------------------------------------


class Prediction(BaseModel):
    label: str
    index: int = Field(description="class index in the model's label list")
    probability: float = Field(description="softmax probability")


class BlockPoints(BaseModel):
    stage: int
    block: int
    groups: int
    height: int = Field(description="Hk, rows of sampling points")
    width: int = Field(description="Wk, columns of sampling points")
    yx: list[list[list[list[float]]]] = Field(
        description="(groups, Hk, Wk, 2): (y, x) in [-1, 1] over the model input, "
                    "-1 and 1 being the centres of the first and last pixel")


class ImageResult(BaseModel):
    index: int = Field(description="position of the image in the request")
    filename: str | None = None
    width: int = Field(description="width of the decoded, upright image")
    height: int
    predictions: list[Prediction]
    points: list[BlockPoints] | None = Field(
        None, description="sampling points of every deformable (D) block, with ?points=true")


class ModelRef(BaseModel):
    name: str
    version: str
    backend: str
    precision: str


class Timing(BaseModel):
    preprocess_ms: float = Field(description="reading, decoding and resizing the images")
    queue_ms: float = Field(description="waiting for a batch")
    inference_ms: float = Field(description="the batch's forward pass")
    total_ms: float = Field(description="from arrival to response")
    batch_size: int = Field(description="images in the forward pass that computed this request")


class ClassifyResponse(BaseModel):
    model: ModelRef
    results: list[ImageResult]
    timing: Timing
    request_id: str | None = None


# -- /models --------------------------------------------------------------------------


class Batching(BaseModel):
    max_batch_size: int
    max_queue_delay_ms: float
    max_queue_size: int
    default_timeout_ms: int
    max_images_per_request: int


class ModelDescription(BaseModel):
    model_config = ConfigDict(extra="allow")  # backend specifics: threads, cuda_graphs, artifacts

    name: str | None
    task: str
    ready: bool
    version: str | None = None
    backend: str
    device: str
    precision: str
    input_size: int | None = None
    num_labels: int | None = None
    supports_points: bool
    preprocessing: dict | None = None
    batching: Batching


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


# -- health and errors ----------------------------------------------------------------


class Health(BaseModel):
    status: str
    detail: str | None = None


class ErrorDetail(BaseModel):
    status: int
    type: str
    message: str
    request_id: str | None = None
    details: list | dict | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
