"""The layer of a full-resolution run shows the whole picture from the composition on and
sharpens tile by tile: every cell not finished yet shows the best coarser result enlarged
(never 0), a finished tile shows its core before its level is blended, and the finished
layer is the store's pyramid (napari_style_transfer._napari.filling)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from skimage.transform import resize

from napari_style_transfer._image import LUMA
from napari_style_transfer._napari.filling import filling_pyramid
from napari_style_transfer._napari.full_resolution import REFRESH_S, StoreLayer
from napari_style_transfer._napari.worker import TileDone
from napari_style_transfer.pipeline.tiled import open_store, plan_full, run_full

from . import test_full_resolution_napari as full_resolution
from .conftest import wait_until_idle

FAST_FULL = full_resolution.FAST_FULL
slide, full_widget = full_resolution.slide, full_resolution.full_widget  # the same fixtures

LAYER = "slide styled (full resolution)"


def enlarged_2x(image: np.ndarray) -> np.ndarray:
    """Bilinear 2x, pixel centres aligned, edges repeated: what the next level starts from."""
    return resize(image, (2 * image.shape[0], 2 * image.shape[1]), order=1, anti_aliasing=False, mode="edge")


def colour_last(array) -> np.ndarray:
    return np.moveaxis(np.asarray(array[...]), 0, -1)


def run_until_tile(worker, done: int) -> None:
    """Cancel ``worker`` from its own thread as soon as ``done`` tiles are finished."""
    from qtpy.QtCore import Qt

    def cancel(update):
        if isinstance(update, TileDone) and update.done == done:
            worker.cancel_event.set()

    worker.yielded.connect(cancel, Qt.ConnectionType.DirectConnection)


def shown(layer) -> np.ndarray:
    """What the canvas shows of the layer's current level."""
    return np.asarray(layer._data_view)


def test_after_the_composition_every_cell_shows_it_enlarged(qtbot, viewer, full_widget, slide, tmp_path):
    before = np.array(slide.data)
    worker = full_widget.run()
    run_until_tile(worker, 1)  # the composition: 48 x 40, one tile
    wait_until_idle(qtbot, full_widget)
    store = zarr.open_group(str(tmp_path / "slide styled.ome.zarr"), mode="r")
    assert not np.asarray(store["finished_tiles"][...]).any()
    composition = colour_last(store["scratch/level-48x40/0"])
    layer = viewer.layers[LAYER]
    full = np.asarray(layer.data[0][:, :])
    assert full.min() > 0  # nothing left black
    np.testing.assert_allclose(full, enlarged_2x(composition), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(layer.data[1][:, :]), composition)  # the same scale
    level = np.asarray(layer.data[layer.data_level][:, :])
    np.testing.assert_array_equal(shown(layer), level[: shown(layer).shape[0], : shown(layer).shape[1]])
    np.testing.assert_array_equal(slide.data, before)


def test_a_finished_tile_shows_its_core_until_its_level_is_blended_then_the_store(
    qtbot,
    viewer,
    full_widget,
    slide,
    tmp_path,
):
    before = np.array(slide.data)
    path = str(tmp_path / "slide styled.ome.zarr")
    worker = full_widget.run()
    run_until_tile(worker, 2)  # the composition and tile (0, 0) of full resolution (tiles of 64)
    wait_until_idle(qtbot, full_widget)
    store = zarr.open_group(path, mode="r")
    piece = colour_last(store["scratch/pieces-96x80/0"])[:64, :64]  # tile (0, 0)'s core
    composition = enlarged_2x(colour_last(store["scratch/level-48x40/0"]))
    full = np.asarray(viewer.layers[LAYER].data[0][:, :])
    assert not np.asarray(store["0"][:, :64, :64]).any()  # not blended yet
    np.testing.assert_array_equal(full[:64, :64], piece)
    assert np.abs(piece - composition[:64, :64]).max() > 0.01
    np.testing.assert_allclose(full[64:], composition[64:], atol=1e-5)
    np.testing.assert_allclose(full[:, 64:], composition[:, 64:], atol=1e-5)

    full_widget.run()  # resumes; cancel kept the finished tile
    wait_until_idle(qtbot, full_widget)
    layer = viewer.layers[LAYER]  # the same layer, not a second one
    assert [layer.name for layer in viewer.layers] == ["slide", "texture", LAYER]
    assert np.asarray(store["finished_tiles"][...]).all()
    for level, data in enumerate(layer.data):
        np.testing.assert_array_equal(np.asarray(data[:, :]), colour_last(store[str(level)]))
    level = np.asarray(layer.data[layer.data_level][:, :])
    np.testing.assert_array_equal(shown(layer), level[: shown(layer).shape[0], : shown(layer).shape[1]])
    np.testing.assert_array_equal(slide.data, before)


def test_tiles_finishing_together_refresh_the_layer_once_now_and_once_after_the_interval(
    qtbot, viewer, slide, monkeypatch
):
    from napari_style_transfer._napari.worker import StoreOpened

    writer = StoreLayer(viewer, slide, "texture")
    now = [100.0]
    writer.clock = lambda: now[0]  # seconds, moved by hand
    writer.handle(StoreOpened((np.zeros((64, 64, 3), np.float32),), "store.ome.zarr", 0))
    refreshes = []
    monkeypatch.setattr(writer.layer, "refresh", lambda *args, **kwargs: refreshes.append(now[0]))
    now[0] += REFRESH_S  # long enough since the layer was added: a finished tile shows at once
    writer.handle(TileDone(1, 5))
    assert refreshes == [100.5]
    for done in range(2, 6):  # within REFRESH_S of that: one refresh when the interval ends
        now[0] += 0.1
        writer.handle(TileDone(done, 5))
    assert len(refreshes) == 1 and writer._timer.isActive()
    qtbot.waitUntil(lambda: len(refreshes) == 2, timeout=5000)
    assert not writer._timer.isActive()


# The pictures without napari: the engine's run into a store in memory, read as the layer reads it.


def run_through(fp, store, jobs: int) -> None:
    """Run ``fp`` into ``store`` until ``jobs`` jobs (the composition, tiles) are done."""
    records = run_full(fp, store)
    done = 0
    for record in records:
        done += record.step == record.steps
        if done == jobs:
            break
    records.close()


@pytest.fixture
def style(rng):
    return rng.random((36, 36, 3)).astype(np.float32)


def test_a_grey_result_shows_the_composition_enlarged_in_grey(rng, style):
    grey = (rng.random((96, 80)) * 4000).astype(np.uint16)
    fp = plan_full(grey, style, size="full", **FAST_FULL)
    store = open_store(fp, zarr.storage.MemoryStore())
    pictures = filling_pyramid(fp, store)
    assert not pictures[0][:, :].any()  # nothing done: nothing to show
    run_through(fp, store, 1)
    colour = colour_last(store.group["scratch/level-48x40/0"])  # the levels below full size are RGB
    assert pictures[0].shape == (96, 80)
    np.testing.assert_allclose(pictures[0][:, :], np.clip(enlarged_2x(colour) @ LUMA, 0, 1), atol=1e-5)
    np.testing.assert_allclose(pictures[1][:, :], np.clip(colour @ LUMA, 0, 1), atol=1e-6)


def test_a_pyramid_deeper_than_the_schedule_shows_the_composition_shrunk(rng, style):
    content = (rng.random((130, 130, 3)) * 255).astype(np.uint8)
    fp = plan_full(content, style, size="full", **(FAST_FULL | {"tile_size": 128}))
    store = open_store(fp, zarr.storage.MemoryStore())
    assert [level.downscale for level in fp.levels] == [2, 1] and len(store.levels) == 3
    run_through(fp, store, 1)
    pictures = filling_pyramid(fp, store)
    composition = colour_last(store.group["scratch/level-65x65/0"])
    np.testing.assert_array_equal(pictures[1][:, :], composition)
    assert pictures[2].shape == (33, 33, 3)  # block means of 2 x 2, as the store's pyramid
    np.testing.assert_allclose(pictures[2][0, 0], composition[:2, :2].mean(axis=(0, 1)), atol=1e-6)
    np.testing.assert_allclose(pictures[2][-1, -1], composition[-1, -1], atol=1e-6)  # a partial block


def test_a_picture_is_sliced_as_a_numpy_array_would_be(rng, style):
    content = (rng.random((96, 80, 3)) * 255).astype(np.uint8)
    fp = plan_full(content, style, size="full", **FAST_FULL)
    store = open_store(fp, zarr.storage.MemoryStore())
    run_through(fp, store, 3)  # the composition and two tiles' pieces
    picture = filling_pyramid(fp, store)[0]
    whole = np.asarray(picture)
    assert whole.shape == picture.shape == (96, 80, 3)
    for key in [
        (5, 7),
        (-1, -1, 2),
        (slice(3, 90, 4), slice(None, None, -3)),
        (..., 1),
        (slice(60, 70),),
        10,
    ]:
        np.testing.assert_array_equal(picture[key], whole[key])
    assert picture[50:50, 3:9].shape == (0, 6, 3)


def test_a_refresh_shows_the_new_tiles_at_the_level_on_screen_and_in_the_thumbnail(qtbot, viewer, slide):
    from napari_style_transfer._napari.worker import StoreOpened

    levels = (np.zeros((256, 256, 3), np.float32), np.zeros((128, 128, 3), np.float32))
    writer = StoreLayer(viewer, slide, "texture")
    writer.handle(StoreOpened(levels, "store.ome.zarr", 0))
    layer = writer.layer
    viewer.scene.camera.zoom = 4.0  # closer than 1:1: napari shows the full-size level
    qtbot.waitUntil(lambda: layer.data_level == 0, timeout=5000)
    thumbnail = np.array(layer.thumbnail)
    for level in levels:  # the store fills in
        level[...] = 0.8
    writer.refresh()
    # what the next frame draws, before napari's own drawing could choose the level again
    assert layer.data_level == 0  # not the coarsest level, blocky over the canvas
    assert np.asarray(shown(layer)).min() == pytest.approx(0.8)
    assert not np.array_equal(layer.thumbnail, thumbnail)  # the coarsest level was read again


def test_a_refresh_keeps_the_level_a_user_locked(qtbot, viewer, slide):
    from napari_style_transfer._napari.worker import StoreOpened

    levels = (np.zeros((256, 256, 3), np.float32), np.zeros((128, 128, 3), np.float32))
    writer = StoreLayer(viewer, slide, "texture")
    writer.handle(StoreOpened(levels, "store.ome.zarr", 0))
    layer = writer.layer
    layer.locked_data_level = 0  # napari's layer controls: the user picked full size
    levels[0][...] = 0.8
    writer.refresh()
    assert layer.locked_data_level == 0 and layer.data_level == 0
    assert np.asarray(shown(layer)).min() == pytest.approx(0.8)
