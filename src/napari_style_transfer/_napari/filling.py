"""What the layer of a full-resolution run shows while its store fills: the whole picture at
once, sharpening tile by tile. Each cell of each pyramid level is read from the best result
there is for it, where napari slices it (never the whole image):

1. the store's own cell, once the run wrote it (blended, final);
2. else the level of the run's schedule at that zoom (full resolution zoomed in, a coarser
   level zoomed out): its finished cell, else its finished tile's piece, the core
   unblended (a blended level's cells are written only when its last tile is done; the
   pieces show its tiles arriving one by one, with seams until the level ends);
3. else the next coarser level, enlarged 2x, bilinear, exactly as the next level's tiles
   start from it, down to the composition (shrunk instead, for a pyramid level coarser
   than the composition); 0 where nothing is done yet.

So zoomed out, the level of that scale fills in; the finer levels' tiles show zoomed in to
them, and everywhere once blended. Stores that do not exist yet (a level's scratch store,
made when the run reaches it) are looked for again at each read. No torch here: this runs
in napari's slicing.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .._image import finish_image, resize_image
from ..large_images import block_mean
from ..styled_files import KEY as METADATA_KEY
from ..tiles import Region, Tile, feathered_core, tile_grid
from ..zarr_output import ResultStore

if TYPE_CHECKING:  # pragma: no cover
    from ..pipeline.tiled import FullPlan

#: Reads a region (at a picture's resolution) of a fallback picture: (h, w[, c]) float32.
Fallback = Callable[[Region], np.ndarray]


class _LazyStore:
    """The result store at ``path`` inside ``root`` ("" for the root), once it exists."""

    def __init__(self, root: Any, path: str, tile_size: int):
        self.root, self.path, self.tile_size = root, path, tile_size
        self._store: ResultStore | None = None

    def get(self) -> ResultStore | None:
        if self._store is None and (not self.path or self.path in self.root):
            group = self.root[self.path] if self.path else self.root
            if METADATA_KEY in group.attrs:  # written after the arrays: the store is whole
                self._store = ResultStore(group, self.tile_size)
        return self._store


class _Pieces:
    """A blended level's pieces (see ``pipeline.zarr_sink.FeatheredLevel``): each finished
    tile's feathered core, of which the core (its cell) is shown until the level is blended."""

    def __init__(self, store: _LazyStore, grid: list[Tile], shape: tuple[int, int], band: int):
        self.store, self.shape, self.band = store, shape, band
        self.tiles = {(tile.row, tile.column): tile for tile in grid}

    def fill(
        self,
        rows: slice,
        columns: slice,
        wanted: np.ndarray,
        region: Region,
        pixels: np.ndarray,
        missing: np.ndarray,
    ) -> None:
        """Put into ``pixels`` (``region``'s) the finished pieces' cores among the ``wanted``
        cells (bool, over ``rows`` x ``columns`` of the grid), marking them no longer missing."""
        pieces = self.store.get()
        if pieces is None:
            return
        done = np.asarray(pieces.group["finished_tiles"][rows, columns]).astype(bool) & wanted
        if not done.any():
            return
        size = pieces.tile_size
        # the pieces' cells under the region's cells, read in one call (zarr fetches the chunks together)
        block = pieces.level_image(0).read(
            Region(rows.start * size, columns.start * size, rows.stop * size, columns.stop * size)
        )
        for r, c in zip(*np.nonzero(done), strict=True):
            tile = self.tiles[(rows.start + int(r), columns.start + int(c))]
            part = _intersection(tile.core, region)
            spread, _ = feathered_core(tile, self.shape, self.band)
            top, left = int(r) * size + part.top - spread.top, int(c) * size + part.left - spread.left
            pixels[part.within(region)] = block[top : top + part.shape[0], left : left + part.shape[1]]
            missing[part.within(region)] = False


def _intersection(a: Region, b: Region) -> Region:
    """The part of ``a`` inside ``b`` (they meet)."""
    return Region(max(a.top, b.top), max(a.left, b.left), min(a.bottom, b.bottom), min(a.right, b.right))


class FillingPicture:
    """One resolution of the result, ``shape`` (h, w[, c]) float32, as far as it is done:
    cells of pyramid level ``level`` of ``store`` where finished, else ``pieces``' cores,
    else ``fallback`` (none: 0)."""

    def __init__(
        self,
        store: _LazyStore,
        shape: tuple[int, ...],
        level: int = 0,
        pieces: _Pieces | None = None,
        fallback: Fallback | None = None,
    ):
        self.store, self.shape, self.level = store, shape, level
        self.pieces, self.fallback = pieces, fallback
        self.cell_size = store.tile_size >> level

    def read(self, region: Region) -> np.ndarray:
        """The pixels of ``region`` (inside the picture): a new float32 array."""
        pixels = np.zeros((*region.shape, *self.shape[2:]), np.float32)
        if not region.shape[0] or not region.shape[1]:
            return pixels
        size = self.cell_size
        rows = slice(region.top // size, (region.bottom - 1) // size + 1)
        columns = slice(region.left // size, (region.right - 1) // size + 1)
        store = self.store.get()
        # one read of the region's records and one of its pixels: zarr fetches the chunks together
        finished = np.zeros((rows.stop - rows.start, columns.stop - columns.start), bool)
        if store is not None:
            finished = np.asarray(store.group["finished_tiles"][rows, columns]).astype(bool)
        # each pixel's cell, as an index into ``finished``
        cell_rows = np.arange(region.top, region.bottom) // size - rows.start
        cell_columns = np.arange(region.left, region.right) // size - columns.start
        missing = ~finished[np.ix_(cell_rows, cell_columns)]
        if store is not None and finished.any():
            np.copyto(pixels, store.level_image(self.level).read(region), where=_per_pixel(~missing, pixels))
        if self.pieces is not None and not finished.all():
            self.pieces.fill(rows, columns, ~finished, region, pixels, missing)
        if self.fallback is not None and missing.any():
            np.copyto(pixels, self.fallback(region), where=_per_pixel(missing, pixels))
        return pixels


def _per_pixel(mask: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """``mask`` (h, w) broadcast over ``pixels``' channels, if any (copyto is faster than
    boolean indexing)."""
    return mask[..., None] if pixels.ndim == 3 else mask


def enlarged(coarser: FillingPicture) -> Fallback:
    """``coarser`` enlarged 2x, bilinear, read with a pixel of context each side (what
    bilinear enlarging reads) so that a region equals the same part of the whole enlarged."""

    def read(region: Region) -> np.ndarray:
        height, width = coarser.shape[:2]
        around = Region(
            max(0, region.top // 2 - 1),
            max(0, region.left // 2 - 1),
            min(height, math.ceil(region.bottom / 2) + 1),
            min(width, math.ceil(region.right / 2) + 1),
        )
        big = resize_image(coarser.read(around), (2 * around.shape[0], 2 * around.shape[1]))
        top, left = region.top - 2 * around.top, region.left - 2 * around.left
        return big[top : top + region.shape[0], left : left + region.shape[1]]

    return read


def shrunk(finer: FillingPicture, factor: int) -> Fallback:
    """``finer`` shrunk ``factor`` times by block means, as the store's pyramid is made."""

    def read(region: Region) -> np.ndarray:
        height, width = finer.shape[:2]
        f = factor
        fine = finer.read(
            Region(
                region.top * f, region.left * f, min(height, region.bottom * f), min(width, region.right * f)
            )
        )
        return block_mean(fine, f).astype(np.float32)

    return read


def in_grey(colour: Fallback) -> Fallback:
    """A colour fallback (a level below full size is RGB) seen as a grey result is made."""
    return lambda region: finish_image(colour(region), grey=True, alpha=None)


def filling_pyramid(fp: FullPlan, store: ResultStore) -> list[PictureArray]:
    """The layer's levels for the run ``fp`` into ``store``: one per level of the store's
    pyramid, full resolution first, each filled in as described in this module."""
    from ..pipeline.tiled import level_name, pieces_name

    size, root = fp.tile_size, store.group
    grey = len(fp.result_shape) == 2
    schedule: list[FillingPicture] = []
    for k, level in enumerate(fp.levels):
        last = k == len(fp.levels) - 1
        path = "" if last else f"scratch/{level_name(level.shape)}"
        pieces = None
        if fp.blend and k > 0:
            where = _LazyStore(
                root, f"{path}/scratch/{pieces_name(level.shape)}".lstrip("/"), size + fp.blend
            )
            pieces = _Pieces(where, tile_grid(level.shape, size, fp.margin), level.shape, fp.blend)
        fallback = enlarged(schedule[-1]) if schedule else None
        if fallback is not None and last and grey:
            fallback = in_grey(fallback)
        shape = fp.result_shape if last else (*level.shape, 3)
        schedule.append(FillingPicture(_LazyStore(root, path, size), shape, 0, pieces, fallback))
    by_scale = {level.downscale: picture for level, picture in zip(fp.levels, schedule, strict=True)}
    pyramid = [schedule[-1]]
    for p in range(1, len(store.levels)):
        same_scale = by_scale.get(2**p)
        fallback = same_scale.read if same_scale else shrunk(schedule[0], 2**p // fp.levels[0].downscale)
        if grey and len(fp.levels) > 1:  # the levels below full size are RGB
            fallback = in_grey(fallback)
        shape = (*store.levels[p].shape[-2:], *fp.result_shape[2:])
        pyramid.append(FillingPicture(_LazyStore(root, "", size), shape, p, None, fallback))
    return [PictureArray(picture) for picture in pyramid]


class PictureArray:
    """A :class:`FillingPicture` as the array napari slices: (h, w[, c]) float32, each
    slice read when napari asks for it. (A dask array would do too, but napari caches dask
    chunks by key, so a refreshed layer would not show the tiles written since.)"""

    def __init__(self, picture: FillingPicture):
        self.picture = picture
        self.shape = tuple(int(side) for side in picture.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)
        self.size = math.prod(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        if any(index is Ellipsis for index in key):
            at = next(n for n, index in enumerate(key) if index is Ellipsis)
            key = key[:at] + (slice(None),) * (self.ndim - len(key) + 1) + key[at + 1 :]
        key = key + (slice(None),) * (self.ndim - len(key))
        spans: list[tuple[int, int]] = []
        within: list[slice | int] = []
        for index, length in zip(key[:2], self.shape[:2], strict=True):
            if isinstance(index, slice) and (index.step or 1) > 0:
                start, stop, step = index.indices(length)
                spans.append((start, max(start, stop)))
                within.append(slice(0, max(start, stop) - start, step))
            elif isinstance(index, slice):  # backwards: read the whole axis
                spans.append((0, length))
                within.append(index)
            else:
                position = operator.index(index)
                position = position + length if position < 0 else position
                spans.append((position, position + 1))
                within.append(0)
        (top, bottom), (left, right) = spans
        pixels = self.picture.read(Region(top, left, bottom, right))
        return pixels[(*within, *key[2:])]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:, :]
        return whole if dtype is None else whole.astype(dtype)
