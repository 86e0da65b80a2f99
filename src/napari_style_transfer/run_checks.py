"""Checks of a run that need more than its options: before any work (called by the planner,
``api.plan``), the label image of ``style_regions`` and the working shapes of a run that
would be slow for nothing; while it runs, first steps that lower nothing. No torch, napari
or Qt.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .errors import StyleTransferError
from .options import StyleOptions, min_side_for_layers

#: A style enlarged beyond its own size to more than this many times the pixels of the
#: content's working image is warned about: its features are computed at that size, in time
#: and memory that grow with its pixels, for no detail the style image has.
STYLE_PIXELS_WARNED = 16


def label_image(labels: Any) -> np.ndarray:
    """``style_regions`` as an array (itself when it is one); :class:`StyleTransferError`
    when it cannot be read as one, as a ragged nested list cannot."""
    if isinstance(labels, np.ndarray):
        return labels
    try:
        return np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StyleTransferError(
            f"style_regions cannot be read as a label image ({reason}); give an integer array "
            "of the content's shape (H, W), such as a napari Labels layer's data"
        ) from None


def warn_of_enlarged_styles(
    content: tuple[int, int], styles: tuple[tuple[int, int], ...], finest: Any, options: StyleOptions
) -> None:
    """Warn about each style that the run enlarges past its own size to more than
    ``STYLE_PIXELS_WARNED`` times the content's working pixels. ``content`` and ``styles``:
    the shapes given (pixels); ``finest``: the schedule's last level (its ``content_shape``
    and ``style_shapes``). It happens when a small content is enlarged to the working size:
    ``style_scale`` is relative to the content, so the style is enlarged with it."""
    content_shape = finest.content_shape
    if max(content_shape) <= max(content):
        return  # a style enlarged by a large style_scale alone is what was asked for
    content_pixels = content_shape[0] * content_shape[1]
    scales = options.style_scales(len(styles))
    size = max(*content, min_side_for_layers(options.layers))  # the content's own, if the layers allow
    for number, (style, shape, scale) in enumerate(zip(styles, finest.style_shapes, scales, strict=True), 1):
        enlarged = max(shape) / max(style)
        times = shape[0] * shape[1] / content_pixels
        if enlarged <= 1 or times <= STYLE_PIXELS_WARNED:
            continue
        role = "the style" if len(styles) == 1 else f"style {number}"
        warnings.warn(
            f"{role} is enlarged {enlarged:.3g}-fold, to {shape[0]}x{shape[1]} px ({times:.0f} times the "
            f"pixels of the content's working image, {content_shape[0]}x{content_shape[1]}), because the "
            f"{content[0]}x{content[1]} px content is enlarged to the working size and style_scale is "
            f"relative to it: the run is slower than it needs to be; use a size near the content's own "
            f"({size} px) or style_scale {scale / enlarged:.3g} (the style at its own size)",
            stacklevel=4,  # the caller of iter_stylize
        )


#: A frame whose loss has not moved after this many L-BFGS steps at a size is warned about.
STALLED_STEPS = 3


def warned_when_stalled(records: Iterator[Any], options: StyleOptions) -> Iterator[Any]:
    """A run's records passed through, with one warning as soon as the first
    ``STALLED_STEPS`` L-BFGS steps of a frame at a size all leave its loss where it started:
    no point of the line search (12 halvings of the first step) lowered it, every later step
    repeats that search in vain (the same objective from the same image), slowly, and the
    result is the start image. Closing the
    iterator closes ``records``."""
    # Adam moves at every step; the sliced loss draws new projections each step, so a step
    # that lowered nothing says nothing of the next
    if options.optimizer != "lbfgs" or options.style_loss == "sliced":
        yield from records
        return
    unmoved: dict[tuple[Any, int], tuple[float, int]] = {}  # (frame, size) -> (loss, steps)
    warned = False
    try:
        for record in records:
            losses = getattr(record, "losses", None)
            if not warned and losses is not None and getattr(record, "frame", None) is not None:
                key = (record.frame, record.size)
                loss, steps = unmoved.get(key, (losses.total, 0))
                unmoved[key] = (loss, steps + 1) if losses.total == loss else (math.nan, 0)
                if unmoved[key][1] == STALLED_STEPS and loss > 0:
                    warnings.warn(_stalled_message(options), stacklevel=2)
                    warned = True
            yield record
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


def _stalled_message(options: StyleOptions) -> str:
    return (
        "no L-BFGS step lowers the loss from the start image: the result will be the start image, "
        "after a slow run (every step searches in vain); the weights hold the start in place "
        f"(content_weight {options.content_weight:g}, style_weight {options.style_weight:g}, "
        f"tv_weight {options.tv_weight:g}): raise style_weight or lower content_weight (their "
        "ratio sets the strength: 1e4 is subtle), or use optimizer='adam'"
    )
