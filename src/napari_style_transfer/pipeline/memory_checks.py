"""Whether a run fits in the memory free now: the frames batched together, and the refusals
that say which size, style_scale or batch_frames would fit."""

from __future__ import annotations

import math

import torch

from .. import memory
from .._image import ImageInput, frame_count
from ..engine import LBFGS_HISTORY, free_memory_bytes
from ..errors import OutOfMemoryError
from ..options import StyleOptions
from .canvas import Canvas

#: Most frames batch_frames=0 (auto) puts in one batch on a GPU, and most working pixels
#: (16 frames of 256 px, 4 of 512, 1 of 1024): a batch exists to fill a GPU that small frames
#: leave idle; past that it only delays the first finished frames (docs/benchmarks.md).
AUTO_BATCH_LIMIT = 16
AUTO_BATCH_PIXELS = 2**20
#: batch_frames=0 (auto) on the CPU: frames go one at a time, because a run stopped in the
#: middle of a batch keeps only the frame it was reporting (docs/benchmarks.md, "Batched frames").
AUTO_BATCH_CPU = 1


def frames_per_batch(
    content: ImageInput,
    content_shape: tuple[int, int],
    style_shape: tuple[int, int],
    opts: StyleOptions,
    device: torch.device,
    regions: bool = False,
) -> int:
    """How many frames of a stack go through the network together: ``batch_frames``, or
    for 0 (auto) as many as the memory free now holds, at most AUTO_BATCH_LIMIT frames and
    AUTO_BATCH_PIXELS (on the CPU AUTO_BATCH_CPU). Always 1 for a time series, whose frames
    wait for each other, and with ``regions`` (style_regions), whose labels may differ from
    frame to frame."""
    frames = frame_count(content.stack_shape)
    if opts.frames == "time" or frames == 1 or regions:
        return 1
    if opts.batch_frames:
        return min(opts.batch_frames, frames)
    if device.type == "cpu":
        return min(AUTO_BATCH_CPU, frames)
    room = free_memory_bytes(device) * memory.HEADROOM
    if device.type != "cuda":  # MPS: the result shares the memory
        room -= result_bytes(content, content_shape, opts)
    most = min(AUTO_BATCH_LIMIT, frames, max(1, AUTO_BATCH_PIXELS // (content_shape[0] * content_shape[1])))
    fits = 1
    while fits < most and run_bytes(content_shape, style_shape, opts, fits + 1) <= room:
        fits += 1
    return fits


def run_bytes(
    content_shape: tuple[int, int], style_shape: tuple[int, int], opts: StyleOptions, batch: int
) -> int:
    """The working memory of a run with ``batch`` frames at once: the style goes through
    the network once per level and alone, the content frames together, each on its canvas."""
    canvas = Canvas.around(content_shape).shape(content_shape)
    return max(
        memory.estimate_bytes(canvas, opts.optimizer, LBFGS_HISTORY, batch),
        memory.estimate_bytes(style_shape, opts.optimizer, LBFGS_HISTORY),
    )


def result_bytes(content: ImageInput, content_shape: tuple[int, int], opts: StyleOptions) -> int:
    """The result's bytes (float32, every frame)."""
    channels = 4 if content.channels == "rgba" else 1 if content.grey and opts.keep_grey else 3
    return content_shape[0] * content_shape[1] * 4 * channels * frame_count(content.stack_shape)


def kept_bytes(content: ImageInput, content_shape: tuple[int, int], opts: StyleOptions) -> int:
    """What time passes keep in RAM beside the result (pipeline/time_passes.py): every frame's
    latest result on its canvas and its working-size content, float32 RGB."""
    if opts.frames != "time" or not opts.time_passes:
        return 0
    height, width = Canvas.around(content_shape, later_frame=True).shape(content_shape)
    return (height * width + content_shape[0] * content_shape[1]) * 3 * 4 * frame_count(content.stack_shape)


def check_memory(
    content: ImageInput,
    content_shape: tuple[int, int],
    style_shape: tuple[int, int],
    opts: StyleOptions,
    device: torch.device,
    regions: bool = False,
) -> None:
    """Refuse a run whose working images (``batch_frames`` frames of them at once), or whose
    result (kept in RAM, every frame of a stack, with what time passes keep), do not fit in
    the memory free now."""
    biggest = max(content_shape, style_shape, key=lambda shape: shape[0] * shape[1])
    batch = frames_per_batch(content, content_shape, style_shape, opts, device, regions)
    needed = run_bytes(content_shape, style_shape, opts, batch)
    free = free_memory_bytes(device)
    result = result_bytes(content, content_shape, opts) + kept_bytes(content, content_shape, opts)
    result_per_pixel = result // (content_shape[0] * content_shape[1])
    shared = device.type != "cuda"  # the run works in RAM (or MPS's unified memory) beside the result
    if needed > free * memory.HEADROOM and batch > 1:
        _refuse_batch(content_shape, style_shape, batch, needed, free, opts, device)
        needed = run_bytes(content_shape, style_shape, opts, 1)  # not even one frame fits
    if needed > free * memory.HEADROOM:
        _refuse_run(
            content_shape, style_shape, biggest, needed, free, opts, device, result_per_pixel if shared else 0
        )
    ram = free if shared else free_memory_bytes(torch.device("cpu"))
    room = ram * memory.HEADROOM - (needed if shared else 0)
    if result > room:
        _refuse_result(content, content_shape, opts, result, needed, ram, room, shared)


def _refuse_result(
    content: ImageInput,
    content_shape: tuple[int, int],
    opts: StyleOptions,
    result: int,
    needed: int,
    ram: int,
    room: float,
    shared: bool,
) -> None:
    """The result, kept in RAM, does not fit: say how many frames or which size would."""
    frames = frame_count(content.stack_shape)
    result_per_pixel = result // (content_shape[0] * content_shape[1])
    fits_frames = max(0, int(room // (result // frames)))
    aspect = min(content_shape) / max(content_shape)
    if shared:
        margin = Canvas.around(content_shape).margin  # the run works on a canvas this much larger
        fits = memory.largest_size(ram, aspect, opts.optimizer, LBFGS_HISTORY, result_per_pixel) - 2 * margin
    else:
        fits = memory.side_for_pixels(ram * memory.HEADROOM / result_per_pixel, aspect)
    advice = [f"style at most {fits_frames} frames at a time"] if 1 <= fits_frames < frames else []
    passes = opts.frames == "time" and opts.time_passes > 0
    if passes:
        advice.append("time_passes 0 (one forward pass keeps no frame but the last)")
    if 16 <= fits < max(content_shape):
        advice.append(f"use size {fits} or less")
    beside = f" beside the run's {memory.format_bytes(needed)}" if shared else ""
    what = "the result and what time passes keep of each frame" if passes else "the result"
    raise OutOfMemoryError(
        f"{what}, {frames} frame{'s' if frames > 1 else ''} of {content_shape[0]}x{content_shape[1]} px, needs "
        f"about {memory.format_bytes(result)}{beside} but the computer has {memory.format_bytes(ram)} of RAM free: "
        + (" or ".join(advice) if advice else "free some memory")
    )


def _refuse_batch(
    content_shape: tuple[int, int],
    style_shape: tuple[int, int],
    batch: int,
    needed: int,
    free: int,
    opts: StyleOptions,
    device: torch.device,
) -> None:
    """``batch_frames`` frames at once do not fit on ``device``: say how many would, if one does."""
    fits = max(
        (
            n
            for n in range(1, batch)
            if run_bytes(content_shape, style_shape, opts, n) <= free * memory.HEADROOM
        ),
        default=0,
    )
    if not fits:
        return  # not even one frame: _refuse_run says what would
    raise OutOfMemoryError(
        f"{batch} frames of {content_shape[0]}x{content_shape[1]} px at once need about {memory.format_bytes(needed)}, "
        f"more than the {memory.usable_of(free)} on {device}: use batch_frames {fits} or less (0 picks what fits)"
    )


def _refuse_run(
    content_shape: tuple[int, int],
    style_shape: tuple[int, int],
    biggest: tuple[int, int],
    needed: int,
    free: int,
    opts: StyleOptions,
    device: torch.device,
    result_per_pixel: int,
) -> None:
    """The run itself does not fit on ``device``: say which size or style_scale would."""
    margin = Canvas.around(content_shape).margin
    content_fits = (
        memory.estimate_bytes(Canvas(margin).shape(content_shape), opts.optimizer, LBFGS_HISTORY)
        <= free * memory.HEADROOM
    )
    if content_fits:  # the style, enlarged by style_scale, is what does not fit
        pixels = memory.largest_pixels(free, opts.optimizer, LBFGS_HISTORY)
        current = max(opts.style_scale) if isinstance(opts.style_scale, tuple) else opts.style_scale
        scale = _round_down(current * math.sqrt(pixels / (style_shape[0] * style_shape[1])))
        advice = f"use style_scale {scale:g} or less"
    else:
        aspect = min(content_shape) / max(content_shape)
        # the largest canvas that fits, less its margin
        fits = memory.largest_size(free, aspect, opts.optimizer, LBFGS_HISTORY, result_per_pixel) - 2 * margin
        advice = f"use size {fits} or less" if fits >= 16 else "free some memory or use another device"
        if fits >= 16 and biggest != content_shape:
            advice += " and a smaller style_scale"
    raise OutOfMemoryError(
        f"a {biggest[0]}x{biggest[1]} px run needs about {memory.format_bytes(needed)}, more than the "
        f"{memory.usable_of(free)} on {device}: {advice}"
    )


def _round_down(value: float, digits: int = 2) -> float:
    """``value`` cut (not rounded) to ``digits`` significant digits, so advice that says
    "x or less" is met by x itself."""
    unit = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return float(f"{math.floor(value / unit) * unit:.{digits}g}")
