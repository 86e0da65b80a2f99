"""The tile geometry of a full-resolution run: the levels it refines through, the grid of
tiles at each level, the context margin each tile reads around its core, the weights that
blend overlapping cores, and the tile sizes that fit the layers and the memory.

Pure arithmetic on shapes (numpy for the weights): no torch, no files. A tile planner turns
these into jobs; :mod:`.large_images` reads a tile's window and :mod:`.zarr_output` stores
its core.

Why a margin makes tiles exact: VGG19's convolutions are 3x3 with zero padding and its
pools 2x2 with stride 2, so a feature of layer L reads a fixed neighbourhood of pixels (its
receptive field). A tile whose window holds that neighbourhood for every feature inside its
core, and whose window starts on the deepest pool's grid (a multiple of its stride), gives
those features exactly as the whole image does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from . import memory
from .errors import OutOfMemoryError, StyleTransferError
from .options import VGG19_LAYERS, min_side_for_layers


def receptive_extent(layer: str) -> int:
    """Pixels of context a feature of ``layer`` reads on each side of its own cell.

    A feature at a layer of stride ``s`` (2 to the number of pools before it) stands for an
    ``s`` x ``s`` cell of pixels; each 3x3 convolution at stride ``s`` widens what it reads by
    ``s`` pixels on each side, and a 2x2 pool reads exactly its cell. conv5_1: 70 pixels.
    """
    extent, stride = 0, 1
    for name in VGG19_LAYERS[: VGG19_LAYERS.index(layer) + 1]:
        if name.startswith("conv"):
            extent += stride
        elif name.startswith("pool"):
            stride *= 2
    return extent


def context_margin(layers: Iterable[str]) -> int:
    """Pixels of context a tile reads beyond its core on each side so that the features of
    ``layers`` inside the core equal the whole image's: the deepest layer's receptive
    extent, rounded up to a multiple of its stride (so the window stays on the pool grid).
    80 for layers down to conv5_1, 40 down to conv4_2."""
    names = tuple(layers)
    extent = max(receptive_extent(name) for name in names)
    stride = min_side_for_layers(names)
    return math.ceil(extent / stride) * stride


@dataclass(frozen=True)
class Region:
    """A rectangle of pixels: rows ``top:bottom``, columns ``left:right``."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.bottom), slice(self.left, self.right)

    def within(self, outer: Region) -> tuple[slice, slice]:
        """Where this region lies inside ``outer`` (which must contain it), as slices."""
        return (
            slice(self.top - outer.top, self.bottom - outer.top),
            slice(self.left - outer.left, self.right - outer.left),
        )


@dataclass(frozen=True)
class Tile:
    """One tile of a grid: ``core`` is what it contributes to the result, ``window`` what it
    reads and optimises (the core plus the context margin, clipped to the image), and
    ``padding`` (top, left, bottom, right) how much of the margin fell outside the image
    (what a reader pads back for a tile of fixed shape). ``ramps`` (top, left, bottom,
    right) are the widths over which its blending weight rises from or falls to 0, where
    it overlaps a neighbour."""

    row: int
    column: int
    core: Region
    window: Region
    padding: tuple[int, int, int, int]
    ramps: tuple[int, int, int, int] = (0, 0, 0, 0)


def axis_spans(length: int, tile_size: int, overlap: int = 0, offset: int = 0) -> list[tuple[int, int]]:
    """The (start, stop) of the cores along one axis of ``length`` pixels: ``tile_size``
    long, each starting ``tile_size - overlap`` after the previous, the first shifted back by
    ``offset`` (0 <= offset < tile_size - overlap) and all clipped to the axis. A core is
    added only while the previous one stops short of the end, so every overlap is whole."""
    step = tile_size - overlap
    if not 0 <= overlap <= tile_size // 2 or not 0 <= offset < step:
        raise ValueError(
            f"need 0 <= overlap <= tile_size / 2 and 0 <= offset < step, got {overlap}, {offset}"
        )
    spans = []
    start = -offset
    while True:
        stop = start + tile_size
        spans.append((max(0, start), min(length, stop)))
        if stop >= length:
            return spans
        start += step


def tile_grid(
    shape: tuple[int, int],
    tile_size: int,
    margin: int,
    overlap: int = 0,
    offset: tuple[int, int] = (0, 0),
) -> list[Tile]:
    """The tiles of an image of ``shape`` (H, W) pixels, row by row.

    ``tile_size``, ``margin``, ``overlap`` and ``offset`` are in pixels and must be
    multiples of the deepest layer's stride (16 for conv5_1) so that every window starts on
    the pool grid. ``overlap`` > 0 makes neighbouring cores share that many pixels, to be
    blended with :func:`blend_weights`; ``offset`` (dy, dx) shifts the whole grid up and
    left, the other way to hide seams (a new random offset each pass, see :func:`grid_offset`).
    """
    height, width = shape
    rows = axis_spans(height, tile_size, overlap, offset[0])
    columns = axis_spans(width, tile_size, overlap, offset[1])
    tiles = []
    for row, (top, bottom) in enumerate(rows):
        for column, (left, right) in enumerate(columns):
            window = Region(
                max(0, top - margin),
                max(0, left - margin),
                min(height, bottom + margin),
                min(width, right + margin),
            )
            padding = (
                margin - (top - window.top),
                margin - (left - window.left),
                margin - (window.bottom - bottom),
                margin - (window.right - right),
            )
            ramps = (
                overlap if row > 0 else 0,
                overlap if column > 0 else 0,
                overlap if row < len(rows) - 1 else 0,
                overlap if column < len(columns) - 1 else 0,
            )
            tiles.append(Tile(row, column, Region(top, left, bottom, right), window, padding, ramps))
    return tiles


def _axis_weights(length: int, rise: int, fall: int) -> np.ndarray:
    weights = np.ones(length)
    if rise:
        weights[:rise] = (np.arange(rise) + 0.5) / rise
    if fall:
        weights[length - fall :] = 1 - (np.arange(fall) + 0.5) / fall
    return weights


def blend_weights(tile: Tile) -> np.ndarray:
    """Weights (H, W) over ``tile.core``, float32 in (0, 1]: linear ramps across each
    overlap with a neighbour, 1 elsewhere. Over the tiles of one :func:`tile_grid` they add
    up to exactly 1 at every pixel, so the weighted sum of the cores is the blended result."""
    height, width = tile.core.shape
    top, left, bottom, right = tile.ramps
    return np.outer(_axis_weights(height, top, bottom), _axis_weights(width, left, right)).astype(np.float32)


def feathered_core(tile: Tile, shape: tuple[int, int], band: int) -> tuple[Region, np.ndarray]:
    """The part of ``tile``'s window it contributes when the context margin is used as the
    overlap (cores = the store's cells, no extra tiles): its core widened by ``band // 2``
    toward each neighbour, and weights (float32) that ramp across the ``band`` pixels
    centred on each border with a neighbour. Neighbours' weights add up to 1 there.
    ``band // 2`` must be at most the margin, so the widened core lies inside the window."""
    half = band // 2
    height, width = shape
    core = tile.core
    # ramps laid out as if unclipped, then cut to the image: a neighbour's core shorter than
    # half the band clips both ramps alike, so the weights still add up to 1
    before = (half if core.top > 0 else 0, half if core.left > 0 else 0)
    after = (half if core.bottom < height else 0, half if core.right < width else 0)
    rows = _axis_weights(max(core.shape[0] + before[0] + after[0], band), 2 * before[0], 2 * after[0])
    columns = _axis_weights(max(core.shape[1] + before[1] + after[1], band), 2 * before[1], 2 * after[1])
    region = Region(
        core.top - before[0],
        core.left - before[1],
        min(height, core.bottom + after[0]),
        min(width, core.right + after[1]),
    )
    rows, columns = rows[: region.shape[0]], columns[: region.shape[1]]
    return region, np.outer(rows, columns).astype(np.float32)


def grid_offset(seed: int, pass_index: int, step: int, stride: int) -> tuple[int, int]:
    """A random grid offset (dy, dx) for one pass, in whole strides below ``step`` (the
    tile size less the overlap): the same seed and pass give the same offset, so a resumed
    run tiles as the first did."""
    rng = np.random.default_rng([seed, pass_index])
    steps = step // stride
    return int(rng.integers(steps)) * stride, int(rng.integers(steps)) * stride


@dataclass(frozen=True)
class Level:
    """One resolution of a full-size run: ``shape`` (H, W) pixels, ``downscale`` the factor
    (a power of 2) by which it is smaller than the full image on each side."""

    shape: tuple[int, int]
    downscale: int


def level_schedule(shape: tuple[int, int], working_size: int, layers: Iterable[str]) -> list[Level]:
    """The levels a full-resolution run goes through, coarse to fine: the full image
    halved (rounding up) until its longest side is at most ``working_size`` (where the
    composition is set, untiled) and then each doubling back up to ``shape``, so every
    level is the next one's start, enlarged 2x. Halving stops early where the shorter side
    would drop below what the layers need (a long strip)."""
    needed = min_side_for_layers(tuple(layers))
    if min(shape) < needed:
        raise StyleTransferError(
            f"the image ({shape[0]} x {shape[1]} px) is smaller than the {needed} px the layers need on each side"
        )
    levels = [Level(shape, 1)]
    while max(levels[0].shape) > working_size:
        height, width = levels[0].shape
        smaller = (math.ceil(height / 2), math.ceil(width / 2))
        if min(smaller) < needed:
            break
        levels.insert(0, Level(smaller, levels[0].downscale * 2))
    return levels


def min_tile_size(layers: Iterable[str]) -> int:
    """The smallest ``tile_size`` (pixels of core) for ``layers``: one cell of the deepest
    layer, its stride (16 for conv5_1). Tile sizes are multiples of it."""
    return min_side_for_layers(tuple(layers))


def tile_bytes(tile_size: int, margin: int, optimizer: str, history: int) -> int:
    """Estimated peak bytes of optimising one tile: its window is the core plus the margin
    on each side (memory.py's model of a run)."""
    side = tile_size + 2 * margin
    return memory.estimate_bytes((side, side), optimizer, history)


def largest_tile_size(free_bytes: float, layers: Iterable[str], optimizer: str, history: int) -> int:
    """The largest ``tile_size`` (a multiple of the deepest layer's stride) whose window
    fits in ``free_bytes``; 0 when not even the smallest fits."""
    names = tuple(layers)
    stride = min_side_for_layers(names)
    pixels = memory.largest_pixels(free_bytes, optimizer, history)
    if pixels <= 0:
        return 0
    core = math.isqrt(int(pixels)) - 2 * context_margin(names)
    return max(0, core // stride * stride)


def check_tile_size(
    tile_size: int, layers: Iterable[str], free_bytes: float, optimizer: str, history: int
) -> None:
    """Raise a clear error for a ``tile_size`` the layers or the memory cannot take: below
    the minimum (named), not a multiple of the stride (the neighbours named), or larger
    than the largest that fits in ``free_bytes`` (named)."""
    names = tuple(layers)
    smallest = min_tile_size(names)
    deepest = max(names, key=VGG19_LAYERS.index)
    if tile_size < smallest:
        raise StyleTransferError(
            f"tile_size {tile_size} is too small for layers down to {deepest}: use tile_size >= {smallest}"
        )
    if tile_size % smallest:
        lower = tile_size // smallest * smallest
        raise StyleTransferError(
            f"tile_size {tile_size} is not a multiple of {smallest} (the stride of {deepest}): "
            f"use {lower} or {lower + smallest}"
        )
    largest = largest_tile_size(free_bytes, names, optimizer, history)
    if tile_size > largest:
        needed = memory.format_bytes(tile_bytes(tile_size, context_margin(names), optimizer, history))
        fix = f"use tile_size <= {largest}" if largest else "free some memory or use shallower layers"
        raise OutOfMemoryError(
            f"a tile of {tile_size} px (plus {context_margin(names)} px of context on each side) needs "
            f"about {needed}, more than the {memory.usable_of(free_bytes)}: {fix}"
        )
