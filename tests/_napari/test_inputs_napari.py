"""Every kind of layer a napari user has, through the widget: it works or fails clearly,
napari keeps working and the input layers stay exactly as they were."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from .conftest import FAST, RUN_WAIT_MS, cancel_in_the_worker_at, run_and_wait, wait_until_idle


def snapshot_of(layer):
    """What must not change: the data (bit for bit) and the metadata."""
    data = (
        [np.array(level, copy=True) for level in layer.data]
        if layer.multiscale
        else np.array(layer.data, copy=True)
    )
    return data, copy.deepcopy(dict(layer.metadata))


def assert_unchanged(layer, before):
    data, metadata = before
    if layer.multiscale:
        for level, saved in zip(layer.data, data, strict=True):
            np.testing.assert_array_equal(np.asarray(level), saved)
    else:
        np.testing.assert_array_equal(np.asarray(layer.data), data)
        assert np.asarray(layer.data).dtype == data.dtype
    assert dict(layer.metadata) == metadata


def use(widget, content, style=None, **values):
    widget["content"].value = content
    if style is not None:
        widget["style"].value = style
    for name, value in values.items():
        widget[name].value = value


def ramp(shape, dtype, low, high):
    return np.linspace(low, high, int(np.prod(shape))).reshape(shape).astype(dtype)


@pytest.mark.parametrize(
    ("dtype", "low", "high"),
    [(np.uint8, 0, 255), (np.uint16, 0, 4095), (np.int32, -300, 300), (np.float64, -2.5, 7.0)],
)
def test_grey_layers_of_any_dtype_give_grey_results(qtbot, viewer, widget, dtype, low, high):
    layer = viewer.add_image(ramp((40, 48), dtype, low, high), name="grey", contrast_limits=(low, high))
    before = snapshot_of(layer)
    use(widget, layer)
    run_and_wait(qtbot, widget)
    assert viewer.layers["grey styled"].data.shape == (27, 32)
    assert_unchanged(layer, before)


def test_a_grey_layer_can_be_stained_in_colour(qtbot, viewer, widget):
    layer = viewer.add_image(ramp((40, 48), np.uint16, 0, 4095), name="nuclei", scale=(2.0, 2.0))
    use(widget, layer, keep_grey=False)
    run_and_wait(qtbot, widget)
    result = viewer.layers["nuclei styled"]
    assert result.rgb and result.data.shape == (27, 32, 3)
    # over the content: pixel centres differ by under half a (larger) result pixel
    np.testing.assert_allclose(result.extent.world, layer.extent.world, atol=result.scale[-1] / 2)


def test_contrast_limits_decide_what_the_run_sees(qtbot, viewer, widget):
    data = ramp((40, 48), np.uint16, 0, 4000)
    bright = viewer.add_image(data, name="bright", contrast_limits=(0, 1000))
    from napari_style_transfer._napari.layers import layer_input

    seen = layer_input(bright, "content").data
    assert seen.max() == 1.0 and (seen == 1.0).mean() > 0.7  # most of it is saturated, as on screen


def test_an_rgba_layer_keeps_its_alpha(qtbot, viewer, widget, content):
    alpha = np.zeros((40, 48), np.uint8)
    alpha[:, 24:] = 255
    layer = viewer.add_image(np.dstack([content, alpha]), name="rgba", rgb=True)
    before = snapshot_of(layer)
    use(widget, layer)
    run_and_wait(qtbot, widget)
    result = viewer.layers["rgba styled"]
    assert result.rgb and result.data.shape == (27, 32, 4)
    np.testing.assert_allclose(result.data[:, :14, 3], 0.0, atol=1e-6)
    assert_unchanged(layer, before)


def test_a_z_stack_styles_the_slice_on_screen_and_keeps_it_in_place(qtbot, viewer, widget):
    stack = np.stack([ramp((40, 48), np.uint16, 0, 1000 * (z + 1)) for z in range(4)])
    layer = viewer.add_image(stack, name="zstack", scale=(5.0, 1.0, 1.0), translate=(100.0, 0.0, 0.0))
    before = snapshot_of(layer)
    viewer.dims.set_point(0, 100.0 + 2 * 5.0)  # the third slice
    use(widget, layer, stack="current slice")
    run_and_wait(qtbot, widget)
    result = viewer.layers["zstack styled"]
    assert result.data.shape == (1, 27, 32)
    assert result.translate[0] == pytest.approx(110.0) and result.scale[0] == pytest.approx(5.0)
    assert result.metadata["style_transfer"]["slice"] == [2]
    assert_unchanged(layer, before)


def test_a_whole_time_series_fills_one_layer_frame_by_frame(qtbot, viewer, widget, content):
    movie = np.stack([content, np.roll(content, 4, axis=1), np.roll(content, 8, axis=1)])
    layer = viewer.add_image(movie, name="movie", rgb=True)
    before = snapshot_of(layer)
    use(widget, layer, stack="whole stack", steps=2)
    worker = widget.run()
    names_seen = []
    worker.yielded.connect(lambda update: names_seen.append([lyr.name for lyr in viewer.layers]))
    wait_until_idle(qtbot, widget)
    result = viewer.layers["movie styled"]
    assert result.data.shape == (3, 27, 32, 3)
    assert all(result.data[t].max() > 0 for t in range(3))
    assert any("movie styled (in progress)" in names for names in names_seen)
    assert result.metadata["style_transfer"]["frames"] == 3
    assert widget["progress"].value == 3 * 2 and widget["progress"].max == 3 * 2
    assert_unchanged(layer, before)


def test_cancelling_a_stack_keeps_the_finished_frames(qtbot, viewer, widget):
    stack = np.stack([ramp((40, 48), np.float32, 0, 1 + z) for z in range(5)])
    layer = viewer.add_image(stack, name="cells", contrast_limits=(0, 5))
    use(widget, layer, stack="whole stack", steps=2)
    cancel_in_the_worker_at(widget.run(), frame_number=2)
    wait_until_idle(qtbot, widget)
    (kept,) = [lyr for lyr in viewer.layers if lyr.name.startswith("cells styled (cancelled at frame")]
    assert kept.name == "cells styled (cancelled at frame 3 of 5)"
    assert kept.data[0].max() > 0 and kept.data[1].max() > 0  # the two finished frames
    assert kept.data[4].max() == 0  # never started
    assert kept.metadata["style_transfer"]["cancelled"] is True
    assert widget["status"].value.startswith("cancelled at frame 3 of 5, step")


def test_cancelling_a_time_pass_keeps_every_frame_and_says_which_pass_stopped(qtbot, viewer, widget):
    # in time passes every frame is styled before the first pass: "frame 2 of 3" alone
    # would read as if the frames after it were never made
    stack = np.stack([ramp((40, 48), np.float32, 0, 1 + 0.1 * t) for t in range(3)])
    layer = viewer.add_image(stack, name="cells", contrast_limits=(0, 2))
    use(widget, layer, stack="whole stack as time series", steps=2, time_steps=2, time_passes=1)
    cancel_in_the_worker_at(widget.run(), pass_number=1, step=1)
    wait_until_idle(qtbot, widget)
    (kept,) = [lyr for lyr in viewer.layers if lyr.name.startswith("cells styled (cancelled")]
    assert kept.name == "cells styled (cancelled at frame 2 of 3 in pass 1)"
    assert all(kept.data[t].max() > 0 for t in range(3))
    assert widget["status"].value.startswith("cancelled at frame 2 of 3 in pass 1, step 1;")


def test_cancelling_a_batched_stack_keeps_the_last_image_of_every_frame_of_the_batch(qtbot, viewer, widget):
    stack = np.stack([ramp((40, 48), np.float32, 0, 1 + z) for z in range(3)])
    layer = viewer.add_image(stack, name="cells", contrast_limits=(0, 3))
    use(widget, layer, stack="whole stack, frames independent", steps=6, batch_frames=3)
    cancel_in_the_worker_at(widget.run(), step=2)
    wait_until_idle(qtbot, widget)
    (kept,) = [lyr for lyr in viewer.layers if lyr.name.startswith("cells styled (cancelled at frame")]
    assert all(kept.data[z].max() > 0 for z in range(3))  # no frame of the batch left empty
    assert kept.metadata["style_transfer"]["frames_done"] == 0


def test_a_z_stack_shown_with_reordered_axes_is_refused_not_misread(qtbot, viewer, widget, errors):
    stack = np.stack([ramp((40, 48), np.uint16, 0, 1000 * (z + 1)) for z in range(4)])
    layer = viewer.add_image(stack, name="zstack")
    viewer.dims.order = (2, 0, 1)  # a Z x Y plane on screen
    use(widget, layer, stack="current slice")
    assert widget.run() is None
    assert any("axes reordered" in message for message in errors), errors
    assert widget["status"].value.startswith(
        "not started: the viewer shows the content layer 'zstack' with its axes"
    )
    viewer.dims.order = (0, 2, 1)  # only Y and X swapped: the same plane, transposed
    assert run_and_wait(qtbot, widget) is not None


def test_cancelling_a_stack_in_a_coarse_level_keeps_frames_at_the_result_size(qtbot, viewer, widget):
    stack = np.stack([ramp((40, 48), np.float32, 0, 1 + z) for z in range(3)])
    layer = viewer.add_image(stack, name="cells", contrast_limits=(0, 3))
    use(widget, layer, stack="whole stack", steps=6, size=32, schedule="16,32")
    widget["content_layers"].value, widget["style_layers"].value = "conv2_1", "conv1_1,conv2_1"
    cancel_in_the_worker_at(widget.run(), frame_number=1, step=1)
    wait_until_idle(qtbot, widget)
    (kept,) = [lyr for lyr in viewer.layers if lyr.name.startswith("cells styled (cancelled")]
    assert kept.data.shape == (3, 27, 32)
    assert kept.data[0].max() > 0 and kept.data[1].max() > 0 and kept.data[2].max() == 0


def test_channel_first_multichannel_is_styled_channel_by_channel(qtbot, viewer, widget):
    channels = np.stack([ramp((40, 48), np.uint16, 0, 900), ramp((40, 48), np.uint16, 900, 0)])
    layer = viewer.add_image(channels, name="channels")
    use(widget, layer, stack="whole stack")
    run_and_wait(qtbot, widget)
    assert viewer.layers["channels styled"].data.shape == (2, 27, 32)


def test_a_rotated_layer_gets_a_result_on_top_of_it(qtbot, viewer, widget, content):
    layer = viewer.add_image(content, name="tilted", rgb=True, rotate=30, scale=(2, 2), translate=(5, 7))
    use(widget, layer)
    run_and_wait(qtbot, widget)
    result = viewer.layers["tilted styled"]
    for corner_content, corner_result in [((-0.5, -0.5), (-0.5, -0.5)), ((39.5, 47.5), (26.5, 31.5))]:
        np.testing.assert_allclose(
            result.data_to_world(corner_result), layer.data_to_world(corner_content), atol=1e-6
        )


def test_a_multiscale_layer_uses_a_level_near_the_working_size(qtbot, viewer, widget, content):
    big = np.kron(content, np.ones((8, 8, 1), np.uint8))  # 320 x 384
    pyramid = [big, big[::2, ::2], big[::4, ::4], big[::8, ::8]]
    layer = viewer.add_image(pyramid, name="slide", rgb=True, multiscale=True)
    before = snapshot_of(layer)
    use(widget, layer)
    run_and_wait(qtbot, widget)
    result = viewer.layers["slide styled"]
    assert result.data.shape == (27, 32, 3)
    np.testing.assert_allclose(result.scale, (320 / 27, 384 / 32))
    assert_unchanged(layer, before)


def test_a_labels_layer_is_refused_with_a_message(viewer, layers):
    from napari_style_transfer import StyleTransferError, run_style_transfer

    viewer.add_labels(np.zeros((40, 48), np.int32), name="masks")
    with pytest.raises(
        StyleTransferError, match="the content layer is a Labels layer; choose an Image layer"
    ):
        run_style_transfer(viewer, "masks", "texture")


def test_a_layer_with_nan_becomes_a_notification(qtbot, viewer, widget, errors):
    data = ramp((40, 48), np.float32, 0, 1)
    data[3, 3] = np.nan
    layer = viewer.add_image(data, name="holes", contrast_limits=(0, 1))
    before = snapshot_of(layer)
    use(widget, layer)
    run_and_wait(qtbot, widget)  # checked in the worker, as it reads: never a pass on the GUI thread
    assert any("'holes' contains NaN" in message for message in errors), errors
    assert_unchanged(layer, before)


def test_a_run_too_big_for_memory_is_refused_by_a_notification(qtbot, viewer, widget, errors, monkeypatch):

    monkeypatch.setattr(
        "napari_style_transfer.pipeline.memory_checks.free_memory_bytes", lambda device: 500 * 2**20
    )
    widget["size"].value = 4096
    run_and_wait(qtbot, widget)
    assert any("needs about" in message and "use size" in message for message in errors), errors
    assert not widget.running


def test_a_failing_run_leaves_the_input_layers_untouched(qtbot, viewer, layers, widget, tmp_path):
    before = [snapshot_of(layer) for layer in layers]
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"junk")
    widget["weights"].value = str(broken)
    run_and_wait(qtbot, widget)
    for layer, saved in zip(layers, before, strict=True):
        assert_unchanged(layer, saved)


def test_deleting_the_style_layer_mid_run_does_not_matter(qtbot, viewer, layers, widget):
    widget["steps"].value = 6
    worker = widget.run()
    worker.yielded.connect(lambda update: "texture" in viewer.layers and viewer.layers.remove("texture"))
    wait_until_idle(qtbot, widget)
    assert "photo styled" in viewer.layers


def test_deleting_the_content_layer_mid_run_stops_it_quietly(qtbot, viewer, layers, widget, errors):
    widget["steps"].value = 500
    worker = widget.run()

    def delete_content(update):
        if getattr(update, "step", 0) == 2 and "photo" in viewer.layers:
            viewer.layers.remove("photo")

    worker.yielded.connect(delete_content)
    wait_until_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["texture"]
    assert errors == [] and not widget.running
    assert widget["status"].value == "stopped: the content layer was removed, so nothing was added"


def test_closing_the_viewer_mid_run_stops_the_worker(qtbot, make_napari_viewer, content, style):
    viewer = make_napari_viewer()
    viewer.add_image(content, name="photo", rgb=True)
    viewer.add_image(style, name="texture", rgb=True)
    from napari_style_transfer import run_style_transfer

    worker = run_style_transfer(viewer, "photo", "texture", start=False, **{**FAST, "steps": 500})
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    with qtbot.waitSignal(worker.yielded, timeout=RUN_WAIT_MS):  # the run is under way
        worker.start()
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_WAIT_MS)  # long before its 500 steps
    assert worker.layer_writer.closed


def test_a_constant_layer_becomes_a_notification(qtbot, viewer, widget, errors):
    layer = viewer.add_image(np.full((40, 48), 7, np.uint16), name="flat", contrast_limits=(0, 10))
    before = snapshot_of(layer)
    use(widget, layer)
    run_and_wait(qtbot, widget)
    assert any("is constant" in message for message in errors), errors
    assert_unchanged(layer, before)


def test_an_unavailable_device_becomes_a_notification(qtbot, viewer, widget, errors):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal needs a machine without it")
    widget["device"].value = "cuda"
    run_and_wait(qtbot, widget)  # the device is looked at in the worker: torch stays off the GUI thread
    assert any("CUDA is not available" in message for message in errors), errors
    assert not widget.running
