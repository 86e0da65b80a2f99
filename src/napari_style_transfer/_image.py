"""numpy images in, numpy images out: value scaling, channels and alpha (no torch here)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import StyleTransferError

#: Rec. 601 luma, to turn a styled RGB image back into grey.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class PreparedImage:
    """An input image as float32 RGB in [0, 1], with what is needed to give it back."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], carried through unchanged
    grey: bool  # the input had no channel axis (or one channel)
    scaling: str  # how the values were mapped to [0, 1], in words

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


def prepare_image(array: object, role: str) -> PreparedImage:
    """Check an input image and map it to float RGB in [0, 1].

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, of a bool, integer or
    float dtype. Values are mapped to [0, 1] by the dtype's range for uint8 and bool, taken as
    they are for floats already within [0, 1], and by the data's own range (minimum to
    maximum) for everything else (uint16, other integers, floats outside [0, 1]).
    """
    data = np.asarray(array)
    if data.dtype.kind not in "biuf":
        raise StyleTransferError(f"the {role} image has dtype {data.dtype}; give a numeric (integer or float) array")
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[-1] not in (3, 4)):
        raise StyleTransferError(
            f"the {role} image has shape {data.shape}; give H x W (grey), H x W x 3 (RGB) "
            "or H x W x 4 (RGBA)"
        )
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise StyleTransferError(f"the {role} image is empty (shape {data.shape})")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise StyleTransferError(
            f"the {role} image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first"
        )

    grey = data.ndim == 2
    alpha = None
    if not grey and data.shape[-1] == 4:
        data, alpha = data[..., :3], data[..., 3]
    values, scaling = _to_unit_range(data, role)
    if alpha is not None:
        alpha, _ = _to_unit_range(alpha, f"{role} alpha", allow_constant=True)
    rgb = np.repeat(values[..., None], 3, axis=-1) if grey else values
    return PreparedImage(np.ascontiguousarray(rgb, dtype=np.float32), alpha, grey, scaling)


def _to_unit_range(data: np.ndarray, role: str, allow_constant: bool = False) -> tuple[np.ndarray, str]:
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0, "dtype range 0..255"
    if data.dtype == np.bool_:
        return data.astype(np.float32), "dtype range False..True"
    low, high = float(data.min()), float(data.max())
    if data.dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return data.astype(np.float32), "float values taken as they are (already in 0..1)"
    if high == low:
        if allow_constant:
            return np.clip(data.astype(np.float32), 0.0, 1.0), "constant"
        raise StyleTransferError(
            f"the {role} image is constant (every value is {low:g}); style transfer needs an image "
            "with some contrast"
        )
    scaled = (data.astype(np.float64) - low) / (high - low)
    return scaled.astype(np.float32), f"data range {low:g}..{high:g}"


def finish_image(rgb: np.ndarray, prepared: PreparedImage, alpha: np.ndarray | None) -> np.ndarray:
    """Turn a styled (H, W, 3) float image back into the input's kind: grey in, grey out;
    RGBA in, RGBA out (with ``alpha``, the input's alpha at the working size)."""
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    if prepared.grey:
        return np.clip(rgb @ LUMA, 0.0, 1.0).astype(np.float32)
    if alpha is not None:
        return np.concatenate([rgb, alpha[..., None].astype(np.float32)], axis=-1)
    return rgb


def working_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longest side is ``size`` pixels, aspect kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image to uint8, for PNG files."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
