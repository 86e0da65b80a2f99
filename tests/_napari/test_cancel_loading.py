"""A cancel while the weights load or VGG19 is built ends the run at once: the loading goes on
unseen in the background and what it makes is dropped."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from napari_style_transfer._napari.worker import Cancelled, style_transfer_updates
from napari_style_transfer.pipeline import optimise

from .conftest import FAST, RUN_WAIT_MS, cancel_once_waiting, run_and_wait, wait_until_idle

LOADING_THREAD = "style transfer: loading"


class BlockedLoad:
    """``load_vgg19_features`` whose first call waits until the test releases it."""

    def __init__(self, monkeypatch):
        self.real = optimise.load_vgg19_features
        self.started = threading.Event()  # the first load is waiting
        self.release = threading.Event()
        self.calls = 0
        monkeypatch.setattr("napari_style_transfer.pipeline.optimise.load_vgg19_features", self)

    def __call__(self, weights, **kwargs):
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            self.release.wait()
        return self.real(weights, **kwargs)


def loading_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == LOADING_THREAD]


def test_a_cancel_while_the_weights_load_ends_the_updates_before_the_load_does(content, style, monkeypatch):
    load = BlockedLoad(monkeypatch)
    cancel = threading.Event()
    updates = style_transfer_updates(content, style, dict(FAST), cancel)

    canceller = cancel_once_waiting(load.started, cancel, load.release)
    try:
        got = list(updates)
        assert not load.release.is_set()
        assert [(type(update), update.step, update.image) for update in got] == [(Cancelled, 0, None)]
        background = loading_threads()
        assert len(background) == 1 and background[0].is_alive()
    finally:
        load.release.set()
        canceller.join()
    background[0].join(RUN_WAIT_MS / 1000)
    assert not background[0].is_alive()


def test_cancel_while_the_weights_load_makes_the_widget_idle_at_once_and_adds_nothing(
    qtbot, viewer, widget, errors, monkeypatch
):
    load = BlockedLoad(monkeypatch)
    before = [layer.name for layer in viewer.layers]
    try:
        assert widget.run() is not None
        qtbot.waitUntil(load.started.is_set, timeout=RUN_WAIT_MS)
        assert widget["run_button"].text == "Cancel"
        widget["run_button"].clicked.emit()  # the same as pressing Cancel
        wait_until_idle(qtbot, widget)
        # the load is still blocked: the widget did not wait for it
        assert not load.release.is_set()
        assert widget["run_button"].text == "Run" and widget["run_button"].enabled
        assert widget["status"].value == "cancelled before the first step: nothing to keep"
        (background,) = loading_threads()
        assert background.is_alive()
    finally:
        load.release.set()
    background.join(RUN_WAIT_MS / 1000)
    assert not background.is_alive()
    qtbot.wait(0)  # deliver anything the dropped run might have sent
    assert [layer.name for layer in viewer.layers] == before
    assert not [message for message in errors if "failed" in message], errors

    run_and_wait(qtbot, widget)
    assert load.calls == 2
    assert [layer.name for layer in viewer.layers] == [*before, "photo styled"]
    assert widget["status"].value.startswith("done")


def test_a_cancel_while_torch_is_imported_ends_the_updates_before_the_import_does(
    content, style, monkeypatch
):
    from napari_style_transfer._napari import worker

    importing, release = threading.Event(), threading.Event()

    def slow_import():
        importing.set()
        release.wait()

    monkeypatch.setattr(worker, "_import_engine", slow_import)
    cancel = threading.Event()
    canceller = cancel_once_waiting(importing, cancel, release)
    try:
        got = list(style_transfer_updates(content, style, dict(FAST), cancel))
        assert not release.is_set()
        assert [(type(update), update.step) for update in got] == [(Cancelled, 0)]
    finally:
        release.set()
        canceller.join()


def test_napari_exits_cleanly_after_a_run_cancelled_while_the_weights_loaded():
    script = Path(__file__).parent / "scripts" / "cancel_while_loading_then_quit.py"
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=RUN_WAIT_MS / 1000
    )
    assert (done.returncode, done.stdout.strip()) == (0, "viewer closed"), done.stderr
    assert done.stderr == ""  # no "terminate called without an active exception", no traceback


def test_the_status_says_cancelling_without_a_step_while_the_run_prepares(qtbot, widget, monkeypatch):
    load = BlockedLoad(monkeypatch)
    try:
        widget.run()
        qtbot.waitUntil(load.started.is_set, timeout=RUN_WAIT_MS)
        widget.cancel()
        assert widget["status"].value == "cancelling..."
        wait_until_idle(qtbot, widget)
    finally:
        load.release.set()
