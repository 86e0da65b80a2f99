"""The widget's style controls: a second style with a blend, regions from a Labels layer,
style loss, colour mode (tiny images, untrained weights)."""

from __future__ import annotations

import numpy as np

from napari_style_transfer._napari.layers import regions_on_content

from .conftest import run_and_wait


def test_a_second_style_layer_is_blended_by_the_slider(viewer, widget, layers):
    second = viewer.add_image(np.zeros((36, 36, 3), np.uint8), name="second", rgb=True)
    widget["style_2"].value = second
    widget["blend"].value = 0.7
    assert widget.styles() == [layers[1], second]
    assert widget.options()["style_blend"] == (0.7, 1.0 - 0.7)


def test_without_a_second_style_there_is_no_blend(widget, layers):
    assert widget.styles() is layers[1]
    assert "style_blend" not in widget.options()


def test_style_loss_colour_and_average_choices_reach_the_options(widget):
    widget["style_loss"].value = "sliced"
    widget["content_colours"].value = "histogram"
    widget["optimizer"].value = "adam"
    widget["average"].value = 0.9
    options = widget.options()
    assert (options["style_loss"], options["content_colours"], options["average"]) == ("sliced", "histogram", 0.9)
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
    np.testing.assert_array_equal(regions_on_content(labels, content, (40, 48)), np.repeat(np.repeat(coarse, 2, 0), 2, 1))


def test_content_outside_the_labels_layer_is_label_0(viewer, layers):
    labels = viewer.add_labels(np.ones((40, 24), np.int32), scale=(2.0, 3.0), translate=(10.0, -5.0))  # the left half
    regions = regions_on_content(labels, layers[0], (40, 48))
    assert (regions[:, :24] == 1).all() and (regions[:, 24:] == 0).all()


def test_a_run_with_two_styles_over_a_labels_layer_records_the_regions(qtbot, viewer, widget, layers):
    second = viewer.add_image(np.full((36, 36, 3), 200, np.uint8), name="second", rgb=True)
    second.data[::2, :, 1] = 20
    bands = np.zeros((40, 48), np.int32)
    bands[:, :16], bands[:, 32:] = 1, 2
    labels = viewer.add_labels(bands, name="bands", scale=(2.0, 3.0), translate=(10.0, -5.0))
    widget["style_2"].value = second
    widget["regions"].value = labels
    widget["size"].value = 64
    widget["snapshot_every"].value = 0
    run_and_wait(qtbot, widget)
    result = viewer.layers["photo styled"]
    metadata = result.metadata["style_transfer"]
    assert metadata["style_regions_layer"] == {"layer": "bands", "labels": [0, 1, 2]}
    assert metadata["style_regions"]["labels"] == [0, 1, 2]  # the engine's account of the label image
    assert metadata["style"] == "texture, second"


def test_labels_above_the_number_of_styles_are_a_notification(qtbot, viewer, widget, errors):
    labels = viewer.add_labels(np.full((40, 48), 3, np.int32), name="many", scale=(2.0, 3.0), translate=(10.0, -5.0))
    widget["regions"].value = labels
    run_and_wait(qtbot, widget)
    assert any("style_regions has label 3 but there is 1 style" in message for message in errors)
    assert "photo styled" not in viewer.layers


def test_the_blend_slider_shows_only_for_two_styles_without_regions(viewer, widget):
    def shown() -> bool:
        return not widget["blend"].native.isHidden()  # hidden on purpose, not only an unshown viewer

    assert not shown()
    widget["style_2"].value = viewer.add_image(np.zeros((36, 36, 3), np.uint8), name="second", rgb=True)
    assert shown()
    widget["regions"].value = viewer.add_labels(np.zeros((40, 48), np.int32))
    assert not shown()
