"""Between napari layers and the engine's numpy images: inputs, placement, result layers.

Nothing here imports torch or Qt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StyleTransferError

if TYPE_CHECKING:  # pragma: no cover
    from napari.layers import Image


def layer_image(layer: Image, role: str) -> np.ndarray:
    """A copy of a 2D Image layer's data for the engine.

    Grey images are mapped to [0, 1] by the layer's contrast limits (what the user sees);
    RGB(A) data is passed on as it is. The layer itself is never modified.
    """
    from napari.layers import Image

    if not isinstance(layer, Image):
        raise StyleTransferError(f"the {role} layer {layer.name!r} is a {type(layer).__name__} layer; choose an Image layer")
    data = np.asarray(layer.data)
    spatial = data.ndim - (1 if layer.rgb else 0)
    if spatial != 2 or getattr(layer, "multiscale", False):
        raise StyleTransferError(
            f"the {role} layer {layer.name!r} has {spatial} spatial dimensions (shape {data.shape}); "
            "only 2D images are supported so far"
        )
    if layer.rgb:
        return np.array(data, copy=True)
    low, high = (float(v) for v in layer.contrast_limits)
    if not high > low:
        raise StyleTransferError(
            f"the {role} layer {layer.name!r} has empty contrast limits ({low:g}, {high:g}); adjust them first"
        )
    return np.clip((data.astype(np.float32) - low) / (high - low), 0.0, 1.0)


def placement(layer: Image, result_shape: tuple[int, int]) -> dict[str, Any]:
    """Layer keywords that lay a result of ``result_shape`` over ``layer``.

    The result samples the content's extent with bigger (or smaller) pixels: its pixel j is
    centred where content pixel ``(j + 0.5) * f - 0.5`` is, with ``f`` the size ratio per axis.
    Plain scale/translate placements stay plain; rotated, sheared or affine-transformed layers
    get the whole data-to-world transform as an affine.
    """
    content_shape = np.asarray(layer.data.shape[:2], dtype=float)
    factor = content_shape / np.asarray(result_shape, dtype=float)
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    plain = (
        np.allclose(layer.rotate, np.eye(2))
        and np.allclose(layer.shear, 0)
        and np.allclose(layer.affine.affine_matrix, np.eye(3))
    )
    if plain:
        return {"scale": tuple(scale * factor), "translate": tuple(translate + scale * (factor - 1) / 2)}
    from napari.utils.transforms import CompositeAffine

    data_to_physical = CompositeAffine(
        scale=layer.scale, translate=layer.translate, rotate=layer.rotate, shear=layer.shear, ndim=2
    )
    resample = np.eye(3)
    resample[:2, :2] = np.diag(factor)
    resample[:2, 2] = (factor - 1) / 2
    return {"affine": layer.affine.affine_matrix @ data_to_physical.affine_matrix @ resample}


def result_layer_kwargs(content: Image, image: np.ndarray, name: str, metadata: dict[str, Any]) -> dict[str, Any]:
    """Everything ``viewer.add_image`` needs for a snapshot or result of ``content``."""
    kwargs: dict[str, Any] = {"name": name, "metadata": {"style_transfer": metadata}}
    kwargs.update(placement(content, image.shape[:2]))
    if image.ndim == 3:
        kwargs["rgb"] = True
    else:
        kwargs.update(colormap=content.colormap.name, contrast_limits=(0.0, 1.0))
    return kwargs
