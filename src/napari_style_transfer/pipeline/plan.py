"""The checked plan of a run: options, inputs, coarse-to-fine levels, device, regions.

Everything a user can get wrong is refused here, before any weights load, with a
:class:`StyleTransferError` that says what was wrong and how to fix it.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import run_checks
from .._image import ImageInput, describe_image, working_shape
from ..engine import resolve_device
from ..errors import StyleTransferError, WeightsError
from ..options import WEIGHTS_MODES, StyleOptions, _deepest, min_side_for_layers, schedule_sizes
from .memory_checks import check_memory


@dataclass(frozen=True)
class Level:
    """One size of a coarse-to-fine schedule."""

    content_shape: tuple[int, int]
    style_shapes: tuple[tuple[int, int], ...]  # one per style
    steps: int


@dataclass(frozen=True)
class Regions:
    """``style_regions`` checked: one label image for every frame or one per frame, and the
    labels of each label image too small to keep (styled as label 0)."""

    labels: np.ndarray  # the caller's array, never modified: (h, w) or the stack's shape + (h, w)
    per_frame: bool
    dropped: dict[tuple[int, ...], frozenset[int]]  # label image index -> labels dropped

    def at(self, frame: tuple[int, ...], shape: tuple[int, int]) -> np.ndarray:
        """The labels of ``frame`` resized to ``shape`` by nearest neighbour, dropped ones 0."""
        index = frame if self.per_frame else ()
        labels = _nearest(np.asarray(self.labels[index]), shape).astype(np.int64)
        for label in self.dropped.get(index, ()):
            labels[labels == label] = 0
        return labels

    def described(self) -> dict[str, Any]:
        present = np.unique(np.asarray(self.labels)).tolist()
        dropped = sorted(set().union(*self.dropped.values())) if self.dropped else []
        return {"shape": list(self.labels.shape), "labels": [int(v) for v in present], "dropped": dropped}


@dataclass(frozen=True)
class Plan:
    """Everything decided before a run starts."""

    options: StyleOptions
    content: ImageInput
    styles: tuple[ImageInput, ...]
    levels: tuple[Level, ...]  # coarse to fine; the last is the working size
    scale: float  # working size / content size
    device: torch.device
    regions: Regions | None = None

    @property
    def content_shape(self) -> tuple[int, int]:
        return self.levels[-1].content_shape

    @property
    def style_shapes(self) -> tuple[tuple[int, int], ...]:
        return self.levels[-1].style_shapes

    @property
    def largest_style(self) -> tuple[int, int]:
        """The working size's largest style shape (the one that needs the most memory)."""
        return max(self.style_shapes, key=lambda shape: shape[0] * shape[1])


def plan(content: Any, style: Any, *, style_regions: Any = None, **options: Any) -> Plan:
    """Check everything that can be checked before a run; raise StyleTransferError if wrong."""
    opts = StyleOptions.from_kwargs(options)
    content_in = describe_image(content, "content")
    styles = _style_list(style)
    styles_in = tuple(
        describe_image(image, "style" if len(styles) == 1 else f"style {number}", allow_stack=False)
        for number, image in enumerate(styles, start=1)
    )
    _check_styles(opts, len(styles_in), style_regions is not None)
    levels = _levels(opts, content_in.shape, tuple(s.shape for s in styles_in))
    content_shape = levels[-1].content_shape
    style_shape = max(levels[-1].style_shapes, key=lambda shape: shape[0] * shape[1])
    regions = (
        None
        if style_regions is None
        else _check_regions(style_regions, content_in, len(styles_in), content_shape, opts)
    )
    scale = max(content_shape) / max(content_in.shape)
    if opts.weights not in WEIGHTS_MODES and not os.path.isfile(os.path.expanduser(opts.weights)):
        problem = "is a folder" if os.path.isdir(os.path.expanduser(opts.weights)) else "does not exist"
        raise WeightsError(
            f"weights file {opts.weights} {problem}; give an existing .pth file or one of {', '.join(WEIGHTS_MODES)}"
        )
    device = resolve_device(opts.device)
    check_memory(content_in, content_shape, style_shape, opts, device, regions is not None)
    run_checks.warn_of_enlarged_styles(content_in.shape, tuple(s.shape for s in styles_in), levels[-1], opts)
    return Plan(opts, content_in, styles_in, levels, scale, device, regions)


def _style_list(style: Any) -> list[Any]:
    """``style`` as a list of images: a list or tuple is several, anything else one."""
    if isinstance(style, list | tuple):
        if not style:
            raise StyleTransferError("the style list is empty: give at least one style image")
        return list(style)
    return [style]


def _check_styles(opts: StyleOptions, count: int, regions: bool) -> None:
    if opts.style_blend and len(opts.style_blend) != count:
        raise StyleTransferError(
            f"style_blend has {len(opts.style_blend)} weight{'s' if len(opts.style_blend) != 1 else ''} "
            f"but there {'is 1 style' if count == 1 else f'are {count} styles'}: give one weight per style"
        )
    if opts.style_blend and regions:
        raise StyleTransferError(
            "style_blend mixes the styles over the whole image, but with style_regions each region takes "
            "its own style: leave out style_blend"
        )
    if isinstance(opts.style_scale, tuple) and len(opts.style_scale) != count:
        raise StyleTransferError(
            f"style_scale has {len(opts.style_scale)} values but there {'is 1 style' if count == 1 else f'are {count} styles'}: "
            "give one value for all or one per style"
        )


def _check_regions(
    labels: Any, content: ImageInput, styles: int, content_shape: tuple[int, int], opts: StyleOptions
) -> Regions:
    """``style_regions`` checked against the content and the styles; labels too small for
    one position of the deepest style layer are warned about and dropped (become 0)."""
    array = run_checks.label_image(labels)
    if array.dtype == bool:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise StyleTransferError(
            f"style_regions must be an integer label image (such as a napari Labels layer), got dtype {array.dtype}"
        )
    per_frame = _regions_per_frame(array, content)
    low, high = int(array.min()), int(array.max())
    if low < 0:
        raise StyleTransferError(
            f"style_regions has label {low}; labels are 0 (content only) or 1..{styles} (a style)"
        )
    if high > styles:
        raise StyleTransferError(
            f"style_regions has label {high} but there {'is 1 style' if styles == 1 else f'are {styles} styles'}: "
            f"label k takes the k-th style, so labels must be 0..{styles}; give more styles or relabel"
        )
    dropped = _small_labels(array, styles, content_shape, opts)
    return Regions(labels if isinstance(labels, np.ndarray) else array, per_frame, dropped)


def _regions_per_frame(array: np.ndarray, content: ImageInput) -> bool:
    """Whether ``array`` holds one label image per frame; refuses a shape or an aspect ratio
    that fits neither one label image nor one per frame."""
    stack = content.stack_shape
    if array.ndim == 2:
        per_frame = False
    elif array.ndim == len(stack) + 2 and array.shape[:-2] == stack:
        per_frame = bool(stack)
    else:
        raise StyleTransferError(
            f"style_regions has shape {array.shape}; give one label image (H, W) or one per frame "
            f"{stack + ('H', 'W')} for a content of shape {stack + content.shape}"
        )
    h, w = array.shape[-2:]
    height, width = content.shape
    if h == 0 or w == 0 or abs(h * width - w * height) > max(h, w, height, width):
        raise StyleTransferError(
            f"style_regions is {h}x{w} px but the content is {height}x{width} px: their aspect ratios differ; "
            "give a label image of the content's shape (any size)"
        )
    return per_frame


def _small_labels(
    array: np.ndarray, styles: int, content_shape: tuple[int, int], opts: StyleOptions
) -> dict[tuple[int, ...], frozenset[int]]:
    """The labels of each label image that cover less than one position of the deepest
    style layer, warned about."""
    h, w = array.shape[-2:]
    pools = int(math.log2(_min_side(opts.style_layers)))
    deepest = (content_shape[0] >> pools) * (content_shape[1] >> pools)  # positions of that layer
    dropped = {}
    for index in np.ndindex(*array.shape[:-2]):
        counts = np.bincount(np.asarray(array[index]).ravel().astype(np.int64), minlength=styles + 1)
        small = frozenset(
            label for label in range(1, styles + 1) if counts[label] > 0 and counts[label] * deepest < h * w
        )
        if small:
            where = f" (label image {index})" if index else ""
            warnings.warn(
                f"style_regions label{'s' if len(small) > 1 else ''} {', '.join(map(str, sorted(small)))}{where} "
                f"cover{'s' if len(small) == 1 else ''} less than one position of the deepest style layer "
                f"({_deepest(opts.style_layers)}) and are styled as label 0: enlarge them or use a larger size",
                stacklevel=5,
            )
            dropped[tuple(index)] = small
    return dropped


def _nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``labels`` (h, w) resized to ``shape`` by nearest neighbour (pixel centres)."""
    h, w = labels.shape
    if (h, w) == tuple(shape):
        return labels
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


#: Share of the steps each level of a coarse-to-fine schedule gets, coarse to fine. Three levels:
#: steps at the middle size bought nothing measurable, so they go to the coarsest, where a step
#: costs 1/16 of a full-size one, and the full size starts after 11 instead of 27 full-size steps'
#: worth at 300 steps; a run costs what 25/25/50% did (docs/benchmarks.md, "Fewer steps").
STEP_SHARES = {1: (1.0,), 2: (0.4, 0.6), 3: (0.411, 0.051, 0.538)}


def _levels(
    opts: StyleOptions, content: tuple[int, int], styles: tuple[tuple[int, int], ...]
) -> tuple[Level, ...]:
    """The schedule's sizes with their shapes and steps; an ``auto`` schedule drops levels
    too small for the layers, an explicit one is refused."""
    layers = opts.content_layers + opts.style_layers
    levels = []
    for size in schedule_sizes(opts.schedule, opts.size):
        content_shape = working_shape(*content, size)
        style_shapes = []
        for style, style_scale in zip(styles, opts.style_scales(len(styles)), strict=True):
            factor = max(content_shape) / max(content) * style_scale
            style_shapes.append((max(1, round(style[0] * factor)), max(1, round(style[1] * factor))))
        smallest = min(min(shape) for shape in style_shapes)
        fits = min(content_shape) >= _min_side(layers) and smallest >= _min_side(opts.style_layers)
        if size != opts.size and opts.schedule == "auto" and not fits:
            continue
        _check_large_enough(content_shape, layers, "content", at=size)
        for number, style_shape in enumerate(style_shapes, start=1):
            role = "style" if len(styles) == 1 else f"style {number}"
            _check_large_enough(
                style_shape, opts.style_layers, role, hint=" or a larger style_scale", at=size
            )
        levels.append((content_shape, tuple(style_shapes)))
    levels = levels[-opts.steps :]  # fewer steps than levels: keep the finest
    shares = STEP_SHARES.get(len(levels)) or (1.0 / len(levels),) * len(levels)
    steps = [max(1, int(opts.steps * share)) for share in shares[:-1]]
    steps.append(opts.steps - sum(steps))  # at least 1 once there are as many steps as levels
    return tuple(Level(c, s, n) for (c, s), n in zip(levels, steps, strict=True))


def _min_side(layers: tuple[str, ...]) -> int:
    return min_side_for_layers(layers) if layers else 1


def _check_large_enough(
    shape: tuple[int, ...], layers: tuple[str, ...], role: str, hint: str = "", at: int | None = None
) -> None:
    if not layers:
        return
    needed = min_side_for_layers(layers)
    if min(shape) < needed:
        where = "the working size" if at is None else f"size {at}"
        raise StyleTransferError(
            f"the {role} image would be {shape[0]}x{shape[1]} px at {where}, too small for "
            f"the chosen layers: its shorter side must be at least {needed} px; use a larger "
            f"size{hint}, or shallower layers"
        )
