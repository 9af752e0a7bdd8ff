"""``--gpu-decode``: baseline JPEGs decoded on the model's GPU, many requests' images per call.

Why: on an H100 host the model computes many times more images per second than Pillow decodes
and resizes on all the host's cores, while nvJPEG decodes batches of JPEGs faster than the model
runs (docs/benchmarks.md). Decoding and resizing on the GPU leave the host's cores to HTTP.

Which images: a JPEG (not MPO) whose markers hold one frame header, sequential Huffman-coded
(not progressive, not arithmetic), 8-bit YCbCr or greyscale, and whose data ends in its EOI
marker. Every other image, and any JPEG the GPU decoder refuses, takes the Pillow path
(``preprocess.prepare``), so an image that Pillow decodes never fails here, and a truncated JPEG
is still Pillow's 400, never grey pixels.

One thread owns the decoder and its CUDA stream. It takes what has queued while it was busy (no
added wait), up to a pixel budget, decodes it in one call, turns each image upright, then
resizes and normalises the images of each size together with the model's own
``Preprocessing.from_pixels``. Pixels are nvJPEG's, not bit-identical to libjpeg-turbo's (Pillow).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import torch
from PIL import Image

from models import Preprocessing

from .errors import Unavailable
from .preprocess import open_image

log = logging.getLogger("service.gpu_decode")

# (3, H, W) uint8 pixels, one per encoded image, or the call raises for the whole batch.
DecodeBatch = Callable[[list[torch.Tensor]], Sequence[torch.Tensor]]

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOS = 0xDA
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers (not DHT, JPG, DAC)
_SEQUENTIAL_HUFFMAN = (0xC0, 0xC1)  # baseline and extended: what nvJPEG decodes
_STANDALONE = {0x01, *range(0xD0, 0xDA)}  # TEM, RSTn, SOI, EOI: markers without a segment
_RGB_IDS = (82, 71, 66)  # 'R', 'G', 'B'
_EXIF_ORIENTATION = 0x0112
MAX_BATCH_IMAGES = 64
MAX_BATCH_PIXELS = 2**26  # about 64 MP a call: bounds the decoded images' GPU memory
TRANSFORM_PIXELS = 2**24  # images resized together: 16 MP, 192 MB as float32


class Refused(Exception):
    """The GPU decoder could not decode this image: the caller decodes it with Pillow."""


@dataclass(frozen=True)
class JpegHeader:
    """What the header of a JPEG that goes to the GPU says."""

    width: int  # upright, after the EXIF orientation
    height: int
    orientation: int  # EXIF 1..8


@dataclass(frozen=True)
class JpegFrame:
    """A JPEG's markers up to its first scan, as a decoder reads them."""

    sof: int  # the frame header's marker: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    component_ids: tuple[int, ...]
    adobe_transform: int | None  # the APP14 Adobe segment's colour transform, where there is one

    @property
    def ycbcr_or_grey(self) -> bool:
        """Greyscale, or three components that decoders agree are YCbCr: no Adobe transform
        but 1, and not the ids 'R', 'G', 'B'. libjpeg (Pillow) reads RGB from an Adobe transform
        of 0, and from those ids where no JFIF or Adobe segment says otherwise; a decoder that
        looks elsewhere would show them as YCbCr."""
        if len(self.component_ids) == 1:
            return True
        return (
            len(self.component_ids) == 3
            and self.adobe_transform in (None, 1)
            and self.component_ids != _RGB_IDS
        )


def read_frame(data: bytes) -> JpegFrame | None:
    """The markers from SOI to the first SOS; None where they are malformed, or where there is
    not exactly one frame header (decoders disagree on which one counts)."""
    if not data.startswith(_SOI):
        return None
    frames, adobe_transform = [], None
    pos = len(_SOI)
    while True:
        if data[pos : pos + 1] != b"\xff":
            return None
        while data[pos : pos + 1] == b"\xff":  # fill bytes
            pos += 1
        if pos + 3 > len(data):
            return None
        marker = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 3], "big")
        if marker in _STANDALONE or length < 2 or pos + 1 + length > len(data):
            return None  # no segment follows a second SOI, an EOI or RSTn before the scan
        segment = data[pos + 3 : pos + 1 + length]
        if marker == _SOS:
            break
        if marker in _SOF:
            frames.append((marker, segment))
        elif marker == 0xEE and segment.startswith(b"Adobe") and len(segment) >= 12:
            adobe_transform = segment[11]
        pos += 1 + length
    if len(frames) != 1:
        return None
    sof, segment = frames[0]
    if len(segment) < 6 or len(segment) != 6 + 3 * segment[5]:
        return None
    return JpegFrame(sof=sof, component_ids=tuple(segment[6::3]), adobe_transform=adobe_transform)


def gpu_decodable(image: Image.Image, data: bytes) -> JpegHeader | None:
    """The header of an image that the GPU path takes; None sends it to Pillow.

    ``image`` is ``data`` opened by Pillow, header only (``preprocess.open_image``)."""
    if image.format != "JPEG" or image.mode not in ("RGB", "L"):  # MPO, CMYK, ...
        return None
    # One frame header, so the size nvJPEG allocates for is the size checked (Pillow refuses
    # any but 8-bit samples itself).
    frame = read_frame(data)
    if frame is None or frame.sof not in _SEQUENTIAL_HUFFMAN or not frame.ycbcr_or_grey:
        return None
    if not data.endswith(_EOI):
        return None  # truncated, or trailing bytes: Pillow decides
    orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    if orientation not in range(1, 9):
        orientation = 1  # as Pillow's exif_transpose: an invalid tag is ignored
    width, height = image.size
    if orientation >= 5:  # 5..8 turn the image a quarter
        width, height = height, width
    return JpegHeader(width, height, orientation)


def read_header(data: bytes, max_pixels: int) -> JpegHeader | None:
    """The header check every image gets (400 / 413 as ``preprocess.decode``), then
    :func:`gpu_decodable`; runs on the decoding pool."""
    image = open_image(data, max_pixels)
    try:
        return gpu_decodable(image, data)
    except Exception:  # noqa: BLE001 - e.g. a malformed EXIF block: Pillow's path decides
        return None


def orient(pixels: torch.Tensor, orientation: int) -> torch.Tensor:
    """(C, H, W) pixels as stored -> upright, as ``ImageOps.exif_transpose`` turns them."""
    if orientation == 2:
        return pixels.flip(-1)
    if orientation == 3:
        return pixels.flip(-2, -1)
    if orientation == 4:
        return pixels.flip(-2)
    if orientation == 5:
        return pixels.transpose(-2, -1)
    if orientation == 6:
        return pixels.rot90(-1, (-2, -1))  # a quarter turn clockwise
    if orientation == 7:
        return pixels.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return pixels.rot90(1, (-2, -1))
    return pixels


def torchvision_decoder(device: torch.device) -> DecodeBatch:
    """nvJPEG through torchvision: baseline JPEGs on the GPU's hardware decoder where it has
    one (A100, H100), else on its cores. Raises ImportError without torchvision."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def decode(encoded: list[torch.Tensor]) -> Sequence[torch.Tensor]:
        return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)

    return decode


@dataclass
class _Job:
    encoded: torch.Tensor
    header: JpegHeader
    pixels: int
    future: Future


class GpuJpegDecoder:
    """Decodes JPEGs in batches on one thread, into the model's input tensors on ``device``."""

    def __init__(
        self,
        preprocessing: Preprocessing,
        device: torch.device,
        decode: DecodeBatch,
        max_batch_images: int = MAX_BATCH_IMAGES,
        max_batch_pixels: int = MAX_BATCH_PIXELS,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.preprocessing = preprocessing
        self.device = device
        self.decode = decode
        self.on_batch = on_batch  # (images, refused) after every call, for the metrics
        self.max_batch_images = max_batch_images
        self.max_batch_pixels = max_batch_pixels
        self.calls = 0  # batches taken: one call of ``decode`` each, unless it failed and was split
        self.images = 0
        self.refused = 0
        self._jobs: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="gpu-decode", daemon=True)

    def start(self) -> GpuJpegDecoder:
        self._thread.start()
        return self

    def submit(self, data: bytes, header: JpegHeader) -> Future:
        """The model input (3, S, S) float32 on ``device``, later; :class:`Refused` sends the
        image to Pillow."""
        future: Future = Future()
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        with self._wake:
            if self._stopped:
                raise Unavailable("the server is shutting down")
            self._jobs.append(_Job(encoded, header, header.width * header.height, future))
            self._wake.notify()
        return future

    def warm_up(self, timeout: float = 120.0) -> None:
        """Decodes a small JPEG made here: nvJPEG starts now, not on a client's request, and a
        torchvision without nvJPEG fails the start, not every request."""
        image = Image.linear_gradient("L").resize((64, 48)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        data = buffer.getvalue()
        header = read_header(data, image.width * image.height)
        assert header is not None
        try:
            self.submit(data, header).result(timeout)
        except Refused as exc:
            raise RuntimeError(f"--gpu-decode: the GPU decoder failed on a test image: {exc}") from exc

    def stop(self, timeout: float | None = None) -> None:
        """Refuses new images; those queued are refused too (Pillow or the drain answers them)."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the decoding thread -------------------------------------------------------------
    def _take(self) -> list[_Job] | None:
        """What has queued, within the batch's limits; None once stopped."""
        with self._wake:
            while not self._jobs and not self._stopped:
                self._wake.wait()
            if self._stopped:
                for job in self._jobs:
                    if job.future.set_running_or_notify_cancel():
                        job.future.set_exception(Refused("the decoder stopped"))
                self._jobs.clear()
                return None
            jobs: list[_Job] = []
            pixels = 0
            while self._jobs and len(jobs) < self.max_batch_images:
                job = self._jobs[0]
                if jobs and pixels + job.pixels > self.max_batch_pixels:
                    break
                self._jobs.popleft()
                if job.future.set_running_or_notify_cancel():  # its request may have gone
                    jobs.append(job)
                    pixels += job.pixels
            return jobs

    def _run(self) -> None:
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        while (jobs := self._take()) is not None:
            if not jobs:
                continue
            try:
                with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                    outcomes = self._decode_all(jobs)
                if stream is not None:
                    # The inputs are read on the model's stream; ``preprocess.stack`` tells the
                    # allocator, and waiting here means that stream never waits on this one.
                    stream.synchronize()
            except BaseException as exc:  # noqa: BLE001 - a failed call must answer every job
                log.warning("GPU JPEG decoding failed: %s", exc)
                outcomes = [Refused(f"{type(exc).__name__}: {exc}")] * len(jobs)
            refused = sum(isinstance(outcome, BaseException) for outcome in outcomes)
            self.calls += 1
            self.images += len(jobs)
            self.refused += refused
            if self.on_batch is not None:
                self.on_batch(len(jobs), refused)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _decode_all(self, jobs: list[_Job]) -> list[torch.Tensor | Refused]:
        decoded = self._decode_split(jobs)
        outcomes: list[torch.Tensor | Refused | None] = [None] * len(jobs)
        same_size: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
        for i, (job, pixels) in enumerate(zip(jobs, decoded, strict=True)):
            if isinstance(pixels, Refused):
                outcomes[i] = pixels
                continue
            upright = orient(pixels, job.header.orientation)
            if tuple(upright.shape) != (3, job.header.height, job.header.width):
                outcomes[i] = Refused(
                    f"decoded {tuple(upright.shape)}, the header says {job.header.width}x{job.header.height}"
                )
                continue
            same_size.setdefault((job.header.height, job.header.width), []).append((i, upright))
        # Images of one size are transformed together: a few kernel launches for all of them,
        # where one by one the launches would cost more host time than nvJPEG does.
        for (height, width), group in same_size.items():
            per_call = max(1, TRANSFORM_PIXELS // (height * width))
            for start in range(0, len(group), per_call):
                part = group[start : start + per_call]
                pixels = torch.stack([upright for _, upright in part]).permute(0, 2, 3, 1)
                for (i, _), tensor in zip(part, self.preprocessing.from_pixels(pixels), strict=True):
                    outcomes[i] = tensor
        return outcomes  # type: ignore[return-value]

    def _decode_split(self, jobs: list[_Job]) -> list[torch.Tensor | Refused]:
        """One call; where it fails, each half again, down to the images it refuses alone (a
        bad image among 64 costs 12 calls more, not 64)."""
        try:
            return list(self.decode([job.encoded for job in jobs]))
        except Exception as exc:  # noqa: BLE001 - refused: Pillow decodes it
            if len(jobs) == 1:
                return [Refused(str(exc))]
        half = len(jobs) // 2
        return self._decode_split(jobs[:half]) + self._decode_split(jobs[half:])
