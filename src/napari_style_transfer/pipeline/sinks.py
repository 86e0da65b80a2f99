"""Where finished images go: a sink takes each job's image by its frame index.

:class:`NumpySink` fills one array for the whole stack. A new destination (a napari layer,
files, a zarr store written tile by tile) is a new class with ``take``, not a new branch in
the run.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Sink(Protocol):
    def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
        """Keep the finished ``image`` of frame ``index`` of the stack."""
        ...

    @property
    def result(self) -> Any:
        """What the run gives back once every frame was taken (an array, a store, a layer)."""
        ...


class NumpySink:
    """The result as one float32 array: the stack's shape + the first image's shape,
    allocated when the first image comes (its size is known only then). Frames never taken
    are zeros with ``zeroed``, else undefined."""

    def __init__(self, stack_shape: tuple[int, ...], *, zeroed: bool = False):
        self.stack_shape = stack_shape
        self.zeroed = zeroed
        self.array: np.ndarray | None = None

    def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
        if self.array is None:
            allocate = np.zeros if self.zeroed else np.empty
            self.array = allocate(self.stack_shape + image.shape, dtype=np.float32)
        self.array[index] = image

    @property
    def result(self) -> np.ndarray:
        """The array; raises if no image came."""
        if self.array is None:
            raise RuntimeError("no image was taken: the run made no frame")
        return self.array
