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
        "-1 and 1 being the centres of the first and last pixel"
    )


class ImageOfRequest(BaseModel):
    """What every per-image result starts with."""

    index: int = Field(description="position of the image in the request")
    filename: str | None = None
    width: int = Field(description="width of the decoded, upright image")
    height: int


class ImageResult(ImageOfRequest):
    predictions: list[Prediction]
    points: list[BlockPoints] | None = Field(
        None, description="sampling points of every deformable (D) block, with ?points=true"
    )


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


# -- /detect --------------------------------------------------------------------------


class Box(BaseModel):
    x1: float = Field(description="left edge, pixels of the decoded, upright image")
    y1: float = Field(description="top edge")
    x2: float = Field(description="right edge")
    y2: float = Field(description="bottom edge")


class RleMask(BaseModel):
    """COCO's compressed run-length encoding (``pycocotools.mask.decode`` reads it)."""

    size: list[int] = Field(description="[height, width] of the image")
    counts: str = Field(description="column-major run lengths, COCO's compressed string")


SEGMENTATION = (
    "the detection's mask at the image's size: with masks=rle a COCO compressed RLE, with "
    "masks=polygon the outer contour of each region as a flat [x1, y1, x2, y2, ...] list "
    "(instance segmentation models)"
)


class Detection(BaseModel):
    box: Box
    label: str
    index: int = Field(description="class index in the model's label list")
    category_id: int = Field(description="COCO category id (1-90 for COCO models), else index + 1")
    score: float = Field(description="class score (sigmoid or softmax, as the model has it)")
    segmentation: RleMask | list[list[float]] | None = Field(None, description=SEGMENTATION)


class DetectionResult(ImageOfRequest):
    detections: list[Detection] = Field(description="best first")


class DetectResponse(BaseModel):
    model: ModelRef
    results: list[DetectionResult]
    timing: Timing
    request_id: str | None = None


class CocoDetection(BaseModel):
    """One entry of the COCO results format (``?format=coco``)."""

    image_id: int = Field(description="position of the image in the request")
    category_id: int
    bbox: list[float] = Field(description="x, y, width, height in image pixels")
    score: float
    segmentation: RleMask | list[list[float]] | None = Field(
        None, description=SEGMENTATION + "; left out with masks=none"
    )


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
    host_path: dict | None = Field(
        None, description="how the CPU decodes and resizes: jpeg_decoder, resize, jpeg_draft"
    )
    simulated: dict | None = Field(
        None,
        description="present only for --backend simulated: no model runs, outputs are zeros; "
        "images_per_second is the speed it pretends to",
    )
    batching: Batching


class ModelsResponse(BaseModel):
    models: list[ModelDescription]


# -- /v2 (Open Inference Protocol) ----------------------------------------------------


class V2ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="protocol extensions this server implements")


class V2Live(BaseModel):
    live: bool
    reason: str | None = Field(None, description="why not (our addition; the protocol reads the status code)")


class V2Ready(BaseModel):
    ready: bool
    reason: str | None = Field(None, description="why not (our addition; the protocol reads the status code)")


class V2ModelReady(BaseModel):
    name: str
    ready: bool
    reason: str | None = Field(None, description="why not (our addition; the protocol reads the status code)")


class V2TensorMetadata(BaseModel):
    name: str
    datatype: str = Field(description="FP32, FP16, BYTES, ...")
    shape: list[int] = Field(description="-1 for the batch axis")


class V2ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = Field(description="Triton's name for the runtime that serves the model")
    inputs: list[V2TensorMetadata] = Field(description="send exactly one of them")
    outputs: list[V2TensorMetadata]


class V2OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict | None = Field(None, description="binary_data_size for a binary output")
    data: list | None = Field(None, description="row-major values of a JSON output")


class V2InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="the request's id, when it had one")
    outputs: list[V2OutputTensor]


class V2Error(BaseModel):
    error: str


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
