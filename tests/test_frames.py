"""Stacks: frames="independent" styles each frame as if alone, frames="time" follows the
optical flow from frame to frame and keeps static parts still."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from tiny_runs import tiny_options

from napari_style_transfer import StyleTransferError, iter_stylize, stylize
from napari_style_transfer.api import StyleResult
from napari_style_transfer.frames import (
    UNTRUSTED_MARGIN,
    anchored,
    disoccluded,
    fill_from_surroundings,
    held,
    link_frames,
    motion_boundary,
    steps_owed,
    time_chains,
    warp,
)
from napari_style_transfer.pipeline import optimise, reader
from napari_style_transfer.pipeline.canvas import Canvas


def consistent(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Ruder et al.'s consistency test, (N, 1, H, W) bool, True where the flow is trusted.

    ``forward`` (N, 2, H, W) takes this frame to the previous one (this frame at x is the
    previous at x + w(x)); ``backward`` takes the previous frame to this one. A pixel is
    disoccluded where going there and back does not return,
    |w + w^|^2 > 0.01 (|w|^2 + |w^|^2) + 0.5 with w^ the backward flow at x + w(x), and on a
    motion boundary where |grad u|^2 + |grad v|^2 > 0.01 |w|^2 + 0.002.
    """
    return ~(disoccluded(forward, backward) | motion_boundary(forward))


#: time mode's single forward pass (time_passes=0): its mechanics are specified here; the
#: passes that follow frames styled alone are in test_time_passes.py
FAST = tiny_options(steps=4, size=48, time_passes=0)


def texture(size: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth random texture in [0, 1]: enough structure for the flow everywhere."""
    from scipy.ndimage import gaussian_filter

    noise = gaussian_filter(np.random.default_rng(seed).random((size, size)), 1.5)
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def as_tensor(grey: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.repeat(grey[None, None], 3, axis=1)).float()


def moving_disc(frames: int = 4, size: int = 48, step: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A bright disc moving right over a static texture, and the pixels it never comes near."""
    background = 0.2 + 0.4 * texture(size)
    yy, xx = np.mgrid[0:size, 0:size]
    movie, near = [], np.zeros((size, size), bool)
    for t in range(frames):
        distance = np.hypot(yy - size / 2, xx - (12 + step * t))
        frame = background.copy()
        frame[distance < 7] = 0.95
        movie.append(frame)
        near |= distance < 7 + 6
    return np.stack(movie), ~near


def result_of(content, style, **options) -> StyleResult:
    items = list(iter_stylize(content, style, **{**FAST, **options}))
    return items[-1]


def test_the_flow_of_a_known_shift_warps_the_image_by_that_shift():
    image = texture()
    shifted = np.roll(image, (2, 3), axis=(0, 1))  # shifted[y, x] = image[y - 2, x - 3]
    link = link_frames(as_tensor(image), as_tensor(shifted))
    inner = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(np.median(link.flow[0, 0].numpy()[inner]), -2.0, atol=0.05)
    np.testing.assert_allclose(np.median(link.flow[0, 1].numpy()[inner]), -3.0, atol=0.05)
    warped = warp(as_tensor(image), link.flow)[0, 0].numpy()
    assert np.abs(warped - shifted)[inner].mean() < 0.01
    assert link.reliable[0, 0].numpy()[inner].mean() > 0.95


def test_the_frame_border_is_trusted_under_a_flow_of_a_fraction_of_a_pixel():
    # TV-L1 gives static parts flows of a few hundredths of a pixel; where those point outward
    # the border pixel is still the source, and untrusted it was styled afresh every frame
    from scipy.ndimage import shift

    image = texture()
    for nudge in (0.05, -0.05):
        link = link_frames(as_tensor(image), as_tensor(shift(image, (nudge, nudge), order=3, mode="nearest")))
        assert link.flow.abs().max() < 0.5  # none at all where the frames show no motion (frames._evidenced)
        reliable = link.reliable[0, 0].numpy() > 0.5
        border = np.concatenate([reliable[0], reliable[-1], reliable[:, 0], reliable[:, -1]])
        assert border.mean() > 0.95


def test_the_consistency_test_marks_a_disoccluded_region():
    forward = torch.zeros(1, 2, 32, 32)
    backward = torch.zeros(1, 2, 32, 32)
    forward[:, 1, 10:20, 10:20] = -5.0  # these pixels claim to come from 5 px to the left...
    reliable = consistent(forward, backward)[0, 0]  # ...which no backward flow confirms
    assert not reliable[12:18, 12:18].any()
    assert reliable[:5].all() and reliable[25:].all()


def disc_step():
    """The link between the moving disc's first two frames, and the pixels the disc uncovers."""
    movie, _ = moving_disc(frames=2)
    link = link_frames(as_tensor(movie[0]), as_tensor(movie[1]))
    yy, xx = np.mgrid[0:48, 0:48]
    return link, (np.hypot(yy - 24, xx - 12) < 7) & (np.hypot(yy - 24, xx - 16) >= 7)


def test_the_pixels_a_moving_object_uncovers_are_not_trusted():
    link, uncovered = disc_step()
    reliable = link.reliable[0, 0].numpy() > 0.5
    assert reliable[uncovered].mean() < 0.2
    assert reliable[:8].mean() > 0.8  # the static texture far from the disc is trusted


def test_the_pixels_a_moving_object_uncovers_start_afresh_whatever_their_brightness():
    # TV-L1 drags the disc's edge into the pixels it uncovers; many of those pass the brightness
    # test, and starting them from the warped result drew a dark trail behind the disc
    link, uncovered = disc_step()
    fresh = link.fresh[0, 0].numpy() > 0.5
    assert fresh[uncovered].mean() > 0.6  # 0.31 when only changed pixels started afresh
    assert not fresh[:8].any()  # the static texture far from the disc follows the flow


def test_the_pixels_near_a_change_are_restyled_within_a_disc():
    link, uncovered = disc_step()
    restyled = link.restyled[0, 0].numpy() > 0.5
    assert restyled[uncovered].all()
    changed = np.zeros((48, 48), bool)  # the disc where it was and where it is
    yy, xx = np.mgrid[0:48, 0:48]
    for column in (12, 16):
        changed |= np.hypot(yy - 24, xx - column) < 7
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~changed)
    assert not restyled[distance > UNTRUSTED_MARGIN + 1].any()  # a disc, not the square's corners
    assert not restyled[:8].any()


def test_restyled_pixels_are_held_only_once_they_have_had_a_first_frames_steps():
    link, _ = disc_step()
    restyled = link.restyled > 0
    owed = steps_owed(link, None, steps=10, first_steps=30)
    assert torch.equal(owed[restyled], torch.full_like(owed[restyled], 20.0))
    assert not owed[~restyled].any()
    assert not steps_owed(link, None, steps=30, first_steps=30).any()  # all steps: nothing owed

    still = type(link)(
        torch.zeros_like(link.flow),
        torch.ones_like(link.reliable),
        *[torch.zeros_like(link.fresh)] * 4,
        link.content,
    )
    assert torch.equal(held(still, None), still.reliable)
    assert torch.equal(held(still, owed) > 0, ~restyled)  # owing steps: not held yet
    owed = steps_owed(still, owed, steps=10, first_steps=30)
    assert torch.equal(held(still, owed) > 0, ~restyled)  # 10 steps still owed
    owed = steps_owed(still, owed, steps=10, first_steps=30)
    assert not owed.any() and held(still, owed).all()  # 30 in all: held from now on


def test_unchanged_pixels_near_a_change_are_still_and_anchored_though_not_held():
    link, _ = disc_step()
    still, reliable, restyled = (getattr(link, name)[0, 0] > 0 for name in ("still", "reliable", "restyled"))
    near_only = still & ~reliable  # in the square margin around the change, outside the disc
    assert near_only.sum() > 20
    assert not (still & restyled).any()
    assert torch.equal(anchored(link, None)[0, 0] > 0, still | reliable)
    owed = steps_owed(link, None, steps=10, first_steps=30)  # the restyled pixels owe 20 steps
    owing = warp(owed, link.flow, "nearest")[0, 0] > 0
    anchor = anchored(link, owed)[0, 0] > 0
    assert owing.any() and not anchor[owing].any()  # owing steps: not anchored yet
    assert torch.equal(anchor[~owing], (still | reliable)[~owing])


def rotating_disc(frames: int, size: int = 48, turn: float = 12.0) -> np.ndarray:
    """A textured disc turning ``turn`` degrees a frame about the middle of a static texture."""
    from scipy.ndimage import rotate

    background = 0.2 + 0.4 * texture(size)
    pattern = texture(size, seed=1)
    yy, xx = np.mgrid[0:size, 0:size]
    inside = np.hypot(yy - size / 2, xx - size / 2) < 10
    movie = []
    for t in range(frames):
        frame = background.copy()
        frame[inside] = 0.55 + 0.4 * rotate(pattern, turn * t, reshape=False, order=1, mode="nearest")[inside]
        movie.append(frame)
    return np.stack(movie)


def test_still_pixels_beside_a_turning_object_keep_their_first_value_as_the_next_frames_target(
    style, monkeypatch
):
    # free within each frame, but each frame's result there as the next frame's reference let
    # them random-walk beside the object (static drift grew 6x over 50 frames)
    from napari_style_transfer.engine import StyleObjective

    targets, linked = [], []
    real, real_link = StyleObjective.set_temporal, reader.link_frames

    def recording(objective, target, reliable=None):
        # on the image's canvas (pipeline/canvas.py), as the links are
        targets.append(None if target is None else target.clone())
        return real(objective, target, reliable)

    def recording_link(previous, content, *left_behind):
        linked.append(real_link(previous, content, *left_behind))
        return linked[-1]

    monkeypatch.setattr(StyleObjective, "set_temporal", recording)
    monkeypatch.setattr("napari_style_transfer.pipeline.reader.link_frames", recording_link)
    result_of(rotating_disc(6), style, frames="time", time_steps=4)
    targets = targets[1:]  # the later frames'
    # pixels still in every frame whose flow keeps them in place (nearest warping moves nothing)
    kept_in_place = torch.stack(
        [(link.still[0, 0] > 0) & (link.flow[0].abs().amax(0) < 0.5) for link in linked]
    ).all(0)
    freed = torch.stack([link.reliable[0, 0] == 0 for link in linked]).any(0)  # some frame left them free
    watched = kept_in_place & freed
    assert watched.sum() > 20
    for target in targets[1:]:
        torch.testing.assert_close(target[..., watched], targets[0][..., watched], rtol=0, atol=1e-6)


@pytest.mark.parametrize("series", [1, 2, "unlike"])
def test_a_later_frame_starts_lbfgs_from_the_curvature_pairs_of_the_frame_it_follows(
    style, monkeypatch, series
):
    # a series of series (T, Z) keeps no pairs across the other series: one history at a time;
    # nor does a frame that mostly starts afresh (pairs measured around an unlike image misled it)
    from napari_style_transfer.lbfgs import CarriedCurvature

    given, left = [], []
    real_give, real_take = CarriedCurvature.give, CarriedCurvature.take

    def recording_give(carried, lbfgs):
        given.append(len(carried))
        real_give(carried, lbfgs)

    def recording_take(carried, lbfgs):
        real_take(carried, lbfgs)
        left.append(len(carried))

    monkeypatch.setattr(CarriedCurvature, "give", recording_give)
    monkeypatch.setattr(CarriedCurvature, "take", recording_take)
    movie, _ = moving_disc(frames=3)
    if series == 2:
        movie = np.stack([movie, movie[:, ::-1]], axis=1)  # (T, Z, Y, X)
    elif series == "unlike":
        yy, xx = np.mgrid[0:48, 0:48]
        movie = np.stack([np.sin(xx / 3.0), np.sin(yy / 3.0), np.sin((xx + yy) / 4.0)]) * 0.4 + 0.5
    result_of(movie, style, frames="time", time_steps=2)
    assert len(given) == len(left) == (6 if series == 2 else 3) and any(left)
    if series == 1:
        assert given == [0, *left[:-1]]
    else:
        assert given == [0] * len(left)


def test_a_time_series_holds_the_pixels_it_restyled_only_after_a_first_frames_steps(style, monkeypatch):
    from napari_style_transfer.engine import StyleObjective

    masks = []
    real = StyleObjective.set_temporal

    def recording(objective, target, reliable=None):
        masks.append(reliable)  # on the canvas, as the links are
        return real(objective, target, reliable)

    linked = []
    real_link = reader.link_frames

    def recording_link(previous, content, *left_behind):
        linked.append(real_link(previous, content, *left_behind))
        return linked[-1]

    monkeypatch.setattr(StyleObjective, "set_temporal", recording)
    monkeypatch.setattr("napari_style_transfer.pipeline.reader.link_frames", recording_link)
    movie, _ = moving_disc(frames=3)
    for time_steps, owing in ((2, True), (4, False)):  # FAST has 4 steps
        masks.clear()
        linked.clear()
        result_of(movie, style, frames="time", time_steps=time_steps)
        _, second, third = masks
        assert torch.equal(second, linked[0].reliable)  # after a first frame everything is settled
        # the pixels restyled in frame 1, where frame 2's flow takes them, owe steps after 2
        came = warp(linked[0].restyled, linked[1].flow, "nearest") > 0
        left_out = (linked[1].reliable > 0) & came
        assert left_out.sum() > 20
        assert bool((third[left_out] == 0).all()) is owing
        assert torch.equal(third[~came], linked[1].reliable[~came])


def test_a_fresh_region_is_copied_whole_from_known_pixels_nearby():
    image = torch.from_numpy(np.stack([texture(32, seed) for seed in range(3)]))[None]
    fresh = torch.zeros(1, 1, 32, 32)
    fresh[..., 12:18, 10:16] = 1.0
    filled, copied = fill_from_surroundings(image, fresh, 1.0 - fresh)
    assert torch.equal(copied, fresh)
    assert torch.equal(filled[..., fresh[0, 0] == 0], image[..., fresh[0, 0] == 0])
    patch = filled[0, :, 12:18, 10:16]
    shifts = [
        (dy, dx)
        for dy in range(-12, 19)
        for dx in range(-10, 17)
        if (dy, dx) != (0, 0) and torch.equal(patch, image[0, :, 12 + dy : 18 + dy, 10 + dx : 16 + dx])
    ]
    assert len(shifts) == 1  # one stretch of texture, shifted as a whole
    dy, dx = shifts[0]
    assert not ((-6 < dy < 6) and (-6 < dx < 6))  # from outside the region


def test_a_fresh_pixel_on_its_own_copies_its_nearest_known_neighbour():
    rows, columns = np.mgrid[0:16, 0:16] / 16.0  # ramps: every neighbour is typical of its own
    image = torch.from_numpy(np.stack([rows, columns, (rows + columns) / 2]).astype(np.float32))[None]
    fresh = torch.zeros(1, 1, 16, 16)
    fresh[..., 5, 5] = 1.0
    filled, _ = fill_from_surroundings(image, fresh, 1.0 - fresh)
    neighbours = [image[0, :, 5 + dy, 5 + dx] for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    assert any(torch.equal(filled[0, :, 5, 5], value) for value in neighbours)


def test_a_lone_speckle_is_not_spread_over_the_fresh_pixels_nearest_it():
    # a nearest copy gave every fresh pixel closer to the speckle than to anything else its
    # value: a bright bar that joined two passing objects (issue 33)
    image = 0.1 + 0.01 * torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    image[..., 12, 4] = 0.5
    fresh = torch.zeros(1, 1, 24, 24)
    fresh[..., 6:12, 4] = 1.0  # too few pixels to be copied whole from a stretch
    known = torch.zeros(1, 1, 24, 24)
    known[..., 12:, :] = 1.0  # the speckle is their nearest known pixel
    filled, copied = fill_from_surroundings(image, fresh, known)
    assert copied[..., 6:12, 4].all()
    assert filled[..., 6:12, 4].max() < 0.2  # the background 0.1 and 0.11; before the fix: 0.5


def test_fresh_pixels_far_from_anything_known_are_not_copied():
    from napari_style_transfer.frames import COPY_REACH

    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    known = torch.zeros(1, 1, 40, 40)
    known[..., :, :2] = 1.0  # a strip along the left edge: too little to copy a region from
    fresh = 1.0 - known
    filled, copied = fill_from_surroundings(image, fresh, known)
    columns = torch.arange(40).expand(40, 40)
    near = columns - 1 <= COPY_REACH
    assert copied[0, 0][near & (columns >= 2)].all()  # the nearest known pixel, within reach
    assert not copied[0, 0][~near].any()
    assert torch.equal(filled[..., ~near], image[..., ~near])


def test_a_fresh_pixel_copies_only_from_its_own_group():
    image = torch.from_numpy(np.stack([texture(24, seed) for seed in range(3)]))[None]
    groups = np.zeros((24, 24), np.int64)
    groups[:, 12:] = 1
    fresh = torch.zeros(1, 1, 24, 24)
    fresh[..., 8:16, 12:14] = 1.0  # on the edge of group 1, group 0 right beside it
    filled, copied = fill_from_surroundings(image, fresh, 1.0 - fresh, groups)
    assert copied.sum() == fresh.sum()
    group_one = image[0][:, (groups == 1) & (fresh[0, 0].numpy() == 0)]
    for row, column in zip(*np.nonzero(fresh[0, 0].numpy()), strict=True):
        value = filled[0, :, row, column]
        assert (group_one == value[:, None]).all(0).any()


def test_nothing_is_copied_where_nothing_is_known():
    image = torch.rand(1, 3, 16, 16)
    filled, copied = fill_from_surroundings(image, torch.ones(1, 1, 16, 16), torch.zeros(1, 1, 16, 16))
    assert torch.equal(filled, image) and not copied.any()


def test_a_later_frame_starts_its_new_pixels_from_their_content_plus_nearby_styling(style, monkeypatch):
    fills, starts = [], []
    real_fill, real_optimise = optimise.fill_styling, optimise._optimise_batch

    def recording_fill(styling, link, groups):
        assert groups is None  # no style regions
        filled, copied = real_fill(styling, link, groups)
        fills.append((styling, link.fresh, filled, copied))
        return filled, copied

    def recording_optimise(objective, contents, start, opts, steps, carried=None):
        starts.append((contents, start.clone()))  # on the canvas, as the links are
        return real_optimise(objective, contents, start, opts, steps, carried)

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.fill_styling", recording_fill)
    monkeypatch.setattr("napari_style_transfer.pipeline.optimise._optimise_batch", recording_optimise)
    movie, _ = moving_disc(frames=2)
    result_of(movie, style, frames="time", time_steps=2)
    ((styling, fresh, filled, copied),), ((content, start),) = fills, starts[1:]
    new = (fresh[0, 0] > 0) & (copied[0, 0] > 0)
    assert new.sum() > 20
    expected = (content + filled).clamp(0, 1)
    torch.testing.assert_close(start[..., new], expected[..., new])
    assert (start - content)[..., new].abs().mean() > 0.02  # the styling came along
    old = fresh[0, 0] == 0  # the rest starts from the warped previous result
    torch.testing.assert_close(start[..., old], (styling + content)[..., old])


def test_blank_frames_give_a_finite_flow_and_trust_only_unchanged_pixels():
    blank = torch.zeros(1, 3, 32, 32)
    link = link_frames(blank, blank)
    assert torch.isfinite(link.flow).all() and link.reliable.all()
    textured = as_tensor(texture(32))
    link = link_frames(blank, textured)
    assert torch.isfinite(link.flow).all()
    assert link.reliable[textured.amax(1, keepdim=True) > 0.1].sum() == 0


def test_the_first_leading_axis_is_time_and_the_others_are_independent_series():
    assert list(time_chains(())) == [((), None)]
    assert list(time_chains((2, 2))) == [
        ((0, 0), None),
        ((0, 1), None),
        ((1, 0), (0, 0)),
        ((1, 1), (0, 1)),
    ]


def test_a_static_region_stays_put_in_time_mode(style):
    movie, static = moving_disc()
    timed = result_of(movie, style, frames="time").image
    styled = np.abs(timed[0] - movie[0])[static].mean()  # how far the style moved those pixels
    moved = [np.abs(timed[t] - timed[0])[static].mean() for t in range(1, 4)]
    assert max(moved) < styled / 3
    # nothing adds up from frame to frame: moves under a tenth of an 8-bit grey level count as
    # none (compared with the previous result's statistics the static pixels move by 1e-5 to
    # 1e-4 from frame to frame, with no trend over 8 frames; against the style's, 0.004-0.006)
    assert moved[-1] < max(1.5 * moved[0], 0.1 / 255)


def test_independent_frames_equal_single_runs(style):
    yy, xx = np.mgrid[0:48, 0:48]
    slices = np.stack([np.sin(xx / 3.0), np.sin(yy / 3.0), np.sin((xx + yy) / 4.0)]) * 0.4 + 0.5
    # one at a time: bit for bit (batches agree to float rounding, tests/test_batch_frames.py)
    stack = result_of(slices, style, frames="independent", init="noise", seed=3, batch_frames=1).image
    for k in range(3):
        alone = stylize(slices[k], style, **{**FAST, "init": "noise", "seed": 3})
        np.testing.assert_array_equal(stack[k], alone)


def test_later_time_frames_run_time_steps_and_progress_reaches_one(style):
    movie, _ = moving_disc(frames=3)
    items = list(iter_stylize(movie, style, **{**FAST, "frames": "time", "time_steps": 2}))
    result, records = items[-1], items[:-1]
    assert result.frame_steps == (4, 2, 2)
    assert [r.step for r in records if r.frame_number == 2] == [1, 2]
    assert records[-1].progress == 1.0 and records[3].progress == 0.5
    assert records[4].losses.temporal > 0.0 and records[0].losses.temporal == 0.0


#: Seconds to wait for the thread that reads a time series ahead: it needs a fraction of one
#: at 48 px, the rest is room for a loaded machine.
READER_WAIT = 600


class Linking(list):
    """The thread that computed each flow (link_frames) of a run, in turn; ``linked`` is set
    at the first."""

    def __init__(self):
        super().__init__()
        self.linked = threading.Event()


@pytest.fixture
def linking_threads(monkeypatch) -> Linking:
    threads = Linking()

    def recording(previous, content, *left_behind):
        link = link_frames(previous, content, *left_behind)
        threads.append(threading.current_thread())
        threads.linked.set()
        return link

    monkeypatch.setattr("napari_style_transfer.pipeline.reader.link_frames", recording)
    return threads


def test_the_next_frame_and_its_flow_are_made_while_the_caller_holds_the_current_frame(
    style, monkeypatch, linking_threads
):
    monkeypatch.setattr("napari_style_transfer.pipeline.reader.reads_ahead", lambda device: True)
    movie, _ = moving_disc(frames=3)
    run = iter_stylize(movie, style, **{**FAST, "frames": "time"})
    first = next(run)  # the run now waits in frame 0's first step
    assert (first.frame, first.step) == ((0,), 1)
    assert linking_threads.linked.wait(READER_WAIT), "frame 1's flow waited for frame 0's steps"
    assert linking_threads[0] is not threading.current_thread()
    run.close()


def test_in_time_passes_the_next_jobs_flow_is_made_while_the_caller_holds_the_current_job(
    style, monkeypatch, linking_threads
):
    # jobs: frames 0 and 1 alone, then frame 1 held to frame 0 (one pass): the pass's flow is
    # made while frame 1 is styled alone, so a GPU does not wait for TV-L1 between the jobs
    monkeypatch.setattr("napari_style_transfer.pipeline.reader.reads_ahead", lambda device: True)
    movie, _ = moving_disc(frames=2)
    run = iter_stylize(movie, style, **{**FAST, "frames": "time", "time_passes": 1})
    update = next(run)
    while update.frame != (1,):
        update = next(run)
    assert linking_threads.linked.wait(READER_WAIT), "the pass's flow waited for frame 1's steps"
    assert linking_threads[0] is not threading.current_thread()
    rest = list(run)
    assert rest[-1].frames == 2 and len(linking_threads) == 1  # the pass's one flow, made once


@pytest.mark.parametrize("spare_cores, ahead", [(0, False), (1, True)])
def test_on_the_cpu_frames_are_read_ahead_only_with_a_core_torch_leaves_free(
    style, monkeypatch, linking_threads, spare_cores, ahead
):
    from napari_style_transfer import memory

    monkeypatch.setattr(memory, "usable_cpus", lambda: torch.get_num_threads() + spare_cores)
    movie, _ = moving_disc(frames=2)
    list(iter_stylize(movie, style, **{**FAST, "frames": "time"}))
    assert len(linking_threads) == 1
    assert (linking_threads[0] is not threading.current_thread()) == ahead


def test_beside_a_gpu_frames_are_read_ahead():
    assert reader.reads_ahead(torch.device("cuda"))


def test_a_stopped_time_series_reads_no_further_frame_and_its_reading_thread_ends(style, monkeypatch):
    monkeypatch.setattr("napari_style_transfer.pipeline.reader.reads_ahead", lambda device: True)
    reads = []
    read_frame = reader.read_frame
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.reader.read_frame",
        lambda plan, index: reads.append(index) or read_frame(plan, index),
    )
    movie, _ = moving_disc(frames=4)
    run = iter_stylize(movie, style, **{**FAST, "frames": "time"})
    next(run)
    readers = [thread for thread in threading.enumerate() if thread.name.startswith(reader.READER_THREAD)]
    assert readers  # the run's own, waiting for its next job
    run.close()
    for thread in readers:
        thread.join(READER_WAIT)
    assert not any(thread.is_alive() for thread in readers)
    assert reads == [(0,), (1,)]  # the frame under way and the one read ahead


def test_a_one_frame_time_series_is_a_single_image(style):
    movie, _ = moving_disc(frames=1)
    stack = result_of(movie, style, frames="time").image
    np.testing.assert_array_equal(stack[0], stylize(movie[0], style, **FAST))


def test_a_time_series_with_blank_frames_runs_without_nan(style):
    movie, _ = moving_disc(frames=3)
    movie[1] = 0.0  # a dropped frame
    result = result_of(movie, style, frames="time", time_steps=2)
    assert np.isfinite(result.image).all() and result.image.shape == (3, 48, 48)


def test_an_rgba_time_series_carries_its_alpha(style):
    movie, _ = moving_disc(frames=2)
    rgba = np.zeros((2, 48, 48, 4), np.float32)
    rgba[..., :3] = movie[..., None]
    rgba[..., 3] = np.linspace(0, 1, 48)[None, None, :]
    result = result_of(rgba, style, frames="time", time_steps=2).image
    assert result.shape == (2, 48, 48, 4)
    np.testing.assert_allclose(result[1, ..., 3], rgba[1, ..., 3], atol=1e-6)


def test_a_multichannel_time_series_styles_each_channel_along_time(style):
    movie, _ = moving_disc(frames=2)
    channels = np.stack([movie, 1.0 - movie], axis=1)  # (T, C, H, W)
    result = result_of(channels, style, frames="time", time_steps=2)
    assert result.image.shape == (2, 2, 48, 48) and result.frame_steps == (4, 4, 2, 2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temporal_weight": -1.0}, "temporal_weight must be 0 or more"),
        ({"temporal_weight": float("nan")}, "temporal_weight must be a finite number"),
        ({"time_steps": -2}, "time_steps must be 0 (auto) or more"),
        ({"time_steps": 1.5}, "time_steps must be a whole number"),
        ({"frames": "movie"}, "frames must be one of independent, time"),
    ],
)
def test_bad_stack_options_are_refused(content, style, options, message):
    with pytest.raises(StyleTransferError, match=message.replace("(", r"\(").replace(")", r"\)")):
        iter_stylize(content, style, **{**FAST, **options})


def test_the_command_line_styles_a_time_series_into_a_stack(tmp_path, style):
    import tifffile

    from napari_style_transfer.cli import main

    movie, _ = moving_disc(frames=3)
    np.save(tmp_path / "movie.npy", movie)
    np.save(tmp_path / "style.npy", style)
    out = tmp_path / "styled.tif"
    argv = [
        str(tmp_path / "movie.npy"),
        str(tmp_path / "style.npy"),
        "-o",
        str(out),
        "--size",
        "48",
        "--steps",
        "3",
        "--weights",
        "random",
        "--quiet",
        "--frames",
        "time",
        "--time-steps",
        "1",
    ]
    assert main(argv) == 0
    assert tifffile.imread(out).shape == (3, 48, 48)


def test_a_time_series_with_style_regions_fills_new_pixels_within_their_region(style, monkeypatch):
    groups_seen = []
    real_fill = optimise.fill_styling

    def recording_fill(styling, link, groups):
        groups_seen.append(groups)
        return real_fill(styling, link, groups)

    monkeypatch.setattr("napari_style_transfer.pipeline.optimise.fill_styling", recording_fill)
    movie, _ = moving_disc(frames=2)
    labels = np.zeros((48, 48), np.int64)
    labels[:, 24:] = 1
    result = result_of(movie, [style, style[::-1]], frames="time", time_steps=2, style_regions=labels)
    assert result.image.shape == (2, 48, 48) and np.isfinite(result.image).all()
    (groups,) = groups_seen
    np.testing.assert_array_equal(groups, Canvas.around(labels.shape).pad_labels(labels))  # on the canvas
