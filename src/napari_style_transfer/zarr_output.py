"""Results larger than memory, written a tile at a time into an OME-Zarr multiscale image
(NGFF 0.5 on zarr v3), resumable: what a full-resolution run's zarr sink is made of.

Layout of a result store: arrays ``0``, ``1``, ... are the pyramid (``0`` at full
resolution; each next level half the size, its chunks half as wide, so that one tile of
level 0 is exactly one chunk of every level: writers of different tiles never share a
chunk, and zarr writes each chunk whole, through a temporary file and a rename);
``finished_tiles`` holds a 1 for each tile written whole (one chunk per tile, written after
its pixels, so a killed writer leaves no tile recorded whose pixels are missing); the
group's attributes hold the OME ``multiscales`` and, under ``napari-style-transfer``, the
run's settings, which a rerun must match to resume.

The metadata is written with zarr directly: the NGFF ``multiscales`` attribute is a few
lines, where ome-zarr-py would add some twenty packages (s3fs, aiohttp, pydantic pins).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import replacing
from .errors import StyleTransferError
from .large_images import LargeImage, block_mean
from .options import execution_options
from .styled_files import KEY as METADATA_KEY
from .tiles import Region

#: The narrowest chunk a pyramid level gets: coarser levels would be many tiny files.
MIN_CHUNK = 32
#: Settings that describe how a run went, not what it makes: a rerun may differ in them.
RUN_RECORD_KEYS = ("seconds", "steps_done", "losses", "device", "precision")
_AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
#: a result path ending so is a pyramidal BigTIFF, exported from a store beside it once every tile is done
TIFF_OUTPUTS = (".tif", ".tiff")


def pyramid_tiff_path(out: Any) -> Path | None:
    """``out`` as a path where it names a pyramidal BigTIFF result (``.tif`` / ``.tiff``), else None."""
    if isinstance(out, str | os.PathLike) and Path(out).suffix.lower() in TIFF_OUTPUTS:
        return Path(out)
    return None


def store_for(out: Any) -> Any:
    """Where a full-resolution run's tiles go for the result ``out``: for a BigTIFF, the
    OME-Zarr store beside it (``x.tif`` -> ``x.ome.zarr``, kept so that a killed run resumes);
    for anything else ``out`` itself."""
    tiff = pyramid_tiff_path(out)
    return out if tiff is None else tiff.with_suffix(".ome.zarr")


def check_tiff_frames(tiff: Path, frames: tuple[int, ...], content: str = "the content") -> None:
    """Refuse a stack for a pyramidal BigTIFF result, which holds one 2D image."""
    if frames:
        raise StyleTransferError(
            f"{content} is a stack of {math.prod(frames)} frames {frames}, and the pyramidal BigTIFF "
            f"{tiff.name} holds one 2D image: give {store_for(tiff).name} as the output instead (an "
            "OME-Zarr store keeps every frame)"
        )


def pyramid_depth(shape: tuple[int, int], tile_size: int) -> int:
    """How many levels a result of ``shape`` (H, W) gets: while the next level's chunk
    (``tile_size`` halved) stays a whole number of at least :data:`MIN_CHUNK` pixels and
    the level above still spans more than one chunk."""
    depth = 1
    while (
        tile_size % 2**depth == 0
        and tile_size >> depth >= MIN_CHUNK
        and max(math.ceil(side / 2 ** (depth - 1)) for side in shape) > tile_size >> (depth - 1)
    ):
        depth += 1
    return depth


def run_settings(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of a result's metadata (``StyleResult.metadata()``) that a resumed run must
    share, as plain JSON values: everything but the record of how the run went."""
    plain = json.loads(json.dumps(metadata, default=str))
    return {key: value for key, value in plain.items() if key not in RUN_RECORD_KEYS}


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    names = []
    for key in sorted(set(stored) | set(wanted)):
        old, new = stored.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            names += [f"{key}.{name}" for name in _differences(old, new)]
        elif old != new:
            names.append(key)
    return names


@dataclass(frozen=True)
class _Layout:
    """Where each axis of the engine's (*frames, H, W[, C]) lies in the OME order."""

    axes: str  # storage order, e.g. "tcyx"
    frame_axes: str  # the frames' names, in the engine's order
    channels: int  # 0 grey, 3 or 4

    def to_storage(self, pixels: np.ndarray) -> np.ndarray:
        """(h, w[, c]) -> the storage order of one frame's axes (c before y and x)."""
        return np.moveaxis(pixels, -1, 0) if self.channels else pixels

    def index(self, frame: tuple[int, ...], rows: slice, columns: slice) -> tuple[int | slice, ...]:
        named = dict(zip(self.frame_axes, frame, strict=True)) | {"y": rows, "x": columns}
        return tuple(named.get(name, slice(None)) for name in self.axes)


def _layout(shape: tuple[int, ...], frame_axes: str | None) -> _Layout:
    channels = shape[-1] if len(shape) >= 3 and shape[-1] in (3, 4) else 0
    frames = len(shape) - 2 - (1 if channels else 0)
    names = frame_axes if frame_axes is not None else "tz"[:frames]
    if len(names) != frames or not set(names) <= {"t", "z"} or len(set(names)) != len(names):
        raise StyleTransferError(
            f"a result of shape {shape} has {frames} frame axes; name them with frame_axes "
            "(t for time, z for depth: '', 't', 'z' or 'tz')"
        )
    present = set(names) | {"y", "x"} | ({"c"} if channels else set())
    return _Layout("".join(name for name in "tczyx" if name in present), names, channels)


class ResultStore:
    """A result store opened for writing: see the module's description of its layout."""

    def __init__(self, group: Any, tile_size: int):
        self.group = group
        self.tile_size = tile_size
        stored = group.attrs[METADATA_KEY]
        self.shape: tuple[int, ...] = tuple(stored["shape"])
        self._layout = _layout(self.shape, stored["frame_axes"])
        self.levels = [group[str(level)] for level in range(stored["levels"])]
        self._finished = group["finished_tiles"]

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, columns) of tiles at full resolution."""
        rows, columns = self._finished.shape[-2:]
        return int(rows), int(columns)

    def cell(self, row: int, column: int) -> Region:
        """The pixels of full resolution that tile (row, column) covers."""
        height, width = self.levels[0].shape[-2:]
        size = self.tile_size
        return Region(
            row * size, column * size, min(height, (row + 1) * size), min(width, (column + 1) * size)
        )

    def finished(self) -> np.ndarray:
        """Which tiles are written whole: bool (*frames, rows, columns)."""
        return np.asarray(self._finished[...]).astype(bool)

    def is_finished(self, row: int, column: int, frame: tuple[int, ...] = ()) -> bool:
        return bool(self._finished[(*frame, row, column)])

    def write_tile(self, row: int, column: int, pixels: np.ndarray, frame: tuple[int, ...] = ()) -> None:
        """Write the result of tile (row, column) of frame ``frame``: ``pixels`` (h, w[, c])
        fill :meth:`cell` at full resolution; each pyramid level gets its block mean. The
        tile is recorded as finished last."""
        expected = self.cell(row, column).shape
        if pixels.shape[:2] != expected:
            raise ValueError(f"tile ({row}, {column}) covers {expected} pixels, got {pixels.shape[:2]}")
        for level, array in enumerate(self.levels):
            block = _level_pixels(pixels, 2**level, np.dtype(array.dtype))
            chunk = self.tile_size >> level
            rows = slice(row * chunk, row * chunk + block.shape[0])
            columns = slice(column * chunk, column * chunk + block.shape[1])
            array[self._layout.index(frame, rows, columns)] = self._layout.to_storage(block)
        self._finished[(*frame, row, column)] = 1

    def level_image(self, level: int = 0) -> LargeImage:
        """One pyramid level, read region by region in the engine's layout."""
        axes = "".join("f" if name in "tz" else name for name in self._layout.axes)
        return LargeImage(self.levels[level], axes, f"level {level} of the result store")

    def settings(self) -> dict[str, Any]:
        return dict(self.group.attrs[METADATA_KEY]["settings"])

    def scratch(self, name: str, shape: tuple[int, ...], tile_size: int | None = None) -> ResultStore:
        """A store for an intermediate result of ``shape`` inside this one (group
        ``scratch/<name>``, one level, chunked and recorded by tile the same way): a level
        of the schedule below full size, which the next level starts from. Created on the
        first call (call it before handing tiles to workers), reopened with its finished
        tiles on the next; :func:`open_result_store` with ``force`` deletes every scratch.
        ``tile_size`` gives it cells of another size (the blended tiles' pieces)."""
        path = f"scratch/{name}"
        size = tile_size or self.tile_size
        if path not in self.group:
            stored: Any = self.group.attrs[METADATA_KEY]
            wanted = {key: stored[key] for key in ("settings", "dtype")} | {
                "shape": list(shape),
                "tile_size": size,
            }
            _create(self.group.require_group(path), wanted, stored["frame_axes"], pyramid=False)
        return ResultStore(self.group[path], size)


def _level_pixels(pixels: np.ndarray, factor: int, dtype: np.dtype) -> np.ndarray:
    if factor == 1:
        return pixels.astype(dtype, copy=False)
    mean = block_mean(pixels, factor)
    return (np.rint(mean) if dtype.kind in "iub" else mean).astype(dtype)


def open_result_store(
    store: Any,
    shape: tuple[int, ...],
    settings: dict[str, Any],
    tile_size: int,
    *,
    dtype: str = "float32",
    frame_axes: str | None = None,
    force: bool = False,
) -> ResultStore:
    """Create, or reopen to resume, the result store at ``store`` (a path, or any zarr
    store) for a result of ``shape`` (*frames, H, W[, 3|4]) pixels in tiles of
    ``tile_size``, made with ``settings`` (a result's metadata; see :func:`run_settings`).

    A store made with the same settings, shape, tile size and dtype is reopened with its
    finished tiles kept, or with ``force`` all marked unfinished (to be redone). A store
    made otherwise, or anything else at that place, is refused and left untouched."""
    import zarr

    if isinstance(store, str | os.PathLike):
        _check_place(Path(store))
    wanted = {
        "settings": run_settings(settings),
        "shape": list(shape),
        "tile_size": tile_size,
        "dtype": np.dtype(dtype).name,
    }
    try:
        group = zarr.open_group(store, mode="a", zarr_format=3)
    except zarr.errors.BaseZarrError as error:  # an array there, or zarr v2 metadata
        raise StyleTransferError(
            f"{store} holds no style-transfer result ({error}); choose another path"
        ) from None
    if METADATA_KEY not in group.attrs:
        if list(group.keys()):
            raise StyleTransferError(
                f"{store} holds a zarr group that is no style-transfer result; choose another path"
            )
        _create(group, wanted, frame_axes)
    else:
        stored: Any = group.attrs[METADATA_KEY]  # JSON written by _create
        _check_same(stored, wanted, store)
    result = ResultStore(group, tile_size)
    if force:
        result._finished[...] = 0
        if "scratch" in group:
            del group["scratch"]
    return result


def _check_place(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise StyleTransferError(f"{path} is a file, not a zarr store; choose another path for the result")
    if path.is_dir() and any(path.iterdir()) and not (path / "zarr.json").exists():
        raise StyleTransferError(
            f"{path} is a folder that holds no zarr store; choose another path for the result"
        )


def _what_it_computes(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` without the options that only say how the run is carried out (threads,
    device, snapshots): a store begun on a laptop may be finished on a server."""
    options = settings.get("options")
    if not isinstance(options, dict):
        return settings
    carried_out = execution_options()
    return settings | {"options": {key: value for key, value in options.items() if key not in carried_out}}


def _check_same(stored: dict[str, Any], wanted: dict[str, Any], store: Any) -> None:
    differences = _differences(
        _what_it_computes(stored.get("settings") or {}), _what_it_computes(wanted["settings"])
    )
    differences += [key for key in ("shape", "tile_size", "dtype") if stored.get(key) != wanted[key]]
    if differences:
        raise StyleTransferError(
            f"{store} holds a result made with other settings ({', '.join(differences)}); it is "
            "left as it is: write to a new path, or delete it to start over"
        )


def _create(group: Any, wanted: dict[str, Any], frame_axes: str | None, pyramid: bool = True) -> None:
    shape = tuple(wanted["shape"])
    layout = _layout(shape, frame_axes)
    tile_size = wanted["tile_size"]
    frames = shape[: len(layout.frame_axes)]
    height, width = shape[len(frames) : len(frames) + 2]
    depth = pyramid_depth((height, width), tile_size) if pyramid else 1
    sizes = {name: size for name, size in zip(layout.frame_axes, frames, strict=True)}
    sizes["c"] = layout.channels
    datasets = []
    for level in range(depth):
        factor = 2**level
        sizes |= {"y": math.ceil(height / factor), "x": math.ceil(width / factor)}
        chunks = {"y": tile_size >> level, "x": tile_size >> level, "c": layout.channels}
        group.create_array(
            str(level),
            shape=tuple(sizes[name] for name in layout.axes),
            chunks=tuple(chunks.get(name, 1) for name in layout.axes),
            dtype=wanted["dtype"],
            fill_value=0,
            dimension_names=tuple(layout.axes),
        )
        scale = [float(factor) if name in "yx" else 1.0 for name in layout.axes]
        datasets.append(
            {"path": str(level), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    grid = (*frames, math.ceil(height / tile_size), math.ceil(width / tile_size))
    group.create_array("finished_tiles", shape=grid, chunks=(1,) * len(grid), dtype="uint8", fill_value=0)
    axes = [{"name": name, "type": _AXIS_TYPES[name]} for name in layout.axes]
    multiscales = [{"name": "style transfer", "axes": axes, "datasets": datasets}]
    stored = wanted | {"frame_axes": layout.frame_axes, "levels": depth}
    group.attrs.update({"ome": {"version": "0.5", "multiscales": multiscales}, METADATA_KEY: stored})


def write_pyramidal_tiff(path: Path, result: ResultStore, frame: tuple[int, ...] = ()) -> None:
    """Write one frame of ``result`` as a tiled pyramidal BigTIFF (level 0 as the page, the
    other levels as its SubIFDs; tiles of ``tile_size``), a tile at a time, with the run's
    settings in the description's JSON under the styled files' key (tifffile's own JSON
    here: a pyramid's description must hold its shape). The file appears whole or not at
    all (:func:`atomic.replacing`)."""
    import tifffile

    first = result.level_image(0)
    colour = first.channels in (3, 4)
    extra: dict[str, Any] = {"photometric": "rgb" if colour else "minisblack"}
    if first.channels == 4:
        extra["extrasamples"] = ["unassalpha"]
    size = result.tile_size
    with replacing(path) as file:
        # named, since tifffile takes an unnamed file's descriptor (an int) for its name
        handle = tifffile.FileHandle(file, mode="w", name=path.name)
        with tifffile.TiffWriter(handle, bigtiff=True) as tiff:
            for level in range(len(result.levels)):
                image = result.level_image(level)
                shape = image.shape + ((image.channels,) if colour else ())
                where: dict[str, Any] = (
                    {"subifds": len(result.levels) - 1} if level == 0 else {"subfiletype": 1}
                )
                if level == 0:  # tifffile's own JSON, holding the settings where read_settings looks
                    where["metadata"] = {METADATA_KEY: result.settings()}
                tiles = _tiles_of(image, size, frame)
                tiff.write(tiles, shape=shape, dtype=image.dtype, tile=(size, size), **extra, **where)


def _tiles_of(image: LargeImage, size: int, frame: tuple[int, ...]) -> Iterator[np.ndarray]:
    """The image's tiles row by row, each read when tifffile asks for it."""
    height, width = image.shape
    for top in range(0, height, size):
        for left in range(0, width, size):
            yield image.read(Region(top, left, min(height, top + size), min(width, left + size)), frame)
