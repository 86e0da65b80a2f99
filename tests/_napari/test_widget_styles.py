"""The widget's style controls: style rows with their blend weights and style scales,
regions from a Labels layer, style loss, colour mode (tiny images, untrained weights)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_style_transfer._napari.layers import regions_on_content

from .conftest import run_and_wait


def _extra_styles(viewer) -> list:
    """Two striped style layers, "second" and "third" (added last: the newest)."""
    layers = []
    for value, name in ((200, "second"), (90, "third")):
        image = np.full((36, 36, 3), value, np.uint8)
        image[::2, :, 1] = 20
        layers.append(viewer.add_image(image, name=name, rgb=True))
    return layers


def test_two_added_styles_give_three_styles_with_their_weights(viewer, widget, layers):
    second, third = _extra_styles(viewer)
    widget["add_style_button"].native.click()
    widget["add_style_button"].native.click()
    assert widget.styles() == [layers[1], third, second]  # each new row takes the newest free layer
    widget["blend"].value, widget["blend_2"].value, widget["blend_3"].value = 1.0, 2.0, 0.5
    assert widget.options()["style_blend"] == (1.0, 2.0, 0.5)  # as typed: stylize normalises them


def test_added_style_rows_get_room_of_their_own_in_the_dock(qtbot, viewer, layers):
    second, third = _extra_styles(viewer)
    viewer.window._qt_window.resize(1280, 800)
    viewer.window._qt_window.show()  # docked into a shown window, as a user opens it
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = layers
    widget.add_style(second, weight=2.0)
    widget.add_style(third, weight=0.5, scale=0.5)
    widget["style_loss"].value = "mean_cov"
    qtbot.wait(300)  # the dock lays itself out again over a few events
    drawn = widget._styles.native.height()  # read before anything asks the layout for its hints
    assert drawn >= widget._styles.native.minimumSizeHint().height()  # the rows are not squeezed


def test_removing_a_style_drops_it_and_its_weight(viewer, widget, layers):
    second, third = _extra_styles(viewer)
    widget.add_style(second, weight=2.0)
    widget.add_style(third, weight=0.5)
    widget["remove_button_2"].native.click()
    assert widget.styles() == [layers[1], third]
    assert widget.options()["style_blend"] == (1.0, 0.5)
    assert widget["style_2"].value is third  # renumbered
    with pytest.raises(AttributeError):
        widget["style_3"]
    widget.remove_style(2)
    assert widget.styles() is layers[1] and "style_blend" not in widget.options()


def test_the_last_style_cannot_be_removed(widget, layers):
    widget.remove_style(1)
    assert widget.styles() is layers[1]
    assert widget["remove_button"].native.isHidden()


def test_each_style_has_its_style_scale(viewer, widget):
    second, third = _extra_styles(viewer)
    widget.add_style(second)
    widget.add_style(third, scale=0.5)
    assert widget.options()["style_scale"] == (1.0, 1.0, 0.5)
    widget["style_scale_3"].value = 1.0
    assert widget.options()["style_scale"] == 1.0  # one value when they are all equal


def test_without_a_second_style_there_is_no_blend(widget, layers):
    assert widget.styles() is layers[1]
    assert "style_blend" not in widget.options()


def test_style_loss_colour_and_average_choices_reach_the_options(widget):
    widget["style_loss"].value = "sliced"
    widget["content_colours"].value = "histogram"
    widget["optimizer"].value = "adam"
    widget["average"].value = 0.9
    options = widget.options()
    assert (options["style_loss"], options["content_colours"], options["average"]) == (
        "sliced",
        "histogram",
        0.9,
    )
    widget["content_colours"].value = "off"
    widget["average"].value = 0.0
    assert widget.options()["content_colours"] is False and widget.options()["average"] is None


def test_average_is_off_and_disabled_unless_the_optimizer_is_adam(widget):
    widget["optimizer"].value = "adam"
    widget["average"].value = 0.9
    widget["optimizer"].value = "lbfgs"
    assert not widget["average"].enabled and widget.options()["average"] is None


def test_regions_follow_the_layers_transforms(viewer, layers):
    content = layers[0]  # 40 x 48 px at scale (2, 3), translate (10, -5)
    coarse = np.arange(20 * 24).reshape(20, 24) % 3
    # each labels pixel covers 2 x 2 content pixels in world coordinates
    labels = viewer.add_labels(coarse, scale=(4.0, 6.0), translate=(11.0, -3.5))
    np.testing.assert_array_equal(
        regions_on_content(labels, content, (40, 48)), np.repeat(np.repeat(coarse, 2, 0), 2, 1)
    )


def test_content_outside_the_labels_layer_is_label_0(viewer, layers):
    labels = viewer.add_labels(
        np.ones((40, 24), np.int32), scale=(2.0, 3.0), translate=(10.0, -5.0)
    )  # the left half
    regions = regions_on_content(labels, layers[0], (40, 48))
    assert (regions[:, :24] == 1).all() and (regions[:, 24:] == 0).all()


def test_a_run_with_two_styles_over_a_labels_layer_records_the_regions(qtbot, viewer, widget, layers):
    second = viewer.add_image(np.full((36, 36, 3), 200, np.uint8), name="second", rgb=True)
    second.data[::2, :, 1] = 20
    bands = np.zeros((40, 48), np.int32)
    bands[:, :16], bands[:, 32:] = 1, 2
    labels = viewer.add_labels(bands, name="bands", scale=(2.0, 3.0), translate=(10.0, -5.0))
    widget.add_style(second)
    widget["regions"].value = labels
    widget["size"].value = 64
    widget["snapshot_every"].value = 0
    run_and_wait(qtbot, widget)
    result = viewer.layers["photo styled"]
    metadata = result.metadata["style_transfer"]
    assert metadata["style_regions_layer"] == {"layer": "bands", "labels": [0, 1, 2], "per_frame": False}
    assert metadata["style_regions"]["labels"] == [0, 1, 2]  # the engine's account of the label image
    assert metadata["style"] == "texture, second"


def test_labels_above_the_number_of_styles_are_a_notification(qtbot, viewer, widget, errors):
    labels = viewer.add_labels(
        np.full((40, 48), 3, np.int32), name="many", scale=(2.0, 3.0), translate=(10.0, -5.0)
    )
    widget["regions"].value = labels
    run_and_wait(qtbot, widget)
    assert any("style_regions has label 3 but there is 1 style" in message for message in errors)
    assert "photo styled" not in viewer.layers


def test_the_weights_are_enabled_only_for_several_styles_without_regions(viewer, widget):
    assert not widget["blend"].enabled
    widget.add_style(_extra_styles(viewer)[0])
    assert widget["blend"].enabled and widget["blend_2"].enabled
    widget["regions"].value = viewer.add_labels(np.zeros((40, 48), np.int32))
    assert not widget["blend"].enabled and not widget["blend_2"].enabled
    assert "style_blend" not in widget.options()  # each region takes its style whole


def test_a_run_with_three_styles_records_their_blend(qtbot, viewer, widget):
    second, third = _extra_styles(viewer)
    widget.add_style(second, weight=2.0)
    widget.add_style(third, weight=0.5, scale=1.5)
    for name, value in {"size": 32, "steps": 1, "snapshot_every": 0}.items():
        widget[name].value = value
    run_and_wait(qtbot, widget)
    metadata = viewer.layers["photo styled"].metadata["style_transfer"]
    assert metadata["style"] == "texture, second, third" and metadata["styles"] == 3
    assert list(metadata["options"]["style_blend"]) == [1.0, 2.0, 0.5]
    assert list(metadata["options"]["style_scale"]) == [1.0, 1.0, 1.5]


def _halves(frames: int) -> np.ndarray:
    """Label 1 on the left half of even frames and the right half of odd ones."""
    labels = np.zeros((frames, 40, 48), np.int32)
    labels[::2, :, :24] = 1
    labels[1::2, :, 24:] = 1
    return labels


def test_a_labels_stack_gives_each_frame_its_own_regions(viewer):
    stack = viewer.add_image(
        np.zeros((3, 40, 48), np.float32), scale=(5.0, 2.0, 2.0), translate=(100.0, 0.0, 0.0)
    )
    labels = viewer.add_labels(_halves(3), scale=(5.0, 2.0, 2.0), translate=(100.0, 0.0, 0.0))
    np.testing.assert_array_equal(regions_on_content(labels, stack, (40, 48), stack=(3,)), _halves(3))
    # a 2D Labels layer is one label image for every frame
    flat = viewer.add_labels(_halves(1)[0], scale=(2.0, 2.0))
    np.testing.assert_array_equal(regions_on_content(flat, stack, (40, 48), stack=(3,)), _halves(1)[0])


def test_a_whole_stack_run_passes_one_label_image_per_frame(qtbot, viewer, widget):
    movie = viewer.add_image(
        np.linspace(0, 1, 2 * 40 * 48, dtype=np.float32).reshape(2, 40, 48), name="cells"
    )
    viewer.add_labels(_halves(2), name="halves")
    widget["content"].value = movie
    widget["regions"].value = viewer.layers["halves"]
    widget["stack"].value = "whole stack, frames independent"
    for name, value in {"size": 32, "steps": 1, "snapshot_every": 0}.items():
        widget[name].value = value
    run_and_wait(qtbot, widget)
    metadata = viewer.layers["cells styled"].metadata["style_transfer"]
    assert metadata["style_regions_layer"] == {"layer": "halves", "labels": [0, 1], "per_frame": True}
    assert metadata["style_regions"]["shape"] == [2, 27, 32]  # the engine got a label image per frame


def test_a_regions_layer_of_other_dimensions_is_refused_at_run(viewer, layers):
    from napari_style_transfer import StyleTransferError, run_style_transfer

    labels = viewer.add_labels(np.zeros((2, 40, 48), np.int32), name="cube")
    with pytest.raises(StyleTransferError, match="'cube' has 3 dimensions and the content 2"):
        run_style_transfer(viewer, layers[0], layers[1], style_regions=labels, start=False, size=32)
