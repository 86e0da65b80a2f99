"""batch_frames: independent frames go through the network together, each with its own
optimiser state, and come out as if styled alone.

Batched and lone convolutions round differently in float32, and the optimisation amplifies
that step by step. Measured on these 32 px frames with the test style, style_weight 1e3 (so
that each frame's content shows: the frames then differ by 0.006 on average after 3 steps),
as the largest pixel difference from one frame at a time, batches of 2 and 3, 3 steps: 1.8e-7
(L-BFGS) and 1.8e-6 (Adam) with average pooling; 5.4e-7 (L-BFGS) and 6e-5 (Adam) with max
pooling, where a max over near-equal activations that rounding tips the other way sends a
gradient elsewhere (with style_weight 1e6, L-BFGS: 2.9e-5). Longer runs part further: on a
random style, 4.4e-5 after 10 L-BFGS steps and 0.03 after 30, about what nudging one content
pixel by 1e-6 does to a lone run after 30 steps (0.029). So the comparisons run 3 steps with
average pooling within 1e-5, and one with max pooling within 1e-4. These are float32's
tolerances: the runs name fp32, since precision="auto" is bf16 on a CPU with native bf16
(measured there: max pooling, batch of 3, 6e-3).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_style_transfer import OutOfMemoryError, iter_stylize, stylize
from napari_style_transfer.api import StyleResult

FAST = {
    "size": 32,
    "steps": 3,
    "weights": "random",
    "snapshot_every": 0,
    "init": "noise",
    "seed": 3,
    "pooling": "avg",
    "style_weight": 1e3,
    "precision": "fp32",
    # the tolerances were measured channels-last; "auto" follows a timing probe, and batched and
    # lone contiguous convolutions part further (2e-4 after 2 steps)
    "channels_last": True,
}
TOLERANCE = 1e-5


def slices() -> np.ndarray:
    """Three unlike 32 px grey frames (Z slices)."""
    yy, xx = np.mgrid[0:32, 0:32]
    return (np.stack([np.sin(xx / 3.0), np.sin(yy / 3.0), np.sin((xx + yy) / 4.0)]) * 0.4 + 0.5).astype(
        np.float32
    )


def records_of(content, style, **options):
    items = list(iter_stylize(content, style, **{**FAST, **options}))
    assert isinstance(items[-1], StyleResult)
    return items[:-1], items[-1]


@pytest.mark.parametrize("batch", [2, 3])
def test_batched_frames_equal_frames_one_at_a_time_and_each_frame_styled_alone(style, batch):
    stack = slices()
    # 1 step: on their 48 px canvases (pipeline/canvas.py) the iterates amplify the rounding of
    # batched convolutions, and these frames part at step 3 on an AVX-512 CPU (1.2e-7 after 2
    # steps, 5.6e-5 after 3) and at step 2 on an AVX2 one (Zen 3: batch of 3, 1.2e-7 after 1
    # step, 2.0e-4 after 2)
    options = {**FAST, "steps": 1}
    batched = stylize(stack, style, **options, batch_frames=batch)
    one_at_a_time = stylize(stack, style, **options, batch_frames=1)
    np.testing.assert_allclose(batched, one_at_a_time, rtol=0, atol=TOLERANCE)
    for k in range(3):
        np.testing.assert_allclose(batched[k], stylize(stack[k], style, **options), rtol=0, atol=TOLERANCE)


class Float64Objective:
    """StyleObjective computing in float64 throughout (its features are float32 otherwise)."""

    def __new__(cls, *args, **kwargs):
        from napari_style_transfer.engine import StyleObjective

        class Objective(StyleObjective):
            def features(self, image, deepest=None):
                return self.extractor(image.contiguous(memory_format=self.memory_format), deepest)

        return Objective(*args, **kwargs)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_in_float64_batched_frames_take_the_iterates_they_take_alone(optimizer):
    from napari_style_transfer.engine import optimize, optimize_frames
    from napari_style_transfer.options import StyleOptions
    from napari_style_transfer.vgg import VGGFeatures, vgg19_features_module

    torch.manual_seed(0)
    options = StyleOptions(style_weight=1e3, optimizer=optimizer).validated()
    extractor = VGGFeatures(vgg19_features_module(), options.layers).double()
    generator = torch.Generator().manual_seed(0)
    contents, start = (torch.rand(3, 3, 32, 32, generator=generator, dtype=torch.float64) for _ in range(2))
    style_image = torch.rand(1, 3, 32, 32, generator=generator, dtype=torch.float64)
    objective = Float64Objective(extractor, contents[:1], style_image, options)
    batched = [
        (losses, images.clone())
        for _, losses, images in optimize_frames(objective, contents, start, options, 5)
    ]
    for i in range(3):
        objective.set_content(contents[i : i + 1])
        for (losses, images), (_, lone_losses, lone) in zip(
            batched, optimize(objective, start[i : i + 1], options, 5), strict=False
        ):
            torch.testing.assert_close(images[i : i + 1], lone, rtol=0, atol=1e-12)  # measured 4e-15
            assert losses[i].total == pytest.approx(lone_losses.total, rel=1e-10)


def test_batched_frames_with_max_pooling_equal_frames_one_at_a_time(style):
    stack = slices()
    options = {**FAST, "pooling": "max", "steps": 2}
    np.testing.assert_allclose(
        stylize(stack, style, **options, batch_frames=3),
        stylize(stack, style, **options, batch_frames=1),
        rtol=0,
        atol=1e-3,  # measured 4.6e-4 on the frames' 48 px canvases (8e-3 after 3 steps)
    )


def test_batched_frames_are_not_all_alike(style):
    stack = slices()
    batched = stylize(stack, style, **FAST, batch_frames=3)
    assert np.abs(batched[0] - batched[1]).mean() > 100 * TOLERANCE  # each frame kept its own content


def test_adam_batches_frames_too(style):
    stack = slices()
    options = {**FAST, "optimizer": "adam"}
    np.testing.assert_allclose(
        stylize(stack, style, **options, batch_frames=3),
        stylize(stack, style, **options, batch_frames=1),
        rtol=0,
        atol=TOLERANCE,
    )


def test_a_coarse_to_fine_schedule_batches_every_level(style):
    stack = slices()
    records, result = records_of(stack, style, schedule="16,32", batch_frames=3)
    assert [(r.frame_number, r.size) for r in records if r.step == 1] == [(0, 16), (1, 16), (2, 16)]
    assert [r.size for r in records if r.frame_number == 0] == [16, 32, 32]
    one_at_a_time = stylize(stack, style, **FAST, schedule="16,32", batch_frames=1)
    # measured 1.1e-4: one L-BFGS step at 16 px (1 x 1 at conv5_1) leaves rounding more to amplify
    np.testing.assert_allclose(result.image, one_at_a_time, rtol=0, atol=1e-3)


def test_batched_records_come_per_frame_per_step_in_frame_order_and_progress_rises(style):
    records, result = records_of(slices(), style, batch_frames=2)
    assert [(r.frame_number, r.step) for r in records] == [
        (0, 1),
        (1, 1),
        (0, 2),
        (1, 2),
        (0, 3),
        (1, 3),
        (2, 1),
        (2, 2),
        (2, 3),
    ]
    progress = [r.progress for r in records]
    assert progress == sorted(progress) and len(set(progress)) == len(progress) and progress[-1] == 1.0
    last_steps = [r for r in records if r.step == r.steps]
    assert [r.frame for r in last_steps] == [(0,), (1,), (2,)]
    for record in last_steps:
        np.testing.assert_array_equal(record.image, result.image[record.frame])


def test_a_batched_step_renders_each_frames_own_image_until_the_batch_steps_on(style):
    stack = slices()
    options = {**FAST, "init": "content"}
    run = iter_stylize(stack, style, **options, batch_frames=3)
    first, second, third = next(run), next(run), next(run)
    assert (first.frame_number, second.frame_number, third.frame_number) == (0, 1, 2)
    images = [first.render(), second.render()]  # the run is still at the batch's first step
    next(run)  # the batch's second step
    with pytest.raises(RuntimeError, match="call render"):
        third.render()
    run.close()
    for number, image in enumerate(images):
        alone = stylize(stack[number], style, **{**options, "steps": 1})
        np.testing.assert_allclose(image, alone, rtol=0, atol=TOLERANCE)


def test_a_run_stopped_within_a_batch_still_has_the_image_of_each_of_its_frames(style):
    stack = slices()
    run = iter_stylize(stack, style, **{**FAST, "steps": 4}, batch_frames=3)
    record = next(item for item in run if item.step == 2)  # frame 0's record; frames 1 and 2 not yet seen
    images = record.batch_images()
    run.close()
    assert sorted(images) == [(0,), (1,), (2,)]
    two_steps = stylize(stack, style, **{**FAST, "steps": 2}, batch_frames=3)
    for frame, image in images.items():
        np.testing.assert_allclose(image, two_steps[frame], rtol=0, atol=TOLERANCE)


def test_ctrl_c_within_a_batch_keeps_every_frame_of_the_batch(tmp_path, style, monkeypatch):
    import tifffile

    import napari_style_transfer.api as api
    from napari_style_transfer.cli import main

    np.save(tmp_path / "stack.npy", slices())
    np.save(tmp_path / "style.npy", style)
    real = api.iter_stylize

    def interrupted(
        *args, **kwargs
    ):  # Ctrl-C after the batch's first step and frame 0's record of its second
        for number, record in enumerate(real(*args, **kwargs), start=1):
            yield record
            if number == 3 + 1:
                raise KeyboardInterrupt

    monkeypatch.setattr(api, "iter_stylize", interrupted)
    out = tmp_path / "styled.tif"
    argv = [
        str(tmp_path / "stack.npy"),
        str(tmp_path / "style.npy"),
        "-o",
        str(out),
        "--size",
        "32",
        "--steps",
        "3",
        "--weights",
        "random",
        "--quiet",
        "--batch-frames",
        "3",
    ]
    assert main(argv) == 130
    partial = tifffile.imread(out)
    assert partial.shape == (3, 32, 32)
    assert all(partial[frame].max() > 0 for frame in range(3))  # none left as zeros


class RecordingFrames:
    """A frame source over a numpy stack that records every index asked for."""

    def __init__(self, data: np.ndarray):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.value_range = (0.0, 1.0)
        self.reads: list[tuple] = []

    def __getitem__(self, index):
        self.reads.append(index)
        return np.array(self.data[index], copy=True)


def test_a_lazy_stack_is_read_one_batch_at_a_time(style):
    source = RecordingFrames(np.concatenate([slices(), slices()[:1]]))  # 4 frames
    read_by_record = [
        (record.frame_number, len(source.reads))
        for record in iter_stylize(source, style, **FAST, batch_frames=2)
        if not isinstance(record, StyleResult)
    ]
    assert read_by_record[0] == (0, 2) and read_by_record[5] == (1, 2)  # the first batch's steps
    assert read_by_record[6] == (2, 4)  # the second batch is read when it starts
    assert sorted(source.reads) == [(0,), (1,), (2,), (3,)]


def test_a_time_series_ignores_batch_frames(style):
    stack = slices()
    options = {**FAST, "frames": "time", "time_steps": 2}
    np.testing.assert_array_equal(
        stylize(stack, style, **options, batch_frames=3), stylize(stack, style, **options)
    )


def test_a_batch_that_does_not_fit_is_refused_naming_one_that_does(style, monkeypatch):
    from napari_style_transfer import memory

    canvas = 48 * 48  # a 32 px frame is optimised on a 48 px canvas (pipeline/canvas.py)
    two_and_a_half = memory.FIXED_BYTES + 2.5 * canvas * memory.bytes_per_pixel("lbfgs", 30)
    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes",
        lambda device: int(two_and_a_half / memory.HEADROOM),
    )
    with pytest.raises(
        OutOfMemoryError, match=r"3 frames of 32x32 px at once need about .* use batch_frames 2 or less"
    ):
        iter_stylize(slices(), style, **FAST, batch_frames=3)
    iter_stylize(slices(), style, **FAST, batch_frames=2).close()


def test_auto_batches_as_many_frames_as_fit_on_a_gpu_up_to_the_limit(monkeypatch):
    from napari_style_transfer import api, memory
    from napari_style_transfer._image import describe_image
    from napari_style_transfer.options import StyleOptions

    def auto_batch(frames, free):
        monkeypatch.setattr(
            "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: free
        )
        stack = describe_image(
            np.zeros((frames, 32, 32), np.float32) + np.eye(32, dtype=np.float32), "content"
        )
        return api._frames_per_batch(
            stack, (32, 32), (32, 32), StyleOptions().validated(), torch.device("cuda")
        )

    per_frame = 48 * 48 * memory.bytes_per_pixel("lbfgs", 30)  # on its canvas (pipeline/canvas.py)
    assert auto_batch(40, 100 * 2**30) == api.AUTO_BATCH_LIMIT
    assert auto_batch(5, 100 * 2**30) == 5
    assert auto_batch(40, (memory.FIXED_BYTES + 7.5 * per_frame) / memory.HEADROOM) == 7
    assert auto_batch(40, memory.FIXED_BYTES / memory.HEADROOM) == 1  # the memory check refuses it


def test_auto_batches_large_frames_less(monkeypatch):
    from napari_style_transfer import api
    from napari_style_transfer._image import describe_image
    from napari_style_transfer.options import StyleOptions

    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: 1000 * 2**30
    )
    stack = describe_image(np.zeros((40, 32, 32), np.float32) + np.eye(32, dtype=np.float32), "content")
    options, cuda = StyleOptions().validated(), torch.device("cuda")
    assert api._frames_per_batch(stack, (512, 512), (512, 512), options, cuda) == 4
    assert api._frames_per_batch(stack, (1024, 1024), (1024, 1024), options, cuda) == 1


def test_auto_styles_one_frame_at_a_time_on_the_cpu():
    from napari_style_transfer import api
    from napari_style_transfer._image import describe_image
    from napari_style_transfer.options import StyleOptions

    stack = describe_image(slices(), "content")
    options, cpu = StyleOptions().validated(), torch.device("cpu")
    assert api._frames_per_batch(stack, (32, 32), (32, 32), options, cpu) == api.AUTO_BATCH_CPU == 1


def test_the_command_line_takes_batch_frames(tmp_path, style):
    import tifffile

    from napari_style_transfer.cli import main

    np.save(tmp_path / "stack.npy", slices())
    np.save(tmp_path / "style.npy", style)
    out = tmp_path / "styled.tif"
    argv = [
        str(tmp_path / "stack.npy"),
        str(tmp_path / "style.npy"),
        "-o",
        str(out),
        "--size",
        "32",
        "--steps",
        "2",
        "--weights",
        "random",
        "--quiet",
        "--batch-frames",
        "3",
    ]
    assert main(argv) == 0
    assert tifffile.imread(out).shape == (3, 32, 32)
