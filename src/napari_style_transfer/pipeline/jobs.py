"""Jobs, the units of work of a run, and the planner of independent frames.

A job is one image to optimise: a 2D image, a frame of a stack, a step of a time series
(later a tile). A planner makes a run's jobs in order, opens the reader of their inputs and
carries what one job hands the next (a time series' previous result; nothing for
independent frames). The runner batches jobs that share their levels through the network
together. A new way of cutting a run into work is a new planner, not a branch in the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..frames import time_chains
from .plan import Level, Plan
from .reader import FrameReader, Reader

if TYPE_CHECKING:
    import torch

    from ..frames import FrameLink
    from ..lbfgs import CarriedCurvature
    from .backdrop import Backdrop


@dataclass(frozen=True)
class Job:
    """One image to optimise through its coarse-to-fine ``levels``."""

    number: int  # 0-based position in the run
    index: tuple[int, ...]  # into the content's stack axes; () for a 2D image
    levels: tuple[Level, ...]
    follows: tuple[int, ...] | None = None  # the job whose result this one starts from
    pass_number: int = 0  # a time pass's number (1, 2, ...); 0: the frame's first styling
    frame_number: int | None = None  # the frame's position in stack order, where not ``number``

    @property
    def steps(self) -> int:
        return sum(level.steps for level in self.levels)


@dataclass
class Carry:
    """What a job takes from the one it follows: the link between their contents, the
    previous result warped onto this one with where to hold it (``temporal``), what its
    pixels still owe, L-BFGS curvature pairs (None: none carried), a tile's or a pass's
    start, a time series' backdrop, and the image whose style statistics a frame is compared
    with (None: as LATER_FRAME_STYLE says)."""

    link: FrameLink | None = None
    temporal: tuple[torch.Tensor, torch.Tensor] | None = None
    owed: torch.Tensor | None = None
    curvature: CarriedCurvature | None = None
    start: torch.Tensor | None = None  # a tile's start (the coarser level enlarged over its window), a pass's
    backdrop: Backdrop | None = None  # a time series' (pipeline/backdrop.py)
    statistics: torch.Tensor | None = None  # a pass's frame: its own previous result, on its canvas


class Planner(Protocol):
    """Makes a run's jobs, reads their inputs and carries state from job to job."""

    def jobs(self) -> list[Job]: ...

    def reader(self) -> Reader: ...

    def carry(self, job: Job, link: FrameLink | None) -> Carry: ...

    def keep(self, job: Job, carry: Carry, canvases: torch.Tensor) -> None:
        """Keep what a later job takes from ``job``: its results on their canvases."""


class IndependentFrames:
    """Each frame styled as if alone (a 2D image is one frame), in stack order."""

    def __init__(self, p: Plan):
        self.plan = p

    def jobs(self) -> list[Job]:
        return [
            Job(number, index, self.plan.levels)
            for number, (index, _) in enumerate(time_chains(self.plan.content.stack_shape))
        ]

    def reader(self) -> Reader:
        return FrameReader(self.plan)

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        return Carry(link)

    def keep(self, job: Job, carry: Carry, canvases: torch.Tensor) -> None:
        """Nothing: no frame follows another."""


def batches(jobs: Sequence[Job], size: int) -> list[list[Job]]:
    """``jobs`` in groups of ``size`` that go through the network together (a batch's jobs
    share their levels: only a time series' later frames differ, and those come one a batch)."""
    return [list(jobs[i : i + size]) for i in range(0, len(jobs), size)]
