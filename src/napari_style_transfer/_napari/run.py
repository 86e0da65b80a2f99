"""Start a style-transfer run in a napari viewer: a thread_worker plus the layers it adds.

``run_style_transfer`` is the scripting entry point (the dock widget uses it too). It needs
no widget: from napari's console, ``run_style_transfer(viewer, "astronaut", "swirl", steps=50)``
returns the worker, whose signals a script can connect to or wait for. Whichever way a run
starts, its warnings and failures become napari notifications (and go to the log).
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .._image import resize_image, working_shape
from ..errors import StyleTransferError
from ..options import StyleOptions, frame_in_stack, min_side_for_layers
from .gc_pause import FullCollectionsDeferred
from .layers import (
    LayerInput,
    as_layer_data,
    frames_option,
    in_value_range,
    layer_input,
    regions_plan,
    result_layer_kwargs,
    stack_mode,
)
from .worker import (
    Cancelled,
    Failed,
    Finished,
    FrameDone,
    Progress,
    RegionsSampled,
    Snapshot,
    Started,
    Update,
    Warned,
    close_logging_errors,
    cluster_frame_updates,
    dispatch,
    last_image,
    style_transfer_updates,
)

if TYPE_CHECKING:  # pragma: no cover
    import napari
    from napari.layers import Image, Labels
    from napari.qt.threading import GeneratorWorker

log = logging.getLogger(__name__)


#: Snapshots are not kept by default: they show in one layer, given each new snapshot, that
#: becomes the result. Adding a layer costs napari's thread 0.1 to 0.2 s (its controls, its
#: vispy visual, the selection), ten times what new data for one costs.
KEEP_SNAPSHOTS = False


def resolve_layer(viewer: napari.Viewer, layer: Image | str | None, role: str) -> Image:
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
    """Turns the worker's updates into layers of ``viewer`` (on the GUI thread).

    A single image gets a new layer per snapshot and one for the result. A whole stack gets
    one layer that fills in frame by frame, so an interrupted run keeps every finished frame.
    Warnings and failures become notifications (the traceback goes to the log). Once the
    viewer is closed, nothing more is added or shown.
    """

    def __init__(
        self,
        viewer: napari.Viewer,
        content: Image,
        style: Image,
        options: dict[str, Any],
        source: LayerInput,
        *,
        content_range: bool | None = None,
        keep_snapshots: bool = KEEP_SNAPSHOTS,
    ):
        self.viewer = viewer
        self._content = _weak(content)  # weakly: see release()
        self.content_name = content.name  # a rename during the run does not rename its layers
        self.style_name = style.name
        self.regions: dict[str, Any] | None = None  # the Labels layer's name and labels, for metadata
        self.options = StyleOptions.from_kwargs(options).to_dict()
        #: a run after others of this content is named for its style and what it changed
        self.base_name = run_name(viewer, self.content_name, self.style_name, self.options)
        self.slice_index = source.slice_index
        #: grey results go back to the contrast limits the content was read with (default)
        self.value_range = source.limits if content_range is not False else None
        self.keep_snapshots = keep_snapshots
        self.snapshot_layers: list[Any] = []
        #: how the engine's input was made: a grey layer is mapped by its contrast limits here,
        #: so the engine's own account ("taken as they are") would mislead
        self.value_scaling = None
        if source.limits is not None:
            self.value_scaling = "the layer's contrast limits {:g}..{:g}".format(*source.limits)
        lead = content.ndim - 2 if source.slice_index is None else 0
        self.stack_shape = tuple(source.data.shape[:lead])
        height, width = source.data.shape[lead : lead + 2]
        #: (H, W) of a finished frame; an image from a coarse-to-fine level is smaller
        self.frame_shape = working_shape(height, width, self.options["size"])
        self.started = time.perf_counter()
        self.device = ""
        self.weights = ""
        self.last_progress: Progress | None = None
        self.done = False
        self.closed = False
        self._result: weakref.ref | None = None
        self.stack_layer: Any = None
        self.finished_frames: set[tuple[int, ...]] = set()  # of a stack, as they came back

    @property
    def content(self) -> Any:
        """The content layer (None once it is gone: the run then adds nothing more)."""
        return self._content()

    @property
    def result_layer(self) -> Any:
        """The run's result layer, or None (also once it was removed and freed)."""
        return self._result() if self._result is not None else None

    @result_layer.setter
    def result_layer(self, layer: Any) -> None:
        self._result = _weak(layer) if layer is not None else None

    def release(self) -> None:
        """The run is over: let go of its layers (the widget keeps its last run, and so this
        writer), so that a layer the user removes is freed; the result is held weakly."""
        self.snapshot_layers.clear()
        self.stack_layer = None

    def close(self) -> None:
        """The viewer is gone: add nothing more."""
        self.closed = True

    def handle(self, update: Update) -> None:
        """Take one of the worker's updates (nothing once the viewer is closed)."""
        if not self.closed:
            dispatch(self, update)

    def on_regions_sampled(self, update: RegionsSampled) -> None:
        self.regions = {"layer": update.layer, "labels": list(update.labels), "per_frame": update.per_frame}

    def on_started(self, update: Started) -> None:
        self.device, self.weights = update.device, update.weights

    def on_progress(self, update: Progress) -> None:
        self.last_progress = update

    def on_snapshot(self, update: Snapshot) -> None:
        name = f"{self.base_name} (step {update.step})"
        if not self.keep_snapshots and self.snapshot_layers:
            # snapshots not kept show in one layer: napari's thread takes about ten times
            # longer to add a layer than to give one new data
            self._replace(self.snapshot_layers[-1], update.image, name, step=update.step, snapshot=True)
            return
        self.snapshot_layers.append(self._add(update.image, name, step=update.step, snapshot=True))

    def on_frame_done(self, update: FrameDone) -> None:
        self.finished_frames.add(update.frame)
        self._put_frame(update.frame, update.image, update.frames)

    def on_finished(self, update: Finished) -> None:
        self.done = True
        result = update.result
        metadata = {"step": result.steps_done, "cancelled": False, **result.metadata()}
        if self.value_scaling is not None:
            metadata["value_scaling"] = self.value_scaling
        if self.stack_layer is not None:
            self.stack_layer.data = in_value_range(result.image, self.value_range)
            self._finish_stack(self.base_name, metadata)
        elif not self.keep_snapshots and self.snapshot_layers:
            self.result_layer = self.snapshot_layers.pop()  # the snapshot layer becomes the result
            self._replace(self.result_layer, result.image, self.base_name, **metadata)
        else:
            self.result_layer = self._add(result.image, self.base_name, **metadata)
        if not self.keep_snapshots:
            self.fold_snapshots()

    def on_cancelled(self, update: Cancelled) -> None:
        self.done = True
        self._keep(
            update.image, update.step, update.frame_number, "cancelled", batch=update.batch, cancelled=True
        )

    def on_warned(self, update: Warned) -> None:
        from napari.utils.notifications import show_warning

        show_warning(f"Style transfer: {update.message}")

    def on_failed(self, update: Failed) -> None:
        from napari.utils.notifications import show_error

        self.done = True
        # A user's mistake needs no traceback in the log; a bug does.
        level = logging.DEBUG if update.expected else logging.ERROR
        log.log(level, "style transfer failed: %s\n%s", update.message, update.details)
        show_error(f"Style transfer failed: {update.message}")
        self._keep(update.image, update.step, update.frame_number, "failed", error=update.message)

    def crashed(self, error: BaseException) -> None:
        """The worker itself raised (its generator turns errors into updates, so this is a
        bug): say so, log the traceback and keep the last step's image."""
        from napari.utils.notifications import show_error

        log.error("style transfer crashed", exc_info=(type(error), error, error.__traceback__))
        if self.closed:
            return
        show_error(f"Style transfer failed: {type(error).__name__}: {error}")
        if not self.done and self.last_progress is not None:
            self.done = True
            record = self.last_progress.record
            self._keep(last_image(record), record.step, record.frame_number, "failed", error=str(error))

    def aborted(self) -> None:
        """``worker.quit()`` closed the run between steps: keep the last step's image."""
        if self.done or self.closed or self.last_progress is None:
            return
        self.done = True
        record = self.last_progress.record
        self._keep(last_image(record), record.step, record.frame_number, "cancelled", cancelled=True)

    def _keep(
        self,
        image: np.ndarray | None,
        step: int,
        frame_number: int,
        how: str,
        batch: dict[tuple[int, ...], np.ndarray] | None = None,
        **extra: Any,
    ) -> None:
        """Keep what an interrupted run made, marked as such: for a stack, the finished frames
        and the last step's image of the current frame and of the frames of its batch."""
        progress = self.last_progress
        if progress is not None and progress.frames > 1:
            current = progress.record.frame
            if image is not None and step != progress.steps:
                self._put_frame(current, image, progress.frames)
            for frame, frame_image in (batch or {}).items():
                if frame != current and frame not in self.finished_frames:
                    self._put_frame(frame, frame_image, progress.frames)
            if self.stack_layer is not None:
                self._finish_stack(
                    f"{self.base_name} ({how} at {frame_in_stack(frame_number, progress.frames, progress.pass_number)})",
                    {"step": step, "frames_done": len(self.finished_frames), **extra},
                )
            return
        if image is None:
            return
        name = f"{self.base_name} ({how} at step {step})"
        if not self.keep_snapshots and self.snapshot_layers:
            self.result_layer = self.snapshot_layers.pop()  # the snapshot layer keeps the last image
            self._replace(self.result_layer, image, name, step=step, **extra)
        else:
            self.result_layer = self._add(image, name, step=step, **extra)

    def fold_snapshots(self) -> None:
        """Remove this run's snapshot layers (those still in the viewer): only the result stays."""
        for layer in self.snapshot_layers:
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.snapshot_layers.clear()

    def _put_frame(self, frame: tuple[int, ...], image: np.ndarray, frames: int) -> None:
        """Put a frame (in the engine's 0..1) into the stack layer, in the content's units;
        a frame of a run stopped in a coarse level is enlarged to the frame shape."""
        image = in_value_range(resize_image(image, self.frame_shape), self.value_range)
        if self.stack_layer is None:
            # frames not done yet show as the result's 0 (the low contrast limit for grey)
            data = in_value_range(
                np.zeros(self.stack_shape + image.shape, dtype=np.float32), self.value_range
            )
            data[frame] = image
            self.stack_layer = self._add(
                data, f"{self.base_name} (in progress)", in_units=True, frames=frames
            )
        else:
            self.stack_layer.data[frame] = image
            self.stack_layer.refresh()

    def _finish_stack(self, name: str, extra: dict[str, Any]) -> None:
        self.stack_layer.name = name
        self.stack_layer.metadata["style_transfer"].update(self._metadata(extra))
        self.result_layer = self.stack_layer

    def _metadata(self, extra: dict[str, Any]) -> dict[str, Any]:
        progress = self.last_progress
        metadata = {
            "content": self.content_name,
            "style": self.style_name,
            "options": self.options,
            **({"style_regions_layer": self.regions} if self.regions else {}),
            "device": self.device,
            "weights": self.weights,
            "seconds": round(time.perf_counter() - self.started, 3),
        }
        if self.slice_index is not None:
            metadata["slice"] = list(self.slice_index)
        if self.value_range is not None:
            metadata["value_range"] = list(self.value_range)  # the result's 0 and 1, in content units
        if progress is not None:
            metadata["losses"] = {
                "total": progress.total_loss,
                "content": progress.content_loss,
                "style": progress.style_loss,
            }
        metadata.update(extra)
        return metadata

    def _add(self, image: np.ndarray, name: str, *, in_units: bool = False, **extra: Any) -> Any:
        """Add ``image`` as a layer over the content: the engine's 0..1, or with ``in_units``
        already in the content's units (mapped once, never twice)."""
        kwargs = result_layer_kwargs(
            self.content, image, name, self._metadata(extra), self.slice_index, self.value_range
        )
        data = image if in_units else in_value_range(image, self.value_range)
        return self.viewer.add_image(as_layer_data(data, self.content), **kwargs)

    def _replace(self, layer: Any, image: np.ndarray, name: str, **extra: Any) -> None:
        """Give a layer of this run what :meth:`_add` would give a new one (an image of a
        coarse-to-fine level is smaller: its placement changes with it)."""
        kwargs = result_layer_kwargs(
            self.content, image, name, self._metadata(extra), self.slice_index, self.value_range
        )
        layer.data = as_layer_data(in_value_range(image, self.value_range), self.content)
        for key in ("scale", "translate", "affine"):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        layer.metadata = kwargs["metadata"]
        layer.name = name


def _weak(layer: Any) -> weakref.ref:
    """A weak reference to the layer itself: a plugin's viewer gives napari's proxies of its
    layers (``PublicOnlyProxy``), a new one each time, which nothing else holds."""
    return weakref.ref(getattr(layer, "__wrapped__", layer))


#: Options left out of run names: they change how a run is watched, not what it makes.
UNNAMED_OPTIONS = ("snapshot_every", "device", "channels_last", "threads", "cudnn_benchmark")
#: At most this many changed options in a run's name (then "+N more").
NAMED_CHANGES = 3


def run_name(viewer: napari.Viewer, content_name: str, style_name: str, options: dict[str, Any]) -> str:
    """``"<content> styled"`` for a content's first run; after that, the style's name and the
    options that differ from the content's latest result: ``"astronaut styled (starry, steps
    300)"``, so that runs differ in the layer list (metadata["style_transfer"] has them all)."""
    base = f"{content_name} styled"
    earlier = [
        layer.metadata["style_transfer"]
        for layer in viewer.layers
        if isinstance(layer.metadata.get("style_transfer"), dict)
        and layer.metadata["style_transfer"].get("content") == content_name
        and not layer.metadata["style_transfer"].get("snapshot")
    ]
    if not earlier:
        return base
    before = earlier[-1].get("options", {})
    changed = [
        _setting(name, value)
        for name, value in options.items()
        if name not in UNNAMED_OPTIONS and name in before and _plain(before[name]) != _plain(value)
    ]
    if len(changed) > NAMED_CHANGES:
        changed = [*changed[:NAMED_CHANGES], f"+{len(changed) - NAMED_CHANGES} more"]
    return f"{base} ({', '.join([style_name, *changed])})"


def settings_summary(metadata: dict[str, Any]) -> str:
    """A run's key settings in one line, from a result layer's metadata["style_transfer"]."""
    options = metadata.get("options", {})
    parts = [f"style {metadata.get('style', '?')}"]
    parts += [
        _setting(name, options[name])
        for name in ("size", "steps", "style_weight", "content_weight", "optimizer", "seed")
        if name in options
    ]
    parts += [str(metadata[key]) for key in ("device", "weights") if metadata.get(key)]
    return " | ".join(parts)


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (metadata read back from JSON has lists)."""
    return list(value) if isinstance(value, tuple | list) else value


def _setting(name: str, value: Any) -> str:
    label = name.replace("_", " ")
    if isinstance(value, bool):
        return label if value else f"no {label}"
    if isinstance(value, float):
        return f"{label} {value:g}"
    if isinstance(value, tuple | list):
        return f"{label} {','.join(map(str, value))}"
    return f"{label} {value}"


def run_style_transfer(
    viewer: napari.Viewer,
    content: Image | str,
    style: Image | str | list[Image | str],
    *,
    stack: str = "current slice",
    start: bool = True,
    scheduler: str | None = None,
    content_range: bool | None = None,
    keep_snapshots: bool = KEEP_SNAPSHOTS,
    style_regions: Labels | str | None = None,
    **options: Any,
) -> GeneratorWorker:
    """Stylize ``content`` with ``style`` (layers or layer names) in a background thread.

    Every ``snapshot_every`` steps (except the last) a snapshot shows in one layer
    ``"<content> styled (step k)"`` over the content layer, which becomes the result
    ``"<content> styled"``; ``keep_snapshots=True`` adds a layer per snapshot. For nD layers,
    ``stack`` is ``"current slice"`` (the slice the viewer shows), ``"whole stack as time series"`` (every frame, each following the previous
    result: ``frames="time"``) or ``"whole stack, frames independent"`` (Z slices, channels:
    ``frames="independent"``; ``"whole stack"`` is its earlier name); a whole stack fills
    one layer frame by frame. Lazy (dask, zarr) layers, the regions' Labels layer too, are
    read a frame at a time in the worker thread; every layer is read when the run gets to it
    (the regions once the weights are loaded), not at Run, so a layer edited meanwhile is
    read as it is then.
    Grey results come back in the content's units (mapped back through the contrast limits
    the content was read with) unless ``content_range=False`` ([0, 1] then); results carry
    the content's colormap, gamma and blending. A later run of the same content is named for
    its style and what it changed (:func:`run_name`).
    Returns the napari worker (started unless ``start=False``); ``cancel(worker)`` stops it
    after the current step and keeps the last image (before the first step: at once). Options are those of ``stylize``. Bad
    layers or options raise ``StyleTransferError`` before anything starts.
    ``scheduler``: the address of a running dask cluster; a whole stack with frames
    independent then runs its frames there, and the layer fills in as they come back.

    ``style`` may be a list of layers, blended by ``style_blend``; ``style_regions`` a Labels
    layer (or its name), sampled where the content lies on screen (the layers' transforms):
    label k takes the k-th style, 0 only the content. A whole stack takes a 2D Labels layer
    for every frame, and one with the content's dimensions frame by frame.
    """
    content_layer = resolve_layer(viewer, content, "content")
    several = isinstance(style, list | tuple)
    style_layers = _style_layers(viewer, content_layer, list(style) if several else [style])
    frames = frames_option(stack)
    options = _with_frames(options, stack, frames)
    size = StyleOptions.from_kwargs(options).size
    # Views and contrast limits only: the worker reads the data, a frame at a time.
    source = layer_input(content_layer, "content", viewer=viewer, stack=stack, size=size, defer=True)
    style_sources: list[Any] = [
        layer_input(layer, "style", viewer=viewer, size=size, defer=True) for layer in style_layers
    ]
    regions = None
    if style_regions is not None:
        labels_layer = viewer.layers[style_regions] if isinstance(style_regions, str) else style_regions
        regions = _regions_plan(labels_layer, content_layer, source, size)
    check_size_fits(source, style_sources, content_layer, StyleOptions.from_kwargs(options))

    cancel_event = threading.Event()
    writer = LayerWriter(
        viewer,
        content_layer,
        style_layers[0],
        options,
        source,
        content_range=content_range,
        keep_snapshots=keep_snapshots,
    )
    if several:
        writer.style_name = ", ".join(layer.name for layer in style_layers)
    cluster = scheduler if frames == "independent" and not several and regions is None else None
    styles_read = style_sources if several else style_sources[0]
    updates = _run_updates(source, styles_read, options, cancel_event, regions, cluster)
    worker = make_worker(updates, cancel_event, writer)
    worker.finished.connect(lambda: writer.release())  # a lambda: held strongly (see make_worker)
    _stop_when_the_content_goes(viewer, content_layer, worker)
    RUNS.add(worker)
    if start:
        worker.start()
    return worker


def _run_updates(
    source: LayerInput,
    styles: Any,
    options: dict[str, Any],
    cancel_event: threading.Event,
    regions: Any,
    cluster: str | None,
) -> Iterator[Update]:
    """The run's updates: its frames on the dask cluster at ``cluster``, or here."""
    if cluster:
        return cluster_frame_updates(source, styles, options, cancel_event, cluster)
    return style_transfer_updates(source, styles, options, cancel_event, regions)


def _with_frames(options: dict[str, Any], stack: str, frames: str | None) -> dict[str, Any]:
    """``options`` with the ``frames`` a whole-stack mode asks for (a different one refused)."""
    if frames is None:
        return options
    if options.get("frames", frames) != frames:
        raise StyleTransferError(
            f"stack {stack_mode(stack)!r} styles the frames as frames={frames!r}, not {options['frames']!r}; "
            "leave frames out or choose the other whole-stack mode"
        )
    return {**options, "frames": frames}


def _style_layers(viewer: napari.Viewer, content: Image, styles: list[Any]) -> list[Image]:
    """The style layers (given as layers or names), none of them the content."""
    if not styles:
        raise StyleTransferError("the style list is empty: choose at least one style layer")
    layers = [resolve_layer(viewer, item, "style") for item in styles]
    if any(layer is content for layer in layers):
        raise StyleTransferError(
            f"the content and the style are the same layer ({content.name!r}); choose two different layers"
        )
    return layers


def _regions_plan(labels: Any, content: Image, source: LayerInput, size: int) -> Any:
    """The regions' Labels layer checked now (a bad layer is refused at Run), to be read and
    sampled in the worker."""
    lead = content.ndim - 2
    whole = source.slice_index is None
    height, width = source.data.shape[lead : lead + 2] if whole else source.data.shape[-2:]
    stack_shape = tuple(source.data.shape[:lead]) if whole else ()
    return regions_plan(
        labels, content, working_shape(height, width, size), source.slice_index, stack=stack_shape
    )


def make_worker(
    updates: Iterator[Update], cancel_event: threading.Event, writer: LayerWriter
) -> GeneratorWorker:
    """The napari worker that relays ``updates`` to ``writer`` (not started)."""
    from napari.qt.threading import thread_worker

    # ignore_errors: superqt would re-raise an error in the GUI thread (napari's traceback
    # dialog); the writer turns it into a notification instead.
    hold = FullCollectionsDeferred()
    worker = thread_worker(_relay, start_thread=False, ignore_errors=True)(updates, hold)
    # a lambda: Qt holds a bound method's object only weakly, and the generator lets go of it
    worker.finished.connect(lambda: hold.end())
    # While the worker runs, superqt sends every thread's warnings to ``warned`` instead of
    # where they went (the run's own come as Warned updates): pass the others on to there.
    worker.warned.connect(_pass_on_to(warnings.showwarning))
    worker.cancel_event = cancel_event
    worker.layer_writer = writer
    worker.updates = updates
    worker.yielded.connect(writer.handle)
    worker.aborted.connect(writer.aborted)
    worker.errored.connect(writer.crashed)
    # worker.quit() leaves the generator suspended, holding the network and its tensors
    # (GPU memory too): close it once the thread is done.
    worker.finished.connect(lambda: close_logging_errors(updates, "the style-transfer run"))
    return worker


def check_size_fits(source: LayerInput, styles: list[LayerInput], content: Image, opts: StyleOptions) -> None:
    """Refuse, before a worker starts, a size at which the content or a style frame is
    smaller than the deepest chosen VGG layer needs, naming the smallest size that works
    (shapes only: nothing is read)."""
    layers, style_layers = opts.content_layers + opts.style_layers, opts.style_layers
    lead = content.ndim - 2 if source.slice_index is None else 0
    content_hw = tuple(int(side) for side in source.data.shape[lead : lead + 2])
    styles_hw = [tuple(int(side) for side in style.data.shape[:2]) for style in styles]
    scales = opts.style_scales(len(styles))
    if len(scales) != len(styles):
        return  # the run's own check says what is wrong with the style_scale list
    style_hw = min(styles_hw, key=min)  # for the message
    size = opts.size if opts.size is not None else max(content_hw)

    def too_small(size: int) -> str | None:
        """What is too small at ``size`` (the content, or a style at its scale), or None."""
        content_shape = working_shape(content_hw[0], content_hw[1], size)
        if layers and min(content_shape) < min_side_for_layers(layers):
            return f"the content becomes {content_shape[0]}x{content_shape[1]} px"
        for number, ((height, width), scale) in enumerate(zip(styles_hw, scales, strict=True), start=1):
            factor = max(content_shape) / max(content_hw) * scale
            shrunk = (round(height * factor), round(width * factor))
            if style_layers and min(shrunk) < min_side_for_layers(style_layers):
                which = "the style" if len(styles_hw) == 1 else f"style {number}"
                return f"{which} is shrunk with the content to {shrunk[0]}x{shrunk[1]} px"
        return None

    def fits(size: int) -> bool:
        return too_small(size) is None

    what = too_small(size)
    if what is None:
        return
    works = next((bigger for bigger in range(size + 1, MAX_SUGGESTED_SIZE + 1) if fits(bigger)), None)
    fix = f"use size {works} or more" if works is not None else "use shallower layers"
    raise StyleTransferError(
        f"size {size} is too small: {what} (content {content_hw[0]}x{content_hw[1]}, style "
        f"{style_hw[0]}x{style_hw[1]} px), and the deepest chosen VGG layer needs a shorter side of at least "
        f"{min_side_for_layers(layers or style_layers)} px; {fix} (or a larger style_scale)"
    )


#: The largest size :func:`check_size_fits` suggests.
MAX_SUGGESTED_SIZE = 8192


#: Every run made here (the widget's and full resolution's) that has not been collected, for
#: :func:`_stop_runs_at_exit`: add each new worker.
RUNS: weakref.WeakSet = weakref.WeakSet()
#: How long Python's exit waits for runs to stop (each stops after its current step).
EXIT_WAIT_S = 60


@atexit.register
def _stop_runs_at_exit() -> None:
    """Python is exiting (a script or console that closed its viewer, say) while a run goes
    on: stop it and wait for its thread. Otherwise the thread outlives the Qt objects it
    signals through, and superqt prints "RuntimeError in aborted thread: wrapped C/C++ object
    of type GeneratorWorkerSignals has been deleted". (napari's own app waits for workers
    when its event loop quits, but not when Python exits without it.)"""
    runs = list(RUNS)
    if not runs:
        return
    from qtpy.QtCore import QThreadPool

    for worker in runs:
        worker.cancel_event.set()
    pool = QThreadPool.globalInstance()
    if pool is not None and not pool.waitForDone(EXIT_WAIT_S * 1000):
        log.warning("style transfer: a run was still going %d s after Python began to exit", EXIT_WAIT_S)
        return
    for worker in runs:  # a run stopped by worker.quit() is suspended, not closed
        close_logging_errors(worker.updates, "the style-transfer run")


def _pass_on_to(showwarning: Any) -> Any:
    def pass_on(warning: tuple) -> None:
        showwarning(*warning)

    return pass_on


def _relay(updates: Iterator[Update], hold: FullCollectionsDeferred) -> Iterator[Update]:
    """The worker's generator function: passes on the updates of a generator made here, so
    that this module keeps a handle to close it. From its first step in the worker thread
    on, Python makes no full garbage collection until the worker has finished (``hold``,
    see :mod:`.gc_pause`)."""
    hold.begin()
    yield from updates


def _stop_when_the_content_goes(viewer: napari.Viewer, content: Image, worker: GeneratorWorker) -> None:
    """Removing the content layer (closing the viewer removes every layer first) stops the
    run and adds nothing more: the results would have nowhere to go."""
    event, writer = worker.cancel_event, worker.layer_writer

    def removed(layer_event: Any) -> None:
        if layer_event.value is content:
            writer.close()
            event.set()

    viewer.layers.events.removed.connect(removed)
    worker.finished.connect(lambda: viewer.layers.events.removed.disconnect(removed))


def cancel(worker: GeneratorWorker) -> None:
    """Ask a run to stop after its current step; its last image becomes a layer. Before the
    first step (weights loading, VGG19 being built) the run ends at once, keeping nothing."""
    worker.cancel_event.set()
