"""What reaches the user when a napari run warns, fails or is cut short: one notification per
message, whichever way the run was started, never a traceback dialog, a stuck Run button or
a message on stderr."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import warnings

from napari_style_transfer import api
from napari_style_transfer._napari import layers as layers_module
from napari_style_transfer._napari import run as run_module

from .conftest import FAST, RUN_WAIT_MS, run_and_wait, wait_until_idle


def test_a_warning_on_the_gui_thread_during_a_run_is_not_a_style_transfer_notification(
    qtbot, widget, errors, monkeypatch
):
    elsewhere = []  # where the GUI thread's warnings go when no run is going on
    monkeypatch.setattr(warnings, "showwarning", lambda message, *_: elsewhere.append(str(message)))
    worker = widget.run()

    def touch_a_deprecated_attribute(_update):
        warnings.warn("Layer.foo is deprecated", DeprecationWarning, stacklevel=1)

    worker.yielded.connect(touch_a_deprecated_attribute)
    wait_until_idle(qtbot, widget)
    assert not [message for message in errors if "deprecated" in message], errors
    assert "Layer.foo is deprecated" in elsewhere
    assert widget["status"].value.startswith("done")


def test_a_warning_the_run_raises_twice_is_shown_once(qtbot, widget, errors, monkeypatch):
    real = layers_module.LayerInput.engine_array

    def warning_twice(self):
        for _ in range(2):
            warnings.warn("the layer has odd pixels", UserWarning, stacklevel=1)
        return real(self)

    monkeypatch.setattr(layers_module.LayerInput, "engine_array", warning_twice)
    run_and_wait(qtbot, widget)
    assert [message for message in errors if "odd pixels" in message] == [
        "Style transfer: the layer has odd pixels"
    ]


def test_a_console_run_that_fails_is_notified_and_its_traceback_logged(
    qtbot, viewer, layers, errors, caplog, torch_home, offline
):
    from napari_style_transfer import run_style_transfer

    worker = run_style_transfer(viewer, "photo", "texture", start=False, **{**FAST, "weights": "imagenet"})
    with (
        caplog.at_level(logging.DEBUG, logger="napari_style_transfer"),
        qtbot.waitSignal(worker.finished, timeout=RUN_WAIT_MS),
    ):
        worker.start()
    (failed,) = [message for message in errors if message.startswith("Style transfer failed")]
    assert "ImageNet" in failed, failed
    assert any("Traceback" in record.getMessage() for record in caplog.records), caplog.text
    assert [layer.name for layer in viewer.layers] == ["photo", "texture"]


def test_a_failing_widget_run_is_notified_once(qtbot, widget, errors, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not weights")
    widget["weights"].value = str(broken)
    run_and_wait(qtbot, widget)
    assert len([message for message in errors if "could not read weights file" in message]) == 1, errors


def test_an_error_while_the_engine_shuts_down_is_logged_and_the_widget_gets_usable_again(
    qtbot, viewer, widget, errors, caplog, monkeypatch
):
    real = api.iter_stylize

    def sticky_cuda_error_at_the_end(*args, **kwargs):
        records = real(*args, **kwargs)
        try:
            yield from records
        finally:
            records.close()
            raise RuntimeError(
                "CUDA error: an illegal memory access was encountered"
            )  # as empty_cache() would

    monkeypatch.setattr(api, "iter_stylize", sticky_cuda_error_at_the_end)
    with caplog.at_level(logging.ERROR, logger="napari_style_transfer"):
        run_and_wait(qtbot, widget)
    assert widget["run_button"].text == "Run" and widget["status"].value.startswith("done")
    assert "photo styled" in viewer.layers
    assert any("illegal memory access" in record.exc_text for record in caplog.records if record.exc_text)
    assert errors == []


def test_a_crashing_worker_is_one_notification_and_resets_the_widget(
    qtbot, widget, errors, caplog, monkeypatch
):
    def crashing_updates(*_args):
        raise ValueError("the worker broke")
        yield  # a generator, like the real one

    monkeypatch.setattr(run_module, "style_transfer_updates", crashing_updates)
    with caplog.at_level(logging.ERROR, logger="napari_style_transfer"):
        run_and_wait(qtbot, widget)  # pytest-qt fails the test if the error is re-raised in a slot
    assert errors == ["Style transfer failed: ValueError: the worker broke"]
    assert widget["run_button"].text == "Run" and not widget.running
    assert widget["status"].value == "failed: ValueError: the worker broke"
    assert any("the worker broke" in (record.exc_text or "") for record in caplog.records)


def test_an_unexpected_error_in_the_checks_is_a_notification_not_a_traceback(
    widget, errors, caplog, monkeypatch
):
    def overflowing(*_args, **_kwargs):
        raise OverflowError("Python int too large to convert to C long")

    monkeypatch.setattr(run_module, "layer_input", overflowing)
    with caplog.at_level(logging.ERROR, logger="napari_style_transfer"):
        assert widget.run() is None
    assert errors == [
        "Style transfer could not start: OverflowError: Python int too large to convert to C long "
        "(the log has the details; please report it)"
    ]
    assert widget["status"].value.startswith("not started: OverflowError")
    assert not widget.running and widget["run_button"].text == "Run"
    assert any(record.exc_info for record in caplog.records)


def test_no_heavy_work_runs_on_the_gui_thread(qtbot, widget, monkeypatch):
    """Loading, copying and optimising happen in the worker thread (what the GUI thread's
    event loop gains from that is measured by benchmarks/gui_latency.py)."""
    threads = []
    real_iter_stylize, real_engine_array = api.iter_stylize, layers_module.LayerInput.engine_array

    def recorded_iter_stylize(*args, **kwargs):
        threads.append(("iter_stylize", threading.current_thread()))
        for record in real_iter_stylize(*args, **kwargs):
            threads.append(("step", threading.current_thread()))
            yield record

    def recorded_engine_array(self):
        threads.append(("engine_array", threading.current_thread()))
        return real_engine_array(self)

    monkeypatch.setattr(api, "iter_stylize", recorded_iter_stylize)
    monkeypatch.setattr(layers_module.LayerInput, "engine_array", recorded_engine_array)
    run_and_wait(qtbot, widget)
    assert {name for name, _ in threads} == {"iter_stylize", "engine_array", "step"}
    assert all(thread is not threading.main_thread() for _, thread in threads), threads


EXIT_MID_RUN = textwrap.dedent(
    """
    import numpy as np
    import napari
    from qtpy.QtCore import QEventLoop
    from napari_style_transfer import run_style_transfer

    viewer = napari.Viewer(show=False)
    rng = np.random.default_rng(0)
    viewer.add_image(rng.random((64, 64, 3)), name="photo", rgb=True)
    viewer.add_image(rng.random((64, 64, 3)), name="texture", rgb=True)
    worker = run_style_transfer(viewer, "photo", "texture", size=32, steps=500, weights="random")
    loop = QEventLoop()
    worker.yielded.connect(lambda update: getattr(update, "step", 0) >= 2 and loop.quit())
    loop.exec()
    viewer.close()
    print("closed mid-run", flush=True)
    """
)


def test_closing_the_viewer_mid_run_and_exiting_python_is_quiet(tmp_path):
    """A script (or console) closes its viewer mid-run and ends: the run stops, nothing is
    printed about deleted Qt objects."""
    assert os.environ.get("DISPLAY"), "pytest-xvfb should provide an X display"
    script = tmp_path / "exit_mid_run.py"
    script.write_text(EXIT_MID_RUN)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=RUN_WAIT_MS / 1000
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "closed mid-run"
    assert "RuntimeError" not in result.stderr and "has been deleted" not in result.stderr, result.stderr[
        -3000:
    ]


def test_the_fallback_warning_of_a_console_run_is_one_notification(
    qtbot, viewer, layers, errors, torch_home, offline
):
    from napari_style_transfer import run_style_transfer

    worker = run_style_transfer(viewer, "photo", "texture", start=False, **{**FAST, "weights": "auto"})
    with qtbot.waitSignal(worker.finished, timeout=RUN_WAIT_MS):
        worker.start()
    assert len([message for message in errors if "untrained VGG19" in message]) == 1, errors
    assert "photo styled" in viewer.layers
