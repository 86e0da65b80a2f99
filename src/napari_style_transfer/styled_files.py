"""A result's settings inside its file: one format, written and read by the command line,
batches and the napari writer and reader. numpy, tifffile, Pillow and json only (no torch,
napari or Qt).

The settings (how the result was made: options, losses, weights, device, and for a batch
item what it was made from) are JSON under :data:`KEY`: a PNG's text chunk of that name, or
the top-level key of the JSON in a TIFF's ImageDescription. napari's look of a saved layer
(scale, colormap, contrast limits, ...) goes beside them under :data:`LAYER_KEY`.

Files of earlier versions still read: the command line's and the batches' were this format
without a layer; the napari writer's were ``{"napari_style_transfer": {"style_transfer":
settings, "layer": look}}``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import write_replacing

#: Where the settings are: a PNG text chunk's name, a TIFF description's top-level key.
KEY = "napari-style-transfer"
#: Where napari's look of the layer is, beside them.
LAYER_KEY = "napari-layer"
#: The napari writer's key before the two writers became one.
OLD_NAPARI_KEY = "napari_style_transfer"
#: The suffix the napari plugin saves results under, so that its reader can be preferred for them.
STYLED_SUFFIX = ".styled.tif"
TIFF_SUFFIXES = (".tif", ".tiff")
#: Settings are a few kilobytes; longer or deeper JSON is not ours (and 100,000 nested
#: brackets would exhaust Python's recursion before any check).
MAX_TEXT_BYTES = 1 << 20
MAX_DEPTH = 32


@dataclass(frozen=True)
class Styled:
    """What a styled file carries besides its pixels."""

    settings: dict[str, Any]
    layer: dict[str, Any] = field(default_factory=dict)  # napari's look; {} outside napari


def description(settings: dict[str, Any], layer: dict[str, Any] | None = None) -> str:
    """The JSON a TIFF's ImageDescription carries (numpy values written as plain ones)."""
    stored: dict[str, Any] = {KEY: settings}
    if layer:
        stored[LAYER_KEY] = layer
    return json.dumps(stored, default=_jsonable)


def png_info(settings: dict[str, Any], layer: dict[str, Any] | None = None) -> Any:
    """Pillow's ``pnginfo`` carrying the settings (and the look) as text chunks."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(KEY, json.dumps(settings, default=_jsonable))
    if layer:
        info.add_text(LAYER_KEY, json.dumps(layer, default=_jsonable))
    return info


def write_styled_tiff(
    path: Path,
    data: np.ndarray,
    settings: dict[str, Any] | None,
    layer: dict[str, Any] | None = None,
    *,
    colour: bool | None = None,
) -> None:
    """Write ``data`` as it is (dtype and values) as a TIFF, the settings and the look in its
    description; a stack is one page per frame. ``colour``: whether the last axis holds the
    samples of a colour (4: the last is alpha); None takes 3 or 4 values there for colour.
    The file is replaced atomically; the folder must exist."""
    import tifffile

    if colour is None:
        colour = data.ndim >= 3 and data.shape[-1] in (3, 4)
    extra: dict[str, Any] = {"photometric": "rgb" if colour else "minisblack"}
    if colour and data.shape[-1] == 4:
        extra["extrasamples"] = ["unassalpha"]
    # metadata=None: tifffile's own JSON would take the description's place
    extra["metadata"] = None
    if settings is not None:
        extra["description"] = description(settings, layer)

    def write(file: Any) -> None:
        encoded = io.BytesIO()  # tifffile seeks back in what it wrote
        tifffile.imwrite(encoded, data, **extra)
        file.write(encoded.getbuffer())

    write_replacing(path, write)


def read_styled(path: Path) -> Styled | None:
    """The settings (and look) a PNG or TIFF carries in either format, or None when it
    carries none, they are not valid, or the file cannot be read."""
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return from_description(_tiff_description(path))
    if suffix == ".png":
        texts = _png_texts(path)
        settings = _parse(texts.get(KEY))
        if not isinstance(settings, dict):
            return None
        layer = _parse(texts.get(LAYER_KEY))
        return _checked(settings, layer if isinstance(layer, dict) else {})
    return None


def read_settings(path: Path) -> dict[str, Any] | None:
    """The settings a result file carries, or None (see :func:`read_styled`)."""
    styled = read_styled(path)
    return None if styled is None else styled.settings


def from_description(text: Any) -> Styled | None:
    """The settings in a TIFF description's JSON, in this format or the napari writer's old one."""
    stored = _parse(text)
    if not isinstance(stored, dict):
        return None
    if isinstance(stored.get(KEY), dict):
        layer = stored.get(LAYER_KEY)
        return _checked(stored[KEY], layer if isinstance(layer, dict) else {})
    old = stored.get(OLD_NAPARI_KEY)
    if isinstance(old, dict):
        settings, layer = old.get("style_transfer", {}), old.get("layer", {})
        if isinstance(settings, dict):
            return _checked(settings, layer if isinstance(layer, dict) else {})
    return None


def _checked(settings: dict[str, Any], layer: dict[str, Any]) -> Styled | None:
    """Settings whose parts the readers use have the types they expect; else None."""
    parts = ("options", "losses", "batch")
    if any(name in settings and not isinstance(settings[name], dict) for name in parts):
        return None
    return Styled(settings, layer)


def _tiff_description(path: Path) -> str | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages[0]
            return str(getattr(page, "description", ""))
    except Exception:  # noqa: BLE001 - any failure to read a header means: no settings here
        return None


def _png_texts(path: Path) -> dict[str, Any]:
    from PIL import Image

    try:
        with Image.open(path) as picture:
            return {
                str(key): value for key, value in picture.info.items()
            }  # the text chunks before the pixels; Pillow caps their size
    except Exception:  # noqa: BLE001 - any failure to read a header means: no settings here
        return {}


def _parse(text: Any) -> Any:
    """JSON text as Python values; None for what is not JSON, too long or too deep."""
    if not isinstance(text, str | bytes) or len(text) > MAX_TEXT_BYTES:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        return None
    return value if _depth_within(value, MAX_DEPTH) else None


def _depth_within(value: Any, limit: int) -> bool:
    """Whether containers nest at most ``limit`` deep (walked without recursion)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        level = [child for container in level for child in _children(container)]
        if not level:
            return True
    return False


def _children(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, list):
        yield from value


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    return str(value)
