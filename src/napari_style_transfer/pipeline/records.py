"""What a run reports: a :class:`StepRecord` per step and frame, then a :class:`StyleResult`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine import Losses
from ..options import StyleOptions

if TYPE_CHECKING:
    import torch

    from .jobs import Job


@dataclass
class StepRecord:
    """Progress after one optimiser step.

    ``image`` is filled on snapshot steps (every ``snapshot_every`` steps) and on the last
    step of each frame; on other steps call :meth:`render` before advancing the generator.
    For a stack, ``step`` counts within the current ``frame`` (``frame_number`` of ``frames``),
    and ``step == steps`` on a frame's last step (a time series' later frames have
    ``time_steps``). Frames styled together (``batch_frames``) step together: each step
    gives one record per frame of the batch, in frame order. With ``time_passes`` each frame
    comes back in each pass (``pass_number``), with the same ``frame_number``.
    """

    step: int  # 1-based, within the frame
    steps: int  # steps requested for this frame
    losses: Losses  # see engine.optimize for which image they belong to
    seconds: float  # since the run started (weights and model loading included)
    is_snapshot: bool
    device: str
    weights: str
    frame: tuple[int, ...] = ()  # index into the stack axes; () for a 2D image
    frame_number: int = 0  # 0-based position of the frame in the stack (the run, before time passes)
    frames: int = 1
    pass_number: int = 0  # a time pass's number (1, 2, ...); 0: the frame's first styling
    size: int = 0  # longest side of the image at this step (coarse-to-fine levels are smaller)
    image: np.ndarray | None = None  # this frame's image (2D), on snapshot and last steps
    steps_before: int = 0  # steps of the run done before this one, other than this frame's
    run_steps: int = 0  # steps of the whole run (0: frames * steps)
    _live: torch.Tensor | None = field(default=None, repr=False)
    _cursor: Cursor | None = field(default=None, repr=False)
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
    frame_steps: tuple[int, ...] = ()  # steps of each frame's run, in run order (time passes: again per pass)
    styles: int = 1  # how many style images
    regions: dict[str, Any] | None = None  # style_regions described (shape, labels), not the labels
    precision: str = "fp32"  # what the convolutions computed in: bf16, tf32 or fp32 (what auto became)
    channels_last: bool = True  # the convolutions' layout (what channels_last="auto" became)
    threads: int = 1  # torch's CPU threads during the run's steps (what threads=0, auto, became)

    def metadata(self) -> dict[str, Any]:
        """Plain values describing the run, for layer metadata or PNG text chunks."""
        return {
            "weights": self.weights,
            "device": self.device,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "threads": self.threads,
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
class Cursor:
    # (number of the batch's first frame, step) the live images belong to: every frame of a
    # batch can be rendered until the batch takes its next step
    position: tuple[int, int] = (0, 0)


class Progress:
    """Makes the step records of a run: the one place that counts its steps and seconds."""

    def __init__(
        self, started: float, device: str, weights: str, frames: int, run_steps: int, snapshot_every: int
    ):
        self.started, self.device, self.weights = started, device, weights
        self.snapshot_every = snapshot_every
        self.frames, self.run_steps = frames, run_steps
        self.cursor = Cursor()
        self.steps_before = 0  # steps of the batches finished
        self.frame_steps: list[int] = []  # steps of each finished frame, in run order
        self._current: list[StepRecord] = []  # the records of the latest step

    def step(
        self,
        jobs: Sequence[Job],
        steps: int,
        finishes: Sequence[Callable[[torch.Tensor], np.ndarray]],
        losses: Sequence[Losses],
        images: torch.Tensor,
        done: int,
        size: int,
    ) -> list[StepRecord]:
        """One record per job of the batch (of ``steps`` steps each) for its step ``done``, in
        frame order. A batch's frames step together, so steps_before counts the other frames'
        steps so far and progress stays the share of the whole run done."""
        snapshot = bool(self.snapshot_every) and done % self.snapshot_every == 0
        self._let_go()
        self.cursor.position = (jobs[0].number, done)
        batch: list[StepRecord] = []
        # a batch's records hold each other (a cycle, which only the garbage collector frees):
        # one job's record needs none, and the others are let go at the next step
        shared = batch if len(jobs) > 1 else None
        for position, (job, frame_losses) in enumerate(zip(jobs, losses, strict=True)):
            batch.append(
                StepRecord(
                    step=done,
                    steps=steps,
                    losses=frame_losses,
                    seconds=time.perf_counter() - self.started,
                    is_snapshot=snapshot,
                    device=self.device,
                    weights=self.weights,
                    frame=job.index,
                    frame_number=job.number if job.frame_number is None else job.frame_number,
                    pass_number=job.pass_number,
                    frames=self.frames,
                    size=size,
                    steps_before=self.steps_before + (done - 1) * (len(jobs) - 1) + position,
                    run_steps=self.run_steps,
                    _live=images[position : position + 1],
                    _cursor=self.cursor,
                    _finish=finishes[position],
                    _position=self.cursor.position,
                    _batch=shared,
                )
            )
        self._current = batch
        return batch

    def _let_go(self) -> None:
        """The latest step's records can no longer render their images (the run moved on):
        they drop their live images and each other. Kept until the garbage collector ran,
        they held a tile's image each, and the memory of a full-resolution run grew with its
        number of tiles."""
        for record in self._current:
            record._live = None
            record._batch = None
        self._current = []

    def finished(self, jobs: Sequence[Job], steps: int) -> None:
        """A batch of jobs of ``steps`` steps each is done: later records count them as before."""
        self.steps_before += steps * len(jobs)
        self.frame_steps += [steps] * len(jobs)
