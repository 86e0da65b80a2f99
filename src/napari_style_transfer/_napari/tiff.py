"""napari's writer and reader of styled layers, in the one format of :mod:`..styled_files`.

napari's own TIFF writer drops layer metadata, so a saved result would forget how it was
made. This writer keeps ``metadata["style_transfer"]`` (options, losses, weights, device) and
the layer's look and placement; the reader claims only TIFFs that carry settings (the
plugin's, the command line's, a batch's, and the plugin's older files) and gives them back in
the layer's metadata. What a file says is checked before napari sees it: pixels that would
not fit in memory are refused, and saved look settings napari cannot take (a zero scale, rgb
on a grey image, an unknown blending, a colormap that is not one) are left out with a
warning. numpy, tifffile and json only (no torch).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..files import ImageFileError
from ..styled_files import STYLED_SUFFIX, TIFF_SUFFIXES, read_styled
from ..styled_files import write_styled_tiff as write_tiff

#: Layer attributes saved with the image (when napari gives them) and restored on reading.
LOOK = (
    "name",
    "scale",
    "translate",
    "rotate",
    "shear",
    "affine",
    "contrast_limits",
    "colormap",
    "gamma",
    "blending",
    "opacity",
    "rgb",
)
#: The widest range of gamma napari's controls offer, with room to spare.
GAMMA_RANGE = (0.01, 10.0)


def write_styled_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save one Image layer (``data`` and napari's ``meta`` of it) as a TIFF at ``path``, its
    style-transfer settings and look in the description. Returns ``[path]``."""
    look = {name: meta[name] for name in LOOK if name in meta and meta[name] is not None}
    if "colormap" in look:
        look["colormap"] = _colormap_record(look["colormap"])
    settings = (meta.get("metadata") or {}).get("style_transfer") or {}
    write_tiff(Path(path), np.asarray(data), settings, look, colour=bool(meta.get("rgb", False)))
    return [path]


def save_styled_layer(layer: Any, path: str | Path) -> Path:
    """Save an Image layer with its settings and look where the widget's *Save result...*
    asks, whatever writer napari would pick: a path without a suffix gets
    ``.styled.tif``, for which this plugin's reader is then preferred. Returns the path
    written; raises :class:`~..files.ImageFileError` for a place that cannot be written."""
    path = Path(path)
    if path.suffix.lower() not in TIFF_SUFFIXES:
        path = path.with_name(path.name + STYLED_SUFFIX)
    data, meta, _ = layer.as_layer_data_tuple()
    try:
        write_styled_tiff(str(path), data, meta)
    except OSError as error:
        raise ImageFileError(f"could not save {path}: {error.strerror or error}") from None
    prefer_styled_reader()
    return path


def prefer_styled_reader() -> None:
    """Make this plugin napari's reader for ``*.styled.tif`` (napari's preferred-reader
    setting), unless the user chose another; other TIFFs are left to the user's choice."""
    from napari.settings import get_settings

    plugins = get_settings().plugins
    pattern = f"*{STYLED_SUFFIX}"
    if pattern not in plugins.extension2reader:
        plugins.extension2reader = {**plugins.extension2reader, pattern: "napari-style-transfer"}


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """The reader for a TIFF that carries valid settings; None for anything else (napari then
    asks other readers, its own among them)."""
    if not isinstance(path, str) or Path(path).suffix.lower() not in TIFF_SUFFIXES:
        return None
    return read_styled_tiff if read_styled(Path(path)) is not None else None


def read_styled_tiff(path: str) -> list[tuple]:
    """One Image layer: the data, its look and placement as saved (what napari can take of
    it), and the settings back in ``metadata["style_transfer"]``."""
    styled = read_styled(Path(path))
    if styled is None:
        raise ImageFileError(f"{path} carries no style-transfer settings; open it with napari's own reader")
    data = read_pixels(Path(path))
    kwargs, refused = layer_kwargs(styled.layer, data)
    if refused:
        warnings.warn(
            f"{Path(path).name}: saved layer settings left out, napari cannot take them: {'; '.join(refused)}",
            stacklevel=2,
        )
    kwargs["metadata"] = {"style_transfer": styled.settings}
    kwargs.setdefault("name", Path(path).stem)
    return [(data, kwargs, "image")]


def read_pixels(path: Path) -> np.ndarray:
    """A TIFF's pixels, its declared size checked against the memory free before decoding;
    a file tifffile cannot decode is an :class:`ImageFileError`, whatever tifffile raised."""
    import tifffile

    from .. import memory

    budget = int(memory.available_ram_bytes() * memory.HEADROOM)
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            declared = math.prod(series.shape) * np.dtype(series.dtype).itemsize
            if declared > budget:
                raise ImageFileError(
                    f"{path} declares {'x'.join(map(str, series.shape))} {series.dtype} "
                    f"({memory.format_bytes(declared)}), more than the {memory.format_bytes(budget)} "
                    "of memory free; crop or downscale it first"
                )
            return np.asarray(series.asarray())
    except ImageFileError:
        raise
    except MemoryError:
        raise ImageFileError(f"not enough memory to read {path}") from None
    except Exception as error:  # what tifffile raises depends on the damage and its version
        raise ImageFileError(f"could not read {path}: the file is damaged ({error})") from error


def layer_kwargs(look: dict[str, Any], data: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """The saved look as ``add_image`` keywords, each checked against the data; and what was
    left out, each with why."""
    kwargs: dict[str, Any] = {}
    refused: list[str] = []
    colour = data.ndim >= 3 and data.shape[-1] in (3, 4)
    rgb = look.get("rgb", colour)  # napari's guess when none was saved
    if not isinstance(rgb, bool) or (rgb and not colour):
        refused.append(f"rgb {_short(rgb)} (the image's last axis has {data.shape[-1]} values, not 3 or 4)")
        rgb = colour
    elif "rgb" in look:
        kwargs["rgb"] = rgb
    ndim = data.ndim - (1 if rgb else 0)
    for name in LOOK:
        if name in look and name != "rgb":
            value, why = _checked(name, look[name], ndim)
            if why:
                refused.append(f"{name} {_short(look[name])} ({why})")
            else:
                kwargs[name] = value
    return kwargs, refused


def _checked(name: str, value: Any, ndim: int) -> tuple[Any, str]:
    """``value`` as napari takes it for the layer attribute ``name``, or why it cannot be."""
    if name == "name":
        return (value, "") if isinstance(value, str) and len(value) <= 1000 else (None, "not a short text")
    if name in ("scale", "translate"):
        numbers = _numbers(value, (ndim,))
        if numbers is None:
            return None, f"not {ndim} finite numbers"
        if name == "scale" and not np.all(numbers != 0):
            return None, "a scale of 0 collapses the image"
        return numbers.tolist(), ""
    if name in ("rotate", "shear", "affine"):
        return _transform(name, value, ndim)
    if name == "contrast_limits":
        limits = _numbers(value, (2,))
        if limits is None or not limits[0] < limits[1]:
            return None, "not two finite numbers, low below high"
        return limits.tolist(), ""
    if name == "colormap":
        colormap = _colormap(value)
        return (colormap, "") if colormap is not None else (None, "not a known or valid colormap")
    if name == "gamma":
        low, high = GAMMA_RANGE
        good = _is_number(value) and low <= value <= high
        return (float(value), "") if good else (None, f"not a number in {low}..{high}")
    if name == "opacity":
        return (float(value), "") if _is_number(value) and 0 <= value <= 1 else (None, "not a number in 0..1")
    return _blending(value)


def _transform(name: str, value: Any, ndim: int) -> tuple[Any, str]:
    """rotate, shear or affine as napari saves them: matrices (rotate: or an angle in 2D)."""
    if name == "rotate" and ndim == 2 and _is_number(value):
        return float(value), ""
    side = ndim + 1 if name == "affine" else ndim
    matrix = _numbers(value, (side, side))
    if name == "shear" and matrix is None:
        shears = _numbers(value, (ndim * (ndim - 1) // 2,))
        if shears is None:
            return None, "not a shear napari takes"
        return shears.tolist(), ""
    if matrix is None:
        return None, f"not a {side} x {side} matrix of finite numbers"
    if abs(np.linalg.det(matrix[:ndim, :ndim])) < 1e-12:
        return None, "a singular matrix collapses the image"
    return matrix, ""


def _blending(value: Any) -> tuple[Any, str]:
    from napari.layers.base._base_constants import Blending

    known = [str(mode) for mode in Blending]
    return (value, "") if value in known else (None, f"not one of {', '.join(known)}")


def _numbers(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``value`` as finite floats of ``shape``, or None."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None
    return array if array.shape == shape and np.isfinite(array).all() else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _colormap_record(colormap: Any) -> dict[str, Any]:
    """A colormap (napari gives writers its state: a dict; or a name, or a Colormap) as its
    name, colours and control points, so that a custom one can be rebuilt."""
    if isinstance(colormap, str):
        return {"name": colormap}
    state = (
        colormap
        if isinstance(colormap, dict)
        else {key: getattr(colormap, key, None) for key in ("name", "colors", "controls", "interpolation")}
    )
    record = {"name": str(state.get("name", ""))}
    for key in ("colors", "controls"):
        if state.get(key) is not None:
            record[key] = np.asarray(state[key], dtype=float).tolist()
    if state.get("interpolation") is not None:
        record["interpolation"] = str(state["interpolation"])
    return record


def _colormap(record: Any) -> Any:
    """napari's colormap of that name, else one rebuilt from valid saved colours (1 to 1024
    RGB or RGBA colours in 0..1, control points rising from 0 to 1), else None."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    name = record.get("name") if isinstance(record, dict) else record
    if isinstance(name, str) and name in AVAILABLE_COLORMAPS:
        return name
    if not isinstance(record, dict):
        return None
    try:
        colors = np.asarray(record.get("colors"), dtype=float)
    except (TypeError, ValueError):
        return None
    if colors.ndim != 2 or not 2 <= len(colors) <= 1024 or colors.shape[1] not in (3, 4):
        return None
    if not np.isfinite(colors).all() or colors.min() < 0 or colors.max() > 1:
        return None
    interpolation = record.get("interpolation", "linear")
    if interpolation not in ("linear", "zero"):
        return None
    controls = record.get("controls")
    if controls is not None:
        points = _numbers(controls, (len(colors) + (interpolation == "zero"),))
        if points is None or points[0] != 0 or points[-1] != 1 or np.any(np.diff(points) < 0):
            return None
        controls = points.tolist()
    label = name if isinstance(name, str) and name else "saved"
    return Colormap(colors=colors.tolist(), controls=controls, name=label[:100], interpolation=interpolation)
