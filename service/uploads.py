"""Reading images out of a request body: multipart ``file``/``files`` parts or a raw image body
(and, for the v2 protocol, the raw body itself).

The body is streamed and counted: it is refused (413) as soon as it passes the byte limit or
carries one image too many, so a hostile client cannot make the server buffer without bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from .errors import BadRequest, ClientDisconnected, InvalidParameter, PayloadTooLarge, UnsupportedMediaType

IMAGE_FIELDS = ("file", "files")
RAW_TYPES = ("application/octet-stream",)  # besides image/*


@dataclass
class Upload:
    data: bytes
    filename: str | None = None
    content_type: str = ""


def _is_image_type(mime: str, *, allow_empty: bool) -> bool:
    return mime.startswith("image/") or mime in RAW_TYPES or (allow_empty and not mime)


def _mime(value: str | bytes | None) -> tuple[str, dict[bytes, bytes]]:
    mime, params = parse_options_header(value)
    return mime.decode("latin-1").strip().lower(), params


class Budget(Protocol):
    def take(self, size: int) -> None:
        """Counts ``size`` more bytes read; raises (503) when the budget cannot hold them."""


class _Body:
    """Counts streamed bytes against the limit (and the reading budget, if any)."""

    def __init__(self, request: Request, limit: int, budget: Budget | None = None) -> None:
        self.request, self.limit, self.size, self.budget = request, limit, 0, budget
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                raise BadRequest(f"invalid Content-Length {declared!r}") from None
            if length > limit:
                raise PayloadTooLarge(
                    f"request body of {length:,} bytes exceeds the limit of {limit:,} bytes"
                )

    async def chunks(self):
        try:
            async for chunk in self.request.stream():
                self.size += len(chunk)
                if self.size > self.limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {self.limit:,} bytes")
                if self.budget is not None:
                    self.budget.take(len(chunk))
                if chunk:
                    yield chunk
        except ClientDisconnect:
            raise ClientDisconnected() from None


async def read_body(request: Request, max_body_bytes: int, budget: Budget | None = None) -> bytes:
    """The whole body, refused (413) as soon as it passes the limit."""
    data = bytearray()
    async for chunk in _Body(request, max_body_bytes, budget).chunks():
        data += chunk
    return bytes(data)


async def read_images(
    request: Request, *, max_body_bytes: int, max_images: int, budget: Budget | None = None
) -> list[Upload]:
    """The request's images, in order. Raises the service's 400/413/415/422 errors (503 when
    ``budget`` cannot hold the body)."""
    mime, params = _mime(request.headers.get("content-type"))
    if mime == "multipart/form-data":
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadRequest("multipart/form-data without a boundary parameter")
        return await _read_multipart(_Body(request, max_body_bytes, budget), boundary, max_images)
    if _is_image_type(mime, allow_empty=False):
        return [Upload(await read_body(request, max_body_bytes, budget), None, mime)]
    shown = mime or "none"
    raise UnsupportedMediaType(
        f"unsupported content type ({shown}): send multipart/form-data with "
        f"'file' or 'files' parts, or a raw body with an image/* type"
    )


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    is_image: bool = False
    filename: str | None = None
    content_type: str = ""


async def _read_multipart(body: _Body, boundary: bytes, max_images: int) -> list[Upload]:
    uploads: list[Upload] = []
    current = _Part()
    header_field = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        current.headers[header_field.decode("latin-1").strip().lower()] = header_value.decode("latin-1")
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        disposition, options = parse_options_header(current.headers.get("content-disposition"))
        if disposition.lower() != b"form-data" or b"name" not in options:
            raise BadRequest("multipart part without a 'Content-Disposition: form-data; name=...'")
        name = options[b"name"].decode("utf-8", "replace")
        if name not in IMAGE_FIELDS:
            raise InvalidParameter(
                f"unexpected form field {name!r}: send images as 'file' or "
                f"'files' parts and parameters in the query string"
            )
        content_type, _ = _mime(current.headers.get("content-type"))
        if not _is_image_type(content_type, allow_empty=True):
            raise UnsupportedMediaType(
                f"part {name!r} has content type {content_type}; expected image/* or application/octet-stream"
            )
        if len(uploads) + 1 > max_images:
            raise PayloadTooLarge(f"more than {max_images} images in one request")
        current.is_image = True
        current.content_type = content_type
        filename = options.get(b"filename")
        current.filename = filename.decode("utf-8", "replace") if filename is not None else None

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.data.extend(data[start:end])

    def on_part_end() -> None:
        if current.is_image:
            uploads.append(Upload(bytes(current.data), current.filename, current.content_type))
        current.data = bytearray()

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body.chunks():
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"malformed multipart body ({exc})") from None
    if parser.state != MultipartState.END:
        raise BadRequest("multipart body is incomplete (no closing boundary)")
    if not uploads:
        raise InvalidParameter("no image in the request: send 'file' or 'files' parts")
    return uploads
