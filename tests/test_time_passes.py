"""Time mode in passes (``time_passes``, Ruder et al.'s multi-pass): every frame styled alone,
then passes in alternating directions that blend each frame with its warped neighbour."""

from __future__ import annotations

import numpy as np
import torch
from test_timelapse_quality import GENTLE, dark_field, passing_discs

from napari_style_transfer import iter_stylize, stylize
from napari_style_transfer.api import StyleResult
from napari_style_transfer.frames import FrameLink, warp_result
from napari_style_transfer.pipeline import reader
from napari_style_transfer.pipeline.reader import two_back
from napari_style_transfer.pipeline.time_passes import chain_back, pass_order, pass_target


def test_passes_go_forward_then_backward_along_each_series():
    assert pass_order((3,), forward=True) == [((1,), (0,)), ((2,), (1,))]
    assert pass_order((3,), forward=False) == [((1,), (2,)), ((0,), (1,))]
    # further leading axes are series of their own: (t, z) follows (t -/+ 1, z)
    assert pass_order((2, 2), forward=True) == [((1, 0), (0, 0)), ((1, 1), (0, 1))]
    assert pass_order((2, 2), forward=False) == [((0, 1), (1, 1)), ((0, 0), (1, 0))]


def test_a_pass_frame_is_linked_to_the_frame_two_back_along_its_pass_but_not_across_a_turn():
    alone = [((t,), None) for t in range(4)]
    order = alone + pass_order((4,), forward=True) + pass_order((4,), forward=False)
    assert two_back(order) == [None] * 4 + [None, (0,), (1,)] + [None, (3,), (2,)]
    # series of their own (t, z) interleave in a pass: each is followed back along its own z
    order = pass_order((3, 2), forward=True) + pass_order((3, 2), forward=False)
    assert two_back(order) == [None, None, (0, 0), (0, 1), None, None, (2, 1), (2, 0)]


def test_a_pass_gives_each_link_the_content_of_the_frame_two_back(style, monkeypatch):
    calls = []
    real_link = reader.link_frames

    def recording(previous, content, *rest):
        calls.append((previous, content, *rest))
        return real_link(previous, content, *rest)

    monkeypatch.setattr("napari_style_transfer.pipeline.reader.link_frames", recording)
    stylize(passing_discs(32, 3), style, frames="time", time_passes=2, **{**GENTLE, "size": 32, "steps": 2})
    # forward (1) <- (0), (2) <- (1) [two back: (0)]; backward (1) <- (2), (0) <- (1) [(2)]
    earlier = [call[3] if len(call) > 3 else None for call in calls]
    assert [e is None for e in earlier] == [True, False, True, False]
    assert torch.equal(earlier[1], calls[0][0]) and torch.equal(earlier[3], calls[2][0])


def test_a_single_image_or_frame_in_time_mode_is_styled_alone_once(style):
    image = passing_discs(32, 3)[:1]
    options = {**GENTLE, "size": 32, "steps": 2, "time_steps": 1}
    assert pass_order((), forward=True) == [] and pass_order((1,), forward=False) == []
    alone = stylize(image[0], style, **options)
    np.testing.assert_allclose(stylize(image[0], style, frames="time", **options), alone, atol=1e-6)
    assert stylize(image, style, frames="time", **options).shape == image.shape


def test_each_frame_is_styled_alone_first_then_each_pass_takes_time_steps(style):
    movie = passing_discs(32, 3)
    options = {**GENTLE, "size": 32, "steps": 4, "time_steps": 2}
    result = None
    for item in iter_stylize(movie, style, frames="time", time_passes=2, **options):
        if isinstance(item, StyleResult):
            result = item
    assert result is not None
    # 3 frames alone, then 2 frames a pass (a pass's first frame stays as it is)
    assert result.frame_steps == (4, 4, 4, 2, 2, 2, 2)
    assert result.image.shape == movie.shape and result.frames == 3


def test_a_pass_reports_its_number_and_the_frames_place_in_the_stack(style):
    movie = passing_discs(32, 3)
    options = {**GENTLE, "size": 32, "steps": 2, "time_steps": 1}
    records = [
        r
        for r in iter_stylize(movie, style, frames="time", time_passes=2, **options)
        if not isinstance(r, StyleResult)
    ]
    firsts = [(r.pass_number, r.frame_number, r.frame) for r in records if r.step == 1]
    assert firsts == [
        (0, 0, (0,)),
        (0, 1, (1,)),
        (0, 2, (2,)),  # each frame alone
        (1, 1, (1,)),
        (1, 2, (2,)),  # forward
        (2, 1, (1,)),
        (2, 0, (0,)),  # backward
    ]
    assert {r.frames for r in records} == {3} and records[-1].progress == 1.0


def test_each_frames_first_styling_in_passes_is_its_independent_run(style):
    # benchmarks/timelapse_widget.py --passes takes the independent side from the first styling
    movie = passing_discs(32, 3)
    options = {**GENTLE, "size": 32, "steps": 3, "time_steps": 1}
    alone = stylize(movie, style, frames="independent", **options)
    first = {
        r.frame_number: r.image
        for r in iter_stylize(movie, style, frames="time", time_passes=2, **options)
        if not isinstance(r, StyleResult) and r.pass_number == 0 and r.step == r.steps
    }
    assert sorted(first) == [0, 1, 2]
    np.testing.assert_allclose(np.stack([first[t] for t in range(3)]), alone, atol=1e-6)


def test_one_forward_pass_leaves_the_first_frame_as_styled_alone_and_the_backward_pass_moves_it(style):
    movie = passing_discs(32, 3)
    options = {**GENTLE, "size": 32, "steps": 4, "time_steps": 2}
    alone = stylize(movie, style, frames="independent", **options)
    forward = stylize(movie, style, frames="time", time_passes=1, **options)
    both = stylize(movie, style, frames="time", time_passes=2, **options)
    np.testing.assert_allclose(forward[0], alone[0], atol=1e-6)
    assert not np.allclose(forward[1], alone[1], atol=1e-3)
    assert not np.allclose(both[0], alone[0], atol=1e-3)


def test_passes_hold_a_still_noisy_scene_steadier_than_frames_styled_alone(style):
    # camera noise differs from frame to frame: frames styled alone flicker with it
    signal = np.zeros((40, 40))
    signal[10:30, 12:28] = 0.5
    movie = np.stack([dark_field(signal, seed) for seed in range(4)])
    options = {**GENTLE, "size": 40}
    alone = stylize(movie, style, frames="independent", **options)
    passes = stylize(movie, style, frames="time", time_passes=2, **options)

    def flicker(stack: np.ndarray) -> float:
        return float(np.mean([np.abs(stack[t] - stack[t - 1]).mean() for t in range(1, len(stack))]))

    assert flicker(passes) < 0.5 * flicker(alone)


def _link(flow: torch.Tensor, reliable: torch.Tensor) -> FrameLink:
    """A frame's link to its neighbour with only what a pass's target reads set."""
    nothing = torch.zeros_like(reliable)
    return FrameLink(flow, reliable, nothing, nothing, nothing, nothing, torch.zeros(1, 3, *flow.shape[-2:]))


def test_a_pass_target_is_the_passs_first_result_warped_once_along_the_composed_flows():
    # warped frame after frame (bicubic) a fine styled texture lost part of its gradient energy
    # at every fractional shift, and a pass carried the loss along: fast textured objects came
    # out grey (docs/timelapse.md, "The fast discs at 160 px")
    from scipy.ndimage import gaussian_filter

    texture = gaussian_filter(np.random.default_rng(5).random((3, 64, 64)), (0, 0.5, 0.5))
    first = torch.from_numpy((texture - texture.min()) / np.ptp(texture)).float()[None]
    flow = torch.zeros(1, 2, 64, 64)
    flow[:, 1] = -3.5  # the content moves 3.5 px a frame to the right: fast (FAST_MOTION)
    reliable = torch.ones(1, 1, 64, 64)
    hole = reliable.clone()
    hole[..., 30:34, 30:34] = 0.0  # where frame 2's flow to frame 1 is not reliable
    chain, frame_after_frame = None, first
    for t in range(1, 5):
        link = _link(flow, hole if t == 2 else reliable)
        chain = chain_back(chain, 1, (t,), (t - 1,), link)
        target = pass_target(frame_after_frame, flow, first, chain)
        frame_after_frame = warp_result(frame_after_frame, flow)
    assert chain.origin == (0,) and torch.allclose(chain.flow[0, 1, 8:-8, 8:-8], torch.tensor(-14.0))
    inner = (..., slice(8, -8), slice(16, -8))
    shifted = torch.roll(first, 14, dims=-1)
    kept = chain.reliable[0, 0] > 0
    # the hole, carried along with the content: 2 links of 3.5 px on
    holes = torch.nonzero(~kept[8:-8, 8:-8]).float() + 8
    assert len(holes) >= 12 and torch.allclose(holes.mean(dim=0), torch.tensor([31.5, 38.5]), atol=1.0)
    inside = kept[inner[1:]]
    assert torch.equal(target[inner][..., inside], shifted[inner][..., inside])
    # where the chain broke, the neighbour's result warped, as before
    row, column = holes.long().T
    assert torch.allclose(target[..., row, column], frame_after_frame[..., row, column].clamp(0, 1))

    def energy(image: torch.Tensor) -> float:
        region = image[inner]
        return float(region.diff(dim=-1).abs().mean() + region.diff(dim=-2).abs().mean())

    assert energy(frame_after_frame) < 0.9 * energy(first)  # what warping frame after frame lost
    assert energy(target) > 0.98 * energy(first)
    # slow motion keeps the neighbour's warp, where the nearest warp's rounding would wobble
    slow = flow / 3.5
    assert torch.equal(
        pass_target(first, slow, first, chain_back(None, 1, (1,), (0,), _link(slow, reliable))),
        warp_result(first, slow).clamp(0, 1),
    )
