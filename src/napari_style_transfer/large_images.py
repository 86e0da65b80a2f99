"""Images larger than memory, read a region at a time: numpy arrays and memmaps (``.npy``),
dask arrays, zarr arrays, OME-Zarr multiscale groups (level 0, full resolution) and tiled or
pyramidal TIFFs (level 0, through tifffile's zarr store).

Whatever the layout on disk, a region comes back as the engine's layout: (H, W) grey or
(H, W, 3|4) colour, raw values in the source's dtype (mapping them to [0, 1] stays with the
engine). Axes other than rows, columns and colour (time, Z, channels that are not colour)
are frames, chosen by an index. Nothing outside the region asked for is read, beyond the
chunks (or TIFF tiles) that it touches.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import StyleTransferError
from .tiles import Region, Tile

TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".svs")
#: tifffile's axis letters: S (samples) and C hold colour; Y and X the plane; the rest frames.
_TIFF_AXES = {"Y": "y", "X": "x", "S": "c", "C": "c"}
#: Pixels read at once by the band-by-band readers unless told: 1 Mpx, whose RGB block means
#: take 25 MB in float64 (4 Mpx took 100 MB, a good part of a tile's memory).
BAND_PIXELS = 2**20


def _nothing_to_close() -> None:
    """What closing an image opened on no file does (a function of its own: it pickles)."""


@dataclass
class LargeImage:
    """A 2D image or a stack of them, read region by region, never whole.

    ``array`` is anything sliced lazily (numpy memmap, dask, zarr); ``axes`` names each of
    its axes: ``y`` rows, ``x`` columns, ``c`` colour (3 or 4 entries, or 1 for grey) and
    ``f`` a frame axis. ``close`` releases an open file (a TIFF). ``pyramid`` holds the
    coarser levels of a multiscale source, (factor, array) with the same axes, coarsest
    last: :func:`read_downscaled` reads from them where it can. ``path``: the file or
    folder it was opened from (absolute), by which it travels to another process."""

    array: Any
    axes: str
    source: str
    close: Callable[[], None] = _nothing_to_close
    pyramid: tuple[tuple[int, Any], ...] = ()
    path: Path | None = None

    def __reduce_ex__(self, protocol: Any) -> Any:
        # Opened from a path, it is opened again from there (on a dask worker, say): a TIFF's
        # open file does not pickle, and a memmap would pickle every pixel.
        if self.path is not None:
            return _open_path, (self.path, self.source)
        return super().__reduce_ex__(protocol)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one frame, pixels."""
        return self._size("y"), self._size("x")

    @property
    def channels(self) -> int:
        """0 for grey, 3 for RGB, 4 for RGBA."""
        size = self._size("c") if "c" in self.axes else 1
        return 0 if size == 1 else size

    @property
    def frames_shape(self) -> tuple[int, ...]:
        """Sizes of the frame axes, in order (``()`` for a single image)."""
        return tuple(size for name, size in zip(self.axes, self.array.shape, strict=True) if name == "f")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.array.dtype)

    def _size(self, name: str) -> int:
        return int(self.array.shape[self.axes.index(name)])

    def frames(self) -> list[tuple[int, ...]]:
        """Every frame's index, in order (one empty tuple for a single image)."""
        return list(np.ndindex(*self.frames_shape))

    def read(self, region: Region, frame: tuple[int, ...] = (), array: Any = None) -> np.ndarray:
        """The pixels of ``region`` (which lies inside the image) in frame ``frame``: a new
        (h, w) or (h, w, channels) array; only the chunks under the region are read.
        ``array``: one of the :attr:`pyramid`'s levels instead of the full resolution."""
        if len(frame) != len(self.frames_shape):
            raise StyleTransferError(
                f"{self.source} has frame axes of sizes {self.frames_shape}; got frame index {frame}"
            )
        frames = iter(frame)
        index: list[int | slice] = []
        for name in self.axes:
            if name == "f":
                index.append(next(frames))
            elif name == "c":
                index.append(slice(None) if self.channels else 0)
            else:
                index.append(region.slices[0] if name == "y" else region.slices[1])
        pixels = (self.array if array is None else array)[tuple(index)]
        # a numpy source gives a view, which must not be written back through
        pixels = np.array(pixels) if isinstance(pixels, np.ndarray) else np.asarray(pixels)
        if self.channels and self.axes.index("c") < self.axes.index("y"):
            pixels = np.moveaxis(pixels, 0, -1)
        return pixels

    def __enter__(self) -> LargeImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_window(
    image: LargeImage, tile: Tile, frame: tuple[int, ...] = (), pad: str | None = None
) -> np.ndarray:
    """A tile's window: its core plus the context margin, clipped to the image, or with
    ``pad`` (a numpy pad mode such as ``"reflect"``) padded back to the full margin at the
    image's borders, so that every tile of a grid has the same shape."""
    pixels = image.read(tile.window, frame)
    if pad is None or not any(tile.padding):
        return pixels
    top, left, bottom, right = tile.padding
    widths = [(top, bottom), (left, right)] + [(0, 0)] * (pixels.ndim - 2)
    return np.pad(pixels, widths, mode=pad)  # type: ignore[call-overload]


def block_mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Mean (float64) over ``factor`` x ``factor`` blocks of the first two axes; a partial
    block at the bottom or right edge is the mean of the pixels it has, so the result is
    ``ceil(h / factor)`` x ``ceil(w / factor)``, as the levels of an OME-Zarr pyramid."""
    height, width = pixels.shape[:2]
    sums = np.add.reduceat(pixels.astype(np.float64), np.arange(0, height, factor), axis=0)
    sums = np.add.reduceat(sums, np.arange(0, width, factor), axis=1)
    rows = np.minimum(factor, height - np.arange(0, height, factor))
    columns = np.minimum(factor, width - np.arange(0, width, factor))
    counts = np.outer(rows, columns).reshape(sums.shape[:2] + (1,) * (pixels.ndim - 2))
    return sums / counts


def read_downscaled(
    image: LargeImage,
    region: Region,
    factor: int,
    frame: tuple[int, ...] = (),
    band_pixels: int | None = None,
) -> np.ndarray:
    """``region`` of the image shrunk ``factor`` times by :func:`block_mean` (a level of
    :func:`tiles.level_schedule`; ``region`` in that level's pixels), as float32 raw values,
    read a band of rows at a time: at most about ``band_pixels`` pixels of the level read
    are held at once, however large the factor. Read from the coarsest level of the image's
    :attr:`~LargeImage.pyramid` whose factor divides ``factor`` (its pixels taken for the
    block means of the full resolution), else from the full resolution."""
    source, read_factor = None, factor
    for level_factor, array in image.pyramid:
        if factor % level_factor == 0:
            source, read_factor = array, factor // level_factor
    height, width = _level_shape(image, source)
    rows_per_band = max(1, (band_pixels or BAND_PIXELS) // (region.shape[1] * read_factor * read_factor))
    out = np.empty(region.shape + ((image.channels,) if image.channels else ()), np.float32)
    for top in range(region.top, region.bottom, rows_per_band):
        bottom = min(region.bottom, top + rows_per_band)
        wanted = Region(
            top * read_factor, region.left * read_factor, bottom * read_factor, region.right * read_factor
        )
        pixels = image.read(_clipped(wanted, height, width), frame, source)
        if pixels.shape[:2] != wanted.shape and source is not None:
            pixels = _edge_filled(pixels, wanted, image.shape, factor // read_factor)
        out[top - region.top : bottom - region.top] = block_mean(pixels, read_factor)
    return out


def _level_shape(image: LargeImage, array: Any) -> tuple[int, int]:
    if array is None:
        return image.shape
    return int(array.shape[image.axes.index("y")]), int(array.shape[image.axes.index("x")])


def _clipped(region: Region, height: int, width: int) -> Region:
    return Region(region.top, region.left, min(height, region.bottom), min(width, region.right))


def _edge_filled(pixels: np.ndarray, wanted: Region, full: tuple[int, int], factor: int) -> np.ndarray:
    """A pyramid level's pixels of ``wanted`` where the level is ``floor(H / factor)`` high
    (or wide) rather than ``ceil``: the missing edge row or column repeated, where the full
    resolution has pixels for it (block means of a partial block)."""
    rows = min(wanted.bottom, math.ceil(full[0] / factor)) - wanted.top
    columns = min(wanted.right, math.ceil(full[1] / factor)) - wanted.left
    widths = [(0, rows - pixels.shape[0]), (0, columns - pixels.shape[1])] + [(0, 0)] * (pixels.ndim - 2)
    return np.pad(pixels, widths, mode="edge")


def read_nearest(
    image: LargeImage,
    shape: tuple[int, int],
    region: Region,
    frame: tuple[int, ...] = (),
    band_pixels: int | None = None,
) -> np.ndarray:
    """``region`` of the image resized to ``shape`` (H, W) by nearest neighbour at pixel
    centres (for label images, whose values must not be averaged), in the source's dtype,
    read a band of rows at a time (about ``band_pixels`` source pixels at most)."""
    height, width = image.shape
    rows = np.minimum(
        ((np.arange(region.top, region.bottom) + 0.5) * height / shape[0]).astype(np.int64), height - 1
    )
    columns = np.minimum(
        ((np.arange(region.left, region.right) + 0.5) * width / shape[1]).astype(np.int64), width - 1
    )
    left, right = int(columns[0]), int(columns[-1]) + 1
    out = np.empty(region.shape + ((image.channels,) if image.channels else ()), image.dtype)
    per_row = max(1, math.ceil(height / shape[0])) * (right - left)  # source pixels read per row out
    band = max(1, (band_pixels or BAND_PIXELS) // per_row)
    for start in range(0, len(rows), band):
        picked = rows[start : start + band]
        pixels = image.read(Region(int(picked[0]), left, int(picked[-1]) + 1, right), frame)
        out[start : start + len(picked)] = pixels[picked - picked[0]][:, columns - left]
    return out


def extremes(
    image: LargeImage, band_pixels: int | None = None
) -> tuple[tuple[float, float], tuple[float, float] | None]:
    """The (lowest, highest) colour value over every frame, and of alpha for RGBA (None
    otherwise), read a band of rows at a time; NaN if any value is NaN."""
    height, width = image.shape
    rows = max(1, (band_pixels or BAND_PIXELS) // width)
    colour: list[float] = []
    alpha: list[float] = []
    for frame in image.frames():
        for top in range(0, height, rows):
            pixels = image.read(Region(top, 0, min(height, top + rows), width), frame)
            values = pixels[..., :3] if image.channels == 4 else pixels
            colour += [float(values.min()), float(values.max())]
            if image.channels == 4:
                alpha += [float(pixels[..., 3].min()), float(pixels[..., 3].max())]
    return _span(colour), _span(alpha) if alpha else None


def _span(values: list[float]) -> tuple[float, float]:
    if any(math.isnan(value) for value in values):
        return math.nan, math.nan
    return min(values), max(values)


def open_large_image(source: Any) -> LargeImage:
    """Open ``source`` lazily: a path (``.npy``, a TIFF, a ``.zarr`` folder), a zarr group
    holding OME-Zarr multiscales (level 0 is used), or an array sliced lazily (numpy,
    memmap, dask, zarr). The last axis is colour when it has 3 or 4 entries (1: grey), as
    for in-memory images; an OME-Zarr's or a TIFF's own axis names say where theirs are."""
    if isinstance(source, str | os.PathLike):
        return _open_path(Path(source))
    import zarr

    if isinstance(source, zarr.Group):
        return _open_multiscales(source, "the zarr group")
    if not all(hasattr(source, name) for name in ("shape", "dtype", "__getitem__")):
        raise StyleTransferError(
            f"cannot read a {type(source).__name__} region by region; give a numpy, dask or zarr "
            "array, an OME-Zarr group, or the path of a .npy, TIFF or .zarr"
        )
    return LargeImage(source, _plain_axes(source.shape), f"the {type(source).__name__}")


def _plain_axes(shape: tuple[int, ...]) -> str:
    if len(shape) < 2:
        raise StyleTransferError(f"an image needs at least 2 axes (rows, columns); got shape {tuple(shape)}")
    if len(shape) >= 3 and shape[-1] in (1, 3, 4):
        return "f" * (len(shape) - 3) + "yxc"
    return "f" * (len(shape) - 2) + "yx"


def _named_axes(names: list[str], shape: tuple[int, ...], source: str) -> str:
    """One letter per axis from a file's own axis names: colour only where it has 1, 3 or
    4 entries (a 2- or 5-channel fluorescence image is styled channel by channel)."""
    axes = ""
    for name, size in zip(names, shape, strict=True):
        letter = name if name in "yx" else "f"
        if name == "c" and size in (1, 3, 4) and "c" not in axes:
            letter = "c"
        axes += letter
    if axes.count("y") != 1 or axes.count("x") != 1:
        raise StyleTransferError(f"{source} has axes {names}; it needs one y and one x axis")
    return axes


def _open_path(path: Path, source: str | None = None) -> LargeImage:
    """The image at ``path``, which remembers it (absolute) to be opened again elsewhere;
    ``source``: how messages name it (default: the path as given)."""
    image = _opened(path)
    image.path, image.source = path.absolute(), source or image.source
    return image


def _opened(path: Path) -> LargeImage:
    if not path.exists():
        raise StyleTransferError(f"{path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        return LargeImage(array, _plain_axes(array.shape), str(path))
    if suffix in TIFF_SUFFIXES:
        return _open_tiff(path)
    if path.is_dir():
        import zarr

        opened = zarr.open(path, mode="r")
        if isinstance(opened, zarr.Group):
            return _open_multiscales(opened, str(path))
        return LargeImage(opened, _plain_axes(opened.shape), str(path))
    raise StyleTransferError(
        f"{path} is not an image this can read region by region; give a .npy, a TIFF "
        f"({', '.join(TIFF_SUFFIXES)}) or a .zarr folder"
    )


def _open_tiff(path: Path) -> LargeImage:
    import tifffile
    import zarr

    try:
        tiff = tifffile.TiffFile(path)
    except Exception as error:  # tifffile raises many types for damaged files
        raise StyleTransferError(f"cannot read TIFF {path}: {error}") from None
    series = tiff.series[0]
    store = series.aszarr()  # a group of the levels for a pyramid, else the one array

    def close() -> None:
        store.close()
        tiff.close()

    opened: Any = zarr.open(store, mode="r")
    levels = (
        [opened[str(level)] for level in range(len(series.levels))] if len(series.levels) > 1 else [opened]
    )
    names = [_TIFF_AXES.get(letter, "f") for letter in series.axes]
    axes = _named_axes(names, levels[0].shape, str(path))
    return LargeImage(levels[0], axes, str(path), close, _pyramid(levels, axes))


def _pyramid(levels: list[Any], axes: str) -> tuple[tuple[int, Any], ...]:
    """The coarser levels that halve the full resolution 1, 2, ... times (each side
    ``ceil`` or ``floor`` of the full one halved; other axes the same), with their factors;
    the first level that is not one ends the pyramid."""
    first = levels[0].shape
    found: list[tuple[int, Any]] = []
    for number, level in enumerate(levels[1:], start=1):
        factor = 2**number
        for name, full, size in zip(axes, first, level.shape, strict=True):
            if size not in ((-(-full // factor), full // factor) if name in "yx" else (full,)):
                return tuple(found)
        found.append((factor, level))
    return tuple(found)


def multiscales_of(attributes: Any) -> list[dict[str, Any]] | None:
    """The OME-Zarr ``multiscales`` list of a group's attributes: NGFF 0.5 keeps it under
    ``ome``, 0.4 and before at the top."""
    ome = attributes.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attributes.get("multiscales")
    return found if isinstance(found, list) and found else None


def _open_multiscales(group: Any, source: str) -> LargeImage:
    multiscales = multiscales_of(group.attrs)
    if multiscales is None:
        raise StyleTransferError(
            f"{source} is a zarr group without OME-Zarr multiscales metadata; give the array "
            f"inside it (one of {sorted(group.array_keys())})"
        )
    first = multiscales[0]
    levels = [group[dataset["path"]] for dataset in first["datasets"]]
    array = levels[0]
    names = [(axis["name"] if isinstance(axis, dict) else axis).lower() for axis in first.get("axes") or ()]
    # NGFF 0.1 to 0.3 (tifffile's pyramids) name no axes: the plain convention
    axes = _named_axes(names, array.shape, source) if names else _plain_axes(array.shape)
    return LargeImage(array, axes, source, pyramid=_pyramid(levels, axes))
