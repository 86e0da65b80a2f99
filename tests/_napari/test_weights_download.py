"""The first run downloads the ImageNet weights in the worker, with progress, and a cancel
stops the download. (A local server stands in for download.pytorch.org.)"""

from __future__ import annotations

import hashlib
import threading

import pytest
import torch

from napari_style_transfer import weights as weights_module
from napari_style_transfer._napari.worker import (
    Cancelled,
    Downloading,
    Finished,
    Started,
    Warned,
    style_transfer_updates,
)

from .conftest import FAST, run_and_wait, wait_until_idle


def serve_as_imagenet(folder, base, payload: bytes, monkeypatch) -> str:
    name = f"vgg19-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    (folder / name).write_bytes(payload)
    monkeypatch.setattr(weights_module, "imagenet_url", lambda: f"{base}/{name}")
    return name


def test_the_download_is_reported_before_the_run_and_lands_in_the_cache(
    torch_home, untrained_vgg19_state, weights_server, monkeypatch, content, style, tmp_path
):
    staging = tmp_path / "staging.pth"
    torch.save(untrained_vgg19_state, staging)
    name = serve_as_imagenet(*weights_server, staging.read_bytes(), monkeypatch)
    updates = list(style_transfer_updates(content, style, {**FAST, "weights": "imagenet"}, threading.Event()))
    downloads = [u for u in updates if isinstance(u, Downloading)]
    assert len(downloads) > 10 and downloads[-1].done == downloads[-1].total == staging.stat().st_size
    assert [u.done for u in downloads] == sorted(u.done for u in downloads)
    assert updates.index(downloads[-1]) < updates.index(next(u for u in updates if isinstance(u, Started)))
    assert isinstance(updates[-1], Finished) and updates[-1].result.weights_kind == "imagenet"
    assert (torch_home / "hub" / "checkpoints" / name).is_file()


def test_cancelling_during_the_download_stops_it_and_leaves_nothing(
    torch_home, weights_server, monkeypatch, content, style
):
    serve_as_imagenet(*weights_server, bytes(8 << 20), monkeypatch)  # 8 MB: 8 chunks
    cancel = threading.Event()
    updates = []
    for update in style_transfer_updates(content, style, {**FAST, "weights": "imagenet"}, cancel):
        updates.append(update)
        cancel.set()  # at the first MB
    assert [type(u) for u in updates] == [Downloading, Cancelled]
    assert updates[-1].step == 0 and updates[-1].image is None
    assert not list((torch_home / "hub" / "checkpoints").iterdir())


def test_auto_offline_falls_back_to_random_weights_after_one_attempt(
    torch_home, offline, monkeypatch, content, style
):
    attempts = []
    real = weights_module._download_chunks

    def counted(*args):
        attempts.append(args)
        return real(*args)

    monkeypatch.setattr(weights_module, "_download_chunks", counted)
    updates = list(style_transfer_updates(content, style, {**FAST, "weights": "auto"}, threading.Event()))
    assert isinstance(updates[-1], Finished) and updates[-1].result.weights_kind == "random"
    assert len(attempts) == 1
    (warned,) = [u for u in updates if isinstance(u, Warned)]  # the RandomWeightsWarning, as an update
    assert "Falling back to an untrained VGG19" in warned.message


@pytest.mark.parametrize("weights", ["random", "auto"])
def test_no_download_when_not_needed(torch_home, untrained_vgg19_state, weights, content, style):
    path = torch_home / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    path.parent.mkdir(parents=True)
    torch.save(untrained_vgg19_state, path)
    updates = list(style_transfer_updates(content, style, {**FAST, "weights": weights}, threading.Event()))
    assert not any(isinstance(u, Downloading) for u in updates)


def test_the_widget_shows_the_download_and_its_cancel_keeps_nothing(
    qtbot, viewer, widget, torch_home, weights_server, monkeypatch
):
    serve_as_imagenet(*weights_server, bytes(8 << 20), monkeypatch)
    widget["weights"].value = "imagenet"
    seen = []

    def cancel_at_the_first_mb(update):
        if isinstance(update, Downloading) and not seen:
            seen.append((widget["status"].value, widget["progress"].value, widget["progress"].max))
            widget["run_button"].clicked.emit()  # Cancel

    worker = widget.run()
    worker.yielded.connect(cancel_at_the_first_mb)
    wait_until_idle(qtbot, widget)
    status, value, maximum = seen[0]  # the first update this test saw (the worker may be ahead)
    assert status == f"downloading the VGG19 ImageNet weights (first run only): {value} of 8 MB"
    assert 1 <= value < 8 and maximum == 8
    assert (
        widget["status"].value
        == "cancelled during the weights download: nothing kept, run again to restart it"
    )
    assert [layer.name for layer in viewer.layers] == ["photo", "texture"]


@pytest.fixture
def stalling_server():
    """A server that sends the headers and 1 MB of a 548 MB file, then goes quiet."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    release = threading.Event()

    def serve():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 574673361\r\n\r\n" + bytes(1 << 20))
        release.wait(30)
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/vgg19-dcbb9e9d.pth"
    release.set()
    listener.close()


def test_a_cancel_while_the_connection_hangs_is_a_cancel_not_a_failure(
    torch_home, stalling_server, monkeypatch, content, style
):
    monkeypatch.setattr(weights_module, "DOWNLOAD_TIMEOUT", 1.0)
    monkeypatch.setattr(weights_module, "imagenet_url", lambda: stalling_server)
    cancel = threading.Event()
    updates = []
    for update in style_transfer_updates(content, style, {**FAST, "weights": "auto"}, cancel):
        updates.append(update)
        cancel.set()  # pressed at the first MB; the next read hangs until the timeout
    assert [type(u) for u in updates] == [Downloading, Cancelled]
    assert not list((torch_home / "hub" / "checkpoints").iterdir())


def test_auto_offline_in_napari_says_so_in_one_notification(qtbot, widget, torch_home, offline, errors):
    widget["weights"].value = "auto"
    run_and_wait(qtbot, widget)
    warned = [message for message in errors if "untrained VGG19" in message]
    assert len(warned) == 1, errors
    assert widget["status"].value.startswith("done") and "random weights" in widget["status"].value


def test_a_server_without_a_size_still_reports_the_end_of_the_download(
    torch_home, monkeypatch, content, style
):
    def sizeless_download():  # 1.25 MB in 64 kB reads; the server sent no Content-Length
        yield from ((65536 * (i + 1), None) for i in range(20))

    monkeypatch.setattr(weights_module, "download_imagenet", sizeless_download)
    updates = list(style_transfer_updates(content, style, {**FAST, "weights": "imagenet"}, threading.Event()))
    reports = [(u.done, u.total) for u in updates if isinstance(u, Downloading)]
    assert reports == [(1 << 20, None), (20 * 65536, 20 * 65536)]  # one a MB, then complete
