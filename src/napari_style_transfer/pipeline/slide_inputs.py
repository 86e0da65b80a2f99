"""The inputs of a full-resolution run, never read whole: the content opened lazily and its
values' mapping decided (:func:`describe_slide`), the composition's content as block means
read band by band (:class:`CompositionSource`), and ``style_regions`` of any size sampled
for the composition and for each tile's window (:class:`SlideLabels`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._image import describe_image, value_mapping, working_shape
from ..errors import StyleTransferError
from ..large_images import LargeImage, extremes, open_large_image, read_downscaled, read_nearest
from ..tiles import Level, Region

_CHANNELS = {0: "grey", 3: "rgb", 4: "rgba"}


@dataclass(frozen=True)
class SlideContent:
    """The content read region by region, and how its values map to [0, 1] (as
    :func:`~napari_style_transfer._image.describe_image` decides for an image in memory)."""

    image: LargeImage
    channels: str  # "grey", "rgb" or "rgba"
    low: float
    high: float
    scaling: str
    alpha_as_is: bool


def describe_slide(content: Any) -> SlideContent:
    """``content`` opened lazily where it is lazy (a :class:`LargeImage`, a path, a memmap,
    a dask or zarr array or group): its values' range found by reading it a band of rows at
    a time, or from its dtype alone for uint8 and bool (no pass). An image in memory (numpy,
    torch) is described as every run describes it."""
    if isinstance(content, LargeImage) or _read_lazily(content):
        image = content if isinstance(content, LargeImage) else open_large_image(content)
        return _described(image)
    described = describe_image(content, "content")
    image = open_large_image(described.data)
    mapping = (described.low, described.high, described.scaling, described.alpha_as_is)
    return SlideContent(image, described.channels, *mapping)


def refuse_time_series(frames: str) -> None:
    """A full-resolution run styles a stack's frames one after the other, each on its own:
    ``frames="time"`` (each frame waits for the previous one's warped result, which a tiled
    level does not keep) is refused, with the fix."""
    if frames == "time":
        raise StyleTransferError(
            "frames='time' cannot be used with size='full': a stack's frames are styled one after "
            "the other, each on its own; use frames='independent', or a working size"
        )


def _read_lazily(content: Any) -> bool:
    if isinstance(content, str | os.PathLike | np.memmap):
        return True
    package = type(content).__module__.partition(".")[0]
    return not isinstance(content, np.ndarray) and package in ("dask", "zarr")


def _described(image: LargeImage) -> SlideContent:
    if image.dtype.kind not in "biuf":
        raise StyleTransferError(
            f"the content image ({image.source}) has dtype {image.dtype}; give a numeric (integer or float) array"
        )
    if min(image.shape) == 0:
        raise StyleTransferError(f"the content image ({image.source}) is empty (shape {image.shape})")
    if image.dtype in (np.uint8, np.bool_):  # the dtype alone decides: no pass over the pixels
        mapping = value_mapping(image.dtype, (0.0, 1.0), None, "content")
    else:
        colour, alpha = extremes(image)
        mapping = value_mapping(image.dtype, colour, alpha if image.dtype.kind == "f" else None, "content")
    return SlideContent(image, _CHANNELS[image.channels], *mapping)


class CompositionSource:
    """The content at the composition's level (``level``), a frame at a time, as raw block
    means read band by band (:func:`~napari_style_transfer.large_images.read_downscaled`):
    a frame source (``_image.is_frame_source``) with the whole content's value range, so
    the composition maps values as the tiles do."""

    def __init__(self, slide: SlideContent, level: Level):
        self.slide, self.level = slide, level
        channels = (slide.image.channels,) if slide.image.channels else ()
        self.shape = (*slide.image.frames_shape, *level.shape, *channels)
        self.ndim = len(self.shape)
        self.dtype = slide.image.dtype  # the values are float32 block means; alpha maps by this
        self.value_range = (slide.low, slide.high)
        self.scaling = slide.scaling
        self.alpha_as_is = slide.alpha_as_is

    def __getitem__(self, index: Any) -> np.ndarray:
        frame = index if isinstance(index, tuple) else (index,)
        return read_downscaled(self.slide.image, Region(0, 0, *self.level.shape), self.level.downscale, frame)


@dataclass(frozen=True)
class SlideLabels:
    """``style_regions`` of a full-resolution run: a label image of any size with the
    content's aspect ratio (one for every frame, or one per frame), read lazily."""

    image: LargeImage
    per_frame: bool

    def composition(self, shape: tuple[int, int]) -> np.ndarray:
        """The label image(s) sampled (nearest) to about ``shape``, aspect kept: the
        composition's ``style_regions``, which the run's plan checks as any run's."""
        sampled = working_shape(*self.image.shape, max(shape))
        whole = Region(0, 0, *sampled)
        frames = self.image.frames()
        images = [read_nearest(self.image, sampled, whole, frame) for frame in frames]
        return np.stack(images).reshape(*self.image.frames_shape, *sampled)

    def window(
        self, frame: tuple[int, ...], level: tuple[int, int], window: Region, dropped: Mapping[Any, Any]
    ) -> TileLabels:
        """The labels of a tile's ``window`` of a level of shape ``level``."""
        index = frame if self.per_frame else ()
        return TileLabels(self, index, level, window, frozenset(dropped.get(index, ())))


@dataclass(frozen=True)
class TileLabels:
    """A tile's guide: its window of the label image at its level's scale, the labels
    dropped at the composition (too small there) styled as 0 here too. Read when the
    optimiser asks (``plan.Regions.at``'s interface)."""

    labels: SlideLabels
    index: tuple[int, ...]
    level: tuple[int, int]
    window: Region
    dropped: frozenset[int]

    def at(self, frame: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        picked = read_nearest(self.labels.image, self.level, self.window, self.index).astype(np.int64)
        for label in self.dropped:
            picked[picked == label] = 0
        return picked


def open_slide_labels(labels: Any, content: LargeImage, styles: int) -> SlideLabels:
    """``style_regions`` opened lazily and checked over every pixel, a band at a time:
    integer labels 0..``styles``, one label image or one per frame of ``content``."""
    image = labels if isinstance(labels, LargeImage) else open_large_image(labels)
    if image.channels or image.dtype.kind not in "biu":
        raise StyleTransferError(
            f"style_regions must be an integer label image (H, W) or one per frame, got dtype "
            f"{image.dtype} with {image.channels or 1} channel(s)"
        )
    if image.frames_shape not in ((), content.frames_shape):
        raise StyleTransferError(
            f"style_regions has frames {image.frames_shape}; give one label image (H, W) or one per "
            f"frame {content.frames_shape + ('H', 'W')}"
        )
    (low, high), _ = extremes(image)
    if low < 0 or high > styles:
        raise StyleTransferError(
            f"style_regions has labels {low:g}..{high:g}; labels are 0 (content only) or 1..{styles} "
            "(label k takes the k-th style): give more styles or relabel"
        )
    return SlideLabels(image, bool(image.frames_shape))
