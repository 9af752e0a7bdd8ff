"""Image slots in shared memory: how a front end hands preprocessed images to the inference
process without pickling them.

A :class:`SlotRing` is one anonymous shared-memory file (``memfd_create``) cut into
``slots`` equal slots of float32, each big enough for one preprocessed image (3 x side x side).
The front end creates it, writes a request's images into a contiguous run of free slots and
sends only the run's place; the inference process maps the same file (its descriptor crosses
the Unix socket, SCM_RIGHTS) and reads the images as a tensor view, without a copy. The file
has no name: nothing is left behind when both processes are gone, however they ended. Linux
only (memfd).

The front end owns allocation; the inference process says when it is done with a run (its
batch has run, or the request was dropped), and only then is the run free again.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Sequence

import torch

_FLOAT32 = 4


def slot_elements(side: int) -> int:
    """Floats in a slot for images of at most ``side`` x ``side`` pixels, 3 channels."""
    return 3 * side * side


class SlotRing:
    def __init__(self, fd: int, slots: int, elements: int) -> None:
        if slots < 1 or elements < 1:
            raise ValueError(f"a slot ring needs slots >= 1 and elements >= 1, got {slots}, {elements}")
        self.fd = fd
        self.slots = slots
        self.elements = elements
        self._map = mmap.mmap(fd, slots * elements * _FLOAT32)
        self.tensor = torch.frombuffer(self._map, dtype=torch.float32).view(slots, elements)
        self._free = [True] * slots
        self.free_slots = slots
        self.pinned = False

    @classmethod
    def create(cls, slots: int, elements: int) -> SlotRing:
        """A new ring (the front end's), zero-filled."""
        fd = os.memfd_create("dat-image-slots", os.MFD_CLOEXEC)
        os.ftruncate(fd, slots * elements * _FLOAT32)
        return cls(fd, slots, elements)

    @classmethod
    def attach(cls, fd: int, slots: int, elements: int) -> SlotRing:
        """A front end's ring, mapped by the inference process from the descriptor it received,
        which is then closed: the mapping alone holds the memory, which goes with it once the
        front end's connection is gone and no batch holds its images. (A kept descriptor would
        hold the memory for the process's lifetime, whatever became of the front end.)"""
        try:
            ring = cls(fd, slots, elements)
        finally:
            os.close(fd)
        ring.fd = -1
        return ring

    @property
    def nbytes(self) -> int:
        return self.slots * self.elements * _FLOAT32

    def pin(self) -> None:
        """Page-locks the ring for the CUDA device (the inference process on a GPU host), so
        batches copy to the device by DMA."""
        result = torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), self.nbytes, 0)
        self.pinned = int(result) == 0

    # -- allocation (the front end) ------------------------------------------------------------
    def allocate(self, n: int) -> int | None:
        """The first slot of a free contiguous run of ``n`` slots, now taken; None if none."""
        if not 1 <= n <= self.slots:
            raise ValueError(f"cannot take {n} of {self.slots} slots")
        run = 0
        for i, free in enumerate(self._free):
            run = run + 1 if free else 0
            if run == n:
                start = i - n + 1
                self._free[start : i + 1] = [False] * n
                self.free_slots -= n
                return start
        return None

    def free(self, start: int, n: int) -> None:
        if not all(not f for f in self._free[start : start + n]) or start + n > self.slots:
            raise ValueError(f"slots {start}..{start + n - 1} are not all taken")
        self._free[start : start + n] = [True] * n
        self.free_slots += n

    # -- images ----------------------------------------------------------------------------------
    def write(self, start: int, images: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[int, ...]]:
        """Copies images (a batch, or images of their own shapes) into slots from ``start``;
        returns each image's shape, which the reader needs to view it."""
        shapes = []
        for i, image in enumerate(images):
            if image.numel() > self.elements:
                raise ValueError(f"an image of {tuple(image.shape)} does not fit a slot of {self.elements}")
            self.tensor[start + i, : image.numel()].view(image.shape).copy_(image)
            shapes.append(tuple(image.shape))
        return shapes

    def batch(self, start: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
        """``n`` same-shaped images from ``start``, as one (n, *shape) tensor (a view)."""
        size = 1
        for d in shape:
            size *= d
        return self.tensor[start : start + n, :size].view(n, *shape)

    def image(self, slot: int, shape: tuple[int, ...]) -> torch.Tensor:
        size = 1
        for d in shape:
            size *= d
        return self.tensor[slot, :size].view(shape)
