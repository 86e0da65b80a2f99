"""Result layers in the content's units and look, runs told apart, a widget that fits the layer."""

from __future__ import annotations

import numpy as np

from .conftest import run_and_wait, wait_until_idle


def grey_ramp(shape=(40, 48)) -> np.ndarray:
    return np.linspace(0, 4000, shape[0] * shape[1]).reshape(shape).astype(np.uint16)


def test_a_grey_result_is_in_the_contents_range_with_its_colormap_gamma_and_blending(qtbot, viewer, widget):
    layer = viewer.add_image(
        grey_ramp(),
        name="cells",
        colormap="magenta",
        gamma=0.7,
        blending="additive",
        contrast_limits=(-5, 300),
    )
    widget["content"].value = layer
    run_and_wait(qtbot, widget)
    result = viewer.layers["cells styled"]
    assert tuple(result.contrast_limits) == (-5.0, 300.0)
    assert result.data.min() >= -5 and result.data.max() <= 300 and result.data.max() > 1.0
    assert result.colormap.name == "magenta" and result.gamma == 0.7 and str(result.blending) == "additive"
    assert result.metadata["style_transfer"]["value_range"] == [-5.0, 300.0]


def test_a_grey_result_stays_in_0_to_1_when_the_range_option_is_off(qtbot, viewer, widget):
    layer = viewer.add_image(grey_ramp(), name="cells", contrast_limits=(-5, 300))
    widget["content"].value = layer
    widget["content_range"].value = False
    run_and_wait(qtbot, widget)
    result = viewer.layers["cells styled"]
    assert tuple(result.contrast_limits) == (0.0, 1.0) and result.data.max() <= 1.0
    assert "value_range" not in result.metadata["style_transfer"]


def test_a_second_run_with_other_settings_is_named_for_its_style_and_what_changed(qtbot, viewer, widget):
    widget["snapshot_every"].value = 0
    run_and_wait(qtbot, widget)
    widget["steps"].value = 3
    run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers][2:] == ["photo styled", "photo styled (texture, steps 3)"]
    assert widget["status"].value.startswith("done: 'photo styled (texture, steps 3)', 3 steps")
    assert widget["status"].tooltip.startswith("style texture | size 32 | steps 3 | style weight")


def test_snapshots_of_a_finished_run_can_be_folded_away(qtbot, viewer, widget):
    widget["keep_snapshots"].value = False
    run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["photo", "texture", "photo styled"]


def test_a_size_too_small_for_the_layers_is_refused_before_the_run_with_one_that_works(
    qtbot, viewer, widget, errors
):
    wide = viewer.add_image(np.random.default_rng(0).random((20, 64, 3)), name="wide", rgb=True)
    widget["content"].value = wide
    widget["size"].value = 32  # 10 x 32 px: conv5_1 needs 16
    assert widget.run() is None and not widget.running
    assert widget["status"].value.startswith(
        "not started: size 32 is too small: the content becomes 10x32 px"
    )
    assert "use size 50 or more" in widget["status"].value
    assert any("use size 50 or more" in message for message in errors), errors


def test_controls_that_do_nothing_for_the_content_are_disabled(viewer, widget):
    assert widget["content"].value.rgb  # the photo: RGB, 2D
    assert (
        not widget["stack"].enabled and not widget["keep_grey"].enabled and widget["content_colours"].enabled
    )
    assert not widget["batch_frames"].enabled
    widget["content"].value = viewer.add_image(np.zeros((3, 40, 48), np.float32), name="zstack")
    assert widget["stack"].enabled and widget["keep_grey"].enabled and not widget["content_colours"].enabled
    assert widget["content_range"].enabled


def test_stack_settings_are_enabled_only_in_the_stack_mode_they_act_in(viewer, widget):
    widget["content"].value = viewer.add_image(np.zeros((3, 40, 48), np.float32), name="zstack")
    time_series = ("temporal_weight", "time_steps")

    def enabled():
        names = ("batch_frames", "snapshot_every", *time_series)
        return {name for name in names if widget[name].enabled}

    assert enabled() == {"snapshot_every"}  # the slice on screen: a single image
    widget["stack"].value = "whole stack, frames independent"
    assert enabled() == {"batch_frames"}
    widget["stack"].value = "whole stack as time series"
    assert enabled() == set(time_series)


def test_averaged_iterates_can_be_set_only_with_adam(widget):
    assert widget["optimizer"].value == "lbfgs" and not widget["average"].enabled
    widget["optimizer"].value = "adam"
    assert widget["average"].enabled
    widget["average"].value = 0.9
    assert widget.options()["average"] == 0.9
    widget["optimizer"].value = "lbfgs"  # a value left in the disabled control is not sent
    assert widget.options()["average"] is None


def test_the_style_weight_can_be_typed(widget):
    field = widget["style_weight"]
    field.native.setText("2.5e6")
    field.native.editingFinished.emit()
    assert widget["style_weight"].value == 2.5e6
    field.native.setText("lots")
    field.native.editingFinished.emit()
    assert widget["style_weight"].value == 2.5e6 and field.native.text() == "2.5e+06"


def test_the_status_gives_the_time_left_and_keeps_steps_per_second_whole():
    from napari_style_transfer._napari.widget import _speed_and_time_left
    from napari_style_transfer._napari.worker import Progress

    update = Progress(
        step=10,
        steps=100,
        total_loss=1.0,
        content_loss=0.5,
        style_loss=0.5,
        steps_per_second=0.5,
        record=None,
    )
    text = _speed_and_time_left(update)
    assert text == "0.50\u00a0steps/\u2060s, ~3\u00a0min 0\u00a0s\u00a0left"
    assert " " not in text.split(", ")[0]  # no breakable space inside "0.50 steps/s"


def test_the_status_names_a_time_pass_and_the_frames_place_in_the_stack(widget):
    from napari_style_transfer._napari.worker import Progress

    update = Progress(10, 100, 1.0, 0.5, 0.5, 0.5, None, frame_number=3, frames=8, pass_number=1)
    widget.on_progress(update)
    assert widget["status"].value.startswith("pass 1 | frame 4/8 | step 10/100")


def test_a_demo_pair_puts_the_content_on_top_and_in_the_content_choice(viewer):
    viewer.open_sample("napari-style-transfer", "astronaut_swirl")
    assert [layer.name for layer in viewer.layers] == ["swirl", "astronaut"]  # the last one shows on top
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert widget["content"].value.name == "astronaut" and widget["style"].value.name == "swirl"


def test_a_finished_time_series_reports_the_steps_it_took_in_all(qtbot, viewer, widget):
    movie = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
    widget["content"].value = viewer.add_image(movie, name="movie", axis_labels=("t", "y", "x"))
    widget["snapshot_every"].value = 0
    run_and_wait(qtbot, widget)
    # 4 steps for each frame alone, then two passes of time_steps auto (half of them) for each
    # frame but a pass's first
    assert "3 frames, 20 steps in all in" in widget["status"].value


def test_a_finished_stack_of_independent_frames_reports_steps_per_frame(qtbot, viewer, widget):
    widget["content"].value = viewer.add_image(np.zeros((2, 32, 32), np.float32), name="zstack")
    widget["stack"].value = "whole stack, frames independent"
    widget["snapshot_every"].value = 0
    run_and_wait(qtbot, widget)
    assert "2 frames x 4 steps in" in widget["status"].value

    stack = np.stack([grey_ramp((32, 32)) + 1000 * frame for frame in range(3)]).astype(np.uint16)
    layer = viewer.add_image(stack, name="stack16", contrast_limits=(1000, 40000))
    widget["content"].value = layer
    widget["stack"].value = "whole stack, frames independent"
    seen = []

    def look(update):  # right after the first frame went into the in-progress layer
        if type(update).__name__ == "FrameDone" and not seen:
            data = np.asarray(viewer.layers[-1].data)
            seen.append((viewer.layers[-1].name, float(data.min()), float(data.max())))

    worker = widget.run()
    worker.yielded.connect(look)
    wait_until_idle(qtbot, widget)
    (name, low, high) = seen[0]
    assert name.endswith("(in progress)")
    assert low >= 1000.0 and high <= 40000.0


def test_a_size_that_shrinks_the_style_too_far_says_it_is_the_style(qtbot, viewer, widget):
    widget["style"].value = viewer.add_image(
        np.random.default_rng(0).random((12, 12, 3)), name="tiny", rgb=True
    )
    widget["size"].value = 32  # the content 27x32 px, enough; the style shrunk to 8x8 px
    assert widget.run() is None
    assert "size 32 is too small: the style is shrunk with the content to 8x8 px" in widget["status"].value


def test_save_result_writes_the_newest_result_with_its_settings(tmp_path, viewer, widget):
    from napari_style_transfer._napari.tiff import read_styled_tiff

    settings = {"content": "photo", "options": {"steps": 4}}
    viewer.add_image(
        np.zeros((8, 8), np.float32),
        name="photo styled (step 2)",
        metadata={"style_transfer": {**settings, "snapshot": True}},
    )
    viewer.add_image(np.ones((8, 8), np.float32), name="photo styled", metadata={"style_transfer": settings})
    viewer.layers.selection.active = viewer.layers["photo"]  # no result selected: the newest is saved
    saved = widget.save_result(str(tmp_path / "result.tif"))
    ((data, kwargs, _),) = read_styled_tiff(saved)
    assert kwargs["metadata"]["style_transfer"] == settings and data.max() == 1.0


def test_save_result_without_a_suffix_writes_a_styled_tiff_that_napari_opens_with_its_settings(
    tmp_path, viewer, widget
):
    settings = {"content": "photo", "options": {"steps": 4}}
    viewer.add_image(np.ones((8, 8), np.float32), name="photo styled", metadata={"style_transfer": settings})
    saved = widget.save_result(str(tmp_path / "result"))
    assert saved == str(tmp_path / "result.styled.tif")
    (opened,) = viewer.open(saved, plugin=None)  # as File > Open does: the preferred reader
    assert opened.metadata["style_transfer"] == settings
