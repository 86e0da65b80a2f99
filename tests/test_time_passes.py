"""Time mode in passes (``time_passes``, Ruder et al.'s multi-pass): every frame styled alone,
then passes in alternating directions that blend each frame with its warped neighbour."""

from __future__ import annotations

import numpy as np
from test_timelapse_quality import GENTLE, dark_field, passing_discs

from napari_style_transfer import iter_stylize, stylize
from napari_style_transfer.api import StyleResult
from napari_style_transfer.pipeline.time_passes import pass_order


def test_passes_go_forward_then_backward_along_each_series():
    assert pass_order((3,), forward=True) == [((1,), (0,)), ((2,), (1,))]
    assert pass_order((3,), forward=False) == [((1,), (2,)), ((0,), (1,))]
    # further leading axes are series of their own: (t, z) follows (t -/+ 1, z)
    assert pass_order((2, 2), forward=True) == [((1, 0), (0, 0)), ((1, 1), (0, 1))]
    assert pass_order((2, 2), forward=False) == [((0, 1), (1, 1)), ((0, 0), (1, 0))]


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
