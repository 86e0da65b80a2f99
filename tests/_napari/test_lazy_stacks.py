"""Stacks in napari: the stack choice, and lazy (dask, zarr) layers read in the worker, a frame
at a time: images and the Labels layer of the style regions.

Dask runs with its synchronous scheduler here, so a chunk is computed in the thread that
asks for it: the GUI thread if the widget read the data, the worker if the run did. Zarr
reads every chunk in its own I/O thread; the thread that asked is recorded instead."""

from __future__ import annotations

import contextvars
import threading
from collections import Counter

import numpy as np
import pytest

from .conftest import FAST, run_and_wait

da = pytest.importorskip("dask.array")


@pytest.fixture(autouse=True)
def synchronous_dask():
    import dask

    with dask.config.set(scheduler="synchronous"):
        yield


class ChunkLog(list):
    """(thread, chunk location) of every chunk computed."""

    def on_gui_thread(self):
        return [location for thread, location in self if thread is threading.main_thread()]

    def locations(self):
        return Counter(location for _, location in self)


def stack_data(frames=3):
    """A (frames, 32, 32) float32 stack in [0, 1]: a ramp moving right."""
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    return np.stack([np.roll(ramp, 5 * t, axis=1) for t in range(frames)])


def logged_dask(data, log, chunks):
    """``data`` as a dask array in ``chunks`` that logs (thread, chunk location) of each computation."""

    def record(block, block_info=None):
        log.append((threading.current_thread(), block_info[0]["chunk-location"]))
        return block

    return da.from_array(data, chunks=chunks).map_blocks(record, dtype=data.dtype)


def lazy_stack(log, frames=3, nan_frame=None):
    """A (frames, 32, 32) float32 dask stack in 16 x 16 chunks that logs its computations."""
    data = stack_data(frames)
    if nan_frame is not None:
        data[nan_frame, 3, 3] = np.nan
    return logged_dask(data, log, (1, 16, 16))


@pytest.fixture
def log():
    return ChunkLog()


def add_lazy(viewer, widget, data, log, **kwargs):
    """Add a lazy layer and pick it as the content; napari's own drawing of the slice on
    screen (on the GUI thread) is kept out of the log by hiding the layer first."""
    layer = viewer.add_image(data, name="lazy", contrast_limits=(0.0, 1.0), **kwargs)
    layer.visible = False
    widget["content"].value = layer
    log.clear()
    return layer


def test_pressing_run_on_a_lazy_stack_computes_nothing(viewer, widget, log):
    from napari_style_transfer import run_style_transfer

    layer = add_lazy(viewer, widget, lazy_stack(log), log)
    for stack in ("whole stack, frames independent", "current slice"):
        run_style_transfer(viewer, layer, widget["style"].value, stack=stack, start=False, **FAST)
    assert log == []


def test_a_lazy_whole_stack_is_computed_in_the_worker_once_chunk_by_chunk(qtbot, viewer, widget, log):
    add_lazy(viewer, widget, lazy_stack(log), log)
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    run_and_wait(qtbot, widget)
    assert viewer.layers["lazy styled"].data.shape == (3, 32, 32)
    assert log.on_gui_thread() == []
    every_chunk = {(t, y, x): 1 for t in range(3) for y in range(2) for x in range(2)}
    assert log.locations() == every_chunk  # no pass over the whole before the frames


def test_the_current_slice_of_a_lazy_stack_computes_only_that_slice(qtbot, viewer, widget, log):
    add_lazy(viewer, widget, lazy_stack(log), log)
    viewer.dims.set_point(0, 1)
    widget["stack"].value = "current slice"
    run_and_wait(qtbot, widget)
    assert viewer.layers["lazy styled"].data.shape == (1, 32, 32)
    assert log.on_gui_thread() == []
    assert {location[0] for location in log.locations()} == {1}


def test_nan_in_one_frame_of_a_lazy_stack_fails_the_run_naming_the_frame(qtbot, viewer, widget, log, errors):
    add_lazy(viewer, widget, lazy_stack(log, nan_frame=1), log)
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    run_and_wait(qtbot, widget)
    assert any("'lazy' contains NaN or infinite values in frame 1" in message for message in errors), errors
    assert log.on_gui_thread() == []
    assert widget["status"].value.startswith("failed")


def test_a_lazy_rgb_stack_is_read_in_the_worker(qtbot, viewer, widget, content, log):
    movie = np.stack([content, np.roll(content, 4, axis=1)])
    data = logged_dask(movie, log, (1, 20, 24, 3))
    layer = viewer.add_image(data, name="lazy movie", rgb=True)
    layer.visible = False
    widget["content"].value = layer
    log.clear()
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    run_and_wait(qtbot, widget)
    assert viewer.layers["lazy movie styled"].data.shape == (2, 27, 32, 3)
    assert log and log.on_gui_thread() == []


def test_a_layer_with_a_time_axis_preselects_a_time_series(viewer, widget):
    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="movie", axis_labels=("T", "y", "x"))
    widget["content"].value = layer
    assert widget["stack"].value == "whole stack as time series"
    assert widget.options()["frames"] == "time"


def test_the_viewers_axis_labels_also_mark_a_time_series(viewer, widget):
    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="movie")
    viewer.dims.axis_labels = ("time", "y", "x")
    widget["content"].value = layer
    assert widget["stack"].value == "whole stack as time series"


def test_other_axis_labels_leave_the_stack_choice_alone(viewer, widget):
    widget["stack"].value = "whole stack, frames independent"
    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="zstack", axis_labels=("z", "y", "x"))
    widget["content"].value = layer
    assert widget["stack"].value == "whole stack, frames independent"
    assert widget.options()["frames"] == "independent"


def test_a_choice_made_after_picking_a_time_series_stays(viewer, widget):
    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="movie", axis_labels=("t", "y", "x"))
    widget["content"].value = layer
    widget["stack"].value = "current slice"
    viewer.add_image(np.zeros((8, 8), np.float32), name="another")  # layers change: choices reset
    assert widget["content"].value is layer and widget["stack"].value == "current slice"


def test_whole_stack_is_still_accepted_as_frames_independent(viewer, widget):
    from napari_style_transfer import run_style_transfer

    widget["stack"].value = "whole stack"
    assert widget["stack"].value == "whole stack, frames independent"
    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="zstack")
    worker = run_style_transfer(
        viewer, layer, widget["style"].value, stack="whole stack", start=False, **FAST
    )
    assert worker.layer_writer.options["frames"] == "independent"


def test_a_frames_option_against_the_stack_mode_is_refused(viewer, widget):
    from napari_style_transfer import StyleTransferError, run_style_transfer

    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="movie")
    with pytest.raises(StyleTransferError, match="frames='time', not 'independent'"):
        run_style_transfer(
            viewer,
            layer,
            widget["style"].value,
            stack="whole stack as time series",
            frames="independent",
            start=False,
        )


# Lazy Labels layers as style regions: checked at Run, read and sampled in the worker.


def _halves(frames: int) -> np.ndarray:
    """Label 1 on the left half of even frames and the right half of odd ones."""
    labels = np.zeros((frames, 32, 32), np.int32)
    labels[::2, :, :16] = 1
    labels[1::2, :, 16:] = 1
    return labels


@pytest.fixture
def regions_run(viewer, widget, log):
    """A numpy (3, 32, 32) content stack picked in the widget, a lazy Labels stack over it
    ("lazy halves", in (1, 16, 16) chunks that log their computations) and the same labels
    in memory ("halves")."""
    cells = viewer.add_image(stack_data(), name="cells", contrast_limits=(0.0, 1.0))
    viewer.add_labels(_halves(3), name="halves").visible = False
    lazy = viewer.add_labels(logged_dask(_halves(3), log, (1, 16, 16)), name="lazy halves")
    lazy.visible = False
    widget["content"].value = cells
    widget["regions"].value = lazy
    for name, value in {"size": 32, "steps": 1, "snapshot_every": 0}.items():
        widget[name].value = value
    log.clear()
    return cells, lazy


def test_pressing_run_with_lazy_regions_reads_none_of_the_labels(viewer, widget, regions_run, log):
    from napari_style_transfer import run_style_transfer

    cells, lazy = regions_run
    for stack in ("whole stack, frames independent", "current slice"):
        run_style_transfer(
            viewer, cells, widget["style"].value, stack=stack, style_regions=lazy, start=False, size=32
        )
    assert log == []


def test_lazy_regions_are_read_in_the_worker_frame_by_frame_and_applied(
    qtbot, viewer, widget, regions_run, log
):
    widget["stack"].value = "whole stack, frames independent"
    lazy_result = run_and_wait(qtbot, widget).layer_writer.result_layer
    assert log and log.on_gui_thread() == []
    every_chunk = {(t, y, x): 1 for t in range(3) for y in range(2) for x in range(2)}
    assert log.locations() == every_chunk  # each frame read once, none twice
    metadata = lazy_result.metadata["style_transfer"]
    assert metadata["style_regions_layer"] == {"layer": "lazy halves", "labels": [0, 1], "per_frame": True}
    assert metadata["style_regions"]["shape"] == [3, 32, 32]
    widget["regions"].value = viewer.layers["halves"]
    in_memory = run_and_wait(qtbot, widget).layer_writer.result_layer
    np.testing.assert_array_equal(lazy_result.data, in_memory.data)


def test_the_current_slice_reads_only_its_frame_of_lazy_regions(qtbot, viewer, widget, regions_run, log):
    viewer.dims.set_point(0, 1)
    widget["stack"].value = "current slice"
    result = run_and_wait(qtbot, widget).layer_writer.result_layer
    assert log and log.on_gui_thread() == []
    assert {location[0] for location in log.locations()} == {1}
    metadata = result.metadata["style_transfer"]
    assert metadata["style_regions_layer"] == {"layer": "lazy halves", "labels": [0, 1], "per_frame": False}


# Zarr layers: the array itself (napari takes it as layer data) or dask.array.from_zarr of it.

#: The thread that asked zarr for what is being read (zarr reads in an I/O thread of its own).
ZARR_CALLER: contextvars.ContextVar = contextvars.ContextVar("zarr caller", default=None)


@pytest.fixture
def zarr_log(monkeypatch):
    """A ChunkLog of the zarr chunks read (by chunk key) and the thread that asked for each.

    zarr 3 runs each synchronous call as a coroutine in its I/O thread; its private
    ``_runner`` is made in the calling thread, so a wrapper of it tags the coroutine (and the
    tasks it starts) with that thread. A store then logs ``ZARR_CALLER`` for each chunk."""
    pytest.importorskip("zarr")
    import zarr.core.sync

    runner = zarr.core.sync._runner

    def tagging_runner(coroutine):
        caller = threading.current_thread()

        async def tagged():
            ZARR_CALLER.set(caller)
            return await runner(coroutine)

        return tagged()

    monkeypatch.setattr(zarr.core.sync, "_runner", tagging_runner)
    return ChunkLog()


def zarr_stack(log, data, chunks):
    """``data`` as a zarr array in memory whose store logs (asking thread, chunk location)."""
    import zarr
    from zarr.storage import MemoryStore, WrapperStore

    class LoggingStore(WrapperStore):
        async def get(self, key, prototype, byte_range=None):
            if key.startswith("c/"):  # a chunk (not metadata)
                caller = ZARR_CALLER.get()
                assert caller is not None, "the zarr caller was not recorded: zarr's internals changed?"
                log.append((caller, tuple(int(i) for i in key.split("/")[1:])))
            return await super().get(key, prototype, byte_range)

    array = zarr.create_array(LoggingStore(MemoryStore()), shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    return array


@pytest.fixture(params=["zarr", "dask from_zarr"])
def zarr_layer(request, viewer, widget, zarr_log):
    """A (3, 32, 32) zarr stack in (1, 16, 16) chunks as the widget's content (directly, or
    through dask.array.from_zarr), and the same data in memory as the layer "plain"."""
    array = zarr_stack(zarr_log, stack_data(), (1, 16, 16))
    data = array if request.param == "zarr" else da.from_zarr(array)
    plain = viewer.add_image(stack_data(), name="plain", contrast_limits=(0.0, 1.0))
    plain.visible = False
    layer = add_lazy(viewer, widget, data, zarr_log)
    return layer, plain


def test_pressing_run_on_a_zarr_stack_reads_nothing(viewer, widget, zarr_layer, zarr_log):
    from napari_style_transfer import run_style_transfer

    layer, _ = zarr_layer
    viewer.dims.set_point(0, 1)
    zarr_log.clear()
    for stack in ("whole stack, frames independent", "current slice"):
        run_style_transfer(viewer, layer, widget["style"].value, stack=stack, start=False, **FAST)
    assert zarr_log == []


def test_the_current_slice_of_a_zarr_stack_reads_only_that_slice_in_the_worker(
    qtbot, viewer, widget, zarr_layer, zarr_log
):
    layer, plain = zarr_layer
    viewer.dims.set_point(0, 1)
    zarr_log.clear()
    widget["stack"].value = "current slice"
    widget["snapshot_every"].value = 0
    lazy_result = run_and_wait(qtbot, widget).layer_writer.result_layer
    assert zarr_log and zarr_log.on_gui_thread() == []
    assert zarr_log.locations() == {(1, y, x): 1 for y in range(2) for x in range(2)}
    widget["content"].value = plain
    in_memory = run_and_wait(qtbot, widget).layer_writer.result_layer
    np.testing.assert_array_equal(lazy_result.data, in_memory.data)


def test_a_zarr_whole_stack_is_read_in_the_worker_frame_by_frame(qtbot, viewer, widget, zarr_layer, zarr_log):
    layer, plain = zarr_layer
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    lazy_result = run_and_wait(qtbot, widget).layer_writer.result_layer
    assert zarr_log.on_gui_thread() == []
    every_chunk = {(t, y, x): 1 for t in range(3) for y in range(2) for x in range(2)}
    assert zarr_log.locations() == every_chunk
    widget["content"].value = plain
    in_memory = run_and_wait(qtbot, widget).layer_writer.result_layer
    assert lazy_result.data.shape == (3, 32, 32)
    np.testing.assert_array_equal(lazy_result.data, in_memory.data)


def test_the_time_lapse_sample_opens_as_a_time_series(viewer, widget):
    viewer.open_sample("napari-style-transfer", "nuclei_timelapse")
    widget["content"].value = viewer.layers["nuclei_timelapse"]
    assert widget["stack"].value == "whole stack as time series"
