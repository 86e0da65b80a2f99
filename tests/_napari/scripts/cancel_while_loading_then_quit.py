"""Run in a subprocess by test_cancel_loading: start a run in a real viewer, cancel it while
the weights load (held there), close the viewer, let the load go on and exit. Python's exit
must then wait for the abandoned load instead of aborting inside torch."""

from __future__ import annotations

import threading

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
    # the viewer (and its OpenGL context) first, then the run imports torch
    from tiny_widget import tiny_widget

    optimise.load_vgg19_features = load_held
    viewer, widget = tiny_widget(steps=4)
    widget.run()
    process_events_until(held.is_set)
    widget.cancel()
    process_events_until(lambda: not widget.running)
    viewer.close()
    release.set()  # the abandoned load builds VGG19 while Python exits
    print("viewer closed", flush=True)


main()
