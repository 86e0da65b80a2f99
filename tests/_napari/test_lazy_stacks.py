"""Stacks in napari: the stack choice, and lazy (dask) layers read in the worker, a frame at a time.

Dask runs with its synchronous scheduler here, so a chunk is computed in the thread that
asks for it: the GUI thread if the widget read the data, the worker if the run did."""

from __future__ import annotations

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


def lazy_stack(log, frames=3, nan_frame=None):
    """A (frames, 32, 32) float32 dask stack in 16 x 16 chunks that logs its computations."""
    ramp = np.linspace(0.0, 1.0, 32 * 32, dtype=np.float32).reshape(32, 32)
    data = np.stack([np.roll(ramp, 5 * t, axis=1) for t in range(frames)])
    if nan_frame is not None:
        data[nan_frame, 3, 3] = np.nan

    def record(block, block_info=None):
        log.append((threading.current_thread(), block_info[0]["chunk-location"]))
        return block

    return da.from_array(data, chunks=(1, 16, 16)).map_blocks(record, dtype=data.dtype)


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
    data = da.from_array(movie, chunks=(1, 20, 24, 3)).map_blocks(
        lambda block, block_info=None: log.append((threading.current_thread(), block_info[0]["chunk-location"]))
        or block,
        dtype=movie.dtype,
    )
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
    worker = run_style_transfer(viewer, layer, widget["style"].value, stack="whole stack", start=False, **FAST)
    assert worker.layer_writer.options["frames"] == "independent"


def test_a_frames_option_against_the_stack_mode_is_refused(viewer, widget):
    from napari_style_transfer import StyleTransferError, run_style_transfer

    layer = viewer.add_image(np.zeros((3, 32, 32), np.float32), name="movie")
    with pytest.raises(StyleTransferError, match="frames='time', not 'independent'"):
        run_style_transfer(
            viewer, layer, widget["style"].value, stack="whole stack as time series", frames="independent", start=False
        )
