"""Schemathesis hooks for ``test_schemathesis`` (loaded through SCHEMATHESIS_HOOKS).

A schema can say "binary", not "an image that decodes": in cases meant to be valid, the image
routes get real PNGs in place of the drawn bytes, so that they reach the model and their 200
answers are checked against the schema too. Cases meant to be invalid keep what was drawn.
"""

from __future__ import annotations

import io

import schemathesis
from PIL import Image
from schemathesis.core.parameters import ParameterLocation
from schemathesis.transport.serialization import Binary

IMAGE_ROUTES = ("/classify", "/detect")


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24 + seed % 16, 20), (seed * 37 % 256, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


def _like(drawn: object, seed: int) -> object:
    """A PNG in the drawn value's own type."""
    return Binary(_png(seed)) if isinstance(drawn, Binary) else _png(seed)


@schemathesis.hook
def map_case(context, case):
    if case.operation.path not in IMAGE_ROUTES or case.meta is None:
        return case
    if case.meta.generation.mode.is_negative or case.meta.is_negative_at(ParameterLocation.BODY):
        return case
    body = case.body
    if isinstance(body, (Binary, bytes)):
        case.body = _like(body, 0)
    elif isinstance(body, dict):
        if isinstance(body.get("file"), (Binary, bytes)):
            body["file"] = _like(body["file"], 1)
        if isinstance(body.get("files"), list):
            body["files"] = [_like(drawn, i) for i, drawn in enumerate(body["files"])]
    # schemathesis judges an edited body again, and cannot judge binary data (it reads as
    # invalid): the PNGs stand for what was drawn, so they are taken as drawn
    case._record_starting_state()
    return case
