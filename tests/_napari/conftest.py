"""Fixtures for tests in a real (headless) napari viewer: pytest-xvfb provides the X server."""

from __future__ import annotations

import os
import tempfile
import threading

import numpy as np
import pytest

# napari's settings live in a file of the tests' own: tests change them (the preferred reader of
# *.styled.tif) and must leave the user's settings alone
os.environ.setdefault("NAPARI_CONFIG", os.path.join(tempfile.mkdtemp(prefix="nst-napari-"), "settings.yaml"))

FAST = {"size": 32, "steps": 4, "snapshot_every": 2, "weights": "random"}
#: How long a test waits for a run (ms): generous, because the worker runs at a lower priority
#: than everything else: on a 2-core machine with two busy-loop processes, a 4-step 32 px run
#: took over 120 s. A wait, not a time limit on the run: a healthy run ends long before.
RUN_WAIT_MS = 900_000


def cancel_once_waiting(
    waiting: threading.Event, cancel: threading.Event, release: threading.Event
) -> threading.Thread:
    """A started thread that sets ``cancel`` once ``waiting`` is set (the run is blocked where
    the test holds it), then, if the run's updates have not ended by themselves within
    RUN_WAIT_MS, sets ``release`` so that they do and the test fails instead of hanging."""

    def cancel_then_release():
        waiting.wait()
        cancel.set()
        if not release.wait(RUN_WAIT_MS / 1000):
            release.set()

    thread = threading.Thread(target=cancel_then_release)
    thread.start()
    return thread


def cancel_in_the_worker_at(worker, **fields) -> None:
    """Cancel the run, as the Cancel button does, at its first step report whose attributes
    equal ``fields`` (``frame_number=2``, ``step=1``), from the worker's own thread: the run
    then stops at that very step. (A slot left to the GUI thread runs when its event loop gets
    there, by which time a busy worker may be a frame or more further on.)"""
    from qtpy.QtCore import Qt

    def cancel_if(update):
        is_step = hasattr(update, "total_loss")
        if is_step and all(getattr(update, name, None) == value for name, value in fields.items()):
            worker.cancel_event.set()

    worker.yielded.connect(cancel_if, Qt.ConnectionType.DirectConnection)


def wait_until_idle(qtbot, widget, timeout=RUN_WAIT_MS):
    """Wait for the widget's run to end. (Waiting on ``worker.finished`` would race: a run
    that fails at once can emit it before the test connects; the widget connected first.)"""
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def run_and_wait(qtbot, widget, timeout=RUN_WAIT_MS):
    """Press Run and wait for the run to end; returns the worker."""
    worker = widget.run()
    assert worker is not None, "the run was refused"
    wait_until_idle(qtbot, widget, timeout)
    return worker


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


@pytest.fixture
def layers(viewer, content, style):
    """A content layer placed with scale and translate, and a style layer."""
    content_layer = viewer.add_image(
        content, name="photo", rgb=True, scale=(2.0, 3.0), translate=(10.0, -5.0)
    )
    style_layer = viewer.add_image((style * 255).astype(np.uint8), name="texture", rgb=True)
    return content_layer, style_layer


@pytest.fixture
def widget(viewer, layers):
    """The dock widget, opened through napari's plugin API, set up for a tiny fast run."""
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = layers
    for name, value in FAST.items():
        widget[name].value = value
    return widget


@pytest.fixture
def errors(monkeypatch):
    """The text of every notification napari is asked to show (ours, and napari's own relays
    of warnings and errors), instead of showing it."""
    from napari.utils.notifications import notification_manager

    shown: list[str] = []
    monkeypatch.setattr(
        notification_manager, "dispatch", lambda notification: shown.append(str(notification.message))
    )
    return shown
