"""A whole stack's independent frames on the dask cluster named in the plugin's preferences."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_style_transfer.pipeline import runner

from .conftest import FAST, RUN_WAIT_MS, cancel_once_waiting, run_and_wait, wait_until_idle

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """A small cluster in this process (one worker thread): the GUI side is what is tested,
    and a frame's task sees what a test patches in this process."""
    cluster = distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def scheduler_address(cluster):
    return cluster.scheduler_address


@pytest.fixture
def registered(plugin_settings, npe2pm):
    """The plugin's manifest registered, so that its preferences exist."""
    from npe2 import PluginManifest

    npe2pm.register(PluginManifest.from_distribution("napari-style-transfer"))


@pytest.fixture
def on_the_cluster(registered, scheduler_address):
    from napari.settings import get_plugin_settings

    get_plugin_settings("napari-style-transfer").run.scheduler = scheduler_address
    return scheduler_address


def test_the_scheduler_preference_is_read_from_the_plugin_settings(viewer, registered):
    from napari.settings import get_plugin_settings

    from napari_style_transfer._napari.widget import scheduler_preference

    get_plugin_settings("napari-style-transfer").run.scheduler = "  tcp://10.0.0.1:8786 "
    assert scheduler_preference() == "tcp://10.0.0.1:8786"


def test_a_whole_stack_runs_its_frames_on_the_preferred_cluster(
    qtbot, viewer, widget, on_the_cluster, content
):
    from napari_style_transfer import stylize

    grey = np.stack([content[..., 0], content[..., 1]])
    layer = viewer.add_image(grey, name="planes")
    widget["content"].value = layer
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    widget["content_range"].value = False  # results in 0..1, as stylize gives them
    run_and_wait(qtbot, widget)
    result = viewer.layers["planes styled"]
    style = viewer.layers["texture"].data
    alone = stylize(grey, style, frames="independent", size=32, steps=2, weights="random", keep_grey=True)
    np.testing.assert_allclose(result.data, alone, atol=1e-5)
    assert result.metadata["style_transfer"]["device"].startswith("dask cluster")
    assert widget["status"].value.startswith("done: 'planes styled', 2 frames x 2 steps in")


class HeldFrames:
    """A frame's run on the cluster's worker (``pipeline.runner.run``): the first ``free`` frames run, each later one
    waits until the test releases it."""

    def __init__(self, monkeypatch, free=0):
        self.real = runner.run
        self.free = free
        self.held = threading.Event()  # a frame is waiting
        self.release = threading.Event()
        self.calls = 0
        self._lock = threading.Lock()
        monkeypatch.setattr(runner, "run", self)

    def __call__(self, *args, **kwargs):
        with self._lock:
            self.calls += 1
            held = self.calls > self.free
        if held:
            self.held.set()
            self.release.wait()
        return self.real(*args, **kwargs)


def wait_until_the_cluster_is_idle(cluster):
    """Every task is gone from the scheduler and from the worker (a cancelled task that was
    running is forgotten once it ends)."""
    (worker,) = cluster.workers.values()
    done = threading.Event()
    for _ in range(RUN_WAIT_MS // 50):
        if not cluster.scheduler.tasks and not worker.state.tasks:
            done.set()
            break
        done.wait(0.05)
    assert done.is_set(), "the cluster never went idle"


def test_a_cancel_before_the_first_frame_comes_back_ends_the_updates_at_once(
    content, style, cluster, monkeypatch
):
    from napari_style_transfer._napari.worker import Cancelled, cluster_frame_updates

    frames = HeldFrames(monkeypatch)
    cancel = threading.Event()
    grey = np.stack([content[..., 0], content[..., 1]])
    updates = cluster_frame_updates(grey, style, dict(FAST), cancel, cluster.scheduler_address)

    canceller = cancel_once_waiting(frames.held, cancel, frames.release)
    try:
        got = list(updates)
        assert not frames.release.is_set(), "the updates waited for the held frame"
        assert [(type(update), update.step, update.image) for update in got] == [(Cancelled, 0, None)]
    finally:
        frames.release.set()
        canceller.join()
    wait_until_the_cluster_is_idle(cluster)
    assert frames.calls == 1  # the second frame was cancelled on the cluster, never run


def test_cancel_while_frames_are_on_the_cluster_makes_the_widget_idle_at_once_and_keeps_the_frames_back(
    qtbot, viewer, widget, on_the_cluster, cluster, content, errors, monkeypatch
):
    frames = HeldFrames(monkeypatch, free=1)
    grey = np.stack([content[..., 0], content[..., 1], content[..., 2]])
    layer = viewer.add_image(grey, name="planes")
    widget["content"].value = layer
    widget["stack"].value = "whole stack, frames independent"
    widget["steps"].value = 2
    try:
        worker = widget.run()
        assert worker is not None
        qtbot.waitUntil(
            lambda: len(worker.layer_writer.finished_frames) == 1 and frames.held.is_set(),
            timeout=RUN_WAIT_MS,
        )
        assert widget["run_button"].text == "Cancel"
        widget["run_button"].clicked.emit()  # the same as pressing Cancel
        wait_until_idle(qtbot, widget)
        assert not frames.release.is_set(), "the widget waited for the held frame"
        assert widget["run_button"].text == "Run" and widget["run_button"].enabled
        assert widget["status"].value.startswith("cancelled at frame 1 of 3, step 2")
    finally:
        frames.release.set()
    (kept,) = [layer for layer in viewer.layers if layer.name.startswith("planes styled")]
    assert kept.name == "planes styled (cancelled at frame 1 of 3)"
    (finished,) = worker.layer_writer.finished_frames
    assert kept.data[finished].max() > kept.data[finished].min()  # the frame that came back is there
    assert kept.metadata["style_transfer"]["frames_done"] == 1
    wait_until_the_cluster_is_idle(cluster)
    assert frames.calls == 2  # the third frame was cancelled on the cluster, never run
    qtbot.wait(0)  # deliver anything the cancelled run might have sent
    assert [layer.name for layer in viewer.layers if layer.name.startswith("planes styled")] == [kept.name]
    assert not [message for message in errors if "failed" in message], errors


def test_frames_back_from_the_cluster_give_the_status_a_speed_and_time_left(content, style, cluster):
    from napari_style_transfer._napari.widget import _speed_and_time_left
    from napari_style_transfer._napari.worker import Progress, cluster_frame_updates

    grey = np.stack([content[..., 0], content[..., 1]])
    updates = list(
        cluster_frame_updates(grey, style, dict(FAST), threading.Event(), cluster.scheduler_address)
    )
    progress = [update for update in updates if isinstance(update, Progress)]
    assert len(progress) == 2
    assert all(update.steps_per_second > 0 for update in progress)
    assert "left" in _speed_and_time_left(progress[0])  # not "first step" for the whole run


def wait_until(condition, message):
    done = threading.Event()
    for _ in range(RUN_WAIT_MS // 50):
        if condition():
            done.set()
            break
        done.wait(0.05)
    assert done.is_set(), message


def test_updates_closed_without_a_cancel_stop_the_frames_left_on_the_cluster(
    content, style, cluster, monkeypatch
):
    """As ``worker.quit()`` does, or the run's end closing its updates: no frame is left to run for nobody."""
    from napari_style_transfer._napari.worker import Progress, cluster_frame_updates

    frames = HeldFrames(monkeypatch, free=1)
    grey = np.stack([content[..., 0], content[..., 1], content[..., 2]])
    updates = cluster_frame_updates(grey, style, dict(FAST), threading.Event(), cluster.scheduler_address)
    try:
        assert any(isinstance(update, Progress) for update in updates)  # read up to the first frame back
        assert frames.held.wait(RUN_WAIT_MS / 1000)  # the second frame runs, the third waits for the worker
        updates.close()
        wait_until(lambda: not cluster.scheduler.tasks, "the frames left were never cancelled on the cluster")
    finally:
        frames.release.set()
    wait_until_the_cluster_is_idle(cluster)
    assert frames.calls == 2  # the third frame was cancelled on the cluster, never run


class ClosedClient:
    def close(self):
        pass


def test_a_cluster_run_interrupted_in_its_thread_is_a_failure_that_names_the_scheduler(
    content, style, monkeypatch
):
    from napari_style_transfer import distributed as on_dask
    from napari_style_transfer._napari.worker import Failed, cluster_frame_updates

    def interrupted(address):
        raise KeyboardInterrupt

    monkeypatch.setattr(on_dask, "connect", interrupted)
    grey = np.stack([content[..., 0], content[..., 1]])
    (failed,) = cluster_frame_updates(grey, style, dict(FAST), threading.Event(), "tcp://10.0.0.1:8786")
    assert isinstance(failed, Failed) and failed.expected
    assert "tcp://10.0.0.1:8786" in failed.message and "workers" in failed.message


def test_a_cluster_run_that_ends_before_its_frames_come_back_is_a_failure_that_names_the_scheduler(
    content, style, monkeypatch
):
    from napari_style_transfer import distributed as on_dask
    from napari_style_transfer._napari.worker import Failed, cluster_frame_updates

    def no_frame_back(*args, **kwargs):
        yield from ()

    monkeypatch.setattr(on_dask, "connect", lambda address: ClosedClient())
    monkeypatch.setattr(on_dask, "iter_frames", no_frame_back)
    grey = np.stack([content[..., 0], content[..., 1]])
    (failed,) = cluster_frame_updates(grey, style, dict(FAST), threading.Event(), "tcp://10.0.0.1:8786")
    assert isinstance(failed, Failed) and failed.expected
    assert "tcp://10.0.0.1:8786" in failed.message and "dashboard" in failed.message
