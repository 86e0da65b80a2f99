"""Reading a job's input: its frame of the content on the device, the function that turns
its images into the result's kind, the styles, and a time series' frames read ahead."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from .. import memory
from .._image import PreparedImage, finish_image
from ..engine import resize, with_content_colours
from ..frames import LEFT_BEHIND, FrameLink, link_frames, time_chains
from .canvas import Canvas
from .plan import Plan

if TYPE_CHECKING:
    from .jobs import Job


@dataclass(frozen=True)
class JobInput:
    """A job's content on the device at its largest size (1, 3, H, W), and the function that
    turns one of its images into the result's kind (grey, alpha, content colours)."""

    content: torch.Tensor
    finish: Callable[[torch.Tensor], np.ndarray]


class Reader(Protocol):
    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        """The inputs of a batch of jobs, and the link of its (only) job to the one it follows."""
        ...

    def close(self) -> None: ...


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0).contiguous().to(device)


def read_frame(p: Plan, index: tuple[int, ...]) -> PreparedImage:
    return p.content.frame(index, longest_side=max(p.content_shape))


def prepare_frame(p: Plan, index: tuple[int, ...], frame: PreparedImage | None = None) -> JobInput:
    """Frame ``index`` of the content on the device, read now unless ``frame`` has it."""
    opts = p.options
    frame = read_frame(p, index) if frame is None else frame
    content_full = to_tensor(frame.rgb, p.device)
    alpha = None
    if frame.alpha is not None:
        alpha_t = resize(
            torch.from_numpy(np.ascontiguousarray(frame.alpha))[None, None].to(p.device), *p.content_shape
        )
        alpha = alpha_t[0, 0].clamp(0, 1).cpu().numpy()
    colours = content_full if opts.content_colours == "luminance" and not frame.grey else None
    finishing = functools.partial(finish, grey=frame.grey and opts.keep_grey, alpha=alpha, colours=colours)
    return JobInput(content_full, finishing)


def finish(
    image: torch.Tensor, grey: bool, alpha: np.ndarray | None, colours: torch.Tensor | None
) -> np.ndarray:
    """An optimised image (1, 3, h, w) as the result's kind (numpy): grey, with ``alpha``
    (resized to it if need be), or with the luminance put on ``colours``."""
    if alpha is not None and tuple(image.shape[-2:]) != alpha.shape:  # a coarse level
        alpha = resize(torch.from_numpy(alpha)[None, None], *image.shape[-2:])[0, 0].numpy()
    if colours is not None:
        image = with_content_colours(image, resize(colours, *image.shape[-2:]))
    return finish_image(image[0].permute(1, 2, 0).float().cpu().numpy(), grey, alpha)


def read_styles(p: Plan) -> list[torch.Tensor]:
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
    return [to_tensor(style, p.device) for style in styles]


class FrameReader:
    """Independent frames, each read when its batch's turn comes (never the whole stack)."""

    def __init__(self, p: Plan):
        self._p = p

    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        return [prepare_frame(self._p, job.index) for job in jobs], None

    def close(self) -> None:
        """Nothing is read ahead."""


#: The name of the thread that reads a time series ahead (its start: Python numbers them).
READER_THREAD = "napari-style-transfer-frames"


def reads_ahead(device: torch.device) -> bool:
    """Whether a time series on ``device`` reads its frames ahead (:class:`TimeSeriesReader`):
    beside a GPU's steps, and on the CPU where torch's threads leave a core free (with every
    core in torch's threads the reading thread slowed the steps more than it saved:
    docs/benchmarks.md, "Stacks", reading ahead)."""
    return device.type != "cpu" or torch.get_num_threads() < memory.usable_cpus()


_Read = tuple[PreparedImage, torch.Tensor, FrameLink | None]


def two_back(
    order: Sequence[tuple[tuple[int, ...], tuple[int, ...] | None]],
) -> list[tuple[int, ...] | None]:
    """For each job of ``order`` (its frame, the frame it follows or None), the frame two back
    along its chain: the one the latest earlier job of the frame it follows followed; None
    where there is none, or where that is the job's own frame (a pass turning back)."""
    earlier: list[tuple[int, ...] | None] = []
    latest: dict[tuple[int, ...], tuple[int, ...] | None] = {}
    for index, follows in order:
        before = None if follows is None else latest.get(follows)
        earlier.append(None if before == index else before)
        latest[index] = follows
    return earlier


class TimeSeriesReader:
    """A time series' frames, each read with the optical flow back to the frame it follows
    (:func:`~napari_style_transfer.frames.link_frames`), one frame ahead in a thread where
    :func:`reads_ahead` says, else each when its turn comes.

    ``order`` is the jobs' (frame, the frame it follows or None) in turn: by default each
    frame once in time order (the single forward pass); time passes give their own and
    ``keep`` every frame's working-size content, since a pass follows each frame again, and
    their own ``left_behind`` (:func:`~napari_style_transfer.frames.link_frames`) and, with
    ``since_earlier``, give each link the content of the frame two back along its pass too
    (:func:`two_back`; ``link_frames``' ``earlier``).

    Both depend on the content alone, so the next frame's read and flows (TV-L1, on the CPU)
    can run while the current frame optimises instead of stopping a GPU between frames. The
    flow is computed on the CPU copy of the working-size content, so nothing but the CPU is
    used from the thread. What a frame's read raises (a NaN frame, a reader's error) is raised
    by :meth:`take` of that frame, where reading it would have."""

    def __init__(
        self,
        p: Plan,
        order: Sequence[tuple[tuple[int, ...], tuple[int, ...] | None]] | None = None,
        keep: bool = False,
        left_behind: int = LEFT_BEHIND,
        since_earlier: bool = False,
    ):
        self._p = p
        self._left_behind = left_behind
        chosen = list(time_chains(p.content.stack_shape) if order is None else order)
        self._frames, self._follows = zip(*chosen, strict=True)
        self._keep = keep
        self._earlier = two_back(chosen) if since_earlier and keep else [None] * len(self._frames)
        self._pool = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=READER_THREAD)
            if reads_ahead(p.device)
            else None
        )
        self._contents: dict[tuple[int, ...], torch.Tensor] = {}  # working-size CPU contents still followed
        self._pending = self._submit(0)

    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        """One job (a time series' frames wait for each other)."""
        (job,) = jobs
        frame, link = self.take(job.number)
        return [prepare_frame(self._p, job.index, frame)], link

    def take(self, position: int) -> tuple[PreparedImage, FrameLink | None]:
        """The frame at ``position`` (0, 1, ... in turn) and its link to the frame it follows
        (None for a first frame), on the plan's device; the next frame is then read ahead."""
        frame, content, link = self._pending()
        self._contents[self._frames[position]] = content
        if position + 1 < len(self._frames):
            self._pending = self._submit(position + 1)
        if link is not None:
            link = link.to(self._p.device)
        return frame, link

    def _submit(self, position: int) -> Callable[[], _Read]:
        """What :meth:`take` calls for the frame at ``position``: the read itself, or the
        wait for the thread's."""
        follows, earlier = self._follows[position], self._earlier[position]
        if follows is None:
            previous = None
        else:
            previous = self._contents[follows] if self._keep else self._contents.pop(follows)
        before = None if earlier is None else self._contents[earlier]
        job = functools.partial(self._read, self._frames[position], previous, before)
        return job if self._pool is None else self._pool.submit(job).result

    def _read(
        self, index: tuple[int, ...], previous: torch.Tensor | None, earlier: torch.Tensor | None = None
    ) -> _Read:
        frame = read_frame(self._p, index)
        content = resize(to_tensor(frame.rgb, torch.device("cpu")), *self._p.content_shape)
        if previous is None:
            return frame, content, None
        # the link covers the frame's canvas (pipeline/canvas.py), so that a later frame's margin
        # is carried from the previous result like its inside, not mirrored afresh (issue 33)
        canvas = Canvas.around(self._p.content_shape, later_frame=True)
        before = None if earlier is None else canvas.pad(earlier)
        return (
            frame,
            content,
            link_frames(canvas.pad(previous), canvas.pad(content), self._left_behind, before),
        )

    def close(self) -> None:
        """Stops reading ahead: a run has ended or was stopped (a read or flow under way
        finishes in its thread, unused), and lets the kept contents go."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._contents.clear()
