"""Runs on a ``dask.distributed`` cluster: a batch's items, or a stack's independent frames.

The only module that imports dask; nothing imports it at the top level, so the package, the
command line and napari start without it. Workers need this package installed and must see
the input files (a shared file system); results come back to the client, which writes them.
"""

from __future__ import annotations

import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

try:
    import dask
    from distributed import Client, LocalCluster, as_completed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as error:  # an install without the extra (the API, the CLI, napari alone)
    raise ImportError(
        "runs on a dask cluster need dask's distributed, which is not installed: "
        "pip install 'napari-style-transfer[distributed]'"
    ) from error

from . import memory
from .batch import Batch, Outcome, run_item
from .errors import StyleTransferError
from .pipeline.executors import STOP_CHECK_S, THREADS_VARIABLE, prepare_worker_process
from .pipeline.runner import FrameOfStack, check_frames_spread, run_frame
from .pipeline.sinks import NumpySink

#: Seconds to reach a scheduler (and, on a running cluster, to see its first worker) before
#: saying it cannot be reached: an unreachable address must fail fast, never hang.
CONNECT_TIMEOUT = 10.0

#: Times a task may lose its worker (killed, out of memory) and be started again on another
#: before it is recorded as failed: dask's own allowed-failures, set for clusters started here.
ALLOWED_FAILURES = 3

#: What a worker process reads to size torch's thread pool (set by :class:`WorkerSetup`).
_THREADS_VARIABLE = THREADS_VARIABLE


def default_workers() -> int:
    """One worker per CUDA GPU, else one."""
    import torch

    return max(1, torch.cuda.device_count())


class WorkerSetup(WorkerPlugin):
    """Prepares each worker process before its first task: pins it to one GPU (when the
    cluster was started here with ``gpus``), and sizes torch's threads so that the workers of
    one machine share its CPUs instead of each taking all of them."""

    name = "napari-style-transfer"

    def __init__(self, gpus: int = 0, workers_here: int = 1, torch_threads: int | None = None):
        self.gpus = gpus
        self.workers_here = workers_here
        self.torch_threads = torch_threads

    def setup(self, worker: Any) -> None:
        # Before torch first touches CUDA in this process, which reads the variable once.
        if self.gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(_worker_number(worker.name) % self.gpus)
        threads = self.torch_threads or max(
            1, memory.usable_cpus() // max(1, self.workers_here * worker.state.nthreads)
        )
        os.environ[_THREADS_VARIABLE] = str(threads)


def _worker_number(name: Any) -> int:
    try:
        return int(name)
    except (TypeError, ValueError):
        return sum(str(name).encode())


#: Once per worker process, before its first task (the pipeline's, which dask does not know).
_prepare_process = prepare_worker_process


@contextmanager
def cluster_client(
    workers: int | None = None,
    scheduler: str | None = None,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    dashboard_address: str | None = None,
    torch_threads: int | None = None,
) -> Iterator[Client]:
    """A client of a running cluster (``scheduler``: its address, or a scheduler file), or of
    a ``LocalCluster`` of ``workers`` processes started here (default: one per CUDA GPU,
    each pinned to its GPU, else one) and closed on leaving. Raises
    :class:`StyleTransferError` when the scheduler cannot be reached within
    ``connect_timeout`` seconds or has no workers. ``torch_threads``: each worker's torch
    threads (default: the machine's CPUs shared out among the workers).
    ``dashboard_address``: serve dask's dashboard there, such as ``"127.0.0.1:8787"`` (a port
    alone, ``":8787"``, means this machine only); None (default) serves none. Everything a
    cluster started here listens on is bound to 127.0.0.1 unless the address names a host."""
    if scheduler is not None and workers is not None:
        raise StyleTransferError(
            "give either workers (a cluster started here) or a scheduler address, not both"
        )
    if scheduler is not None:
        client = connect(scheduler, connect_timeout)
        try:
            yield client
        finally:
            client.close()
        return
    if workers is not None and workers < 1:
        raise StyleTransferError(f"workers must be at least 1, got {workers}")
    import torch

    gpus = torch.cuda.device_count()
    count = workers or max(1, gpus)
    # dask's nanny makes glibc hand freed memory back to the OS at once (MALLOC_TRIM_THRESHOLD_),
    # which helps dataframes but makes torch fault its large buffers in again every step: one
    # measurement on the loaded 2-core test machine, 64 px, 2 steps: 4.8 s an item with it, 3.5 s
    # without.
    environ = {
        name: value
        for name, value in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
        if name != "MALLOC_TRIM_THRESHOLD_"
    }
    settings = {
        "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
        # A worker holds only the task it runs, none waiting: a task that kills its worker
        # (out of memory) then takes no other item with it (each task on a dying worker counts
        # one of its allowed failures), and an item waits for whichever worker frees up first.
        "distributed.scheduler.worker-saturation": 1.0,
        "distributed.nanny.pre-spawn-environ": environ,
    }
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=count,
            threads_per_worker=1,  # a task keeps its worker's CPUs (torch's threads) or GPU busy
            processes=True,
            dashboard_address=dashboard_address,
            # dask binds a port alone to every interface; and its scheduler serves its info pages
            # (logs, exceptions naming input files) even without a dashboard: both here only
            scheduler_kwargs={"dashboard_address": _on_this_machine(dashboard_address or ":0")},
        )
    try:
        # Not dask's default client: that would send every dask array computed in this process
        # (a lazy layer's tiles) to the cluster, and a client closed out of order leaves dask's
        # scheduler set to a cluster that is gone ("no Client active", seen in CI).
        client = Client(cluster, timeout=connect_timeout, set_as_default=False)
        try:
            client.register_plugin(WorkerSetup(gpus=gpus, workers_here=count, torch_threads=torch_threads))
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _on_this_machine(address: str) -> str:
    """An address of a port alone (":8787", "8787") bound to this machine's loopback."""
    return f"127.0.0.1:{address.lstrip(':')}" if address.lstrip(":").isdigit() else address


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Client:
    """A client of the scheduler at ``address`` (``tcp://host:port``, or a scheduler file
    written by ``dask scheduler --scheduler-file``), with at least one worker."""
    where = {"scheduler_file": address} if os.path.isfile(address) else {"address": address}
    try:
        client = Client(**where, timeout=timeout, set_as_default=False)  # see cluster_client
    except (OSError, TimeoutError, ValueError) as error:
        raise StyleTransferError(
            f"cannot reach the dask scheduler at {address} within {timeout:g} s ({_first_line(error)}); "
            "check the address (tcp://HOST:PORT, as `dask scheduler` prints it) and that the scheduler runs"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        client.close()
        raise StyleTransferError(
            f"the dask scheduler at {address} has no workers after {timeout:g} s; start one with "
            f"`dask worker {address}`"
        ) from None
    _register_setup(client)
    return client


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _register_setup(client: Client) -> None:
    """Size the torch threads of a running cluster's workers by how many share a machine."""
    hosts: dict[str, int] = {}
    for info in client.scheduler_info()["workers"].values():
        hosts[info["host"]] = hosts.get(info["host"], 0) + 1
    client.register_plugin(WorkerSetup(workers_here=max(hosts.values(), default=1)))


def dashboard(client: Client) -> str | None:
    """The dask dashboard's address, or None when the scheduler serves none (a cluster started
    here without ``dashboard_address``, or a scheduler without the service)."""
    started_here = getattr(client.cluster, "scheduler_spec", None)
    if started_here is not None and not started_here["options"].get("dashboard"):
        return None  # its HTTP server answers, with info pages only
    try:
        services = client.scheduler_info().get("services", {})
        return client.dashboard_link if "dashboard" in services else None
    except (KeyError, AttributeError):
        return None


def _run_task(item: Any, style: np.ndarray, options: dict[str, Any]) -> tuple[Outcome, list[Any]]:
    """Run one item; its warnings come back with the outcome (message, category), so that the
    client shows them in its own words, not as the worker's raw lines on stderr."""
    _prepare_process()
    with warnings.catch_warnings(record=True) as caught:  # workers run one task at a time
        warnings.simplefilter("always")
        outcome = run_item(item, style, options)
    return outcome, [(str(warning.message), warning.category) for warning in caught]


def _keep(value: Any) -> Any:
    return value


def run_batch(
    client: Client, batch: Batch, todo: list[int], say: Callable[[str], None] | None = None
) -> Iterator[tuple[int, Outcome]]:
    """Run the items ``todo`` of ``batch`` on the cluster; yield (item index, outcome) as each
    finishes, in any order. A task whose worker dies is started again on another (dask's
    allowed-failures); one that keeps killing its worker comes back as failed."""
    if not todo:
        return
    link = dashboard(client)
    if say is not None and link:
        say(f"dask dashboard: {link}")
    run = uuid.uuid4().hex[:8]
    # Each style travels once, as a task of its own that a new worker can compute again
    # (scattered data would be lost with the worker that held it).
    styles = [
        client.submit(_keep, style, key=f"style-{number}-{run}", pure=False)
        for number, style in enumerate(batch.styles)
    ]
    futures = {}
    for index in todo:
        item = batch.items[index]
        future = client.submit(
            _run_task, item, styles[item.style_index], batch.options, key=f"stylize-{index}-{run}", pure=False
        )
        futures[future] = index
    try:
        for future, value in as_completed(futures, loop=client.loop, with_results=True, raise_errors=False):
            index = futures.pop(future)
            # Judged by what came back, not by the future's status: a worker that dies after
            # handing a result over marks it lost (and the scheduler would compute it again).
            returned = _returned(value)
            if returned is None:
                failure = _failed(future, value)
                future.release()  # nothing more is wanted of it: a lost result is not computed again
                yield index, failure
                continue
            future.release()
            outcome, caught = returned
            for message, category in caught:  # shown once each, by the client's filters
                warnings.warn(message, category, stacklevel=2)
            yield index, outcome
    finally:
        client.cancel([*futures, *styles])


def _returned(value: Any) -> tuple[Outcome, list[Any]] | None:
    """What :func:`_run_task` returned, or None when ``as_completed`` yielded a failure in its
    place."""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], Outcome):
        return value
    return None


def _failed(future: Any, value: Any) -> Outcome:
    """The outcome of a task that gave no result. What ``as_completed`` yields in place of a
    failed task's result is not documented: distributed 2026.8 yields a (type, exception,
    traceback) tuple for an error and the CancelledError for a cancelled task."""
    error = (
        next((part for part in value if isinstance(part, BaseException)), None)
        if isinstance(value, tuple)
        else None
    )
    if error is None and future.status == "error":
        error = future.exception()
    if error is not None:
        message = _task_failure(error)
    else:
        message = "its task was cancelled on the cluster (the scheduler restarted?); run the batch again to finish it"
    return Outcome(None, {}, "", 0.0, error=message)


def _task_failure(error: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(error, KilledWorker):
        deaths = getattr(error, "allowed_failures", ALLOWED_FAILURES) + 1
        return (
            f"its worker died {_times(deaths)} running it (out of memory, or a crash); "
            "try a smaller size, or run it alone"
        )
    # Not the package's own error (run_item returns those): a bug, or a worker without the package.
    return f"{type(error).__name__}: {_first_line(error)}"


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def iter_frames(
    client: Client, content: Any, style: Any, *, stop: threading.Event | None = None, **options: Any
) -> Iterator[tuple[tuple[int, ...], Any]]:
    """Style a stack's frames (``frames="independent"``) each as a task on the cluster;
    yield (frame index, the frame's StyleResult) as they come back, in any order. Each
    frame's image is what the single-process run of the whole stack gives for it with the
    same seed. ``stop``: once set, the iteration ends within ``STOP_CHECK_S`` seconds even
    while no frame comes back, and no further frame is read or submitted; the frames not yet
    returned are cancelled on the cluster."""
    described, style_in, options = check_frames_spread(content, style, options)
    run = uuid.uuid4().hex[:8]
    stopped = stop.is_set if stop is not None else (lambda: False)
    futures: dict[Any, tuple[int, ...]] = {}
    styles: list[Any] = []
    # From the first submission on, whatever ends the iteration (a stop, an error reading a
    # frame, the caller closing it) cancels every task submitted.
    try:
        if stopped():
            return
        styles.append(client.submit(_keep, np.asarray(style_in.data), key=f"style-{run}", pure=False))
        for number, index in enumerate(described.frames()):
            if stopped():  # before reading the frame: a stop during submission uploads no more
                return
            frame = FrameOfStack(described, index)
            future = client.submit(
                run_frame, frame, styles[0], options, key=f"frame-{number}-{run}", pure=False
            )
            futures[future] = index
        returned = as_completed(futures, loop=client.loop, with_results=True)
        while not returned.is_empty():
            if stop is not None:
                while not returned.has_ready():
                    if stop.wait(STOP_CHECK_S):
                        return
            future, image = next(returned)
            yield futures[future], image
    finally:
        if styles:
            client.cancel([*futures, *styles])


def stylize_on_cluster(client: Client, content: Any, style: Any, **options: Any) -> np.ndarray:
    """:func:`~napari_style_transfer.api.stylize` with the frames spread over ``client``'s workers."""
    sink = NumpySink(check_frames_spread(content, style, options)[0].stack_shape)
    for index, frame in iter_frames(client, content, style, **options):
        sink.take(index, frame.image[()])
    return sink.result
