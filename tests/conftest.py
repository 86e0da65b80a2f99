"""Shared fixtures: tiny images and VGG19 weight files written by the tests themselves.

Pretrained weights cannot be downloaded here; every weights test writes an untrained VGG19
in torchvision's layout, which exercises the loading code without saying anything about the
quality of the results.
"""

from __future__ import annotations

import http.server
import threading
from functools import partial

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def content(rng) -> np.ndarray:
    """A 40 x 48 RGB uint8 image with structure (gradient plus noise)."""
    y, x = np.mgrid[0:40, 0:48]
    base = np.stack([x / 48, y / 40, (x + y) / 88], axis=-1)
    return (np.clip(base + 0.2 * rng.random((40, 48, 3)), 0, 1) * 255).astype(np.uint8)


@pytest.fixture
def style(rng) -> np.ndarray:
    """A 36 x 36 float RGB stripe texture in [0, 1]."""
    y, x = np.mgrid[0:36, 0:36]
    stripes = 0.5 + 0.5 * np.sin(x / 2.0)[..., None] * np.array([1.0, -1.0, 0.5])
    return np.clip(stripes + 0.05 * rng.random((36, 36, 3)), 0, 1).astype(np.float32)


@pytest.fixture
def image_files(tmp_path, content, style):
    """The content and style fixtures as PNG files (for the command line)."""
    from PIL import Image

    content_path, style_path = tmp_path / "content.png", tmp_path / "style.png"
    Image.fromarray(content).save(content_path)
    Image.fromarray((style * 255).astype(np.uint8)).save(style_path)
    return content_path, style_path


@pytest.fixture(scope="session")
def untrained_vgg19_state():
    """The state dict of a whole untrained torchvision VGG19 (features + classifier)."""
    import torch

    from napari_style_transfer._torch_compat import import_torchvision

    torchvision = import_torchvision()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        return torchvision.models.vgg19(weights=None).state_dict()


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache in a temporary TORCH_HOME."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def offline(monkeypatch):
    """Point the ImageNet download at a closed local port: fails at once, like no internet."""
    from napari_style_transfer import weights

    url = "http://127.0.0.1:9/models/vgg19-dcbb9e9d.pth"
    monkeypatch.setattr(weights, "imagenet_url", lambda: url)
    return url


@pytest.fixture
def weights_server(tmp_path):
    """A local HTTP server (loopback only) serving files from a folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def one_thread():
    """torch in this process on one thread, as on each worker of a dask cluster started by
    the tests. With another thread count the convolutions split their sums differently, and
    two L-BFGS steps amplify that rounding: measured up to 2.3e-5 apart at 2 threads here
    against 1 on the workers (tests/test_distributed.py, tests/test_full_resolution_cluster.py)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
