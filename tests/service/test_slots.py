"""Shared image slots (service.slots) and the control protocol (service.wire) of --workers N."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import threading

import numpy as np
import pytest
import torch

from models.transforms import ImageMeta
from service import wire
from service.backends.base import ImageOutput
from service.errors import DeadlineExceeded, InferenceFailed, Unavailable
from service.slots import SlotRing, slot_elements


def test_runs_are_contiguous_first_fit_and_come_back_when_freed():
    ring = SlotRing.create(8, slot_elements(2))
    assert ring.allocate(3) == 0
    assert ring.allocate(4) == 3
    assert ring.allocate(2) is None  # one slot left
    assert ring.free_slots == 1
    ring.free(0, 3)
    assert ring.allocate(2) == 0  # first fit
    assert ring.free_slots == 2 and ring.allocate(2) is None  # slots 2 and 7: two, not a run
    assert ring.allocate(1) == 2
    with pytest.raises(ValueError, match="not all taken"):
        ring.free(7, 1)
    with pytest.raises(ValueError, match="cannot take 9"):
        ring.allocate(9)


def test_the_other_process_reads_the_images_in_place_through_the_descriptor():
    """The front end writes, the inference process maps the same memory (here: a second
    mapping of the descriptor sent over a Unix socket) and sees each image at its place."""
    front = SlotRing.create(4, slot_elements(3))
    images = torch.arange(2 * 3 * 3 * 3, dtype=torch.float32).view(2, 3, 3, 3)
    start = front.allocate(2)
    shapes = front.write(start, images)
    assert shapes == [(3, 3, 3), (3, 3, 3)]

    a, b = socket.socketpair()
    with a, b:
        wire.send(a, (wire.RINGS, {"classification": (front.slots, front.elements)}), [front.fd])
        (kind, specs), fds = wire.receive(b, max_fds=1)
    assert kind == wire.RINGS and len(fds) == 1
    slots, elements = specs["classification"]
    back = SlotRing(fds[0], slots, elements)
    batch = back.batch(start, 2, shapes[0])
    assert torch.equal(batch, images)
    front.tensor[start, 0] = -1.0  # one memory: a write shows through the other mapping
    assert batch[0, 0, 0, 0].item() == -1.0
    os.close(fds[0])


def test_images_of_their_own_shapes_fit_slots_sized_for_the_largest():
    ring = SlotRing.create(3, slot_elements(4))
    small, wide = torch.rand(3, 2, 3), torch.rand(3, 4, 4)
    shapes = ring.write(0, [small, wide])
    assert torch.equal(ring.image(0, shapes[0]), small) and torch.equal(ring.image(1, shapes[1]), wide)
    with pytest.raises(ValueError, match="does not fit"):
        ring.write(2, [torch.rand(3, 5, 5)])


def test_messages_round_trip_and_errors_keep_their_kind():
    a, b = socket.socketpair()
    outputs = [ImageOutput(np.arange(10, dtype=np.float32))]
    meta = ImageMeta(original_size=(30, 40), image_size=(60, 80), scale_factor=(2.0, 2.0, 2.0, 2.0))
    with a, b:
        wire.send(a, (wire.SUBMIT, 7, "detection", 2, [(3, 60, 80)], [meta], 12.5, False, "req"))
        wire.send(a, (wire.RESULT, 7, (outputs, 0.1, 0.2, 4), None))
        (submit, _), (result, _) = wire.receive(b), wire.receive(b)
    assert submit == (wire.SUBMIT, 7, "detection", 2, [(3, 60, 80)], [meta], 12.5, False, "req")
    assert np.array_equal(result[2][0][0].logits, outputs[0].logits)

    for error in (Unavailable("full"), DeadlineExceeded("late"), InferenceFailed("boom")):
        back = wire.decode_error(wire.encode_error(error))
        assert type(back) is type(error) and back.message == error.message
    strange = wire.decode_error(wire.encode_error(KeyError("x")))
    assert isinstance(strange, InferenceFailed) and "KeyError" in strange.message


def test_the_asyncio_reader_takes_frames_as_they_come():
    async def scenario() -> list[tuple]:
        a, b = socket.socketpair()
        reader, writer = await asyncio.open_unix_connection(sock=b)
        a.sendall(wire.frame((wire.STATUS, {})) + wire.frame((wire.RELEASE, 3)))
        got = [await wire.read(reader), await wire.read(reader)]
        a.close()
        with pytest.raises(asyncio.IncompleteReadError):
            await wire.read(reader)
        writer.close()
        return got

    assert asyncio.run(scenario()) == [(wire.STATUS, {}), (wire.RELEASE, 3)]


def slot_files() -> tuple[int, int]:
    """This process's open descriptors of image-slot files, and its mappings of them, once
    what nothing refers to any more is collected (earlier tests' rings too)."""
    gc.collect()
    descriptors = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            descriptors += "dat-image-slots" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, gone by now
            pass
    with open("/proc/self/maps") as maps:
        mappings = sum("dat-image-slots" in line for line in maps)
    return descriptors, mappings


def handshake(front: SlotRing, specs: dict) -> dict[str, SlotRing]:
    """The inference process's side of a front end's handshake (the model loaded), the front
    end sharing ``front`` as the rings ``specs`` name, on a thread."""
    from service.inference import InferenceServer
    from tests.helpers.app import settings

    server = InferenceServer(settings(), "unused.sock")
    server.runtimes["classification"].backend.load()  # the handshake names the model
    a, b = socket.socketpair()
    with a, b:

        def front_end() -> None:
            wire.send(a, (wire.HELLO, os.getpid()))
            wire.receive(a)  # WELCOME
            wire.send(a, (wire.RINGS, specs), [front.fd])
            with contextlib.suppress(ConnectionError):  # READY, unless refused
                wire.receive(a)

        thread = threading.Thread(target=front_end)
        thread.start()
        try:
            return server._handshake(b)
        finally:
            b.close()
            thread.join()


def test_a_front_ends_ring_lives_in_the_inference_process_only_while_mapped():
    """The inference process closes the descriptor it received once it has mapped the ring:
    once a front end's connection is gone and its images are let go, nothing of its ring is
    left. A kept descriptor would hold the ring's memory for the process's lifetime."""
    front = SlotRing.create(4, slot_elements(3))
    front.tensor[1, :27] = torch.arange(27.0)
    before = slot_files()
    rings = handshake(front, {"classification": (front.slots, front.elements)})
    # mapped, with the one descriptor Python's mmap keeps for itself: the received one is closed
    assert slot_files() == (before[0] + 1, before[1] + 1)
    assert torch.equal(rings["classification"].image(1, (3, 3, 3)).flatten(), torch.arange(27.0))
    del rings
    assert slot_files() == before


def test_a_handshake_refused_for_a_descriptor_missing_keeps_none():
    front = SlotRing.create(4, slot_elements(3))
    before = slot_files()
    with pytest.raises(ConnectionError, match="one descriptor per ring"):
        handshake(front, {"classification": (4, front.elements), "detection": (4, front.elements)})
    assert slot_files() == before
