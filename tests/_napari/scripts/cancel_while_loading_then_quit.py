"""Run in a subprocess by test_cancel_loading: start a run in a real viewer, cancel it while
the weights load (held there), close the viewer, let the load go on and exit. Python's exit
must then wait for the abandoned load instead of aborting inside torch."""

from __future__ import annotations

import threading

import numpy as np

from napari_style_transfer.pipeline import optimise  # where the run loads its weights

held, release = threading.Event(), threading.Event()
real_load = optimise.load_vgg19_features


def load_held(weights, **kwargs):
    held.set()
    release.wait()
    return real_load(weights, **kwargs)


def process_events_until(done) -> None:
    from qtpy.QtWidgets import QApplication

    while not done():
        QApplication.processEvents()
        held.wait(0.01)  # a pause for the event loop, not a timing


def main() -> None:
    import napari  # the viewer (and its OpenGL context) first, then the run imports torch

    optimise.load_vgg19_features = load_held
    viewer = napari.Viewer(show=False)
    rng = np.random.default_rng(0)
    content = viewer.add_image(rng.random((40, 48, 3)).astype(np.float32), rgb=True, name="content")
    style = viewer.add_image(rng.random((36, 36, 3)).astype(np.float32), rgb=True, name="style")
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = content, style
    for name, value in {"size": 32, "steps": 4, "weights": "random"}.items():
        widget[name].value = value
    widget.run()
    process_events_until(held.is_set)
    widget.cancel()
    process_events_until(lambda: not widget.running)
    viewer.close()
    release.set()  # the abandoned load builds VGG19 while Python exits
    print("viewer closed", flush=True)


main()
