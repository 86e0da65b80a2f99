"""The planner of a time series in passes (``frames="time"``, ``time_passes`` of 1 or more):
Ruder, Dosovitskiy & Brox's multi-pass algorithm ("Artistic style transfer for videos", GCPR
2016, section 3.4).

Every frame is first styled alone, with the full steps. Then ``time_passes`` passes go over
each series in alternating directions (forward, backward, ...). In a pass, each frame but the
pass's first starts from its own latest result blended (:data:`BLEND`) with its neighbour's
result of this pass warped along the optical flow, where the flow is reliable, and takes
``time_steps`` steps held near that warped neighbour there. Where the flow cannot follow (new,
uncovered or changed content) a frame keeps its own styling, which the single forward pass
(:mod:`.time_series`) had to copy from nearby pixels with a later frame's few steps: the
wakes, bars and edge bands of issue 33 (docs/timelapse.md, "Multi-pass").
"""

from __future__ import annotations

import torch

from ..frames import FrameLink, time_chains, warp_result
from .canvas import Canvas
from .jobs import Carry, Job
from .plan import Level, Plan
from .reader import TimeSeriesReader

#: Ruder et al.'s delta: the share of the warped neighbour in a reliable pixel's start.
BLEND = 0.5

#: frames.LEFT_BEHIND in passes: every in-place change, however thin, makes the still pixels
#: around it unreliable. The single pass keeps 2, as restarting the pixels around creeping
#: nuclei cost it more (their styling was copied from nearby); a pass's unreliable pixel keeps
#: its own. Crossing discs at 96 px (a disc creeping 1.4 px a frame left arcs of its dark
#: halo held above it): same-content smear 2.4% -> 1.2%; the other sequences level or better
#: (docs/timelapse.md, "Thin slivers in passes").
LEFT_BEHIND = 0


def pass_order(stack_shape: tuple[int, ...], forward: bool) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The frames a pass optimises, in order, each with the neighbour it follows: (t - 1, ...)
    going forward, (t + 1, ...) going backward (further leading axes: independent series).
    None for a 2D image (one frame, no neighbour)."""
    if not stack_shape:
        return []
    frames = [index for index, _ in time_chains(stack_shape)]
    last = stack_shape[0] - 1
    if forward:
        return [(index, (index[0] - 1, *index[1:])) for index in frames if index[0] > 0]
    return [(index, (index[0] + 1, *index[1:])) for index in reversed(frames) if index[0] < last]


class TimePasses:
    """Each frame styled alone, then ``time_passes`` passes in alternating directions."""

    def __init__(self, p: Plan):
        self.plan = p
        # each frame's latest result on its canvas (on the CPU: a series' every frame is kept)
        self._results: dict[tuple[int, ...], torch.Tensor] = {}

    def jobs(self) -> list[Job]:
        p = self.plan
        stack_shape = p.content.stack_shape
        jobs = [Job(number, index, p.levels) for number, (index, _) in enumerate(time_chains(stack_shape))]
        position = {job.index: job.number for job in jobs}
        later = (Level(p.content_shape, p.style_shapes, p.options.later_frame_steps),)
        for number in range(1, p.options.time_passes + 1):
            for index, neighbour in pass_order(stack_shape, forward=number % 2 == 1):
                jobs.append(Job(len(jobs), index, later, neighbour, number, position[index]))
        return jobs

    def reader(self) -> TimeSeriesReader:
        """Each job's frame with the flow back to the neighbour it follows in its pass, read
        one job ahead (beside a GPU: a pass's TV-L1 flows no longer stop it between frames);
        every frame's working-size content is kept for the passes."""
        order = [(job.index, job.follows) for job in self.jobs()]
        return TimeSeriesReader(self.plan, order, keep=True, left_behind=LEFT_BEHIND)

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        carry = Carry(link)
        if job.follows is None or link is None:
            return carry  # the first styling of a frame, alone
        device, shape = link.flow.device, self.plan.content_shape
        canvas = Canvas.around(shape, later_frame=True)
        own, neighbour = (
            self._fitted(self._results[index], canvas).to(device) for index in (job.index, job.follows)
        )
        target = warp_result(neighbour, link.flow).clamp(0.0, 1.0)
        hold = link.reliable * canvas.image_mask(link.reliable)
        carry.temporal = (target, hold)
        carry.start = canvas.crop(own + BLEND * hold * (target - own))
        # compared with its own styling's statistics: against the style image's, the few pixels
        # a mostly held frame leaves free took all of its style error as bright blotches. Its
        # inside mirrored: the margin's own rim (the network's edge), counted too, was drawn
        # into the frame (fluorescence, 96 px: smeared windows 11.6% against 1.0%)
        carry.statistics = canvas.pad(canvas.crop(own))
        return carry

    def keep(self, job: Job, carry: Carry, canvases: torch.Tensor) -> None:
        """Keep the frame's result, margin included, for its neighbours and its next pass."""
        self._results[job.index] = canvases[-1:].detach().cpu()

    def _fitted(self, canvases: torch.Tensor, canvas: Canvas) -> torch.Tensor:
        if canvases.shape[-2:] == canvas.shape(self.plan.content_shape):
            return canvases
        return canvas.fit(canvases, self.plan.content_shape)  # a first frame's canvas, another margin
