"""numpy images in, numpy images out: checks, value scaling, channels, stacks, alpha.

No torch here. An input is checked once as a whole (:func:`describe_image`), then handed to
the engine one 2D frame at a time (:meth:`ImageInput.frame`), so a long stack or a huge
slide is never converted to float32 all at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import numpy as np

from .errors import StyleTransferError

#: Rec. 601 luma, to turn a styled RGB image back into grey.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

#: A last axis shorter than this (and than the two before it) is taken for channels, not width.
MIN_WIDTH = 16

SHAPES_HINT = (
    "give H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA), or a stack of those "
    "(N x H x W, N x H x W x 3, ...)"
)


@dataclass(frozen=True)
class PreparedImage:
    """One 2D frame as float32 RGB in [0, 1], with what is needed to give it back."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None  # (H, W) float32 in [0, 1], carried through unchanged
    grey: bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.rgb.shape[0], self.rgb.shape[1]


class FrameSource(Protocol):
    """An image or stack read a frame at a time (see :func:`is_frame_source`)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def ndim(self) -> int: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def value_range(self) -> tuple[float, float]: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class ImageInput:
    """A checked input image or stack; the data itself is left untouched."""

    data: np.ndarray | FrameSource  # a frame source is read only by frame()
    role: str
    channels: str  # "grey", "rgb" or "rgba"
    low: float  # value mapped to 0
    high: float  # value mapped to 1
    scaling: str  # how values map to [0, 1], in words
    alpha_as_is: bool = True  # float alpha already within [0, 1]: taken as it is

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Shape of the leading (stack) axes; () for a single 2D image."""
        spatial = self.data.ndim - (0 if self.channels == "grey" else 1)
        return self.data.shape[: spatial - 2]

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one frame."""
        spatial = self.data.ndim - (0 if self.channels == "grey" else 1)
        return self.data.shape[spatial - 2], self.data.shape[spatial - 1]

    @property
    def grey(self) -> bool:
        return self.channels == "grey"

    def value_scale(self) -> ValueScale:
        """How this input's values were mapped to [0, 1], to give a result back in them."""
        rgba = self.channels == "rgba"
        return ValueScale(np.dtype(self.data.dtype), self.low, self.high, rgba, self.alpha_as_is)

    def frames(self) -> Iterator[tuple[int, ...]]:
        """Indices of every 2D frame, in order (one empty tuple for a 2D image)."""
        return iter(np.ndindex(*self.stack_shape)) if self.stack_shape else iter([()])

    def frame(self, index: tuple[int, ...] = (), longest_side: int | None = None) -> PreparedImage:
        """Frame ``index`` as float RGB in [0, 1]. With ``longest_side``, a frame more than
        twice that size is first shrunk by an integer block mean, to save memory."""
        data = self.data if isinstance(self.data, np.ndarray) and not index else self.data[index]
        factor = 1
        if longest_side is not None:
            factor = max(1, int(max(self.shape) // (2 * longest_side)))
        colour, alpha = (data, None) if self.channels != "rgba" else (data[..., :3], data[..., 3])
        values = _block_mean(colour, factor, self.map)
        if alpha is not None:
            alpha = _block_mean(alpha, factor, self.unit_alpha)
        rgb = np.repeat(values[..., None], 3, axis=-1) if self.grey else values
        return PreparedImage(np.ascontiguousarray(rgb, dtype=np.float32), alpha, self.grey)

    def unit_alpha(self, alpha: np.ndarray) -> np.ndarray:
        """Integer alpha by its dtype's maximum (65535 is opaque in uint16); float alpha as
        it is when within [0, 1], else like the colour (so 0..255 floats give 0..1 for both)."""
        if np.issubdtype(self.data.dtype, np.integer):
            return alpha.astype(np.float32) / float(np.iinfo(self.data.dtype).max)
        if self.alpha_as_is:
            return np.clip(alpha.astype(np.float32), 0.0, 1.0)
        return self.map(alpha)

    def map(self, values: np.ndarray) -> np.ndarray:
        """``values`` (raw, any shape) mapped from low..high to float32 in [0, 1], clipped."""
        if self.low == 0.0 and self.high == 1.0 and values.dtype == np.float32:
            return np.clip(values, 0.0, 1.0)
        mapped = values.astype(np.float64)  # a copy: float32 cannot hold every range (1e300 - -1e300)
        low, span = self.low, self.high - self.low
        if not math.isfinite(span):  # -1.7e308..1.7e308: the span overflows float64, its halves do not
            mapped /= 2.0
            low, span = low / 2.0, self.high / 2.0 - self.low / 2.0
        mapped -= low
        mapped /= span
        return np.clip(mapped, 0.0, 1.0, out=mapped).astype(np.float32)


@dataclass(frozen=True)
class ValueScale:
    """An input's dtype and the values :meth:`ImageInput.frame` mapped to 0 and 1: small and
    picklable, so that it travels back from a batch worker with the result."""

    dtype: np.dtype
    low: float  # value mapped to 0
    high: float  # value mapped to 1
    rgba: bool  # the last channel is alpha, mapped as ImageInput.unit_alpha maps it
    alpha_as_is: bool = True

    def to_own_units(self, image: np.ndarray) -> np.ndarray:
        """A [0, 1] result (or stack) in the input's units and dtype: ``low`` at 0, ``high``
        at 1, linear between; integers rounded and clipped to the dtype's range (bool: True
        from above 0.5), floats in the input's float dtype; alpha back as it was read."""
        unit = np.clip(image, 0.0, 1.0).astype(np.float64)
        # low * (1 - x) + high * x: no overflow even where high - low does (-1.7e308..1.7e308)
        values = self.low * (1.0 - unit) + self.high * unit
        if self.rgba:
            alpha = unit[..., 3]
            if self.dtype.kind in "iu":
                values[..., 3] = alpha * float(np.iinfo(self.dtype).max)
            elif self.alpha_as_is:
                values[..., 3] = alpha
        if self.dtype.kind == "f":
            return values.astype(self.dtype)
        info = np.iinfo(self.dtype) if self.dtype.kind != "b" else None
        bottom, top = (0, 1) if info is None else (info.min, info.max)
        # float(2**63 - 1) rounds up to 2**63, which no longer fits in int64
        ceiling = float(top) if float(top) <= top else float(np.nextafter(float(top), 0.0))
        return np.clip(np.rint(values), float(bottom), ceiling).astype(self.dtype)


def describe_image(array: object, role: str, allow_stack: bool = True) -> ImageInput:
    """Check an input image (or stack) and decide how its values map to [0, 1].

    The last axis is colour when it has 3 (RGB) or 4 (RGBA) entries; otherwise the image is
    grey. Axes before the last two spatial ones are a stack (Z, T, or channels shown as
    separate images), stylized frame by frame. Values map to [0, 1] by the dtype's range for
    uint8 and bool, as they are for floats already within [0, 1], and by the data's own range
    (its minimum to maximum, over the whole stack) for everything else: uint16, other
    integers, floats outside [0, 1].
    """
    data: np.ndarray | FrameSource = array if is_frame_source(array) else _as_array(array, role)
    data, channels = _checked_shape(data, role, allow_stack)
    if not isinstance(data, np.ndarray):
        return _describe_frame_source(data, role, channels)
    return _described_array(data, role, channels)


def _checked_shape(
    data: np.ndarray | FrameSource, role: str, allow_stack: bool
) -> tuple[np.ndarray | FrameSource, str]:
    """``data`` without a trailing axis of one channel, and its channels: "grey", "rgb" or
    "rgba"; a dtype or shape that is no image is refused."""
    if data.dtype.kind not in "biuf":
        raise StyleTransferError(
            f"the {role} image has dtype {data.dtype}; give a numeric (integer or float) array"
        )
    if data.ndim >= 3 and data.shape[-1] == 1:
        data = data[..., 0]
    channels = "grey"
    if data.ndim >= 3 and data.shape[-1] in (3, 4):
        channels = "rgb" if data.shape[-1] == 3 else "rgba"
    elif data.ndim >= 3 and data.shape[-1] < min(MIN_WIDTH, *data.shape[-3:-1]):
        # (H, W, 2) would otherwise be read as H frames of W x 2 pixels: garbage, silently
        raise StyleTransferError(
            f"the {role} image has shape {data.shape}: its last axis ({data.shape[-1]}) looks like "
            "channels, but only 3 (RGB) or 4 (RGBA) channels can come last; to style each channel "
            "as a grey image, put the channels first: np.moveaxis(image, -1, 0)"
        )
    spatial = data.ndim - (0 if channels == "grey" else 1)
    if spatial < 2 or (spatial > 2 and not allow_stack):
        wanted = (
            SHAPES_HINT
            if allow_stack
            else "give one 2D image: H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA)"
        )
        raise StyleTransferError(f"the {role} image has shape {data.shape}; {wanted}")
    if math.prod(data.shape) == 0:
        raise StyleTransferError(f"the {role} image is empty (shape {data.shape})")
    return data, channels


def _described_array(data: np.ndarray, role: str, channels: str) -> ImageInput:
    """An in-memory image's description: its values checked and their range decided."""
    colour = data if channels != "rgba" else data[..., :3]
    # min and max are NaN if any value is, and infinite if any is: no whole-size mask needed
    alpha = None
    if channels == "rgba" and data.dtype.kind == "f":
        alpha = (float(data[..., 3].min()), float(data[..., 3].max()))
    mapping = value_mapping(data.dtype, (float(colour.min()), float(colour.max())), alpha, role)
    return ImageInput(data, role, channels, *mapping)


def value_mapping(
    dtype: np.dtype, colour: tuple[float, float], alpha: tuple[float, float] | None, role: str
) -> tuple[float, float, str, bool]:
    """How an image's values map to [0, 1] (see :func:`describe_image`), from its dtype and
    its lowest and highest colour values (and float alpha's, else None): (low, high, scaling
    in words, alpha_as_is). NaN, infinite and constant images are refused."""
    if not all(math.isfinite(value) for value in (*colour, *(alpha or ()))):
        raise StyleTransferError(
            f"the {role} image contains NaN or infinite values; replace them (e.g. np.nan_to_num) first"
        )
    if colour[1] == colour[0]:
        raise StyleTransferError(
            f"the {role} image is constant (every value is {colour[0]:g}); style transfer needs an image with some contrast"
        )
    low, high, scaling = _value_range(np.dtype(dtype), *colour)
    alpha_as_is = alpha is None or (alpha[0] >= 0.0 and alpha[1] <= 1.0)
    return low, high, scaling, alpha_as_is


def is_frame_source(array: object) -> TypeGuard[FrameSource]:
    """Whether ``array`` is read a frame at a time rather than as a whole.

    A frame source (a lazy napari layer, say) has ``shape``, ``dtype`` and ``ndim``, gives
    one frame as a numpy array for ``source[index]`` (``index`` a tuple over the leading
    axes, ``()`` for a whole 2D image) and declares ``value_range``, the values that map to
    0 and 1, so that nothing has to read all of it first. Optional: ``scaling`` (that mapping
    in words) and ``alpha_as_is`` (float alpha already within [0, 1]; assumed if absent).
    Finiteness is the source's to check, frame by frame, as frames are read."""
    return (
        not isinstance(array, np.ndarray) and hasattr(array, "value_range") and hasattr(array, "__getitem__")
    )


def _describe_frame_source(source: FrameSource, role: str, channels: str) -> ImageInput:
    low, high = (float(value) for value in source.value_range)
    if not high > low:
        raise StyleTransferError(
            f"the {role} image maps values {low:g}..{high:g} to 0..1; give a range whose top is above its bottom"
        )
    scaling = getattr(source, "scaling", f"declared range {low:g}..{high:g}")
    return ImageInput(source, role, channels, low, high, scaling, bool(getattr(source, "alpha_as_is", True)))


def _as_array(array: object, role: str) -> np.ndarray:
    """``array`` as numpy without copying where it can; a torch tensor (one that needs a
    gradient, on a GPU, bfloat16) as a copy of its values on the CPU, the tensor untouched."""
    try:
        if type(array).__module__.partition(".")[0] == "torch" and hasattr(array, "detach"):
            tensor = array.detach().cpu()
            if str(tensor.dtype) == "torch.bfloat16":  # numpy has no bfloat16
                tensor = tensor.float()
            return tensor.numpy()
        return np.asarray(array)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as error:
        raise StyleTransferError(
            f"the {role} image cannot be read as an array ({error}); give a numpy array or a torch tensor"
        ) from None


def _value_range(dtype: np.dtype, low: float, high: float) -> tuple[float, float, str]:
    if dtype == np.uint8:
        return 0.0, 255.0, "dtype range 0..255"
    if dtype == np.bool_:
        return 0.0, 1.0, "dtype range False..True"
    if dtype.kind == "f" and low >= 0.0 and high <= 1.0:
        return 0.0, 1.0, "float values taken as they are (already in 0..1)"
    return low, high, f"data range {low:g}..{high:g}"


def _block_mean(
    data: np.ndarray, factor: int, to_unit: Callable[[np.ndarray], np.ndarray], chunk_values: int = 2**21
) -> np.ndarray:
    """``to_unit`` (values to float32 in [0, 1]) of ``data``, averaged over ``factor`` x
    ``factor`` blocks of the first two axes, a band of rows at a time (at most about
    ``chunk_values`` values in flight). Mapping before averaging keeps huge float64 values
    (1e308) from overflowing float32."""
    if factor <= 1:
        return to_unit(data)
    height, width = (data.shape[0] // factor) * factor, (data.shape[1] // factor) * factor
    out = np.empty((height // factor, width // factor, *data.shape[2:]), dtype=np.float32)
    values_per_row = width * int(np.prod(data.shape[2:], dtype=int))
    band = max(1, chunk_values // (values_per_row * factor)) * factor
    for top in range(0, height, band):
        chunk = to_unit(np.asarray(data[top : min(top + band, height), :width]))
        rows = chunk.shape[0] // factor
        blocks = chunk.reshape(rows, factor, width // factor, factor, *data.shape[2:])
        out[top // factor : top // factor + rows] = blocks.mean(
            axis=(1, 3), dtype=np.float64
        )  # float32 sums drift
    return out


def finish_image(rgb: np.ndarray, grey: bool, alpha: np.ndarray | None) -> np.ndarray:
    """Turn a styled (H, W, 3) float image back into the input's kind: grey in, grey out;
    RGBA in, RGBA out (with ``alpha``, the input's alpha at the working size)."""
    rgb = np.clip(rgb, 0.0, 1.0).astype(np.float32, copy=False)
    if grey:
        return np.clip(rgb @ LUMA, 0.0, 1.0).astype(np.float32)
    if alpha is not None:
        return np.concatenate([rgb, alpha[..., None].astype(np.float32)], axis=-1)
    return rgb


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float (H, W) or (H, W, C) image to ``shape`` (H, W), a channel at
    a time (no torch: for the GUI and command-line sides)."""
    from PIL import Image

    if image.shape[:2] == tuple(shape):
        return image
    size = (shape[1], shape[0])
    if image.ndim == 2:
        return np.asarray(Image.fromarray(image.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    channels = [resize_image(image[..., c], shape) for c in range(image.shape[-1])]
    return np.stack(channels, axis=-1)


def working_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(H, W) scaled so that the longest side is ``size`` pixels, aspect kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[0, 1] float image to uint8, for PNG files."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def frame_count(stack_shape: tuple[int, ...]) -> int:
    return math.prod(stack_shape) if stack_shape else 1
