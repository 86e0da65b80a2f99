"""Start a style-transfer run in a napari viewer: a thread_worker plus the layers it adds.

``run_style_transfer`` is the scripting entry point (the dock widget uses it too). It needs
no widget: from napari's console, ``run_style_transfer(viewer, "astronaut", "swirl", steps=50)``
returns the worker, whose signals a script can connect to or wait for.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from ..errors import StyleTransferError
from ..options import StyleOptions
from .layers import layer_image, result_layer_kwargs
from .worker import Cancelled, Failed, Finished, Progress, Snapshot, Started, Update, style_transfer_updates

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image
    from napari.qt.threading import GeneratorWorker


def resolve_layer(viewer: napari.Viewer, layer: Image | str, role: str) -> Image:
    """A layer given as itself or by name."""
    if isinstance(layer, str):
        if layer not in viewer.layers:
            names = ", ".join(repr(existing.name) for existing in viewer.layers) or "none"
            raise StyleTransferError(f"there is no {role} layer named {layer!r}; layers are {names}")
        return viewer.layers[layer]
    if layer is None:
        raise StyleTransferError(f"choose a {role} layer (an Image layer)")
    return layer


class LayerWriter:
    """Turns the worker's updates into layers of ``viewer`` (on the GUI thread)."""

    def __init__(self, viewer: napari.Viewer, content: Image, style: Image, options: dict[str, Any]):
        self.viewer = viewer
        self.content = content
        self.style_name = style.name
        self.options = StyleOptions.from_kwargs(options).to_dict()
        self.started = time.perf_counter()
        self.device = ""
        self.weights = ""
        self.last_progress: Progress | None = None
        self.done = False
        self.result_layer = None

    def handle(self, update: Update) -> None:
        if isinstance(update, Started):
            self.device, self.weights = update.device, update.weights
        elif isinstance(update, Progress):
            self.last_progress = update
        elif isinstance(update, Snapshot):
            self._add(update.image, f"{self.content.name} styled (step {update.step})", step=update.step, snapshot=True)
        elif isinstance(update, Finished):
            result = update.result
            self.done = True
            self.result_layer = self._add(
                result.image, f"{self.content.name} styled", step=result.steps_done, cancelled=False, **result.metadata()
            )
        elif isinstance(update, Cancelled):
            self.done = True
            if update.image is not None:
                self.result_layer = self._add(
                    update.image, f"{self.content.name} styled (cancelled at step {update.step})", step=update.step, cancelled=True
                )
        elif isinstance(update, Failed):
            self.done = True
            if update.image is not None:
                self.result_layer = self._add(
                    update.image, f"{self.content.name} styled (failed at step {update.step})", step=update.step, error=update.message
                )

    def aborted(self) -> None:
        """``worker.quit()`` closed the run between steps: keep the last step's image."""
        if self.done or self.last_progress is None:
            return
        self.done = True
        record = self.last_progress.record
        try:
            image = record.render()
        except RuntimeError:  # the run went on past the last reported step
            image = record.image
        if image is not None:
            self.result_layer = self._add(
                image, f"{self.content.name} styled (cancelled at step {record.step})", step=record.step, cancelled=True
            )

    def _add(self, image: Any, name: str, **extra: Any):
        progress = self.last_progress
        metadata = {
            "content": self.content.name,
            "style": self.style_name,
            "options": self.options,
            "device": self.device,
            "weights": self.weights,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        if progress is not None:
            metadata["losses"] = {
                "total": progress.total_loss,
                "content": progress.content_loss,
                "style": progress.style_loss,
            }
        metadata.update(extra)
        return self.viewer.add_image(image, **result_layer_kwargs(self.content, image, name, metadata))


def run_style_transfer(
    viewer: napari.Viewer, content: Image | str, style: Image | str, *, start: bool = True, **options: Any
) -> GeneratorWorker:
    """Stylize ``content`` with ``style`` (layers or layer names) in a background thread.

    Snapshot layers ``"<content> styled (step k)"`` appear every ``snapshot_every`` steps and
    the result ``"<content> styled"`` at the end, placed over the content layer. Returns the
    napari worker (started unless ``start=False``); ``cancel(worker)`` stops it within one
    step and keeps the last image as a layer. Options are those of ``stylize``. Bad layers or
    options raise ``StyleTransferError`` before anything starts.
    """
    from napari.qt.threading import thread_worker

    content_layer = resolve_layer(viewer, content, "content")
    style_layer = resolve_layer(viewer, style, "style")
    if content_layer is style_layer:
        raise StyleTransferError(
            f"the content and the style are the same layer ({content_layer.name!r}); choose two different layers"
        )
    StyleOptions.from_kwargs(options)
    content_data = layer_image(content_layer, "content")
    style_data = layer_image(style_layer, "style")

    cancel_event = threading.Event()
    writer = LayerWriter(viewer, content_layer, style_layer, options)
    make_worker = thread_worker(style_transfer_updates, start_thread=False)
    worker = make_worker(content_data, style_data, options, cancel_event)
    worker.cancel_event = cancel_event
    worker.layer_writer = writer
    worker.yielded.connect(writer.handle)
    worker.aborted.connect(writer.aborted)
    if start:
        worker.start()
    return worker


def cancel(worker: GeneratorWorker) -> None:
    """Ask a run to stop after its current step; its last image becomes a layer."""
    worker.cancel_event.set()
