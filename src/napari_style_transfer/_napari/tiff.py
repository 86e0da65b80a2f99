"""napari's writer and reader of styled layers: a TIFF whose description holds the settings.

napari's own TIFF writer drops layer metadata, so a saved result would forget how it was
made. This writer puts ``metadata["style_transfer"]`` (options, losses, weights, device) and
the layer's look and placement into the TIFF's ImageDescription as JSON; the reader claims
only TIFFs that carry that JSON and gives the settings back in the layer's metadata. numpy,
tifffile and json only (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: The description's top-level key; a TIFF without it is not ours.
KEY = "napari_style_transfer"
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


def write_styled_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save one Image layer (``data`` and napari's ``meta`` of it) as a TIFF at ``path``, its
    style-transfer settings and look as JSON in the description. Returns ``[path]``."""
    import tifffile

    image = np.asarray(data)
    rgb = bool(meta.get("rgb", False))
    look = {name: meta[name] for name in LOOK if name in meta and meta[name] is not None}
    if "colormap" in look:
        look["colormap"] = _colormap_record(look["colormap"])
    description = {
        KEY: {"style_transfer": (meta.get("metadata") or {}).get("style_transfer", {}), "layer": look}
    }
    tifffile.imwrite(
        path,
        image,
        photometric="rgb" if rgb else "minisblack",
        description=json.dumps(description, default=_jsonable),
        metadata=None,  # tifffile's own JSON would take the description's place
    )
    return [path]


def get_reader(path: str | list[str]) -> Callable[[str], list[tuple]] | None:
    """The reader for a TIFF this plugin wrote; None for anything else (napari then asks
    other readers)."""
    if not isinstance(path, str) or Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    return read_styled_tiff if settings_of(path) is not None else None


def settings_of(path: str) -> dict[str, Any] | None:
    """The JSON this plugin wrote into a TIFF's description, or None."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            text = tiff.pages[0].description
    except (OSError, ValueError, IndexError, tifffile.TiffFileError):
        return None
    try:
        found = json.loads(text)
    except (TypeError, ValueError):
        return None
    return found.get(KEY) if isinstance(found, dict) and isinstance(found.get(KEY), dict) else None


def read_styled_tiff(path: str) -> list[tuple]:
    """One Image layer: the data, its look and placement as saved, and the settings back in
    ``metadata["style_transfer"]``."""
    import tifffile

    saved = settings_of(path) or {}
    look = dict(saved.get("layer", {}))
    kwargs: dict[str, Any] = {"metadata": {"style_transfer": saved.get("style_transfer", {})}}
    for name in LOOK:
        if name in look:
            kwargs[name] = look[name]
    if "affine" in kwargs:
        kwargs["affine"] = np.asarray(kwargs["affine"], dtype=float)
    if "colormap" in kwargs:
        kwargs["colormap"] = _colormap(kwargs["colormap"])
        if kwargs["colormap"] is None:
            del kwargs["colormap"]
    kwargs.setdefault("name", Path(path).stem)
    return [(tifffile.imread(path), kwargs, "image")]


def _colormap_record(colormap: Any) -> dict[str, Any]:
    """A colormap (napari gives writers its state: a dict; or a name, or a Colormap) as its
    name, colours and control points, so that a custom one can be rebuilt."""
    if isinstance(colormap, str):
        return {"name": colormap}
    state = (
        colormap
        if isinstance(colormap, dict)
        else {key: getattr(colormap, key, None) for key in ("name", "colors", "controls")}
    )
    record = {"name": str(state.get("name", ""))}
    for key in ("colors", "controls"):
        if state.get(key) is not None:
            record[key] = np.asarray(state[key], dtype=float).tolist()
    return record


def _colormap(record: Any) -> Any:
    """napari's colormap of that name, else one rebuilt from the saved colours, else None."""
    from napari.utils.colormaps import AVAILABLE_COLORMAPS, Colormap

    name = record.get("name") if isinstance(record, dict) else record
    if isinstance(name, str) and name in AVAILABLE_COLORMAPS:
        return name
    if isinstance(record, dict) and record.get("colors"):
        return Colormap(colors=record["colors"], controls=record.get("controls"), name=name or "saved")
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)
