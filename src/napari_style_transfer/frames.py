"""How the frames of a stack relate: which frame follows which, and for a time series the
optical flow between consecutive content frames and where it can be trusted.

After Ruder, Dosovitskiy & Brox, "Artistic style transfer for videos" (GCPR 2016): each frame
of a time series starts from the previous frame's result warped by the optical flow, and a
temporal loss keeps it near that warped image wherever the flow passes a forward-backward
consistency test. The flow is scikit-image's TV-L1 (``skimage.registration.optical_flow_tvl1``,
its default settings) on the grey content frames at the working size.

TV-L1 rather than the faster iterative Lucas-Kanade (``optical_flow_ilk``): Lucas-Kanade's
window spreads a moving object's motion into the static texture around it, so static pixels
lose the temporal term and uncovered ones keep it (docs/benchmarks.md, "Engine notes").

Everything here works on (1, 3, H, W) float tensors in [0, 1], like ``engine.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

#: Rec. 601 luma, the grey the flow is computed on.
_LUMA = (0.299, 0.587, 0.114)

#: A pixel whose warped previous content differs from its content by more than this (values in
#: [0, 1], any channel) is not trusted either, whatever the flow says: the one test that also
#: catches a flow that failed without being inconsistent (a blank frame, a sudden change).
BRIGHTNESS_TOLERANCE = 0.1


#: Pixels (at the working size) around a changed pixel that are not trusted either: a styled
#: pixel depends on its neighbourhood, so the halo the style drew around a moving object lies
#: on unchanged texture and would otherwise stay pinned where the object was. 6 px trades
#: flicker against the later frames' loss (docs/benchmarks.md, "Engine notes").
UNTRUSTED_MARGIN = 6


@dataclass(frozen=True)
class FrameLink:
    """How a frame of a time series follows the previous one.

    ``flow`` is (1, 2, H, W), (rows, columns) in pixels: this frame's content at x is the
    previous content at x + flow(x). ``reliable`` is (1, 1, H, W), 1 where the flow passed
    the consistency tests and 0 where not (disocclusions, motion boundaries, pixels whose
    source lies outside the frame, changed pixels and those within UNTRUSTED_MARGIN of one,
    stale ones). ``fresh`` is (1, 1, H, W), 1 where the frame does not start from the warped
    previous result: changed pixels and, within UNTRUSTED_MARGIN of one, those the flow says
    were hidden or come from outside the frame, unchanged ones it dragged along, and stale
    ones: pixels that stay in place within UNTRUSTED_MARGIN of content that changed where it
    is (since the previous frame, or the one before it: see :func:`link_frames`). ``restyled``
    is (1, 1, H, W), 1 within UNTRUSTED_MARGIN of a changed pixel as a disc (not the square
    that ``reliable`` leaves out) and where stale: the pixels whose styling starts over in this
    frame, which stay out of the temporal term until they have had a first frame's steps
    (:func:`steps_owed`). ``still`` is (1, 1, H, W), 1 where the flow passed the
    consistency tests, the content did not change in place and the pixel is not restyled: with
    the reliable pixels, these include the unchanged ones near a change, which the frame does
    not hold but whose reference for the next frame stays their anchor (:func:`anchored`).
    ``uncovered`` is (1, 1, H, W), 1 where an object moved off the background (see
    :func:`link_frames`): fresh pixels whose styling is copied from still background only.
    ``content`` is the frame's content (1, 3, H, W) the link was measured on."""

    flow: torch.Tensor
    reliable: torch.Tensor
    fresh: torch.Tensor
    restyled: torch.Tensor
    still: torch.Tensor
    uncovered: torch.Tensor
    content: torch.Tensor

    def to(self, device: torch.device) -> FrameLink:
        return FrameLink(*(getattr(self, field.name).to(device) for field in fields(self)))


def time_chains(stack_shape: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], tuple[int, ...] | None]]:
    """Every frame of a stack in C order with the frame it follows in time, or None.

    The first leading axis is time; further leading axes (T, Z, ... or T, C) are independent
    series, so frame (t, z) follows (t - 1, z). A 2D image is one frame that follows nothing.
    """
    if not stack_shape:
        yield (), None
        return
    for index in np.ndindex(*stack_shape):
        index = tuple(int(i) for i in index)
        yield index, ((index[0] - 1, *index[1:]) if index[0] > 0 else None)


def grey(image: torch.Tensor) -> np.ndarray:
    """The luma of a (1, 3, H, W) image as (H, W) float32 numpy."""
    weights = torch.tensor(_LUMA, dtype=torch.float32, device=image.device).view(1, 3, 1, 1)
    return (image.float() * weights).sum(dim=1)[0].cpu().numpy()


def optical_flow(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Flow (2, H, W), (rows, columns) in pixels, such that ``reference`` at x is ``moving`` at
    x + flow(x). Frames without contrast give no flow (zeros) rather than NaN."""
    from skimage.registration import optical_flow_tvl1

    if np.ptp(reference) == 0 or np.ptp(moving) == 0:
        return np.zeros((2, *reference.shape), dtype=np.float32)
    flow = optical_flow_tvl1(reference, moving)
    return np.nan_to_num(flow, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


#: How a time series' previous result is resampled along the flow for the next frame's start
#: and temporal target (:func:`warp_result`) where a pixel moves (a flow of half a pixel or
#: more; one under it stays in place, as link_frames counts it). Each frame's reference is the
#: previous one resampled once more, so the error adds up: nearest doubled rows and columns into
#: blocks and bilinear blurred (a drifting field, 96 px, frame 7: smeared windows 2.0% nearest,
#: 13.6% bilinear, 0.0% bicubic; docs/timelapse.md).
WARP_MODE = "bicubic"


def warp_result(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """A previous result (N, C, H, W) resampled at x + flow(x): the WARP_MODE way where the
    pixel moves, nearest (itself) where its flow is under half a pixel."""
    moved = warp(image, flow, WARP_MODE)
    if WARP_MODE == "nearest":
        return moved
    moves = flow.abs().amax(dim=1, keepdim=True) >= 0.5
    return torch.where(moves, moved, warp(image, flow, "nearest"))


def warp(image: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``image`` (N, C, H, W) sampled at x + flow(x) (``mode`` bilinear or nearest; outside the
    frame, the nearest border pixel). ``flow`` is (N, 2, H, W), (rows, columns) in pixels."""
    return F.grid_sample(image, _grid(flow), mode=mode, padding_mode="border", align_corners=True)


def _grid(flow: torch.Tensor) -> torch.Tensor:
    """grid_sample's (N, H, W, 2) grid of (x, y) in [-1, 1] for the positions x + flow(x)."""
    n, _, height, width = flow.shape
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1)
    columns = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width)
    y = (rows + flow[:, 0]) * (2.0 / max(height - 1, 1)) - 1.0
    x = (columns + flow[:, 1]) * (2.0 / max(width - 1, 1)) - 1.0
    return torch.stack([x, y], dim=-1)


def motion_boundary(forward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s motion-boundary test, (N, 1, H, W) bool: True where
    |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002 for the flow w = (u, v) ``forward``."""
    return _gradient_squared(forward) > 0.01 * forward.pow(2).sum(1, keepdim=True) + 0.002


def disoccluded(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s disocclusion test, (N, 1, H, W) bool: True where going to the previous
    frame and back does not return, |w + w^|^2 > 0.01 (|w|^2 + |w^|^2) + 0.5 with w the flow
    ``forward`` (this frame at x is the previous at x + w(x)) and w^ the flow ``backward``
    (the previous frame to this one) at x + w(x)."""
    back = warp(backward, forward)
    round_trip = (forward + back).pow(2).sum(1, keepdim=True)
    magnitudes = forward.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)
    return round_trip > 0.01 * magnitudes + 0.5


def _gradient_squared(flow: torch.Tensor) -> torch.Tensor:
    """|grad u|^2 + |grad v|^2 by central differences (one-sided at the borders)."""
    dy = torch.zeros_like(flow)
    dx = torch.zeros_like(flow)
    if flow.shape[-2] > 1:
        dy = torch.gradient(flow, dim=-2)[0]
    if flow.shape[-1] > 1:
        dx = torch.gradient(flow, dim=-1)[0]
    return (dy.pow(2) + dx.pow(2)).sum(1, keepdim=True)


#: Pixels (at the working size) along the frame's edges whose styling answers the edge: the
#: network's zero padding draws a frame of its own there in every result (untrained weights:
#: the 2-3 outer rows darker, the next brighter, at 96 px). A moving pixel is not warped from
#: there, or the flow carries that frame inward as a line that every later frame keeps
#: (issue 33: a band along the left and bottom edges of the bundled nuclei time-lapse).
EDGE_BAND = 4


def _inside(flow: torch.Tensor) -> torch.Tensor:
    """True where x + flow(x) lies within the frame (N, 1, H, W): within half a pixel of its
    pixels, where sampling (nearest, or bilinear at the border) gives the border pixel itself.

    Not the frame's outermost pixel centres: TV-L1 gives static parts flows of a few hundredths
    of a pixel, and most border pixels' flows pointed just outside, so they were never trusted
    and were styled afresh every frame (docs/benchmarks.md, "Engine notes"). A pixel that
    moves (the nearest warp takes it from another pixel) must come from at least EDGE_BAND px
    inside."""
    _, _, height, width = flow.shape
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device).view(1, height, 1) + flow[:, 0]
    columns = torch.arange(width, dtype=flow.dtype, device=flow.device).view(1, 1, width) + flow[:, 1]
    moves = flow.abs().amax(dim=1) >= 0.5  # the nearest warp takes such a pixel from another
    edge = torch.where(moves, EDGE_BAND + 0.5, 0.0)
    inside = (rows >= edge - 0.5) & (rows <= height - 0.5 - edge)
    inside &= (columns >= edge - 0.5) & (columns <= width - 0.5 - edge)
    return inside.unsqueeze(1)


#: A flow is followed only where it explains the frame: where the previous frame warped by it
#: differs from this one by less than this share of what the previous frame where it is
#: differs (mean absolute differences over MOTION_WINDOW px). TV-L1's smoothness term fills
#: textureless parts with the motion of whatever moves nearby: on the bundled nuclei
#: time-lapse (96 px) it gave the dark background around crawling nuclei flows of 1-1.7 px,
#: over the whole left half, which passed every consistency test; the warp dragged the styled
#: background along every frame (the smeared wedge of issue 33). In far background (6 px from
#: any nucleus) this ratio is 0.62 or more, inside nuclei moving 0.8-1.4 px a frame 0.43 or
#: less for 95% of their pixels; nuclei creeping 0.5 px a frame (0.5-0.69) are held still.
MOTION_EVIDENCE = 0.5
MOTION_WINDOW = 5
#: ...unless no motion explains it either: a mean absolute difference of this much or more
#: (values in [0, 1]) over MOTION_WINDOW px where the pixel is. Far background on the nuclei
#: time-lapse: 0.0016 (median); a textured field drifting 2 px: 0.1-0.2.
STILL_TOLERANCE = 0.025
#: ...and only where the frame changed by at least this much (the mean absolute difference over
#: MOTION_WINDOW px where the pixel is): the ratio alone followed TV-L1 into the faint tails of
#: smooth objects on a plain, noiseless background, differences of 0.001 and less 20 px from
#: them, dragging the styled background along as a dark trail (issue 33, crossing discs). The
#: nuclei time-lapse's far background changes by 0.0016 (its camera noise).
MOTION_FLOOR = 0.005


def _evidenced(flow: np.ndarray, reference: np.ndarray, moving: np.ndarray) -> torch.Tensor:
    """``flow`` (2, H, W) from :func:`optical_flow` (``reference`` at x is ``moving`` at
    x + flow(x)) as a (2, H, W) tensor, zero where the frames do not show that motion: where
    ``moving`` warped by it (bilinear: sub-pixel motion shows) does not match ``reference``
    clearly better than ``moving`` where it is. Static parts get no flow at all, not TV-L1's
    few hundredths of a pixel."""
    flow_t = torch.from_numpy(flow)
    reference_t, moving_t = torch.from_numpy(reference)[None, None], torch.from_numpy(moving)[None, None]

    def mismatch(image: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(
            (image - reference_t).abs(), MOTION_WINDOW, 1, MOTION_WINDOW // 2, count_include_pad=False
        )[0]

    moved, still = mismatch(warp(moving_t, flow_t[None])), mismatch(moving_t)
    shown = ((moved < MOTION_EVIDENCE * still) & (still >= MOTION_FLOOR)).to(flow_t.dtype)[None]
    # without lone pixels (3 x 3 opening): on camera noise alone a few pass by chance
    shown = F.max_pool2d(-F.max_pool2d(-shown, 3, 1, 1), 3, 1, 1)[0]
    # where no motion does not explain the frame either (content that enters), TV-L1's guess
    # stays, for the consistency and brightness tests to judge
    return flow_t * torch.maximum(shown, (still >= STILL_TOLERANCE).to(flow_t.dtype))


#: In-place changes (the content changed where it is by more than BRIGHTNESS_TOLERANCE)
#: narrower than 2 LEFT_BEHIND + 1 px leave no halo behind (see link_frames): on the bundled
#: nuclei time-lapse (96 px), nuclei creep 0.8-1.4 px a frame and restarting the pixels around
#: them every frame raised the smeared windows from 1.7% to 5.9% (objects merged); the moving
#: disc (6 px a frame) and the crossing discs (8 px) leave crescents wider than 5 px.
LEFT_BEHIND = 2

#: The pixels an object uncovers as it moves off a plain background get TV-L1's motion of the
#: object (nothing in the background shows they stay), pass its tests, and warp from the
#: styled halo that trails the object: one more copy of the halo every frame, the dark wakes
#: behind the crossing discs (issue 33). A pixel that moves, is not held, whose content changed
#: where it is (by more than UNCOVERED_CHANGE) and came closer to the mean of the still pixels
#: within UNCOVERED_WINDOW px (a square) of it, is taken as uncovered: it starts afresh with
#: styling copied from still background (:func:`fill_styling`). A moving object's leading edge
#: moves away from that mean and keeps its warp. Crossing discs, worst frame: 29.0% to 25.3%
#: smeared at 96 px, 59.1% to 39.1% at 160 (docs/timelapse.md, "Uncovered background").
UNCOVERED_WINDOW = 4 * UNTRUSTED_MARGIN + 1
#: ...where at least this share of that window is still: too little background to judge by
#: otherwise (a drifting field has none).
MIN_STILL_AROUND = 0.05
#: Under BRIGHTNESS_TOLERANCE: an object's blurred edge leaves the background by less, and its
#: outer glow kept the warped halo. Crossing discs at 160 px, worst frame: 47.0% at 0.1, 39.1%
#: at 0.05, 34.5% at 0.02, where the nuclei (96 px) went from 3.0% to 3.3% and 4.0%.
UNCOVERED_CHANGE = 0.05
#: Not within this many px of the pixels that move with an object and are held (its body and
#: glow): there the style draws the object's dark halo, which background copied from afar
#: lacks; two discs passing 3 px apart merged into one without it (48 px, 6 steps). Crossing
#: discs at 160 px, worst frame (UNCOVERED_CHANGE 0.1): 37.8% smeared without the gap, 47.0%.
UNCOVERED_GAP = 2
#: False: no pixel is taken as uncovered, and fresh pixels copy from any reliable pixel (the
#: code of sessions 22-24; benchmarks/timelapse_canvas.py's "shippedcovered").
TELL_UNCOVERED = True


def link_frames(
    previous: torch.Tensor,
    content: torch.Tensor,
    left_behind: int = LEFT_BEHIND,
    earlier: torch.Tensor | None = None,
) -> FrameLink:
    """The flow from ``content`` (1, 3, H, W) back to the ``previous`` content frame and
    where it is reliable (see :class:`FrameLink`). In-place changes narrower than
    ``2 left_behind + 1`` px leave no stale pixels (:data:`LEFT_BEHIND`; time passes use 0).
    ``earlier``, the content of the frame ``previous`` followed (time passes give it), also
    makes the pixels beside what changed since then stale: the previous result still held
    styling drawn for that frame (``pipeline.time_passes.SINCE_EARLIER``)."""
    current_grey, previous_grey = grey(content), grey(previous)
    measured = optical_flow(current_grey, previous_grey)
    backward = torch.from_numpy(optical_flow(previous_grey, current_grey))[None].to(content.device)
    # the consistency tests judge TV-L1's own flows (the edges of the parts where _evidenced
    # keeps none would otherwise pass for motion boundaries), and only where one is followed:
    # a pixel that stays where it is needs no round trip (the brightness test still applies)
    tv_l1 = torch.from_numpy(measured)[None].to(content.device)
    forward = _evidenced(measured, current_grey, previous_grey)[None].to(content.device)
    inside = _inside(forward)
    follows = forward.abs().amax(dim=1, keepdim=True) > 0
    hidden = disoccluded(tv_l1, backward) & follows
    trusted = ~(hidden | (motion_boundary(tv_l1) & follows)) & inside  # Ruder et al.'s consistency test
    change = (warp(previous.float(), forward) - content.float()).abs().amax(dim=1, keepdim=True)
    changed = change > BRIGHTNESS_TOLERANCE
    near = _dilated(changed.float(), UNTRUSTED_MARGIN) > 0
    # Near a change, two kinds of pixel start afresh (see FrameLink) rather than from the
    # warped result, as TV-L1 drags a moving object's motion into the static pixels around it:
    # those the object uncovers fail the round trip; the others fail the consistency test with
    # a flow of a pixel or more while their content did not change where they are. Both pass
    # the brightness test, and started from the warped result they brought the object's dark
    # edge along, which the next frame held as a trail. Other inconsistent flows are followed:
    # the test also flags the slowly turning middle of a rotating object, which warps well.
    in_place = _in_place_change(previous, content)
    unmoved = in_place <= BRIGHTNESS_TOLERANCE
    dragged = ~trusted & unmoved & (forward.pow(2).sum(1, keepdim=True) >= 1.0)
    # a pixel whose source lies outside (or in the edge band) has nothing to start from: the
    # warp would copy the border pixel into horizontal streaks, kept from frame to frame
    # A styled pixel answers the content around it, so one the nearest warp keeps in place
    # beside content that changed where it is keeps styling drawn for content no longer there:
    # the halo an object leaves behind, which later frames held as a trail (issue 33). Such
    # pixels start afresh and are restyled (not held) like those near a change; not beside the
    # thin slivers of an object that creeps, whose halo stays nearly where it was.
    stays = stays_in_place(forward)
    gone = (
        ~unmoved
        if earlier is None
        else ~unmoved | (_in_place_change(earlier, content) > BRIGHTNESS_TOLERANCE)
    )
    stale = (_within(_opened(gone.float(), left_behind), UNTRUSTED_MARGIN) > 0) & stays
    reliable = trusted & ~near & ~stale
    candidates = ~stays & (in_place > UNCOVERED_CHANGE) & ~reliable & TELL_UNCOVERED
    uncovered = _towards_still(current_grey, previous_grey, stays & unmoved, candidates)
    uncovered &= ~(_within((reliable & ~stays).float(), UNCOVERED_GAP) > 0)
    fresh = changed | ~inside | (near & (hidden | dragged)) | stale | uncovered
    restyled = (_within(changed.float(), UNTRUSTED_MARGIN) > 0) | stale
    still = trusted & unmoved & ~restyled
    return FrameLink(
        forward, reliable.float(), fresh.float(), restyled.float(), still.float(), uncovered.float(), content
    )


def _in_place_change(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """(1, 1, H, W): how much each pixel's content changed where it is (the largest channel's)."""
    return (before.float() - after.float()).abs().amax(dim=1, keepdim=True)


def stays_in_place(flow: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) bool: where a (N, 2, H, W) flow moves a pixel by less than half a pixel."""
    return flow.abs().amax(dim=1, keepdim=True) < 0.5


def _towards_still(
    current: np.ndarray, previous: np.ndarray, still: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """(1, 1, H, W) bool: the ``candidates`` whose grey content (``current``, ``previous``:
    (H, W)) came closer to the mean of the ``still`` pixels' current content around them (see
    UNCOVERED_WINDOW)."""
    now = torch.from_numpy(current)[None, None].to(candidates.device)
    before = torch.from_numpy(previous)[None, None].to(candidates.device)
    weight = still.to(now.dtype)

    def mean_around(image: torch.Tensor) -> torch.Tensor:
        radius = UNCOVERED_WINDOW // 2
        return F.avg_pool2d(image, UNCOVERED_WINDOW, 1, radius, count_include_pad=False)

    share = mean_around(weight)
    background = mean_around(weight * now) / share.clamp(min=1e-6)
    closer = (now - background).abs() < (before - background).abs()
    return candidates & closer & (share >= MIN_STILL_AROUND)


def fill_styling(
    styling: torch.Tensor, link: FrameLink, groups: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fill_from_surroundings` for a later frame's fresh pixels: ``styling`` (1, C, H, W)
    copied from reliable pixels that stay where they are (a moving object's halo trails it:
    copied into the background it uncovers, it became a wake), and where none is near, except
    for uncovered pixels, from any reliable pixel (a drifting field has no still pixels)."""
    if not TELL_UNCOVERED:
        return fill_from_surroundings(styling, link.fresh, link.reliable, groups)
    stays = stays_in_place(link.flow).to(link.reliable.dtype)
    styling, copied = fill_from_surroundings(styling, link.fresh, link.reliable * stays, groups)
    rest = link.fresh * (1.0 - copied) * (1.0 - link.uncovered)
    styling, more = fill_from_surroundings(styling, rest, link.reliable, groups)
    return styling, torch.maximum(copied, more)


def _opened(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """The (N, 1, H, W) float ``mask`` without the parts narrower than 2 ``radius`` + 1 px."""
    return _dilated(1.0 - _dilated(1.0 - mask, radius), radius)


def _dilated(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """1 within ``radius`` pixels (a square) of a 1 in the (N, 1, H, W) float ``mask``."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask, 2 * radius + 1, stride=1, padding=radius)


def _within(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Above 0 within ``radius`` pixels (a disc: Euclidean distance) of a 1 in the (N, 1, H, W)
    float ``mask``."""
    offsets = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    disc = (offsets.view(-1, 1).pow(2) + offsets.view(1, -1).pow(2) <= radius * radius).to(mask.dtype)
    return F.conv2d(mask, disc[None, None], padding=radius)


# A later frame gets fewer steps than the first (time_steps): pixels near a change, whose
# styling starts over, are held only once they have had a first frame's steps in all, else
# they keep unfinished styling along a moving object's path (docs/benchmarks.md, "Engine notes").


def steps_owed(link: FrameLink, owed: torch.Tensor | None, steps: int, first_steps: int) -> torch.Tensor:
    """(1, 1, H, W): the steps each pixel of a frame still needs, after this frame's ``steps``,
    before the next frame holds it (a first frame's ``first_steps`` for a restyled pixel, less
    the steps it has had since). ``owed`` is the previous frame's, None after a first frame."""
    carried = torch.zeros_like(link.restyled) if owed is None else warp(owed, link.flow, "nearest")
    carried = torch.where(link.restyled > 0, torch.full_like(carried, float(first_steps)), carried)
    return (carried - steps).clamp(min=0.0)


def held(link: FrameLink, owed: torch.Tensor | None) -> torch.Tensor:
    """(1, 1, H, W), 1 where a frame is held to the warped previous result: where the flow is
    reliable and the pixel owes no steps (``owed`` is the previous frame's :func:`steps_owed`)."""
    return link.reliable * _paid(link, owed)


# The pixels near a change that the flow trusts and whose content did not move (FrameLink.still)
# are free in a frame but keep their anchor as the next frame's reference: beside a turning
# object their small moves otherwise add up to drift (docs/benchmarks.md, "Engine notes").


def anchored(link: FrameLink, owed: torch.Tensor | None) -> torch.Tensor:
    """(1, 1, H, W), 1 where the next frame's reference is the warped previous reference rather
    than this frame's result: where the frame is :func:`held` and where its pixels are
    ``still`` (see :class:`FrameLink`) and owe no steps."""
    return torch.maximum(link.reliable, link.still) * _paid(link, owed)


def _paid(link: FrameLink, owed: torch.Tensor | None) -> torch.Tensor:
    """(1, 1, H, W), 1 where a frame's pixels owe no steps (``owed`` as in :func:`held`)."""
    if owed is None:
        return torch.ones_like(link.reliable)
    return (warp(owed, link.flow, "nearest") <= 0).to(link.reliable.dtype)


#: Fresh regions of fewer pixels than this copy the nearest known pixel rather than a shifted
#: region (a region's shape says little about where its like lies; many tiny ones, as a noisy
#: change gives, would each cost a search).
SMALL_REGION = 9

#: A region is copied from a shifted stretch only if at least this share of it lands on known
#: pixels, and a fresh pixel copies its nearest known pixel only within COPY_REACH pixels: where
#: little is known (unlike slices, a scene cut) a copy would spread a few pixels' styling wide,
#: and those pixels start as a first frame does instead.
MIN_COVER = 0.5
COPY_REACH = 2 * UNTRUSTED_MARGIN


def fill_from_surroundings(
    image: torch.Tensor, fresh: torch.Tensor, known: torch.Tensor, groups: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``image`` (1, C, H, W) with its ``fresh`` pixels copied from ``known`` ones nearby, and
    the (1, 1, H, W) mask of the pixels that were copied.

    Each connected fresh region is copied whole from the region shifted by the vector (16
    directions, 0.5, 1 or 1.5 times the region's extent) that lands most of it on known pixels,
    so that it gets a stretch of texture rather than smeared edge values (if MIN_COVER of it
    lands); elsewhere, the nearest known pixel within COPY_REACH pixels
    (limited to what is typical around it: SPREAD). Pixels beyond both
    are not copied. ``fresh`` and ``known`` are (1, 1, H, W), 1 or 0; with ``groups`` (an
    (H, W) label image, e.g. style regions) a pixel copies only from its own label's pixels.
    """
    from scipy import ndimage

    values = image[0].detach().float().cpu().numpy()
    is_fresh = fresh[0, 0].cpu().numpy() > 0.5
    is_known = (known[0, 0].cpu().numpy() > 0.5) & ~is_fresh
    if not is_known.any() or not is_fresh.any():
        return image, torch.zeros_like(fresh, dtype=image.dtype)
    usable = _Sources(is_known, groups)
    distance, (source_rows, source_columns) = ndimage.distance_transform_edt(~is_known, return_indices=True)
    copied = is_fresh & (distance <= COPY_REACH)
    copied[copied] = usable(source_rows[copied], source_columns[copied], *np.nonzero(copied))
    rows, columns, shifted_rows, shifted_columns = _region_copies(is_fresh, usable)
    source_rows[rows, columns] = shifted_rows
    source_columns[rows, columns] = shifted_columns
    copied[rows, columns] = True

    filled = values.copy()
    nearest = copied.copy()
    nearest[rows, columns] = False
    typical = _known_typical(values, is_known, groups)
    filled[:, nearest] = typical[:, source_rows[nearest], source_columns[nearest]]
    filled[:, rows, columns] = values[:, shifted_rows, shifted_columns]
    return torch.from_numpy(filled)[None].to(image), torch.from_numpy(copied)[None, None].to(image)


#: A fresh pixel that copies its nearest known pixel takes that pixel's value limited to
#: SPREAD standard deviations about the mean of the known pixels (of its group) within
#: NEAREST_WINDOW px of it: a nearest copy spreads one pixel over every fresh pixel closer to it
#: than to any other, and a lone bright speckle of a dark background's styling became a bar that
#: joined two passing objects (issue 33). Limited, not averaged: the mean took the fill's
#: texture, and the frame's border stood out against the smoother inside.
NEAREST_WINDOW = 5
SPREAD = 0.5


def _known_typical(values: np.ndarray, is_known: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """(C, H, W): ``values`` with each known pixel's limited to SPREAD standard deviations
    about the mean of the known pixels of its group within NEAREST_WINDOW px (a square)."""
    from scipy import ndimage

    typical = values.copy()
    labels = np.zeros(is_known.shape, np.int64) if groups is None else groups
    for label in np.unique(labels[is_known]):
        members = (is_known & (labels == label)).astype(values.dtype)
        inside = members > 0
        count = np.maximum(ndimage.uniform_filter(members, NEAREST_WINDOW, mode="constant"), 1e-12)
        for channel, plane in enumerate(values):
            mean = ndimage.uniform_filter(plane * members, NEAREST_WINDOW, mode="constant") / count
            square = ndimage.uniform_filter(plane * plane * members, NEAREST_WINDOW, mode="constant") / count
            spread = SPREAD * np.sqrt(np.maximum(square - mean * mean, 0.0))
            typical[channel][inside] = np.clip(plane, mean - spread, mean + spread)[inside]
    return typical


class _Sources:
    """Which pixels a fresh pixel may copy: known ones (of its own group, with ``groups``)."""

    def __init__(self, is_known: np.ndarray, groups: np.ndarray | None) -> None:
        self.is_known, self.groups = is_known, groups

    def __call__(
        self, source_rows: np.ndarray, source_columns: np.ndarray, rows: np.ndarray, columns: np.ndarray
    ) -> np.ndarray:
        """Whether each source pixel is known (and in its destination's group)."""
        known_there = self.is_known[source_rows, source_columns]
        if self.groups is not None:
            known_there &= self.groups[source_rows, source_columns] == self.groups[rows, columns]
        return known_there


def _region_copies(
    is_fresh: np.ndarray, usable: _Sources
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The fresh pixels of regions of SMALL_REGION pixels or more copied whole from a shifted
    stretch (see :func:`fill_from_surroundings`): their rows and columns and their sources'.
    Every region's 48 shifts are scored at once: a noisy change makes many thousand regions."""
    from scipy import ndimage

    height, width = is_fresh.shape
    regions, count = ndimage.label(is_fresh)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    extents = np.zeros(count + 1)
    for number, box in enumerate(ndimage.find_objects(regions), start=1):
        extents[number] = max(box[0].stop - box[0].start, box[1].stop - box[1].start)
    rows, columns = np.nonzero(is_fresh & (sizes[regions] >= SMALL_REGION))
    region_of = regions[rows, columns]
    best_cover = np.zeros(count + 1)
    best_shift = np.zeros((2, count + 1), dtype=np.int64)

    def landing(shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shifted_rows, shifted_columns = rows + shift[0][region_of], columns + shift[1][region_of]
        inside = (
            (shifted_rows >= 0) & (shifted_rows < height) & (shifted_columns >= 0) & (shifted_columns < width)
        )
        lands = np.zeros_like(inside)
        lands[inside] = usable(shifted_rows[inside], shifted_columns[inside], rows[inside], columns[inside])
        return shifted_rows, shifted_columns, lands

    for reach in (0.5, 1.0, 1.5):
        for angle in np.arange(16) * (np.pi / 8):
            shift = np.rint(reach * extents * np.array([[np.sin(angle)], [np.cos(angle)]])).astype(np.int64)
            cover = np.bincount(region_of, weights=landing(shift)[2], minlength=count + 1)
            better = cover > best_cover  # ties keep the first, shortest shift
            best_cover[better] = cover[better]
            best_shift[:, better] = shift[:, better]
    shifted_rows, shifted_columns, lands = landing(best_shift)
    lands &= (best_cover >= MIN_COVER * sizes)[region_of]
    return rows[lands], columns[lands], shifted_rows[lands], shifted_columns[lands]
