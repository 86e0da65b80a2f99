"""What napari's GUI thread does during a run: only what it must (layers, status), never the
heavy parts (importing torch, loading its libraries, computing a layer's value range).
benchmarks/gui_latency.py measures the rest: the gaps in napari's event loop and its CPU."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from .conftest import RUN_WAIT_MS, cancel_in_the_worker_at, run_and_wait, wait_until_idle


def test_a_first_run_imports_torch_in_the_worker_with_its_libraries_loaded_without_the_gil():
    # a fresh process: in this one torch is imported already
    script = Path(__file__).parent / "scripts" / "first_run_off_the_gui_thread.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=RUN_WAIT_MS / 1000
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["torch imported at Run"] is False  # Run returned before the import
    assert seen["torch imported in"] == "style transfer: loading"
    assert seen["torch._C loaded before its import"] is True
    assert seen["status"].startswith("done")


def test_the_layers_a_run_adds_come_with_their_contrast_limits_and_as_float32(
    qtbot, viewer, widget, monkeypatch
):
    """napari computes a new layer's value range on its own thread (a pass over the data)
    unless the contrast limits come with it."""
    from napari.layers.image import image

    ranges_computed = []
    real = image.calc_data_range

    def counting(data, *args, **kwargs):
        ranges_computed.append(np.shape(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(image, "calc_data_range", counting)

    widget["keep_snapshots"].value = True  # a layer for the snapshot, another for the result
    run_and_wait(qtbot, widget)

    made = [layer for layer in viewer.layers if "style_transfer" in layer.metadata]
    assert [layer.name for layer in made] == ["photo styled (step 2)", "photo styled"]
    assert ranges_computed == []
    assert all(layer.data.dtype == np.float32 for layer in made)
    assert all(tuple(layer.contrast_limits) == (0.0, 1.0) for layer in made)
    assert not any(layer.multiscale for layer in made)


def test_a_grey_result_comes_in_the_contents_units_without_a_range_computed(qtbot, viewer, monkeypatch):
    from napari.layers.image import image

    from napari_style_transfer._napari.run import run_style_transfer

    rng = np.random.default_rng(3)
    content = viewer.add_image((rng.random((40, 48)) * 4000).astype(np.uint16), name="cells")
    content.contrast_limits = (500.0, 3500.0)
    style = viewer.add_image(rng.random((36, 36, 3)).astype(np.float32), rgb=True, name="texture")
    ranges_computed = []
    monkeypatch.setattr(image, "calc_data_range", lambda data, *a, **k: ranges_computed.append(1))
    worker = run_style_transfer(viewer, content, style, size=32, steps=2, snapshot_every=0, weights="random")
    qtbot.waitUntil(lambda: "cells styled" in viewer.layers, timeout=RUN_WAIT_MS)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=RUN_WAIT_MS)

    result = viewer.layers["cells styled"]
    assert ranges_computed == []
    assert result.data.dtype == np.float32
    assert tuple(result.contrast_limits) == (500.0, 3500.0)
    assert result.data.min() >= 500.0 and result.data.max() <= 3500.0


def test_a_run_adds_one_layer_that_shows_the_snapshots_and_becomes_the_result(qtbot, viewer, widget):
    """Adding a layer costs napari's thread far more than new data for one (its controls, its
    vispy visual, the selection): by default a run adds a single layer."""
    assert widget["keep_snapshots"].value is False
    widget["steps"].value, widget["snapshot_every"].value = 6, 2
    added, names_seen = [], []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    worker = widget.run()
    worker.yielded.connect(lambda _: names_seen.append([layer.name for layer in viewer.layers][2:]))
    qtbot.waitUntil(lambda: not widget.running, timeout=RUN_WAIT_MS)

    assert added == ["photo styled (step 2)"]
    assert ["photo styled (step 4)"] in names_seen  # the snapshot layer followed the run
    assert [layer.name for layer in viewer.layers] == ["photo", "texture", "photo styled"]
    result = viewer.layers["photo styled"]
    info = result.metadata["style_transfer"]
    assert info["step"] == 6 and not info.get("snapshot") and info["cancelled"] is False
    assert result.data.shape == (27, 32, 3) and result.data.dtype == np.float32
    np.testing.assert_allclose(result.scale, (2.0 * 40 / 27, 3.0 * 48 / 32))
    assert widget["status"].value.startswith("done: 'photo styled'")


def test_the_one_snapshot_layer_follows_a_coarse_to_fine_run_to_the_results_size_and_place(
    qtbot, viewer, layers
):
    from napari_style_transfer._napari.run import run_style_transfer

    content_layer, style_layer = layers
    options = {"size": 48, "schedule": "32,48", "steps": 6, "snapshot_every": 1, "weights": "random"}
    worker = run_style_transfer(viewer, content_layer, style_layer, keep_snapshots=False, **options)
    shapes = []
    worker.yielded.connect(lambda _: shapes.extend(layer.data.shape for layer in viewer.layers[2:]))
    qtbot.waitUntil(lambda: "photo styled" in viewer.layers, timeout=RUN_WAIT_MS)
    qtbot.waitUntil(lambda: not worker.is_running, timeout=RUN_WAIT_MS)

    assert (27, 32, 3) in shapes  # a snapshot of the coarse level
    assert [layer.name for layer in viewer.layers] == ["photo", "texture", "photo styled"]
    result = viewer.layers["photo styled"]
    assert result.data.shape == (40, 48, 3)
    np.testing.assert_allclose(result.scale, (2.0, 3.0))  # the content's own pixels: 40 x 48
    np.testing.assert_allclose(result.translate, (10.0, -5.0))


def test_a_cancelled_run_keeps_its_last_image_in_the_one_layer_it_added(qtbot, viewer, widget):
    widget["steps"].value, widget["snapshot_every"].value = 500, 1
    added = []
    viewer.layers.events.inserted.connect(lambda event: added.append(event.value.name))
    worker = widget.run()
    cancel_in_the_worker_at(worker, step=3)
    wait_until_idle(qtbot, widget)

    assert added == ["photo styled (step 1)"]
    (kept,) = viewer.layers[2:]
    assert kept.name == "photo styled (cancelled at step 3)"
    info = kept.metadata["style_transfer"]
    assert info["cancelled"] is True and info["step"] == 3 and not info.get("snapshot")


#: Enough new objects that Python would make a full collection while they are made.
MANY_OBJECTS = 600_000


def _full_collections_while(make: Any) -> int:
    """How many full garbage collections ran (any thread) while ``make()`` ran."""
    started = []

    def collected(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 2:
            started.append(threading.current_thread().name)

    gc.callbacks.append(collected)
    try:
        make()
    finally:
        gc.callbacks.remove(collected)
    return len(started)


def test_python_makes_no_full_collection_during_a_run_and_collects_as_before_after_it(qtbot, widget):
    """A full collection walks every object of the process with the GIL held (0.2 to 0.6 s on
    a busy machine): napari would wait for it, whichever thread made it."""
    from napari_style_transfer._napari.gc_pause import DEFERRED

    thresholds = gc.get_threshold()
    assert thresholds[2] != DEFERRED  # no earlier run left them changed
    kept: list[Any] = []
    during: list[int] = []

    def make_many_objects_at_the_first_step(update: Any) -> None:
        if type(update).__name__ == "Progress" and not during:
            during.append(_full_collections_while(lambda: kept.append([[i] for i in range(MANY_OBJECTS)])))

    worker = widget.run()
    worker.yielded.connect(make_many_objects_at_the_first_step)
    wait_until_idle(qtbot, widget)
    kept.clear()

    assert during == [0]
    assert gc.get_threshold() == thresholds
    assert _full_collections_while(lambda: kept.append([[i] for i in range(MANY_OBJECTS)])) > 0


def test_a_removed_result_layer_is_freed(qtbot, viewer, widget):
    run_and_wait(qtbot, widget)
    data = weakref.ref(viewer.layers["photo styled"].data)
    viewer.layers.remove("photo styled")
    qtbot.wait(0)
    gc.collect()
    assert data() is None


def test_overlapping_runs_hold_full_collections_until_the_last_ends():
    from napari_style_transfer._napari.gc_pause import DEFERRED, FullCollectionsDeferred

    thresholds = gc.get_threshold()
    first, second = FullCollectionsDeferred(), FullCollectionsDeferred()
    second.end()  # never began: changes nothing
    assert gc.get_threshold() == thresholds
    first.begin()
    second.begin()
    first.end()
    first.end()  # counts once
    assert gc.get_threshold()[2] == DEFERRED
    second.end()
    assert gc.get_threshold() == thresholds
