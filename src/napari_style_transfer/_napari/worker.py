"""The background side of a napari run: a generator of typed updates for a thread_worker.

Everything heavy (importing torch, loading weights, building VGG19, optimising) happens in
the worker thread (reading the inputs, loading the weights, building VGG19 and the first step
in a helper thread of the worker's, so that a cancel meanwhile ends the run at once); the
widget only renders the updates the generator yields.
Errors travel as a :class:`Failed` update, so napari shows no exception dialog, and the
run's own warnings as :class:`Warned` updates. The generator never raises: superqt's worker
ends without ``finished`` when its generator raises a RuntimeError.
"""

from __future__ import annotations

import importlib.abc
import itertools
import logging
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Generic, TypeVar

import numpy as np

from .layers import LayerInput, RegionsPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Started:
    """Weights and network are ready; the first step is running."""

    device: str
    weights: str


@dataclass(frozen=True)
class RegionsSampled:
    """The style regions' Labels layer was read and sampled (in the worker): what the result
    records of it. Comes before :class:`Started`."""

    layer: str  # the Labels layer's name
    labels: tuple[int, ...]  # the labels present in the label image, 0 included where it is
    per_frame: bool  # one label image per frame of a stack


@dataclass(frozen=True)
class Downloading:
    """The ImageNet weights are being downloaded (the first run only)."""

    done: int  # bytes
    total: int | None  # bytes, when the server says


@dataclass(frozen=True)
class Progress:
    step: int  # within the frame
    steps: int  # per frame
    total_loss: float
    content_loss: float
    style_loss: float
    steps_per_second: float
    record: Any = field(repr=False)  # the StepRecord, to render its image on request
    frame_number: int = 0
    frames: int = 1
    pass_number: int = 0  # a time pass's number; 0: the frame's first styling

    @property
    def done(self) -> int:
        """Steps done over the whole run (all frames; the frames of a batch step together)."""
        if self.record is None:
            return self.frame_number * self.steps + self.step
        return self.record.steps_before + self.step

    @property
    def total(self) -> int:
        run_steps = 0 if self.record is None else self.record.run_steps
        return run_steps or self.frames * self.steps


@dataclass(frozen=True)
class FrameDone:
    """One frame of a stack is finished (only for runs over more than one frame)."""

    frame: tuple[int, ...]
    frame_number: int
    frames: int
    image: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    step: int
    image: np.ndarray


@dataclass(frozen=True)
class Finished:
    result: Any  # StyleResult


@dataclass(frozen=True)
class Cancelled:
    step: int
    image: np.ndarray | None  # the last step's image (of the current frame); None if none finished
    frame_number: int = 0
    #: a stack's frames that went through the network with the current one (batch_frames):
    #: their images of the last step, by frame index
    batch: dict[tuple[int, ...], np.ndarray] = field(default_factory=dict)
    pass_number: int = 0  # a time pass's number; 0: the frames' first styling


@dataclass(frozen=True)
class Failed:
    message: str
    step: int  # steps finished before the error
    image: np.ndarray | None  # the last step's image, if any
    details: str = ""  # the traceback, for the log
    frame_number: int = 0
    expected: bool = False  # a StyleTransferError (the user can fix it), not a bug


@dataclass(frozen=True)
class Warned:
    """The run raised a warning (e.g. ``weights="auto"`` going on untrained); each message
    comes once per run."""

    message: str


@dataclass(frozen=True)
class StoreOpened:
    """A full-resolution run opened (or reopened, to resume) its result store: the layer
    backed by it can be added now and fills in as tiles finish."""

    levels: tuple[Any, ...]  # the layer's pyramid: array-likes (y, x[, c]) (filling.PictureArray)
    path: str
    finished: int  # tiles of full resolution already finished (a resumed run)


@dataclass(frozen=True)
class TileDone:
    """A tile of a full-resolution run is written into its store (the composition and the
    levels below full size count as tiles too: they are jobs of the run)."""

    done: int  # tiles of this run finished
    total: int  # tiles this run has to do (a resumed run skips the finished ones)


@dataclass(frozen=True)
class StoreFinished:
    """Every tile of a full-resolution run is in its store."""

    path: str
    tiles: int  # tiles this run did (0: the store was finished already)
    seconds: float


@dataclass(frozen=True)
class StoreCancelled:
    """A full-resolution run stopped; its finished tiles are in the store, which a second
    run with the same settings resumes."""

    path: str
    done: int
    total: int


Update = (
    Downloading
    | RegionsSampled
    | Started
    | Progress
    | Snapshot
    | FrameDone
    | Finished
    | Cancelled
    | Failed
    | Warned
    | StoreOpened
    | TileDone
    | StoreFinished
    | StoreCancelled
)


#: The method of a receiver that handles each kind of update (see :func:`dispatch`).
HANDLERS = {
    Downloading: "on_downloading",
    RegionsSampled: "on_regions_sampled",
    Started: "on_started",
    Progress: "on_progress",
    Snapshot: "on_snapshot",
    FrameDone: "on_frame_done",
    Finished: "on_finished",
    Cancelled: "on_cancelled",
    Failed: "on_failed",
    Warned: "on_warned",
    StoreOpened: "on_store_opened",
    TileDone: "on_tile_done",
    StoreFinished: "on_store_finished",
    StoreCancelled: "on_store_cancelled",
}


def dispatch(receiver: object, update: Update) -> None:
    """Hand ``update`` to ``receiver``'s method for its kind (``on_progress`` for a
    :class:`Progress`), if it has one: how the widget and the layer writer take updates."""
    handler = getattr(receiver, HANDLERS[type(update)], None)
    if handler is not None:
        handler(update)


def style_transfer_updates(
    content: np.ndarray | LayerInput,
    style: np.ndarray | LayerInput | list[np.ndarray | LayerInput],
    options: dict[str, Any],
    cancel: threading.Event,
    style_regions: np.ndarray | RegionsPlan | None = None,
) -> Iterator[Update]:
    """Run the engine and describe what happens; stops within one step of ``cancel`` being set,
    and at once (:data:`CANCEL_CHECK_S`) before the first step: while the weights download,
    load or the network is built, with a ``Cancelled`` update of step 0 and no image.

    Layer inputs are copied or mapped in the worker thread's helper, and a :class:`RegionsPlan`
    sampled there (then a :class:`RegionsSampled` update says what it held). Warnings these two threads
    raise come as :class:`Warned` updates (before the update during which they were raised), each
    message once; other threads' warnings go where they would have gone. Never raises: an
    error while the engine shuts down is logged (and is a :class:`Failed` update when the run
    had not ended yet)."""
    caught = _ThisThreadsWarnings()
    updates = _engine_updates(content, style, options, cancel, style_regions, caught)
    ended = False
    with caught:
        try:
            while True:
                try:
                    update = next(updates)
                except StopIteration:
                    break
                except Exception as error:  # the engine's clean-up failed after its last update
                    log.error("style transfer: error while the run shut down", exc_info=True)
                    if not ended:
                        yield Failed(describe_error(error), 0, None, traceback.format_exc())
                    break
                yield from caught.updates()
                ended = isinstance(update, Finished | Cancelled | Failed)
                yield update
            yield from caught.updates()
        finally:
            close_logging_errors(updates, "the style-transfer run")


def close_logging_errors(generator: Iterator[Any], what: str) -> None:
    """Close ``generator``; an error while it closes (e.g. a sticky CUDA error in
    ``torch.cuda.empty_cache()``) is logged, not raised: the run is over either way."""
    try:
        generator.close()  # type: ignore[attr-defined]  # every caller's iterator is a generator
    except Exception:
        log.error("style transfer: closing %s failed", what, exc_info=True)


class _ThisThreadsWarnings:
    """Collects the warnings shown in the thread that enters it (and in its helpers, see
    :meth:`this_thread_too`), each message once; warnings of other threads go on to the
    ``showwarning`` that was there.

    ``warnings.catch_warnings`` would be no use: it swaps process-wide state, and superqt's
    worker already relays every thread's warnings while it runs (a GUI-thread deprecation
    warning, repeated hundreds of times, would become as many "Style transfer" notifications).
    """

    def __init__(self) -> None:
        self._threads: set[int] = set()
        self._previous = warnings.showwarning
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> _ThisThreadsWarnings:
        self._threads.add(threading.get_ident())
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        return self

    @contextmanager
    def this_thread_too(self) -> Iterator[None]:
        """Within, the warnings of the calling thread (a helper of the run's) are collected too."""
        thread = threading.get_ident()
        with self._lock:
            self._threads.add(thread)
        try:
            yield
        finally:
            with self._lock:  # an ended thread's id can be given to another thread
                self._threads.discard(thread)

    def __exit__(self, *_: Any) -> None:
        if warnings.showwarning == self._show:  # else someone replaced it since: leave theirs
            warnings.showwarning = self._previous

    def _show(
        self, message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:
        if threading.get_ident() not in self._threads:
            self._previous(message, category, filename, lineno, file, line)
            return
        text = str(message)
        with self._lock:
            if text not in self._seen:
                self._seen.add(text)
                self._pending.append(text)

    def updates(self) -> Iterator[Warned]:
        """The warnings caught since the last call."""
        with self._lock:
            pending, self._pending = self._pending, []
        for message in pending:
            yield Warned(message)


def _engine_updates(
    content: np.ndarray | LayerInput,
    style: np.ndarray | LayerInput | list[np.ndarray | LayerInput],
    options: dict[str, Any],
    cancel: threading.Event,
    style_regions: np.ndarray | RegionsPlan | None = None,
    caught: _ThisThreadsWarnings | None = None,
) -> Iterator[Update]:
    """The updates of one run (see :func:`style_transfer_updates`). ``caught`` collects the
    warnings of the threads that prepare the run too."""
    steps = _StepUpdates(cancel)
    niceness = lower_this_threads_priority()
    try:
        # torch is imported in a helper thread: in a fresh process that takes seconds, and a
        # cancel meanwhile must end the run at once
        if _InBackground(_import_engine, caught).wait(cancel) is None:
            yield Cancelled(0, None)
            return
        download = _WeightsDownload(options, cancel)
        for update in download:
            yield update
            if isinstance(update, Cancelled):
                return
        inputs = _RunInputs(content, style, style_regions)
        prepared = _InBackground(lambda: inputs.first_step(download.options), caught, drop=_close_steps).wait(
            cancel
        )
        if prepared is None:  # cancelled before the first step: the preparation's outcome is dropped
            yield Cancelled(0, None)
            return
        steps.records, first = prepared
        if inputs.regions_sampled is not None:
            yield inputs.regions_sampled
        yield from steps.updates(first)
    except Exception as error:  # any failure becomes a message for the user
        yield steps.failed(error)
    finally:
        if steps.records is not None:  # frees the network and its tensors now, GPU memory included
            close_logging_errors(steps.records, "the engine")
        restore_priority(niceness)


def _import_engine() -> ModuleType:
    """The run pipeline's module (importing it imports torch and the engine)."""
    finder = _LoadWithoutTheGIL(TORCH_EXTENSION)
    sys.meta_path.insert(0, finder)
    try:
        from .. import api
    finally:
        sys.meta_path.remove(finder)
    return api


#: The extension module that links torch's C++ libraries (over a GB with CUDA).
TORCH_EXTENSION = "torch._C"


class _LoadWithoutTheGIL(importlib.abc.MetaPathFinder):
    """Loads an extension module's shared library with the GIL released, just before the
    import system loads it again (finding it loaded) and initialises it with the GIL held.

    Python holds the GIL while it ``dlopen``s an extension; for torch._C that is a second or
    more of static initialisers in torch's libraries, and napari's thread, which needs the GIL
    for every event, stalled that long at the first Run. ``dlopen`` called through ctypes runs
    without the GIL. torch's own order is kept: its ``__init__`` loads its global dependencies
    (the CUDA libraries too) before it imports torch._C. Linux only; anything amiss leaves the
    import to do it all as usual."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname != self.name or sys.platform != "linux":
            return None
        try:
            import ctypes
            from importlib.machinery import EXTENSION_SUFFIXES, PathFinder

            spec = PathFinder.find_spec(fullname, path)
            if spec is None or spec.origin is None or not spec.origin.endswith(tuple(EXTENSION_SUFFIXES)):
                return None
            dlopen = ctypes.CDLL(None).dlopen  # a foreign function: ctypes releases the GIL
            dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
            dlopen(os.fsencode(spec.origin), sys.getdlopenflags())
        except (AttributeError, OSError, ValueError) as error:
            log.info("style transfer: %s is loaded with the GIL held: %s", fullname, error)
        return None  # the usual finders import it


def _close_steps(prepared: tuple[Iterator[Any], Any]) -> None:
    close_logging_errors(prepared[0], "a run cancelled while it prepared")


class _RunInputs:
    """A run's inputs as the GUI thread recorded them; :meth:`first_step` reads them (in the
    preparation thread), starts the engine and takes its first step."""

    def __init__(self, content: Any, style: Any, style_regions: Any):
        self.content, self.style, self.style_regions = content, style, style_regions
        self.regions_sampled: RegionsSampled | None = None

    def first_step(self, options: dict[str, Any]) -> tuple[Iterator[Any], Any]:
        from ..api import iter_stylize

        regions = self.style_regions
        if isinstance(regions, RegionsPlan):
            plan, regions = regions, regions.sample()
            present = tuple(int(label) for label in np.unique(regions))
            self.regions_sampled = RegionsSampled(plan.name, present, plan.per_frame)
        style = self.style
        if isinstance(style, list):
            style = [_engine_array(item) for item in style]
        steps = iter_stylize(
            _engine_array(self.content), _engine_array(style), style_regions=regions, **options
        )
        try:
            return steps, next(steps)  # the weights load, VGG19 is built, the first step runs
        except BaseException:
            close_logging_errors(steps, "the engine")
            raise


def _engine_array(source: Any) -> Any:
    return source.engine_array() if isinstance(source, LayerInput) else source


class _StepUpdates:
    """The engine's step records as updates; remembers the last one for a failure's report."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self.records: Iterator[Any] | None = None
        self.last: Any = None

    def updates(self, first: Any) -> Iterator[Update]:
        from ..api import StyleResult

        assert self.records is not None
        first_step_at = None
        for item in itertools.chain((first,), self.records):
            if isinstance(item, StyleResult):
                yield Finished(item)
                return
            if first_step_at is None:
                first_step_at = item.seconds
                yield Started(item.device, item.weights)
            self.last = item
            yield _progress(item, first_step_at)
            # The last step's image arrives as the result: a snapshot of it would be a twin layer.
            if item.frames == 1 and item.is_snapshot and item.step < item.steps:
                yield Snapshot(item.step, item.image)
            if item.frames > 1 and item.step == item.steps:
                yield FrameDone(item.frame, item.frame_number, item.frames, item.image)
            if self.cancel.is_set():
                close_logging_errors(self.records, "the engine")
                batch = item.batch_images() if item.frames > 1 else {}
                yield Cancelled(item.step, item.render(), item.frame_number, batch, item.pass_number)
                return

    def failed(self, error: Exception) -> Failed:
        from ..errors import StyleTransferError

        last = self.last
        return Failed(
            describe_error(error),
            last.step if last else 0,
            _image_if_possible(last),
            traceback.format_exc(),
            last.frame_number if last else 0,
            expected=isinstance(error, StyleTransferError),
        )


def _progress(item: Any, first_step_at: float) -> Progress:
    done = item.steps_before + item.step
    elapsed = item.seconds - first_step_at
    rate = (done - 1) / elapsed if done > 1 and elapsed > 0 else 0.0
    losses = item.losses
    return Progress(
        item.step,
        item.steps,
        losses.total,
        losses.content,
        losses.style,
        rate,
        item,
        item.frame_number,
        item.frames,
        item.pass_number,
    )


@dataclass(frozen=True)
class ClusterResult:
    """A whole stack styled on a dask cluster, as the widget and the layer writer read a
    StyleResult (the losses are the last frame's)."""

    image: np.ndarray
    frames: int
    steps_done: int
    seconds: float
    losses: Any
    device: str
    weights: str
    frame_metadata: dict[str, Any]
    frame_steps: tuple[
        int, ...
    ] = ()  # as StyleResult's; a cluster's frames are independent, so each took steps_done

    def metadata(self) -> dict[str, Any]:
        return {
            **self.frame_metadata,
            "frames": self.frames,
            "seconds": round(self.seconds, 3),
            "device": self.device,
        }


@dataclass(frozen=True)
class _FrameRecord:
    """What the layer writer reads of a step record, for a frame that came back whole."""

    step: int
    frame: tuple[int, ...]
    frame_number: int
    steps_before: int  # steps of the frames that came back before this one
    run_steps: int

    def kept_image(self) -> None:
        return None  # the frame is in the stack layer already


def cluster_frame_updates(
    content: np.ndarray | LayerInput,
    style: np.ndarray | LayerInput,
    options: dict[str, Any],
    cancel: threading.Event,
    scheduler: str,
) -> Iterator[Update]:
    """A whole stack's frames (independent) on the dask cluster at ``scheduler``: a
    :class:`FrameDone` per frame as it comes back, in any order. A cancel ends the run at
    once, while it connects or waits for a frame too: the frames back are kept, those not
    back are cancelled on the cluster (by :class:`_ClusterFrames`'s thread, unseen). Closing
    the updates early (``worker.quit()``, an error on the worker's side) stops that thread
    likewise. Never raises: errors are :class:`Failed` updates."""
    import time

    from ..pipeline.sinks import NumpySink

    started = time.perf_counter()
    done = 0
    returned = None
    try:
        returned = _ClusterFrames(content, style, options, scheduler)
        first = returned.next(cancel)
        if first is None:
            yield Cancelled(0, None)
            return
        stack_shape, count = first
        device = f"dask cluster {scheduler}"
        stack: NumpySink | None = None
        last = None
        while done < count:
            got = returned.next(cancel)
            if got is None:  # cancelled while waiting for a frame
                break
            index, result = got
            image = result.image[()]
            if stack is None:
                stack = NumpySink(stack_shape)
                yield Started(device, result.weights)
            stack.take(index, image)
            last = result
            yield _cluster_progress(result, index, done, count, time.perf_counter() - started)
            yield FrameDone(index, done, count, image)
            done += 1
            if cancel.is_set():
                break
        if done < count:  # cancelled: the frames back are in the stack layer already
            yield Cancelled(last.steps if last is not None else 0, None, max(done - 1, 0))
            return
        assert last is not None and stack is not None
        seconds = time.perf_counter() - started
        yield Finished(
            ClusterResult(
                stack.result,
                count,
                last.steps_done,
                seconds,
                last.losses,
                device,
                last.weights,
                last.metadata(),
            )
        )
    except Exception as error:  # any failure becomes a message for the user
        from ..errors import StyleTransferError

        yield Failed(
            describe_error(error),
            0,
            None,
            traceback.format_exc(),
            done,
            expected=isinstance(error, StyleTransferError),
        )
    finally:
        # however the updates end (finished, cancelled, failed, closed unread), the thread
        # stops: no frame is left running on the cluster for nobody, the client is closed
        if returned is not None:
            returned.stop()


def _cluster_progress(result: Any, index: tuple[int, ...], done: int, count: int, elapsed: float) -> Progress:
    """The progress of a cluster run when its ``done + 1``-th frame of ``count`` came back."""
    record = _FrameRecord(result.steps, index, done, done * result.steps, count * result.steps)
    losses = result.losses
    # the cluster's rate so far, its start included: frames come back whole, not step by step
    rate = (done + 1) * result.steps / elapsed if elapsed > 0 else 0.0
    return Progress(
        result.steps, result.steps, losses.total, losses.content, losses.style, rate, record, done, count
    )


_END = object()


class _ClusterFrames:
    """Everything dask of a cluster run, in a thread of its own: read the inputs, connect
    (up to ``distributed.CONNECT_TIMEOUT``), submit the frames, hand over what comes back. The
    worker thread only waits for the next item or the cancel, whichever comes first; after a
    cancel or :meth:`stop` this thread stops within ``distributed.STOP_CHECK_S`` (or once
    ``connect`` returns), reads and submits no more frames, cancels those left and closes the
    client, unseen (an error it meets then is logged, not raised)."""

    def __init__(self, content: Any, style: Any, options: dict[str, Any], scheduler: str):
        import queue

        self._items: queue.Queue = queue.Queue()
        self._stop = threading.Event()  # its own: the user's cancel is not the only reason to stop
        self._scheduler = scheduler
        thread = threading.Thread(
            target=self._run,
            args=(content, style, options, scheduler),
            name="style transfer: cluster",
            daemon=True,
        )
        thread.start()

    def _run(self, content: Any, style: Any, options: dict[str, Any], scheduler: str) -> None:
        lower_this_threads_priority()  # the thread ends here: nothing to restore
        try:
            from .._image import describe_image, frame_count
            from ..distributed import connect, iter_frames  # dask is imported here, off the GUI thread

            if isinstance(content, LayerInput):
                content = content.engine_array()
            if isinstance(style, LayerInput):
                style = style.engine_array()
            stack_shape = describe_image(content, "content").stack_shape
            if self._stop.is_set():
                return
            client = connect(scheduler)
            try:
                if self._stop.is_set():  # stopped while it connected: read and upload nothing
                    return
                frames = iter_frames(client, content, style, stop=self._stop, **options)
                self._items.put((stack_shape, frame_count(stack_shape)))
                try:
                    for item in frames:
                        self._items.put(item)
                finally:
                    close_logging_errors(frames, "the cluster's frames")  # cancels the frames not back
            finally:
                client.close()
        except BaseException as error:  # handed to the worker thread, which reports it
            if self._stop.is_set():
                log.info("style transfer: a stopped cluster run then failed: %s", describe_error(error))
            self._items.put(error)
        finally:
            self._items.put(_END)

    def stop(self) -> None:
        """Stop the thread (cancel the frames not back, close the client) without waiting for it."""
        self._stop.set()

    def next(self, cancel: threading.Event) -> Any:
        """The next item, or None when ``cancel`` comes first (which stops the thread); raises
        what the thread raised, as a :class:`StyleTransferError` if it was no ``Exception``."""
        import queue

        from ..errors import StyleTransferError

        while True:
            try:
                item = self._items.get(timeout=CANCEL_CHECK_S)
                break
            except queue.Empty:
                if cancel.is_set():
                    self.stop()
                    return None
        if cancel.is_set():
            self.stop()
            if item is _END or isinstance(item, BaseException):
                return None  # the thread stopped for the cancel (and logged what it met then)
        if isinstance(item, Exception):
            raise item
        if isinstance(item, BaseException):  # KeyboardInterrupt, asyncio's CancelledError: a Failed, too
            raise StyleTransferError(
                f"the cluster run at {self._scheduler} was interrupted ({item!r}); check that the "
                "scheduler and its workers still run (the dask dashboard shows them), then run again"
            ) from item
        if item is _END:
            raise StyleTransferError(
                f"the cluster run at {self._scheduler} ended before all its frames came back; check that the "
                "scheduler and its workers still run (the dask dashboard shows them), then run again"
            )
        return item


#: Seconds between two looks at the cancel flag while a run prepares (a cancel ends it within this).
CANCEL_CHECK_S = 0.05
#: The name of the threads that prepare a run (see :class:`_InBackground`).
LOADING_THREAD = "style transfer: loading"
T = TypeVar("T")


class _InBackground(Generic[T]):
    """Runs ``prepare`` (import torch; read the inputs, load the weights, build VGG19, take
    the first step) in a thread of its own, so that a cancel meanwhile ends the run at once:
    an import, reading a weights file or building the network cannot be interrupted, so the
    thread goes on unseen, and then hands what it made to ``drop`` (an error it meets then is
    logged, not raised). Its warnings go to ``caught``, its priority is lowered as the
    worker's is.

    The thread is no daemon: Python's exit waits for it. A daemon thread still inside torch
    while the interpreter shuts down aborts the process ("terminate called without an
    active exception"), as napari did on quit after a run cancelled while it loaded."""

    def __init__(
        self,
        prepare: Callable[[], T],
        caught: _ThisThreadsWarnings | None,
        drop: Callable[[T], None] | None = None,
    ):
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._outcome: T | BaseException | None = None
        self._dropped = False
        self._drop = drop
        # daemon=False said: a new thread inherits the daemon flag of the one that makes it,
        # and Qt's pool threads count as daemon threads in Python
        thread = threading.Thread(
            target=self._prepare, args=(prepare, caught), name=LOADING_THREAD, daemon=False
        )
        thread.start()

    def _prepare(self, prepare: Callable[[], T], caught: _ThisThreadsWarnings | None) -> None:
        lower_this_threads_priority()  # the thread ends here: nothing to restore
        with caught.this_thread_too() if caught is not None else nullcontext():
            try:
                outcome: T | BaseException = prepare()
            except BaseException as error:  # handed to the worker thread, which reports it
                outcome = error
        with self._lock:
            dropped = self._dropped
            if not dropped:
                self._outcome = outcome
                self._ready.set()
        if not dropped:
            return
        if isinstance(outcome, BaseException):
            log.info(
                "style transfer: a run cancelled while it prepared then failed: %s", describe_error(outcome)
            )
        elif self._drop is not None:
            self._drop(outcome)

    def wait(self, cancel: threading.Event) -> T | None:
        """What ``prepare`` returned (never None), or None when ``cancel`` came first; raises
        what it raised."""
        while not self._ready.wait(CANCEL_CHECK_S):
            if cancel.is_set():
                with self._lock:
                    if not self._ready.is_set():
                        self._dropped = True
                        return None
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome


#: Bytes between two :class:`Downloading` updates (the cancel is checked far more often).
DOWNLOAD_REPORT_BYTES = 1 << 20


class _WeightsDownload:
    """Download the ImageNet weights before the run if they are needed and not cached, as
    :class:`Downloading` updates (one a MB); a cancel stops it within one read. ``options`` is
    the run's options afterwards: with ``weights="auto"`` and no download, untrained weights
    (with the usual warning), so that the run does not try again."""

    def __init__(self, options: dict[str, Any], cancel: threading.Event):
        self.options = options
        self.cancel = cancel

    def __iter__(self) -> Iterator[Downloading | Cancelled]:
        from ..errors import WeightsError
        from ..options import StyleOptions
        from ..weights import download_imagenet, imagenet_download_needed, warn_random_fallback

        weights = StyleOptions.from_kwargs(self.options).weights
        if not imagenet_download_needed(weights):
            return
        chunks = download_imagenet()
        reported = done = 0
        try:
            for done, total in chunks:
                if self.cancel.is_set():
                    close_logging_errors(chunks, "the weights download")  # removes the partial file
                    yield Cancelled(0, None)
                    return
                if done - reported >= DOWNLOAD_REPORT_BYTES or done == total:
                    reported = done
                    yield Downloading(done, total)
        except WeightsError as error:
            if self.cancel.is_set():  # cancelled while the connection hung: not a failure
                yield Cancelled(0, None)
                return
            if weights == "imagenet":
                raise
            warn_random_fallback(error)
            self.options = {**self.options, "weights": "random"}
            return
        if reported != done:  # the server gave no size: say that it is complete
            yield Downloading(done, done)


#: Niceness of the worker thread (Linux). Its torch threads inherit it, so the GUI thread
#: wins the CPU when both want it: with the default, adding a snapshot layer during a run on
#: 2 cores stalled napari's event loop for up to 123 ms; at 10, for 53 ms.
WORKER_NICENESS = 10


def lower_this_threads_priority() -> tuple[int, int] | None:
    """Let napari's GUI thread win over the style-transfer threads (Linux only; elsewhere
    a thread's priority is the process's). Returns (thread id, niceness before), or None."""
    if sys.platform != "linux":
        return None
    thread = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, WORKER_NICENESS)
    except OSError as error:  # not permitted in some sandboxes: run at normal priority
        log.info("could not lower the worker thread's priority: %s", error)
        return None
    return thread, before


def restore_priority(saved: tuple[int, int] | None) -> None:
    """Give the pooled thread its priority back. Raising a priority needs CAP_SYS_NICE or a
    permissive RLIMIT_NICE; without them the thread stays lower, which only slows later
    background work on it. (This can run on another thread: the id says which.)"""
    if saved is None:
        return
    thread, niceness = saved
    try:
        os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError as error:
        log.info("could not restore the worker thread's priority: %s", error)


def last_image(record: Any) -> np.ndarray | None:
    """The image of the last reported step (a StepRecord, or None), if it can still be had."""
    return None if record is None else record.kept_image()


def _image_if_possible(record: Any) -> np.ndarray | None:
    """The last step's image for a failed run, or None when even that fails (after a CUDA
    error, reading the image back can fail too)."""
    try:
        return last_image(record)
    except Exception:
        log.error("style transfer: the last step's image could not be kept", exc_info=True)
        return None


def describe_error(error: BaseException) -> str:
    """What went wrong, for the status and notifications: a StyleTransferError's own message, else the kind and message."""
    from ..errors import StyleTransferError

    if isinstance(error, StyleTransferError):
        return str(error)
    return f"{type(error).__name__}: {error}"
