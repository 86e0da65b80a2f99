"""The planner of a time series (``frames="time"``): each later frame starts from the
previous frame's result warped by the optical flow between their contents, and is held near
it where the flow is reliable."""

from __future__ import annotations

import torch

from ..frames import FrameLink, anchored, held, steps_owed, time_chains, warp_result
from ..lbfgs import CarriedCurvature
from . import backdrop
from . import canvas as margins
from .canvas import Canvas
from .jobs import Carry, Job
from .plan import Level, Plan
from .reader import Reader, TimeSeriesReader

#: A later frame of a time series starts L-BFGS from the curvature pairs of the frame it
#: follows (lbfgs.CarriedCurvature) only where less than this share of its pixels starts
#: afresh (FrameLink.fresh): pairs measured around an unlike image misled it
#: (docs/benchmarks.md, "Stacks").
CARRY_CURVATURE_FRESH = 0.5


class TimeChains:
    """The frames of each series in time order (further leading axes: independent series);
    a later frame takes ``later_frame_steps`` at the working size only."""

    def __init__(self, p: Plan):
        self.plan = p
        self._first_steps = sum(level.steps for level in p.levels)
        # What the next frame of a series follows: its reference image, the result where the
        # frame was not held and, where it was, the target it was held to, so that a static
        # pixel keeps the value it got when it was first seen (re-pinning each frame to the
        # previous result lets small per-frame moves add up); and the steps its pixels still
        # owe (frames.steps_owed).
        self._kept: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]] = {}
        # the frame just optimised and its L-BFGS curvature pairs, for the frame that follows
        # it (in a single series, the next one; a series of series keeps no pairs across the others)
        self._carried: tuple[tuple[int, ...], CarriedCurvature] | None = None
        # each series' backdrop (pipeline/backdrop.py), by its index past the time axis
        self._backdrops: dict[tuple[int, ...], backdrop.Backdrop] = {}

    def jobs(self) -> list[Job]:
        # A later frame starts from the warped previous result at the working size: a
        # coarse-to-fine schedule would only blur that start.
        p = self.plan
        later = (Level(p.content_shape, p.style_shapes, p.options.later_frame_steps),)
        return [
            Job(number, index, p.levels if follows is None else later, follows)
            for number, (index, follows) in enumerate(time_chains(p.content.stack_shape))
        ]

    def reader(self) -> Reader:
        return TimeSeriesReader(self.plan)

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        carry = Carry(link)
        if job.follows is not None and link is not None:
            reference, carry.owed = self._kept.pop(job.follows)
            canvas = Canvas.around(self.plan.content_shape, later_frame=True)
            if reference.shape[-2:] != link.flow.shape[-2:]:  # a first frame's canvas, another margin
                reference = canvas.fit(reference, self.plan.content_shape)
            hold = held(link, carry.owed)
            if not margins.HOLD_MARGIN:
                hold = hold * canvas.image_mask(hold)
            target = warp_result(reference, link.flow).clamp(0.0, 1.0)
            if backdrop.RECALL:
                series = job.index[1:]
                if series not in self._backdrops:
                    self._backdrops[series] = backdrop.Backdrop.empty(target, link.content)
                carry.backdrop = self._backdrops[series]
                link, target, hold = carry.backdrop.recall(link, target, hold)
                carry.link = link
                carry.backdrop.remember(link, target, hold)
            carry.temporal = (target, hold)
        follows_closely = link is not None and link.fresh.mean().item() < CARRY_CURVATURE_FRESH
        carried = self._carried
        if carried is not None and carried[0] == job.follows and follows_closely:
            carry.curvature = carried[1]
        else:
            carry.curvature = CarriedCurvature()
        self._carried = (job.index, carry.curvature)
        return carry

    def keep(self, job: Job, carry: Carry, canvases: torch.Tensor) -> None:
        """Keep what the frame after ``job`` in its series will follow: its result on its
        canvas, margin included, as its link covers the canvas (pipeline/reader.py)."""
        index = job.index
        if not index or index[0] + 1 >= self.plan.content.stack_shape[0]:
            self._backdrops.pop(index[1:], None)
            return  # no frame follows
        if carry.temporal is None or carry.link is None:
            self._kept[index] = (canvases, None)
            return
        link, owed = carry.link, carry.owed
        kept = anchored(link, owed)
        owes = steps_owed(link, owed, job.steps, self._first_steps)
        if carry.backdrop is not None:  # taken back: held to the backdrop, nothing owed
            kept = torch.maximum(kept, carry.backdrop.recalled)
            owes = owes * (1.0 - carry.backdrop.recalled)
        reference = canvases + kept * (carry.temporal[0] - canvases)
        self._kept[index] = (reference, owes)
