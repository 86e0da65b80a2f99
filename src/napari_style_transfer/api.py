"""numpy in, numpy out: ``stylize`` and ``iter_stylize``."""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import memory, run_checks
from ._image import ImageInput, PreparedImage, describe_image, finish_image, frame_count, working_shape
from ._torch_compat import hide_triton
from .errors import OutOfMemoryError, StyleTransferError, WeightsError
from .options import WEIGHTS_MODES, StyleOptions, _deepest, min_side_for_layers, schedule_sizes

hide_triton()

import torch  # noqa: E402

from .engine import (  # noqa: E402
    LBFGS_HISTORY,
    Losses,
    StyleObjective,
    compute_dtype,
    evaluate,
    free_memory_bytes,
    initial_image,
    optimize,
    optimize_frames,
    precision_used,
    resize,
    resolve_device,
    with_backend_flags,
    with_content_colours,
)
from .frames import (  # noqa: E402
    WARP_MODE,
    FrameLink,
    anchored,
    fill_from_surroundings,
    held,
    link_frames,
    steps_owed,
    time_chains,
    warp,
)
from .lbfgs import CarriedCurvature  # noqa: E402
from .vgg import VGGFeatures  # noqa: E402
from .weights import load_vgg19_features  # noqa: E402


@dataclass
class StepRecord:
    """Progress after one optimiser step.

    ``image`` is filled on snapshot steps (every ``snapshot_every`` steps) and on the last
    step of each frame; on other steps call :meth:`render` before advancing the generator.
    For a stack, ``step`` counts within the current ``frame`` (``frame_number`` of ``frames``),
    and ``step == steps`` on a frame's last step (a time series' later frames have
    ``time_steps``). Frames styled together (``batch_frames``) step together: each step
    gives one record per frame of the batch, in frame order.
    """

    step: int  # 1-based, within the frame
    steps: int  # steps requested for this frame
    losses: Losses  # see engine.optimize for which image they belong to
    seconds: float  # since the run started (weights and model loading included)
    is_snapshot: bool
    device: str
    weights: str
    frame: tuple[int, ...] = ()  # index into the stack axes; () for a 2D image
    frame_number: int = 0  # 0-based position of the frame in the run
    frames: int = 1
    size: int = 0  # longest side of the image at this step (coarse-to-fine levels are smaller)
    image: np.ndarray | None = None  # this frame's image (2D), on snapshot and last steps
    steps_before: int = 0  # steps of the run done before this one, other than this frame's
    run_steps: int = 0  # steps of the whole run (0: frames * steps)
    _live: torch.Tensor | None = field(default=None, repr=False)
    _cursor: _Cursor | None = field(default=None, repr=False)
    _finish: Any = field(default=None, repr=False)
    _position: tuple[int, int] | None = field(default=None, repr=False)  # what the cursor says while live
    _batch: list[StepRecord] | None = field(default=None, repr=False)  # this step's records of the batch

    @property
    def progress(self) -> float:
        """Share of the whole run done, 0..1."""
        if not self.run_steps:
            return (self.frame_number * self.steps + self.step) / (self.frames * self.steps)
        return (self.steps_before + self.step) / self.run_steps

    def render(self) -> np.ndarray:
        """This step's image as numpy (same kind as the final result, one frame)."""
        if self.image is not None:
            return self.image
        position = self._position or (self.frame_number, self.step)
        if self._cursor is None or self._cursor.position != position:
            raise RuntimeError(
                f"the image of step {self.step} is gone: call render() before advancing the run"
            )
        self.image = self._finish(self._live)
        return self.image

    def kept_image(self) -> np.ndarray | None:
        """:meth:`render` if this step's image can still be had, else what the record kept
        (its image from a snapshot or last step, or None): for stopping between steps."""
        try:
            return self.render()
        except RuntimeError:  # the run went on past this record
            return self.image

    def batch_images(self) -> dict[tuple[int, ...], np.ndarray]:
        """This step's image of every frame that goes through the network with this one
        (``batch_frames``; this frame's own included), by frame index, as far as they can
        still be had: what a run stopped now has of its unfinished frames."""
        images = {}
        for record in self._batch or [self]:
            image = record.kept_image()
            if image is not None:
                images[record.frame] = image
        return images


@dataclass(frozen=True)
class StyleResult:
    """The outcome of a run: the image and everything needed to say how it was made."""

    image: np.ndarray  # float32 in [0, 1]; the content's stack shape + (H, W) or (H, W, 3|4)
    losses: Losses  # of the final image (the last frame, for a stack)
    steps_done: int  # per frame (a time series' first frames; see frame_steps)
    steps: int
    seconds: float
    device: str
    weights: str  # where the VGG19 weights came from, in words
    weights_kind: str  # imagenet, file or random
    options: StyleOptions
    content_scale: float  # working size / content size (multiply pixel spacing by 1/this)
    value_scaling: str  # how the content's values were mapped to [0, 1]
    frames: int = 1
    schedule: tuple[int, ...] = ()  # the sizes the run went through, coarse to fine
    frame_steps: tuple[int, ...] = ()  # steps of each frame, in run order
    styles: int = 1  # how many style images
    regions: dict[str, Any] | None = None  # style_regions described (shape, labels), not the labels
    precision: str = "fp32"  # what the convolutions computed in: bf16, tf32 or fp32 (what auto became)

    def metadata(self) -> dict[str, Any]:
        """Plain values describing the run, for layer metadata or PNG text chunks."""
        return {
            "weights": self.weights,
            "device": self.device,
            "precision": self.precision,
            "steps_done": self.steps_done,
            "frames": self.frames,
            "schedule": list(self.schedule),
            "seconds": round(self.seconds, 3),
            "losses": vars(self.losses).copy(),
            "content_scale": self.content_scale,
            "value_scaling": self.value_scaling,
            "options": self.options.to_dict(),
            "styles": self.styles,
            "style_regions": self.regions,
        }


@dataclass
class _Cursor:
    # (number of the batch's first frame, step) the live images belong to: every frame of a
    # batch can be rendered until the batch takes its next step
    position: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class _Level:
    """One size of a coarse-to-fine schedule."""

    content_shape: tuple[int, int]
    style_shapes: tuple[tuple[int, int], ...]  # one per style
    steps: int


@dataclass(frozen=True)
class _Plan:
    """Everything decided before a run starts."""

    options: StyleOptions
    content: ImageInput
    styles: tuple[ImageInput, ...]
    levels: tuple[_Level, ...]  # coarse to fine; the last is the working size
    scale: float  # working size / content size
    device: torch.device
    regions: _Regions | None = None

    @property
    def content_shape(self) -> tuple[int, int]:
        return self.levels[-1].content_shape

    @property
    def style_shapes(self) -> tuple[tuple[int, int], ...]:
        return self.levels[-1].style_shapes


@dataclass(frozen=True)
class _Regions:
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


def iter_stylize(
    content: Any, style: Any, *, style_regions: Any = None, **options: Any
) -> Iterator[StepRecord | StyleResult]:
    """Style transfer as a generator: one :class:`StepRecord` per step, then a :class:`StyleResult`.

    ``content`` is a numpy array: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, of any
    integer or float dtype, or a stack of those (leading axes such as Z, T or channels), which
    is stylized frame by frame. With ``frames="independent"`` (the default: Z slices,
    channels, unrelated images) each frame is styled as if alone. With ``frames="time"`` the
    first leading axis is time (further leading axes are independent series): each later
    frame starts from the previous frame's result warped by the optical flow between their
    contents and is kept near it where the flow is reliable (``temporal_weight``), for
    ``time_steps`` steps at the working size. ``style`` is one 2D image or a list of them,
    blended by ``style_blend`` (default equal), each at its ``style_scale``. ``style_regions``
    is an integer label image covering the content (any size of the content's aspect ratio,
    resized by nearest neighbour; for a stack one for all frames or one per frame, shaped
    like the stack): label k >= 1 takes the k-th style, label 0 only the content. See
    ``describe_image`` for how values map to [0, 1]. ``options`` are the fields of
    :class:`~napari_style_transfer.options.StyleOptions`.

    Options, images, device and memory are checked now, raising ``StyleTransferError``; the
    weights load on the first ``next()``. Stop early by leaving the loop or calling
    ``close()``: the last record still renders its image.
    """
    p = plan(content, style, style_regions=style_regions, **options)
    return run_checks.warned_when_stalled(_run(p), p.options)


def stylize(
    content: Any, style: Any, *, client: Any = None, style_regions: Any = None, **options: Any
) -> np.ndarray:
    """Style transfer of numpy images; returns the result as float32 in [0, 1].

    The result has the working size (longest side ``size``) and the content's kind: grey in,
    grey out (RGB with ``keep_grey=False``); RGB in, RGB out; RGBA in, RGBA out with the
    alpha carried through; a stack in, a stack out. Options are those of
    :func:`iter_stylize`; use it to see progress, snapshots and which weights were used.
    ``client``: a ``dask.distributed.Client`` whose workers each style some of a stack's
    frames (``frames="independent"``), giving what this process would give.
    """
    if client is not None:
        if style_regions is not None:
            raise StyleTransferError("style_regions cannot be used with client= yet: run without a client")
        from .distributed import stylize_on_cluster

        return stylize_on_cluster(client, content, style, **options)
    for item in iter_stylize(content, style, style_regions=style_regions, **options):
        if isinstance(item, StyleResult):
            return item.image
    raise AssertionError("iter_stylize ended without a result")  # pragma: no cover


def plan(content: Any, style: Any, *, style_regions: Any = None, **options: Any) -> _Plan:
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
    _check_memory(content_in, content_shape, style_shape, opts, device, regions is not None)
    run_checks.warn_of_enlarged_styles(content_in.shape, tuple(s.shape for s in styles_in), levels[-1], opts)
    return _Plan(opts, content_in, styles_in, levels, scale, device, regions)


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
) -> _Regions:
    """``style_regions`` checked against the content and the styles; labels too small for
    one position of the deepest style layer are warned about and dropped (become 0)."""
    array = run_checks.label_image(labels)
    if array.dtype == bool:
        array = array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise StyleTransferError(
            f"style_regions must be an integer label image (such as a napari Labels layer), got dtype {array.dtype}"
        )
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
    pools = int(math.log2(_min_side(opts.style_layers)))
    deepest = (content_shape[0] >> pools) * (
        content_shape[1] >> pools
    )  # positions of the deepest style layer
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
                stacklevel=3,
            )
            dropped[tuple(index)] = small
    return _Regions(labels if isinstance(labels, np.ndarray) else array, per_frame, dropped)


def _nearest(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``labels`` (h, w) resized to ``shape`` by nearest neighbour (pixel centres)."""
    h, w = labels.shape
    if (h, w) == tuple(shape):
        return labels
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[rows[:, None], cols[None, :]]


#: Share of the steps each level of a coarse-to-fine schedule gets, coarse to fine.
STEP_SHARES = {1: (1.0,), 2: (0.4, 0.6), 3: (0.25, 0.25, 0.5)}


def _levels(
    opts: StyleOptions, content: tuple[int, int], styles: tuple[tuple[int, int], ...]
) -> tuple[_Level, ...]:
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
    return tuple(_Level(c, s, n) for (c, s), n in zip(levels, steps, strict=True))


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


#: Most frames batch_frames=0 (auto) puts in one batch on a GPU, and most working pixels
#: (16 frames of 256 px, 4 of 512, 1 of 1024): a batch exists to fill a GPU that small frames
#: leave idle; past that it only delays the first finished frames. Not yet measured on a GPU
#: (benchmarks/gpu.py times batch_frames 1, 4, 16 and auto when one is lent).
AUTO_BATCH_LIMIT = 16
AUTO_BATCH_PIXELS = 2**20
#: batch_frames=0 (auto) on the CPU. Batches of 4 gave 1.4x (1 thread) to 2x (2 threads) the
#: frames per second at 64 and 128 px (docs/benchmarks.md, "Batched frames"), but a batch's
#: frames finish together, and a run stopped in the middle of a batch (Ctrl-C, Cancel) keeps
#: the finished frames and the one frame it was reporting, not the batch's other unfinished
#: frames: on the CPU, where stack runs are long and get stopped, frames go one at a time
#: unless batch_frames says otherwise.
AUTO_BATCH_CPU = 1


def _frames_per_batch(
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
        room -= _result_bytes(content, content_shape, opts)
    most = min(AUTO_BATCH_LIMIT, frames, max(1, AUTO_BATCH_PIXELS // (content_shape[0] * content_shape[1])))
    fits = 1
    while fits < most and _run_bytes(content_shape, style_shape, opts, fits + 1) <= room:
        fits += 1
    return fits


def _run_bytes(
    content_shape: tuple[int, int], style_shape: tuple[int, int], opts: StyleOptions, batch: int
) -> int:
    """The working memory of a run with ``batch`` frames at once: the style goes through
    the network once per level and alone, the content frames together."""
    return max(
        memory.estimate_bytes(content_shape, opts.optimizer, LBFGS_HISTORY, batch),
        memory.estimate_bytes(style_shape, opts.optimizer, LBFGS_HISTORY),
    )


def _result_bytes(content: ImageInput, content_shape: tuple[int, int], opts: StyleOptions) -> int:
    """The result's bytes (float32, every frame)."""
    channels = 4 if content.channels == "rgba" else 1 if content.grey and opts.keep_grey else 3
    return content_shape[0] * content_shape[1] * 4 * channels * frame_count(content.stack_shape)


def _check_memory(
    content: ImageInput,
    content_shape: tuple[int, int],
    style_shape: tuple[int, int],
    opts: StyleOptions,
    device: torch.device,
    regions: bool = False,
) -> None:
    """Refuse a run whose working images (``batch_frames`` frames of them at once), or whose
    result (kept in RAM, every frame of a stack), do not fit in the memory free now."""
    biggest = max(content_shape, style_shape, key=lambda shape: shape[0] * shape[1])
    batch = _frames_per_batch(content, content_shape, style_shape, opts, device, regions)
    needed = _run_bytes(content_shape, style_shape, opts, batch)
    free = free_memory_bytes(device)
    frames = frame_count(content.stack_shape)
    result = _result_bytes(content, content_shape, opts)
    result_per_pixel = result // (content_shape[0] * content_shape[1])
    shared = device.type != "cuda"  # the run works in RAM (or MPS's unified memory) beside the result
    if needed > free * memory.HEADROOM and batch > 1:
        _refuse_batch(content_shape, style_shape, batch, needed, free, opts, device)
        needed = _run_bytes(content_shape, style_shape, opts, 1)  # not even one frame fits
    if needed > free * memory.HEADROOM:
        _refuse_run(
            content_shape, style_shape, biggest, needed, free, opts, device, result_per_pixel if shared else 0
        )
    ram = free if shared else free_memory_bytes(torch.device("cpu"))
    room = ram * memory.HEADROOM - (needed if shared else 0)
    if result <= room:
        return
    fits_frames = max(0, int(room // (result // frames)))
    aspect = min(content_shape) / max(content_shape)
    if shared:
        fits = memory.largest_size(ram, aspect, opts.optimizer, LBFGS_HISTORY, result_per_pixel)
    else:
        fits = memory.side_for_pixels(ram * memory.HEADROOM / result_per_pixel, aspect)
    advice = [f"style at most {fits_frames} frames at a time"] if 1 <= fits_frames < frames else []
    if 16 <= fits < max(content_shape):
        advice.append(f"use size {fits} or less")
    beside = f" beside the run's {memory.format_bytes(needed)}" if shared else ""
    raise OutOfMemoryError(
        f"the result, {frames} frame{'s' if frames > 1 else ''} of {content_shape[0]}x{content_shape[1]} px, needs "
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
            if _run_bytes(content_shape, style_shape, opts, n) <= free * memory.HEADROOM
        ),
        default=0,
    )
    if not fits:
        return  # not even one frame: _refuse_run says what would
    raise OutOfMemoryError(
        f"{batch} frames of {content_shape[0]}x{content_shape[1]} px at once need about {memory.format_bytes(needed)} "
        f"but {device} has {memory.format_bytes(free)} free: use batch_frames {fits} or less (0 picks what fits)"
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
    content_fits = (
        memory.estimate_bytes(content_shape, opts.optimizer, LBFGS_HISTORY) <= free * memory.HEADROOM
    )
    if content_fits:  # the style, enlarged by style_scale, is what does not fit
        pixels = memory.largest_pixels(free, opts.optimizer, LBFGS_HISTORY)
        current = max(opts.style_scale) if isinstance(opts.style_scale, tuple) else opts.style_scale
        scale = _round_down(current * math.sqrt(pixels / (style_shape[0] * style_shape[1])))
        advice = f"use style_scale {scale:g} or less"
    else:
        aspect = min(content_shape) / max(content_shape)
        fits = memory.largest_size(free, aspect, opts.optimizer, LBFGS_HISTORY, result_per_pixel)
        advice = f"use size {fits} or less" if fits >= 16 else "free some memory or use another device"
        if fits >= 16 and biggest != content_shape:
            advice += " and a smaller style_scale"
    raise OutOfMemoryError(
        f"a {biggest[0]}x{biggest[1]} px run needs about {memory.format_bytes(needed)} but {device} has "
        f"{memory.format_bytes(free)} free: {advice}"
    )


def _round_down(value: float, digits: int = 2) -> float:
    """``value`` cut (not rounded) to ``digits`` significant digits, so advice that says
    "x or less" is met by x itself."""
    unit = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return float(f"{math.floor(value / unit) * unit:.{digits}g}")


#: torch.OutOfMemoryError since torch 2.5; the CUDA-only name before.
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


#: What torch's allocators say when they fail outside CUDA's OutOfMemoryError: the CPU's
#: "DefaultCPUAllocator: can't allocate memory" (Linux, macOS) or "not enough memory"
#: (Windows), and MPS's "MPS backend out of memory".
_ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "out of memory")


def _is_allocation_failure(error: RuntimeError) -> bool:
    text = str(error).lower()
    return any(words in text for words in _ALLOCATION_FAILURES)


def _ran_out_of_memory(p: _Plan) -> OutOfMemoryError:
    smaller = max(16, max(p.content_shape) // 2 // 16 * 16)
    other = "device='cpu'" if p.device.type != "cpu" else "close other programs"
    return OutOfMemoryError(
        f"{p.device} ran out of memory at a working size of {max(p.content_shape)} px: use a smaller size "
        f"(for example {smaller}) or {other}"
    )


def _run(p: _Plan) -> Iterator[StepRecord | StyleResult]:
    # a time series' frames are read from now on, while the weights load
    reader = _TimeSeriesReader(p) if p.options.frames == "time" else None
    try:
        yield from with_backend_flags(_optimise_frames(p, reader), p.options, p.device)
    except (_OUT_OF_MEMORY, MemoryError) as error:  # MemoryError: numpy's allocations
        raise _ran_out_of_memory(p) from error
    except RuntimeError as error:
        if not _is_allocation_failure(error):
            raise
        raise _ran_out_of_memory(p) from error
    finally:
        if reader is not None:
            reader.close()
        # _optimise_frames has finished or been closed: its tensors are gone, give the memory back.
        if p.device.type == "cuda":
            torch.cuda.empty_cache()


def _optimise_frames(p: _Plan, reader: _TimeSeriesReader | None) -> Iterator[StepRecord | StyleResult]:
    """The run's records and result; a time series' frames come from ``reader``."""
    started = time.perf_counter()
    opts, device = p.options, p.device
    loaded = load_vgg19_features(opts.weights)
    dtype = compute_dtype(opts.precision, device)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    extractor = VGGFeatures(loaded.features, opts.layers, opts.pooling).to(
        device, memory_format=memory_format
    )
    styles_full = _style_tensors(p, device)
    frames = frame_count(p.content.stack_shape)
    in_time = opts.frames == "time"
    chains = [(index, follows if in_time else None) for index, follows in time_chains(p.content.stack_shape)]
    # A later frame of a time series starts from the warped previous result at the working
    # size: a coarse-to-fine schedule would only blur that start.
    later = (_Level(p.content_shape, p.style_shapes, opts.later_frame_steps),)
    plans = [p.levels if follows is None else later for _, follows in chains]
    run_steps = sum(level.steps for levels in plans for level in levels)
    # Independent frames go through the network batch by batch (a time series' frames wait
    # for each other); the batch is chosen now, with the weights loaded, from what is free now.
    largest_style = max(p.style_shapes, key=lambda shape: shape[0] * shape[1])
    batch = _frames_per_batch(p.content, p.content_shape, largest_style, opts, device, p.regions is not None)
    result = None
    cursor = _Cursor()
    # What the next frame of a series follows: its reference image, the result where the frame
    # was not held and, where it was, the target it was held to, so that a static pixel keeps
    # the value it got when it was first seen: re-pinning each frame to the previous result
    # instead lets small per-frame moves add up (measured: 0.004 a frame in static parts at
    # 48 px, 4 steps); and the steps its pixels still owe (frames.steps_owed).
    kept: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}
    # the frame just optimised and its L-BFGS curvature pairs, for the frame that follows it
    # (in a single series, the next one; a series of series keeps no pairs across the others)
    carried: tuple[tuple[int, ...], CarriedCurvature] | None = None
    first_steps = sum(level.steps for level in p.levels)
    objective: StyleObjective | None = None
    objective_style: tuple[tuple[int, int], ...] | None = None  # the style sizes the objective's targets have
    steps_before = 0
    frame_steps = []

    numbered = list(enumerate(zip(chains, plans, strict=True)))
    for group in (numbered[i : i + batch] for i in range(0, len(numbered), batch)):
        # a batch's frames share their levels (only a time series' later frames differ, and
        # those come one at a time); its frames are read now, not the whole stack
        levels = group[0][1][1]
        index, follows = group[0][1][0]  # the batch's first frame (a time series' only one)
        temporal = link = None
        if reader is None:
            prepared = [_prepare_frame(p, frame_index) for _, ((frame_index, _), _) in group]
        else:  # a time series: one frame a batch
            frame, link = reader.take(group[0][0])
            prepared = [_prepare_frame(p, index, frame)]
        contents_full = [content_full for content_full, _ in prepared]
        if follows is not None:
            previous_reference, previous_owed = kept.pop(follows)
            temporal = (
                warp(previous_reference, link.flow, WARP_MODE).clamp(0.0, 1.0),
                held(link, previous_owed),
            )
        steps = sum(level.steps for level in levels)
        done = 0
        images = None
        curvature = None
        if in_time:
            follows_closely = link is not None and link.fresh.mean().item() < CARRY_CURVATURE_FRESH
            curvature = (
                carried[1]
                if carried is not None and carried[0] == follows and follows_closely
                else CarriedCurvature()
            )
            carried = (index, curvature)
        for level in levels:
            contents_t = torch.cat(
                [resize(content_full, *level.content_shape) for content_full in contents_full]
            )
            styles_t = [
                resize(full, *shape) for full, shape in zip(styles_full, level.style_shapes, strict=True)
            ]
            style_t = styles_t[0]  # init="style" starts from the first style
            labels = None if p.regions is None else p.regions.at(group[0][1][0][0], level.content_shape)
            if temporal is not None:
                # where the content is new (uncovered, changed) the warped result would bring
                # the old content's style along. A first frame's start (the content, with
                # init="content") would stay nearly unstyled there in a later frame's steps:
                # the rest of the image already matches the style, so the style loss barely
                # pulls on a few new pixels, and held from the next frame on they leave a flat
                # trail. They start from their content plus the styling (result - content) of
                # known pixels nearby instead (of their own style region), whatever ``init``.
                styling, copied = fill_from_surroundings(
                    temporal[0] - contents_t, link.fresh, link.reliable, labels
                )
                fresh = initial_image(contents_t, style_t, opts.init, opts.seed)
                fresh = torch.where(copied > 0, (contents_t + styling).clamp(0.0, 1.0), fresh)
                start = temporal[0] + link.fresh * (fresh - temporal[0])
            elif images is None:  # each frame from the start it has alone (the same noise for one seed)
                start = torch.cat(
                    [
                        initial_image(content_t[None], style_t, opts.init, opts.seed)
                        for content_t in contents_t
                    ]
                )
            else:  # the coarser level's result
                start = resize(images, *level.content_shape).clamp(0, 1)
            if objective is None or objective_style != level.style_shapes:
                objective = StyleObjective(extractor, contents_t[:1], styles_t, opts, dtype)
                objective_style = level.style_shapes
            if labels is not None:  # one frame at a time (see _frames_per_batch)
                objective.set_regions(torch.from_numpy(labels)[None, None].to(device))
            objective.set_temporal(*(temporal or (None,)))
            # the working size's pairs go on to the next frame, not a coarser level's
            level_curvature = curvature if level is levels[-1] else None
            for _, losses, images in _optimise_batch(
                objective, contents_t, start, opts, level.steps, level_curvature
            ):
                done += 1
                snapshot = bool(opts.snapshot_every) and done % opts.snapshot_every == 0
                # one record per frame per step, in frame order; a batch's frames step together,
                # so steps_before counts the other frames' steps so far and progress stays the
                # share of the whole run done
                cursor.position = (group[0][0], done)
                batch_records: list[StepRecord] = []
                for position, ((number, ((frame_index, _), _)), frame_losses) in enumerate(
                    zip(group, losses, strict=True)
                ):
                    record = StepRecord(
                        step=done,
                        steps=steps,
                        losses=frame_losses,
                        seconds=time.perf_counter() - started,
                        is_snapshot=snapshot,
                        device=str(device),
                        weights=loaded.description,
                        frame=frame_index,
                        frame_number=number,
                        frames=frames,
                        size=max(level.content_shape),
                        steps_before=steps_before + (done - 1) * (len(group) - 1) + position,
                        run_steps=run_steps,
                        _live=images[position : position + 1],
                        _cursor=cursor,
                        _finish=prepared[position][1],
                        _position=cursor.position,
                        _batch=batch_records,
                    )
                    batch_records.append(record)
                # every record of the step exists before the first is yielded, so a run stopped
                # between them still has each frame's image (batch_images)
                for record in batch_records:
                    if snapshot or done == steps:
                        record.render()
                    if done == steps:
                        finished = record.image
                        if result is None:
                            result = np.empty(p.content.stack_shape + finished.shape, dtype=np.float32)
                        result[record.frame] = finished
                    yield record
            images = images.detach().clone()
        steps_before += steps * len(group)
        frame_steps += [steps] * len(group)
        if in_time and index and index[0] + 1 < p.content.stack_shape[0]:
            if temporal is None:
                kept[index] = (images, None)
            else:
                reference = images + anchored(link, previous_owed) * (temporal[0] - images)
                kept[index] = (reference, steps_owed(link, previous_owed, steps, first_steps))

    objective.set_content(resize(contents_full[-1], *p.content_shape))
    final = evaluate(objective, images[-1:])
    yield StyleResult(
        image=result,
        losses=final,
        steps_done=opts.steps,
        steps=opts.steps,
        seconds=time.perf_counter() - started,
        device=str(device),
        weights=loaded.description,
        weights_kind=loaded.kind,
        options=opts,
        content_scale=p.scale,
        value_scaling=p.content.scaling,
        frames=frames,
        schedule=tuple(max(level.content_shape) for level in p.levels),
        frame_steps=tuple(frame_steps),
        styles=len(p.styles),
        regions=None if p.regions is None else p.regions.described(),
        precision=precision_used(opts.precision, device),
    )


def _optimise_batch(
    objective: StyleObjective,
    contents: torch.Tensor,
    start: torch.Tensor,
    opts: StyleOptions,
    steps: int,
    carried: CarriedCurvature | None = None,
) -> Iterator[tuple[int, list[Losses], torch.Tensor]]:
    """``optimize`` for one frame (with ``carried``'s curvature pairs), ``optimize_frames``
    for a batch: (step, each frame's losses, images)."""
    if len(start) > 1:
        return optimize_frames(objective, contents, start, opts, steps)
    objective.set_content(contents)
    return (
        (step, [losses], image) for step, losses, image in optimize(objective, start, opts, steps, carried)
    )


def _prepare_frame(
    p: _Plan, index: tuple[int, ...], frame: PreparedImage | None = None
) -> tuple[torch.Tensor, Any]:
    """Frame ``index`` of the content on the device (1, 3, H, W), read now unless ``frame``
    has it, and the function that turns one of its images into the result's kind (grey,
    alpha, content colours)."""
    opts = p.options
    frame = _read_frame(p, index) if frame is None else frame
    content_full = _to_tensor(frame.rgb, p.device)
    alpha = None
    if frame.alpha is not None:
        alpha_t = resize(
            torch.from_numpy(np.ascontiguousarray(frame.alpha))[None, None].to(p.device), *p.content_shape
        )
        alpha = alpha_t[0, 0].clamp(0, 1).cpu().numpy()

    def finish(
        image: torch.Tensor,
        grey: bool = frame.grey and opts.keep_grey,
        alpha: np.ndarray | None = alpha,
        colours: torch.Tensor | None = content_full
        if opts.content_colours == "luminance" and not frame.grey
        else None,
    ) -> np.ndarray:
        if alpha is not None and tuple(image.shape[-2:]) != alpha.shape:  # a coarse level
            alpha = resize(torch.from_numpy(alpha)[None, None], *image.shape[-2:])[0, 0].numpy()
        if colours is not None:
            image = with_content_colours(image, resize(colours, *image.shape[-2:]))
        return finish_image(image[0].permute(1, 2, 0).float().cpu().numpy(), grey, alpha)

    return content_full, finish


def _read_frame(p: _Plan, index: tuple[int, ...]) -> PreparedImage:
    return p.content.frame(index, longest_side=max(p.content_shape))


#: A later frame of a time series starts L-BFGS from the curvature pairs of the frame it
#: follows (lbfgs.CarriedCurvature) only where less than this share of its pixels starts
#: afresh (FrameLink.fresh): pairs measured around an unlike image misled it. On the benchmark's
#: Z stack of unlike slices run as a time series (64 px, 64-89% of each slice fresh) carrying
#: them took the likeness from 0.58 to 0.32 and the later frames' loss from 1.56x the first
#: frame's to 1.96x; the moving and rotating discs start 1-3% of their pixels afresh.
CARRY_CURVATURE_FRESH = 0.5


#: The name of the thread that reads a time series ahead (its start: Python numbers them).
READER_THREAD = "napari-style-transfer-frames"


def _reads_ahead(device: torch.device) -> bool:
    """Whether a time series on ``device`` reads its frames ahead (:class:`_TimeSeriesReader`):
    beside a GPU's steps, and on the CPU where torch's threads leave a core free. With every
    core in torch's threads the reading thread slowed the steps by more than it saved: with
    2 threads on 2 cores a 4-frame series took up to 40% longer read ahead; with 1 thread
    4-21% of a later frame's time was saved (docs/benchmarks.md, "Stacks", reading ahead)."""
    return device.type != "cpu" or torch.get_num_threads() < memory.usable_cpus()


class _TimeSeriesReader:
    """A time series' frames, each read with the optical flow back to the frame it follows
    (:func:`~napari_style_transfer.frames.link_frames`), one frame ahead in a thread where
    :func:`_reads_ahead` says, else each when its turn comes.

    Both depend on the content alone, so the next frame's read and flows can run while the
    current frame optimises: TV-L1 runs on the CPU, 0.7 s for a later frame's two flows at
    256 px and 3.0 s at 512 px on this project's 2-core machine, which would otherwise stop a
    GPU between frames. The flow is computed on the CPU copy of the working-size content, so
    nothing but the CPU is used from the thread. What a frame's read raises (a NaN frame, a
    reader's error) is raised by :meth:`take` of that frame, where reading it would have."""

    def __init__(self, p: _Plan):
        from concurrent.futures import ThreadPoolExecutor

        self._p = p
        self._frames, self._follows = zip(*time_chains(p.content.stack_shape), strict=True)
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=READER_THREAD)
            if _reads_ahead(p.device)
            else None
        )
        self._contents: dict[tuple[int, ...], torch.Tensor] = {}  # working-size CPU contents still followed
        self._pending = self._submit(0)

    def take(self, position: int) -> tuple[PreparedImage, FrameLink | None]:
        """The frame at ``position`` (0, 1, ... in turn) and its link to the frame it follows
        (None for a first frame), on the plan's device; the next frame is then read ahead."""
        frame, content, link = self._pending()
        self._contents[self._frames[position]] = content
        if position + 1 < len(self._frames):
            self._pending = self._submit(position + 1)
        device = self._p.device
        if link is not None:
            link = link.to(device)
        return frame, link

    def _submit(self, position: int) -> Callable[[], tuple[PreparedImage, torch.Tensor, FrameLink | None]]:
        """What :meth:`take` calls for the frame at ``position``: the read itself, or the
        wait for the thread's."""
        follows = self._follows[position]
        previous = None if follows is None else self._contents.pop(follows)
        job = functools.partial(self._read, self._frames[position], previous)
        return job if self._pool is None else self._pool.submit(job).result

    def _read(self, index: tuple[int, ...], previous: torch.Tensor | None):
        frame = _read_frame(self._p, index)
        content = resize(_to_tensor(frame.rgb, torch.device("cpu")), *self._p.content_shape)
        return frame, content, None if previous is None else link_frames(previous, content)

    def close(self) -> None:
        """Stops reading ahead: a run has ended or was stopped (a read or flow under way
        finishes in its thread, unused)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _style_tensors(p: _Plan, device: torch.device) -> list[torch.Tensor]:
    """Each style at its largest size as (1, 3, H, W); with content_colours="histogram" its
    colours matched to the content's (the first frame's) first, channel by channel."""
    styles = [
        style.frame((), longest_side=max(shape)).rgb
        for style, shape in zip(p.styles, p.style_shapes, strict=True)
    ]
    if p.options.content_colours == "histogram":
        from skimage.exposure import match_histograms

        reference = p.content.frame(next(p.content.frames()), longest_side=max(p.content_shape)).rgb
        styles = [match_histograms(style, reference, channel_axis=-1).astype(np.float32) for style in styles]
    return [_to_tensor(style, device) for style in styles]
