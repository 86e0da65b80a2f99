"""The Style Transfer dock widget in a real napari viewer (tiny images, untrained weights)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_style_transfer._napari.widget import GROUPS, StyleTransferWidget
from napari_style_transfer.options import StyleOptions, limits

from .conftest import FAST, RUN_WAIT_MS, run_and_wait, wait_until_idle


def pixel_edges(layer):
    """World coordinates of the outer edges of a layer's first and last pixels."""
    centres = np.asarray(layer.extent.world)
    half = np.asarray(layer.scale) / 2
    return np.stack([centres[0] - half, centres[1] + half])


def test_the_widget_is_found_through_the_plugin_api(viewer):
    dock, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert isinstance(widget, StyleTransferWidget)
    assert dock is not None


def test_controls_carry_the_engine_option_names_and_defaults(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    defaults = StyleOptions()
    for name in defaults.to_dict():
        # the stack choice and the style rows' weights set them; tile_size is for size="full", not offered yet
        if name not in ("frames", "style_blend", "tile_size"):
            assert widget[name] is not None
    assert widget["steps"].value == defaults.steps
    assert widget["size"].value == defaults.size
    assert widget["style_weight"].value == pytest.approx(defaults.style_weight)
    assert widget["content_layers"].value == ",".join(defaults.content_layers)
    expected = {
        **defaults.to_dict(),
        "content_layers": "conv4_2",
        "style_layers": ",".join(defaults.style_layers),
        "style_layer_weights": "",
    }
    del expected["style_blend"]  # only with several styles
    del expected["tile_size"]
    assert widget.options() == expected


def test_every_control_has_a_tooltip(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    for name, control in widget.controls().items():
        assert control.tooltip, name


def test_small_weights_and_rates_are_not_rounded_away(widget):
    values = {"content_weight": 0.001, "tv_weight": 1e-6, "learning_rate": 0.0005}
    for name, value in values.items():
        widget[name].value = value
    options = widget.options()
    assert {name: options[name] for name in values} == pytest.approx(values)
    widget["style_weight"].value = 3e5
    assert widget["style_weight"].value == 3e5 and widget.options()["style_weight"] == 3e5


def test_content_and_style_start_on_different_layers(viewer):
    viewer.add_image(np.zeros((8, 8)), name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert widget["content"].value.name == "cells" and widget["style"].value.name == "cells"  # only one
    viewer.add_image(np.ones((8, 8)), name="stain")  # e.g. a demo pair's style, added after
    assert widget["content"].value.name == "cells" and widget["style"].value.name == "stain"


def test_a_reopened_widget_does_not_take_an_earlier_result_as_the_style(viewer, layers):
    viewer.add_image(np.zeros((8, 8)), name="photo styled", metadata={"style_transfer": {"step": 4}})
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert widget["content"].value.name == "photo" and widget["style"].value.name == "texture"


def test_closing_the_dock_mid_run_cancels_the_run_and_keeps_its_image(qtbot, viewer, layers):
    import gc

    dock, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = layers
    for name, value in {**FAST, "steps": 2000, "snapshot_every": 0}.items():
        widget[name].value = value
    worker = widget.run()
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    qtbot.waitUntil(lambda: worker.layer_writer.last_progress is not None, timeout=RUN_WAIT_MS)
    viewer.window.remove_dock_widget(dock)  # what the dock's close button does
    assert worker.cancel_event.is_set()
    del widget, dock
    gc.collect()
    qtbot.waitUntil(lambda: bool(finished), timeout=RUN_WAIT_MS)
    (kept,) = [layer for layer in viewer.layers if "cancelled" in layer.name]
    assert kept.metadata["style_transfer"]["step"] < 2000


def test_the_ratio_is_shown_and_the_groups_start_closed(widget):
    widget["content_weight"].value = 2.0
    widget["style_weight"].value = 2e4
    assert widget["ratio"].value == "1.0e+04"
    assert set(widget.groups) == set(GROUPS)
    assert not any(group.isExpanded() for group in widget.groups.values())
    widget.groups["Optimisation"].expand(animate=False)
    assert widget.groups["Optimisation"].isExpanded()


def test_the_widgets_limits_are_the_options_limits(widget):
    bounded = {
        name: control
        for name, control in widget.controls().items()
        if name in StyleOptions().to_dict() and None not in limits(name)
    }
    assert {"steps", "size", "time_steps", "batch_frames", "snapshot_every", "content_weight"} <= set(bounded)
    for name, control in bounded.items():
        shown = (getattr(control, "minimum", None), getattr(control, "maximum", None))
        if shown == (None, None):
            shown = (control.min, control.max)
        assert shown == limits(name), name


def test_zero_shows_as_auto_where_it_means_auto(widget):
    assert widget["time_steps"].native.text() == "auto" and widget["time_steps"].value == 0
    widget["batch_frames"].value = 3
    assert widget["batch_frames"].native.text() == "3" and widget.options()["batch_frames"] == 3


def test_the_dock_fits_a_1280_by_800_window_with_every_group_open(viewer):
    from qtpy.QtWidgets import QApplication

    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    for group in widget.groups.values():
        group.expand(animate=False)
    QApplication.processEvents()
    # napari sizes a new dock by its preferred width; it scrolls instead of growing taller
    assert widget.native.sizeHint().width() <= 1280 // 4
    assert widget.native.minimumSizeHint().height() < 800 // 2


def test_a_run_keeping_snapshots_adds_them_and_the_result_over_the_content(qtbot, viewer, layers, widget):
    content_layer, style_layer = layers
    widget["keep_snapshots"].value = True
    content_before, style_before = content_layer.data.copy(), style_layer.data.copy()
    metadata_before = dict(content_layer.metadata)

    run_and_wait(qtbot, widget)

    names = [layer.name for layer in viewer.layers]
    assert names == ["photo", "texture", "photo styled (step 2)", "photo styled"]
    result = viewer.layers["photo styled"]
    assert result.data.shape == (27, 32, 3) and result.rgb
    assert tuple(result.contrast_limits) == (0.0, 1.0)  # not stretched to the data
    np.testing.assert_allclose(pixel_edges(result), pixel_edges(content_layer))  # covers the same area
    np.testing.assert_allclose(result.scale, (2.0 * 40 / 27, 3.0 * 48 / 32))

    info = result.metadata["style_transfer"]
    assert info["content"] == "photo" and info["style"] == "texture"
    assert info["options"]["steps"] == FAST["steps"] and info["options"]["size"] == FAST["size"]
    assert info["weights"].startswith("random") and info["device"] == "cpu"
    assert info["cancelled"] is False and info["losses"]["total"] > 0 and info["seconds"] > 0
    assert viewer.layers["photo styled (step 2)"].metadata["style_transfer"]["step"] == 2

    np.testing.assert_array_equal(content_layer.data, content_before)
    np.testing.assert_array_equal(style_layer.data, style_before)
    assert content_layer.metadata == metadata_before
    assert widget["progress"].value == FAST["steps"]
    assert widget["status"].value.startswith("done")
    assert widget["run_button"].text == "Run" and not widget.running


def test_the_button_turns_into_cancel_and_cancel_keeps_the_last_image(qtbot, viewer, widget):
    widget["steps"].value = 500
    widget["snapshot_every"].value = 0
    requested = []

    def cancel_at_step_two(update):
        if getattr(update, "step", 0) == 2 and hasattr(update, "total_loss") and not requested:
            assert widget["run_button"].text == "Cancel"
            widget["run_button"].clicked.emit()  # the same as pressing Cancel
            requested.append(update.step)

    worker = widget.run()
    worker.yielded.connect(cancel_at_step_two)
    wait_until_idle(qtbot, widget)
    (cancelled,) = [layer for layer in viewer.layers if "cancelled" in layer.name]
    step = cancelled.metadata["style_transfer"]["step"]
    assert requested and step <= requested[0] + 1
    assert cancelled.name == f"photo styled (cancelled at step {step})"
    assert cancelled.metadata["style_transfer"]["cancelled"] is True
    assert "photo styled" not in viewer.layers
    assert widget["run_button"].text == "Run" and not widget.running


def test_worker_quit_keeps_the_last_image_and_frees_the_engine(qtbot, viewer, widget):
    widget["steps"].value = 500
    worker = widget.run()

    def quit_after_step_one(update):
        if getattr(update, "step", 0) == 1:
            worker.quit()

    worker.yielded.connect(quit_after_step_one)
    wait_until_idle(qtbot, widget)
    assert [layer.name for layer in viewer.layers if "cancelled" in layer.name]
    # closed (the close is queued to the GUI thread after finished): the network and its tensors are released
    qtbot.waitUntil(lambda: worker.updates.gi_frame is None, timeout=RUN_WAIT_MS)


def test_a_second_run_while_running_is_refused(qtbot, widget, errors):
    widget["steps"].value = 50
    widget.run()
    assert widget.run() is None
    assert any("already running" in message for message in errors)
    widget.cancel()
    wait_until_idle(qtbot, widget)


def test_a_failing_run_notifies_and_leaves_the_widget_usable(qtbot, viewer, widget, errors, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not weights")
    widget["weights"].value = str(broken)
    run_and_wait(qtbot, widget)
    assert any("could not read weights file" in message for message in errors)
    assert widget["status"].value.startswith("failed")
    assert not widget.running and widget["run_button"].text == "Run"

    widget["weights"].value = "random"
    run_and_wait(qtbot, widget)
    assert "photo styled" in viewer.layers


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"style": "photo"}, "the same layer"),
        ({"content_layers": "conv9_9"}, "unknown layer 'conv9_9'"),
        ({"size": 16, "style_layers": "conv5_1,pool5"}, "too small"),
    ],
)
def test_bad_settings_become_a_notification_not_a_run(viewer, widget, errors, change, message):
    for name, value in change.items():
        widget[name].value = viewer.layers[value] if name == "style" and value else value
    assert widget.run() is None
    assert any(message in m for m in errors), errors
    assert not widget.running


def test_picking_the_styles_layer_as_content_moves_the_style_to_another_layer(viewer, widget):
    assert (widget["content"].value.name, widget["style"].value.name) == ("photo", "texture")
    widget["content"].value = viewer.layers["texture"]
    assert widget["style"].value is viewer.layers["photo"]


def test_run_without_layers_asks_for_a_content_layer(viewer, errors):
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert widget.run() is None
    assert any("choose a content layer" in m for m in errors), errors


def test_a_grey_16_bit_layer_gives_a_grey_result_in_its_colormap(qtbot, viewer, widget):
    grey = np.arange(40 * 48, dtype=np.uint16).reshape(40, 48) * 30
    layer = viewer.add_image(grey, name="nuclei", colormap="magenta", contrast_limits=(0, 40 * 48 * 30))
    widget["content"].value = layer
    run_and_wait(qtbot, widget)
    result = viewer.layers["nuclei styled"]
    assert result.data.ndim == 2 and result.colormap.name == "magenta"
    assert result.data.dtype == np.float32
    assert result.metadata["style_transfer"]["value_scaling"] == "the layer's contrast limits 0..57600"
    np.testing.assert_array_equal(layer.data, grey)


def test_the_console_function_runs_on_layer_names(qtbot, viewer, layers):
    from napari_style_transfer import run_style_transfer

    worker = run_style_transfer(viewer, "photo", "texture", start=False, **FAST)
    with qtbot.waitSignal(worker.finished, timeout=RUN_WAIT_MS):
        worker.start()
    assert "photo styled" in viewer.layers


def test_the_console_function_refuses_unknown_layers(viewer, layers):
    from napari_style_transfer import StyleTransferError, run_style_transfer

    with pytest.raises(
        StyleTransferError, match="no content layer named 'nope'; layers are 'photo', 'texture'"
    ):
        run_style_transfer(viewer, "nope", "texture")


def test_preferences_set_the_widget_defaults(viewer, plugin_settings, npe2pm):
    from napari.settings import get_plugin_settings
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-style-transfer"))

    settings = get_plugin_settings("napari-style-transfer").run
    settings.snapshot_every = 7
    settings.weights = "random"
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert widget["snapshot_every"].value == 7
    assert widget["weights"].value == "random"


def test_every_sample_opens(viewer):
    from napari_style_transfer._sample_data import DEMO_PAIRS, SAMPLES

    for key in SAMPLES:
        viewer.open_sample("napari-style-transfer", key)
        assert key in viewer.layers
    viewer.layers.clear()
    for key in DEMO_PAIRS:
        viewer.open_sample("napari-style-transfer", key)
    assert len(viewer.layers) == 2 * len(DEMO_PAIRS)


def test_the_widget_is_also_under_layers_filters(viewer):
    from napari._app_model import get_app_model

    items = get_app_model().menus.get_menu("napari/layers/filter")
    assert "napari-style-transfer.make_widget" in [
        getattr(item, "command", None) and item.command.id for item in items
    ]


def test_deleting_the_content_layer_leaves_the_style_a_style(viewer, layers, widget):
    content_layer, style_layer = layers
    viewer.add_image(np.zeros((8, 8)), name="photo styled", metadata={"style_transfer": {"step": 4}})
    viewer.layers.remove(content_layer)
    assert widget["style"].value is style_layer
    assert widget["status"].value == "the content layer was removed: choose the content layer"


def test_deleting_the_content_layer_picks_another_input_as_the_content(viewer, layers, widget):
    content_layer, style_layer = layers
    other = viewer.add_image(np.ones((8, 8)), name="cells")
    viewer.layers.remove(content_layer)
    assert widget["content"].value is other and widget["style"].value is style_layer
