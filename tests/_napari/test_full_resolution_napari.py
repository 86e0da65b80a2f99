"""A full-resolution run from napari: the content's own resolution styled in tiles into an
OME-Zarr store, shown as a layer backed by the store over the content, filling in tile by
tile; Cancel keeps the finished tiles and a second Run resumes (docs/napari.md)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_style_transfer._napari.full_resolution import default_store, full_resolution_data, larger_than
from napari_style_transfer._napari.worker import StoreOpened, TileDone

from .conftest import wait_until_idle

# shallow layers keep the tiles' windows small (stride 2) and the runs quick
FAST_FULL = {
    "steps": 2,
    "seed": 1,
    "snapshot_every": 0,
    "weights": "random",
    "content_layers": "conv2_2",
    "style_layers": "conv1_1,conv2_1",
    "schedule": "none",
    "tile_size": 64,
}
#: levels 48x40 (the composition, one tile), 96x80 (2x2 tiles of 64); the store has a
#: pyramid of two levels (chunks of 64 and 32)
JOBS = 1 + 4


@pytest.fixture
def slide(viewer, rng):
    """A 96 x 80 RGB content placed with scale and translate, and a style layer."""
    pixels = (rng.random((96, 80, 3)) * 255).astype(np.uint8)
    slide = viewer.add_image(pixels, name="slide", rgb=True, scale=(2.0, 3.0), translate=(10.0, -5.0))
    viewer.add_image(rng.random((36, 36, 3)).astype(np.float32), name="texture", rgb=True)
    return slide


@pytest.fixture
def full_widget(viewer, slide, tmp_path):
    """The dock widget (the viewer made first), set for a tiled run of the slide into tmp_path."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = slide, viewer.layers["texture"]
    widget["size"].value = 64
    for name, value in FAST_FULL.items():
        widget[name].value = value
    widget["full_resolution"].value = True
    widget["store"].value = tmp_path / "slide styled.ome.zarr"
    return widget


def collect(worker, kind):
    seen = []
    worker.yielded.connect(lambda update: seen.append(update) if isinstance(update, kind) else None)
    return seen


def test_full_resolution_is_offered_only_for_a_layer_larger_than_the_size(viewer, full_widget, slide):
    assert larger_than(slide, 64) and not larger_than(slide, 96)
    assert full_widget["full_resolution"].enabled
    full_widget["size"].value = 128
    assert not full_widget["full_resolution"].enabled


def test_the_store_defaults_to_a_folder_named_for_the_layer(slide):
    assert default_store(slide).name == "slide styled.ome.zarr"


def test_a_run_writes_the_store_and_shows_it_as_a_multiscale_layer_over_the_content(
    qtbot, viewer, full_widget, slide, tmp_path
):
    before = np.array(slide.data)
    worker = full_widget.run()
    assert worker is not None
    tiles = collect(worker, TileDone)
    wait_until_idle(qtbot, full_widget)
    store = zarr.open_group(str(tmp_path / "slide styled.ome.zarr"), mode="r")
    assert np.asarray(store["finished_tiles"][...]).all()
    layer = viewer.layers["slide styled (full resolution)"]
    assert layer.multiscale and layer.rgb
    assert layer.data[0].shape == (96, 80, 3)
    # backed by the store: the layer's pixels are the store's (OME order c, y, x)
    np.testing.assert_array_equal(np.asarray(layer.data[0][:, :, :]), np.moveaxis(store["0"][...], 0, -1))
    assert tuple(layer.scale) == (2.0, 3.0) and tuple(layer.translate) == (10.0, -5.0)
    # added while the store was empty, refreshed as tiles finished: it shows the result
    shown = np.asarray(layer._data_view)
    level = np.asarray(layer.data[layer.data_level][:, :, :])
    assert shown.any()
    np.testing.assert_array_equal(shown, level[: shown.shape[0], : shown.shape[1]])
    assert [update.done for update in tiles] == list(range(1, JOBS + 1))
    assert full_widget["progress"].value == full_widget["progress"].max == JOBS
    np.testing.assert_array_equal(slide.data, before)


def test_cancel_keeps_the_finished_tiles_and_a_second_run_resumes(qtbot, viewer, full_widget, tmp_path):
    from qtpy.QtCore import Qt

    worker = full_widget.run()

    def cancel_after_the_second_tile(update):  # the composition, one tile of full resolution
        if isinstance(update, TileDone) and update.done == 2:
            worker.cancel_event.set()

    worker.yielded.connect(cancel_after_the_second_tile, Qt.ConnectionType.DirectConnection)
    wait_until_idle(qtbot, full_widget)
    path = str(tmp_path / "slide styled.ome.zarr")
    # full resolution's tiles are kept as pieces until the level's last one, then blended
    pieces = zarr.open_group(path, mode="r")["scratch/pieces-96x80/finished_tiles"]
    assert int(np.asarray(pieces[...]).sum()) == 1
    assert "cancelled" in full_widget["status"].value

    second = full_widget.run()
    opened, tiles = collect(second, StoreOpened), collect(second, TileDone)
    wait_until_idle(qtbot, full_widget)
    assert opened[0].finished == 1
    assert [update.done for update in tiles] == [1, 2, 3]  # the 3 tiles left
    assert np.asarray(zarr.open_group(path, mode="r")["finished_tiles"][...]).all()


def test_a_multiscale_layer_is_styled_at_its_full_resolution_level(
    qtbot, viewer, full_widget, slide, tmp_path
):
    pyramid = zarr.open_group(str(tmp_path / "slide.zarr"), mode="w")
    pyramid.create_array("0", data=np.asarray(slide.data), chunks=(32, 32, 3))
    pyramid.create_array("1", data=np.asarray(slide.data)[::2, ::2], chunks=(32, 32, 3))
    layer = viewer.add_image([pyramid["0"], pyramid["1"]], name="pyramid", rgb=True, multiscale=True)
    assert full_resolution_data(layer) is layer.data[0]  # handed to the worker as it is, unread
    full_widget["content"].value = layer
    full_widget["store"].value = tmp_path / "pyramid styled.ome.zarr"
    assert full_widget["full_resolution"].enabled
    full_widget.run()
    wait_until_idle(qtbot, full_widget)
    store = zarr.open_group(str(tmp_path / "pyramid styled.ome.zarr"), mode="r")
    assert store["0"].shape == (3, 96, 80)
    assert np.asarray(store["finished_tiles"][...]).all()


def test_a_grey_layer_gives_a_grey_result_layer(qtbot, viewer, full_widget, rng, tmp_path):
    grey = viewer.add_image((rng.random((96, 80)) * 4000).astype(np.uint16), name="cells")
    full_widget["content"].value = grey
    full_widget["store"].value = tmp_path / "cells styled.ome.zarr"
    full_widget.run()
    wait_until_idle(qtbot, full_widget)
    layer = viewer.layers["cells styled (full resolution)"]
    assert not layer.rgb and layer.data[0].shape == (96, 80)


def test_a_store_of_other_settings_is_refused_and_left_as_it_is(qtbot, viewer, full_widget, tmp_path, errors):
    full_widget.run()
    wait_until_idle(qtbot, full_widget)
    path = str(tmp_path / "slide styled.ome.zarr")
    before = np.asarray(zarr.open_group(path, mode="r")["0"][...])
    full_widget["steps"].value = 3
    full_widget.run()
    wait_until_idle(qtbot, full_widget)
    assert full_widget["status"].value.startswith("failed:") and "steps" in full_widget["status"].value
    assert any("steps" in message for message in errors)
    np.testing.assert_array_equal(np.asarray(zarr.open_group(path, mode="r")["0"][...]), before)


def test_a_store_begun_in_napari_is_finished_by_the_command_line(
    qtbot, viewer, full_widget, tmp_path, capsys
):
    """Begin a slide on a desktop, finish it on a server: the widget's defaults are the
    command line's, so the same settings there resume the store instead of refusing it."""
    import imageio.v3 as iio
    from qtpy.QtCore import Qt

    from napari_style_transfer.cli import main

    slide = viewer.layers["slide"]
    zarr.save_array(str(tmp_path / "slide.zarr"), np.asarray(slide.data))
    iio.imwrite(tmp_path / "texture.png", (np.asarray(viewer.layers["texture"].data) * 255).astype(np.uint8))
    on_disk = viewer.add_image(
        zarr.open_array(str(tmp_path / "slide.zarr"), mode="r"), name="slide", rgb=True
    )
    full_widget["content"].value = on_disk
    full_widget["style"].value = viewer.add_image(iio.imread(tmp_path / "texture.png"), name="png", rgb=True)
    store = tmp_path / "begun in napari.ome.zarr"
    full_widget["store"].value = store
    worker = full_widget.run()

    def cancel_after_the_second_tile(update):
        if isinstance(update, TileDone) and update.done == 2:
            worker.cancel_event.set()

    worker.yielded.connect(cancel_after_the_second_tile, Qt.ConnectionType.DirectConnection)
    wait_until_idle(qtbot, full_widget)
    pieces = zarr.open_group(str(store), mode="r")["scratch/pieces-96x80/finished_tiles"]
    assert int(np.asarray(pieces[...]).sum()) == 1  # the composition, and one tile of full size

    flags = [f"--{name.replace('_', '-')}={value}" for name, value in FAST_FULL.items()]
    argv = [
        str(tmp_path / "slide.zarr"),
        str(tmp_path / "texture.png"),
        "-o",
        str(store),
        "--size",
        "full",
        "-q",
    ]
    assert main([*argv, *flags]) == 0
    assert "5 tiles of 64 px, 2 already done" in capsys.readouterr().out
    assert np.asarray(zarr.open_group(str(store), mode="r")["finished_tiles"][...]).all()
