"""Between napari layers and the engine's numpy images: inputs, placement, result layers.

Nothing here imports torch or Qt. Layer data is copied (or converted) before a run, so the
user's layers are never touched by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StyleTransferError

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image

STACK_MODES = ("current slice", "whole stack")


@dataclass(frozen=True)
class LayerInput:
    """The array a run gets from a layer, and where that array sits in the layer."""

    data: np.ndarray
    #: Data index of the slice along the layer's leading axes, for "current slice" runs of
    #: nD layers; None when ``data`` covers the whole layer.
    slice_index: tuple[int, ...] | None
    #: For a deferred grey input: the contrast limits ``data`` is still to be mapped by.
    limits: tuple[float, float] | None = None
    deferred: bool = False

    def engine_array(self) -> np.ndarray:
        """The engine's input: a copy (RGB) or the mapping by contrast limits (grey). For a
        deferred input this is the expensive part, done in the worker thread, not the GUI's."""
        if not self.deferred:
            return self.data
        if self.limits is None:
            return np.array(self.data, copy=True)
        return _map_by_limits(self.data, *self.limits)


def _map_by_limits(data: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(data, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0.0, 1.0)


def current_slice(viewer: napari.Viewer, layer: Image, role: str = "content") -> tuple[int, ...]:
    """Data indices along the layer's leading axes of the slice the viewer shows.

    The slice is a plane of the layer's last two axes (Y, X); when the viewer shows other
    axes (the axis order was changed) that is not what is on screen, so it is refused."""
    lead = layer.ndim - 2
    if lead <= 0:
        return ()
    world = viewer.dims.ndim
    if set(viewer.dims.order[-2:]) != {world - 2, world - 1}:  # (X, Y) is still the same plane
        fix = "or style the whole stack" if role == "content" else "(the style is the slice on screen)"
        raise StyleTransferError(
            f"the viewer shows the {role} layer {layer.name!r} with its axes reordered, so the plane on "
            f"screen is not a (Y, X) slice; reset the axis order (the roll/transpose buttons) {fix}"
        )
    point = np.asarray(layer.world_to_data(viewer.dims.point), dtype=float)
    shape = _level_shape(layer, 0)
    return tuple(int(np.clip(round(point[axis]), 0, shape[axis] - 1)) for axis in range(lead))


def layer_input(
    layer: Any,
    role: str,
    *,
    viewer: napari.Viewer | None = None,
    stack: str = "current slice",
    size: int = 512,
    defer: bool = False,
) -> LayerInput:
    """A copy of an Image layer's data for the engine (with ``defer``, a view and what to do
    with it, for :meth:`LayerInput.engine_array` to do later off the GUI thread).

    nD layers give the slice the viewer shows (``stack="current slice"``) or every slice
    (``"whole stack"``); multiscale layers give the coarsest level that still has ``size``
    pixels on its longest side. Grey images are mapped to [0, 1] by the layer's contrast
    limits (what the user sees); RGB(A) data is passed on as it is.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        kind = type(layer).__name__ if layer is not None else "no"
        raise StyleTransferError(f"the {role} layer is {_article(kind)} {kind} layer; choose an Image layer")
    if stack not in STACK_MODES:
        raise StyleTransferError(f"stack must be one of {', '.join(STACK_MODES)}, got {stack!r}")
    level = _pick_level(layer, size)
    data = layer.data[level] if layer.multiscale else layer.data
    slice_index = None
    if layer.ndim > 2 and (stack == "current slice" or role == "style"):
        slice_index = current_slice(viewer, layer, role) if viewer is not None else (0,) * (layer.ndim - 2)
        data = data[_level_index(layer, level, slice_index)]
    data = np.asarray(data)
    if layer.rgb:
        source = LayerInput(data, slice_index, deferred=True)
        return source if defer else LayerInput(source.engine_array(), slice_index)
    low, high = (float(v) for v in layer.contrast_limits)
    if not high > low:
        raise StyleTransferError(
            f"the {role} layer {layer.name!r} has empty contrast limits ({low:g}, {high:g}); adjust them first"
        )
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise StyleTransferError(
            f"the {role} layer {layer.name!r} contains NaN or infinite values; replace them first"
        )
    source = LayerInput(data, slice_index, (low, high), deferred=True)
    return source if defer else LayerInput(source.engine_array(), slice_index)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _level_shape(layer: Image, level: int) -> tuple[int, ...]:
    shapes = layer.level_shapes if layer.multiscale else [layer.data.shape]
    return tuple(int(side) for side in shapes[level][: layer.ndim])


def _pick_level(layer: Image, size: int) -> int:
    """The coarsest pyramid level whose 2D frame still has ``size`` px on its longest side."""
    if not layer.multiscale:
        return 0
    levels = [i for i in range(len(layer.level_shapes)) if max(_level_shape(layer, i)[-2:]) >= size]
    return max(levels) if levels else 0


def _level_index(layer: Image, level: int, slice_index: tuple[int, ...]) -> tuple[int, ...]:
    """A level-0 index along the leading axes, in ``level``'s own coordinates."""
    if level == 0:
        return slice_index
    full, coarse = _level_shape(layer, 0), _level_shape(layer, level)
    return tuple(min(c - 1, i * c // f) for i, f, c in zip(slice_index, full, coarse, strict=False))


def placement(layer: Image, result_shape: tuple[int, ...], slice_index: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Layer keywords that lay a result over ``layer``.

    ``result_shape`` is the result's spatial shape: its last two axes are the working size,
    its leading axes either the layer's own (a whole stack) or single slices at
    ``slice_index``. Result pixel j covers the content's extent with bigger (or smaller)
    pixels: it is centred where content pixel ``(j + 0.5) * f - 0.5`` is, ``f`` being the size
    ratio per axis. Plain scale/translate placements stay plain; rotated, sheared or
    affine-transformed layers get the whole data-to-world transform as one affine.
    """
    ndim = layer.ndim
    lead = ndim - 2
    full = np.asarray(_level_shape(layer, 0), dtype=float)
    factor = full / np.asarray(result_shape, dtype=float)
    offset = (factor - 1) / 2
    if slice_index is not None:
        factor[:lead] = 1.0
        offset[:lead] = slice_index
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    plain = (
        np.allclose(layer.rotate, np.eye(ndim))
        and np.allclose(layer.shear, 0)
        and np.allclose(layer.affine.affine_matrix, np.eye(ndim + 1))
    )
    if plain:
        return {"scale": tuple(scale * factor), "translate": tuple(translate + scale * offset)}
    from napari.utils.transforms import CompositeAffine

    data_to_physical = CompositeAffine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear, ndim=ndim
    )
    resample = np.eye(ndim + 1)
    resample[:ndim, :ndim] = np.diag(factor)
    resample[:ndim, ndim] = offset
    return {"affine": layer.affine.affine_matrix @ data_to_physical.affine_matrix @ resample}


def result_layer_kwargs(
    content: Image, image: np.ndarray, name: str, metadata: dict[str, Any], slice_index: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Everything ``viewer.add_image`` needs for a snapshot or result of ``content``.

    ``image`` is the result as the engine gives it: one frame, or a whole stack."""
    colour = image.ndim >= 3 and image.shape[-1] in (3, 4)
    spatial = image.shape[:-1] if colour else image.shape
    lead = content.ndim - 2
    if len(spatial) == 2 and lead > 0:  # one slice of an nD layer: keep it at its place
        spatial = (1,) * lead + spatial
    kwargs: dict[str, Any] = {"name": name, "metadata": {"style_transfer": metadata}}
    single_frame = image.ndim - colour == 2
    kwargs.update(placement(content, spatial, slice_index if single_frame else None))
    if colour:
        # fixed, not napari's guess from the data: snapshots stay comparable and a stack that
        # fills in frame by frame is not judged by its first frame
        kwargs.update(rgb=True, contrast_limits=(0.0, 1.0))
    else:
        kwargs.update(colormap=content.colormap.name, contrast_limits=(0.0, 1.0))
    return kwargs


def as_layer_data(image: np.ndarray, content: Image) -> np.ndarray:
    """Give a single-slice result of an nD layer its leading axes of length 1."""
    colour = image.ndim >= 3 and image.shape[-1] in (3, 4)
    lead = content.ndim - 2 - (image.ndim - colour - 2)
    return image.reshape((1,) * lead + image.shape) if lead > 0 else image
