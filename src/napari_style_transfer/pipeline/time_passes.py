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

from typing import NamedTuple

import torch

from ..frames import FrameLink, time_chains, warp, warp_result
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

#: A pass frame's link also takes as stale the still pixels beside what changed since the frame
#: two back along the pass (frames.link_frames' ``earlier``): the neighbour's result held there
#: styling drawn for that frame, such as an object's dark halo a frame further back. A disc
#: creeping 2.5 px a frame (crossing discs at 160 px) left concentric arcs of old halos held
#: above it, beyond UNTRUSTED_MARGIN of its latest change: same-content smear, frames 1-5,
#: 2.3-3.8% -> 1.4-2.6%, the arcs gone; at 96 px static flicker 0.0004-0.0023 -> 0.0004-0.0029,
#: at most 1/30 of the independent runs'. A 10 px UNTRUSTED_MARGIN for it instead raised that
#: 5-27x and made static drift grow frame by frame (docs/timelapse.md, "Halos two frames back").
SINCE_EARLIER = True

#: Where the content moves fast and the flow is reliable all the way back to a pass's first
#: frame, a pass frame's target is that frame's result warped once, nearest, along the flows
#: composed; elsewhere its neighbour's result warped (bicubic where it moves). Warped frame
#: after frame, a fine styled texture loses part of its gradient energy at every fractional
#: shift, and a pass carried the loss along: the fast crossing discs at 160 px came out grey
#: (texture inside them 0.054-0.070, frames styled alone 0.069-0.144; with this 0.067-0.083,
#: same-content smear lower in 6 of 7 frames). Slow motion keeps the neighbour's warp: there
#: the nearest warp's rounding (up to half a pixel) shows as a wobble, and on a field drifting
#: 1.7 px a frame it raised the moving flicker from 0.011 to 0.074 (docs/timelapse.md, "The
#: fast discs at 160 px"). Fast: at least FAST_MOTION pixels a frame at the working size.
FAST_MOTION = 3.0


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
        # the last pass frame's flow composed back to its pass's first frame, where that held
        self._chain: PassChain | None = None

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
        return TimeSeriesReader(
            self.plan, order, keep=True, left_behind=LEFT_BEHIND, since_earlier=SINCE_EARLIER
        )

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        carry = Carry(link)
        if job.follows is None or link is None:
            return carry  # the first styling of a frame, alone
        device, shape = link.flow.device, self.plan.content_shape
        canvas = Canvas.around(shape, later_frame=True)
        own, neighbour = (
            self._fitted(self._results[index], canvas).to(device) for index in (job.index, job.follows)
        )
        self._chain = chain = chain_back(self._chain, job.pass_number, job.index, job.follows, link)
        # the pass's first result: the neighbour itself on a pass's first link
        start = neighbour if chain.origin == job.follows else self._results[chain.origin]
        target = pass_target(neighbour, link.flow, self._fitted(start, canvas).to(device), chain)
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


class PassChain(NamedTuple):
    """A pass frame's flow back to its pass's first frame (which this pass leaves as it was)."""

    pass_number: int
    frame: tuple[int, ...]
    origin: tuple[int, ...]  # the pass's first frame
    flow: torch.Tensor  # (1, 2, H, W) from this frame back to the origin's, in pixels
    reliable: torch.Tensor  # (1, 1, H, W): 1 where every link on the way was reliable


def chain_back(
    previous: PassChain | None,
    pass_number: int,
    frame: tuple[int, ...],
    follows: tuple[int, ...],
    link: FrameLink,
) -> PassChain:
    """``frame``'s chain: ``previous`` (its neighbour's, where that is ``follows`` in the same
    pass) extended by the link from ``frame`` to ``follows``, the flows composed; a new chain
    from ``follows`` otherwise."""
    if previous is None or (previous.pass_number, previous.frame) != (pass_number, follows):
        return PassChain(pass_number, frame, follows, link.flow, link.reliable)
    flow = link.flow + warp(previous.flow, link.flow)
    reliable = link.reliable * warp(previous.reliable, link.flow, "nearest")
    return PassChain(pass_number, frame, previous.origin, flow, reliable)


def pass_target(
    neighbour: torch.Tensor, flow: torch.Tensor, start: torch.Tensor, chain: PassChain
) -> torch.Tensor:
    """A pass frame's temporal target: ``start`` (its pass's first result) warped once, nearest,
    along ``chain`` where that is reliable; elsewhere ``neighbour`` warped along ``flow``."""
    fast = flow.abs().amax(dim=1, keepdim=True) >= FAST_MOTION
    target = torch.where(
        (chain.reliable > 0) & fast, warp(start, chain.flow, "nearest"), warp_result(neighbour, flow)
    )
    return target.clamp(0.0, 1.0)
