"""A full-resolution run (``size="full"``) from napari: the content layer's full resolution
(level 0 of a multiscale layer, read lazily a tile at a time in the worker thread) styled in
tiles into an OME-Zarr store, shown as a layer backed by that store: the whole picture from
the composition on, sharpening as tiles finish (what each cell shows: :mod:`.filling`).
Cancel keeps the finished tiles: the store is the result, and a second run with the same
settings resumes it, in the same layer.

``run_full_resolution(viewer, "slide", "swirl", out="slide styled.ome.zarr", steps=50)``
works from napari's console as well as from the widget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StyleTransferError
from .filling import filling_pyramid
from .layers import placement
from .run import RUNS, make_worker, resolve_layer
from .worker import (
    Failed,
    Started,
    StoreCancelled,
    StoreFinished,
    StoreOpened,
    TileDone,
    Update,
    close_logging_errors,
    describe_error,
    dispatch,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image
    from napari.qt.threading import GeneratorWorker

log = logging.getLogger(__name__)

#: The shortest time between two refreshes of the result layer (s): each re-reads the
#: store where napari shows it, on napari's thread.
REFRESH_S = 0.5
#: Where a store goes when the content layer was not read from a file.
STORE_FOLDER = Path.home() / "napari-style-transfer"


def full_resolution_data(layer: Image) -> Any:
    """The layer's full-resolution data, as it is (lazy stays lazy): level 0 of a
    multiscale layer."""
    return layer.data[0] if layer.multiscale else layer.data


def larger_than(layer: Image | None, size: int | None) -> bool:
    """Whether a 2D layer's longest side exceeds the working ``size`` (None: the whole layer)."""
    if layer is None or size is None:
        return False
    data = full_resolution_data(layer)
    spatial = data.shape[:-1] if layer.rgb else data.shape
    return len(spatial) == 2 and max(spatial) > size


def default_store(layer: Image | None) -> Path:
    """Where a layer's full-resolution result goes unless the user says: beside the file it
    was read from (``<name> styled.ome.zarr``), else under :data:`STORE_FOLDER`."""
    name = f"{layer.name if layer is not None else 'result'} styled.ome.zarr"
    source = getattr(getattr(layer, "source", None), "path", None)
    folder = Path(source).parent if source else STORE_FOLDER
    return folder / name


def run_full_resolution(
    viewer: napari.Viewer,
    content: Image | str,
    style: Image | str,
    *,
    out: str | Path,
    force: bool = False,
    start: bool = True,
    **options: Any,
) -> GeneratorWorker:
    """Stylize ``content`` at its own resolution, in tiles of ``tile_size``, into the
    OME-Zarr store ``out`` (made, or reopened to resume: finished tiles are skipped unless
    ``force``), in a background thread. A layer backed by the store, placed over the
    content, appears once the store is open and is refreshed as each tile finishes.
    Returns the napari worker (started unless ``start=False``); ``worker.cancel_event.set()``
    stops the run after the current optimiser step, keeping every finished tile. Options
    are those of ``stylize`` (``size`` is ``"full"`` here)."""
    content_layer = resolve_layer(viewer, content, "content")
    style_layer = resolve_layer(viewer, style, "style")
    if style_layer is content_layer:
        raise StyleTransferError("the content and the style are the same layer; choose two different layers")
    if not str(out):
        raise StyleTransferError("choose where to write the full-resolution result (a .ome.zarr folder)")
    cancel_event = threading.Event()
    updates = full_resolution_updates(
        full_resolution_data(content_layer),
        full_resolution_data(style_layer),
        {**options, "size": "full"},
        Path(out),
        force,
        cancel_event,
    )
    writer = StoreLayer(viewer, content_layer, style_layer.name)
    worker = make_worker(updates, cancel_event, writer)  # type: ignore[arg-type]  # a LayerWriter's methods
    RUNS.add(worker)
    if start:
        worker.start()
    return worker


def full_resolution_updates(
    content: Any, style: Any, options: dict[str, Any], out: Path, force: bool, cancel: threading.Event
) -> Iterator[Update]:
    """The run's updates (all of its work happens here, in the worker thread): the store
    opened, a :class:`TileDone` per finished tile, then :class:`StoreFinished`, or
    :class:`StoreCancelled` within one step of ``cancel``, or :class:`Failed`. Never raises."""
    from ..pipeline.tiled import open_store, plan_full, run_full, tiles_finished

    started = time.perf_counter()
    try:
        fp = plan_full(content, np.asarray(style), **options)
        store = open_store(fp, str(out), force)
        yield StoreOpened(tuple(filling_pyramid(fp, store)), str(out), tiles_finished(store))
        records = run_full(fp, store)
        done = total = 0
        try:
            for record in records:
                if done == 0 and record.step == 1:
                    yield Started(record.device, record.weights)
                if record.step == record.steps:  # the sink wrote the tile before this record
                    done, total = record.frame_number + 1, record.frames
                    yield TileDone(done, total)
                if cancel.is_set():
                    yield StoreCancelled(str(out), done, record.frames)
                    return
        finally:
            close_logging_errors(records, "the full-resolution run")
        yield StoreFinished(str(out), total, time.perf_counter() - started)
    except Exception as error:
        expected = isinstance(error, StyleTransferError)
        details = "" if expected else traceback.format_exc()
        yield Failed(describe_error(error), 0, None, details, expected=expected)


class StoreLayer:
    """Turns a full-resolution run's updates into a layer backed by its store (on the GUI
    thread): added when the store opens, showing the composition enlarged wherever the
    finer levels are not done yet, and refreshed as tiles finish, at most every
    :data:`REFRESH_S` (each refresh re-reads what napari shows, in its slicing)."""

    def __init__(self, viewer: napari.Viewer, content: Image, style_name: str):
        self.viewer, self.content, self.style_name = viewer, content, style_name
        self.layer: Any = None
        self.levels: Any = None  # the layer's data: its pyramid's levels, or its one level
        self.clock = time.monotonic  # seconds
        self.refreshed_at = -math.inf
        self._timer: Any = None  # a refresh waiting for REFRESH_S to pass since the last

    def handle(self, update: Update) -> None:
        dispatch(self, update)

    def on_store_opened(self, update: StoreOpened) -> None:
        levels = list(update.levels)
        self.levels = levels if len(levels) > 1 else levels[0]
        self.refreshed_at = self.clock()
        self.layer = self._layer_of(update.path)
        if self.layer is not None:  # a resumed run: its layer shows the store again
            self.layer.data = self.levels
            return
        colour = len(levels[0].shape) == 3
        metadata = {"content": self.content.name, "style": self.style_name, "store": update.path}
        self.layer = self.viewer.add_image(
            self.levels,
            multiscale=len(levels) > 1,
            rgb=colour,
            contrast_limits=(0.0, 1.0),
            name=f"{self.content.name} styled (full resolution)",
            metadata={"style_transfer": metadata},
            **placement(self.content, tuple(levels[0].shape[:2])),
        )

    def _layer_of(self, store: str) -> Any:
        """The layer that already shows the store at ``store`` (an earlier run's), or None."""
        for layer in self.viewer.layers:
            if layer.metadata.get("style_transfer", {}).get("store") == store:
                return layer
        return None

    def on_tile_done(self, update: TileDone) -> None:
        wait = self.refreshed_at + REFRESH_S - self.clock()
        if wait <= 0:
            self.refresh()
        elif self._timer is None:
            from qtpy.QtCore import QTimer

            self._timer = QTimer()
            self._timer.setSingleShot(True)
            self._timer.timeout.connect(self.refresh)
            self._timer.start(math.ceil(wait * 1000))
        elif not self._timer.isActive():
            self._timer.start(math.ceil(wait * 1000))

    def on_store_finished(self, update: StoreFinished) -> None:
        self.refresh()  # a level's blended cells are written once its last tile is done

    def on_store_cancelled(self, update: StoreCancelled) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Show what the store holds now (napari re-reads the part on screen)."""
        if self._timer is not None:
            self._timer.stop()
        self.refreshed_at = self.clock()
        if self.layer is None or self.layer not in self.viewer.layers:
            return
        if self.layer.multiscale:
            # napari (0.9) reads a 2D multiscale layer's coarsest level (its thumbnail, also
            # what shows zoomed out) once and keeps it until its data is set: set it again
            # (which refreshes), or that level never fills in. Setting it drops the view to
            # the coarsest level, drawn blocky over a zoomed-in canvas until the next draw, and
            # unlocks a level the user locked: go back to either before anything is drawn.
            level, locked = self.layer.data_level, self.layer.locked_data_level
            self.layer.data = self.levels
            if locked is not None:
                self.layer.locked_data_level = locked
            else:
                self.layer.data_level = level
        else:
            self.layer.refresh()

    def aborted(self) -> None:
        """``worker.quit()`` stopped the run: the finished tiles are in the store already."""

    def crashed(self, error: BaseException) -> None:
        """The worker raised (its updates never do, so this is a bug): say so and log it."""
        from napari.utils.notifications import show_error

        log.error("full-resolution run crashed", exc_info=(type(error), error, error.__traceback__))
        show_error(f"Style transfer failed: {type(error).__name__}: {error}")

    def on_failed(self, update: Failed) -> None:
        from napari.utils.notifications import show_error

        log.log(
            logging.DEBUG if update.expected else logging.ERROR,
            "full-resolution run failed: %s\n%s",
            update.message,
            update.details,
        )
        show_error(f"Style transfer failed: {update.message}")
