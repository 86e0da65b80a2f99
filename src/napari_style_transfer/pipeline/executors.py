"""Where jobs run elsewhere: each job as a task on a ``concurrent.futures.Executor``
(:func:`run_on`), such as a thread or process pool or a dask cluster's
``client.get_executor()``, and what a worker process prepares before its first task.
Nothing here imports dask. (In this thread, jobs go batch by batch through
:meth:`.optimise.Optimiser.run_jobs`.)"""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K")

#: What a worker process reads to size torch's thread pool (set by the cluster's worker setup).
THREADS_VARIABLE = "NAPARI_STYLE_TRANSFER_TORCH_THREADS"

#: Seconds between two looks at :func:`run_on`'s ``stopped`` while no task has come back.
STOP_CHECK_S = 0.05


def run_on(
    executor: Executor,
    task: Callable[..., T],
    jobs: Iterable[tuple[K, tuple[Any, ...]]],
    stopped: Callable[[], bool] = lambda: False,
    failed: Callable[[K, BaseException], None] | None = None,
) -> Iterator[tuple[K, T]]:
    """``task(*arguments)`` of each (key, arguments) of ``jobs`` on ``executor``; yields
    (key, what the task returned) as each comes back, in any order. Once ``stopped()`` the
    iteration ends within STOP_CHECK_S seconds and submits no more; whatever ends it cancels
    the tasks not back. ``failed``: given (key, error) of each task that raised, while the
    others go on (default: the first error ends the iteration)."""
    futures: dict[Future[T], K] = {}
    waiting = iter(jobs)
    try:
        while not stopped():
            job = next(waiting, None)  # read only now: a stop during submission reads no more
            if job is None:
                break
            futures[executor.submit(task, *job[1])] = job[0]
        pending = set(futures)
        while pending and not stopped():
            done, pending = wait(pending, timeout=STOP_CHECK_S, return_when=FIRST_COMPLETED)
            for future in done:
                error = None if failed is None else future.exception()
                if failed is not None and error is not None:
                    failed(futures[future], error)
                    continue
                yield futures[future], future.result()
    finally:
        for future in futures:
            future.cancel()


def _itself(value: T) -> T:
    return value


@dataclass(frozen=True)
class Elsewhere:
    """Where a run's tasks go: an ``executor``, and ``share``, which turns a value that many
    tasks take into what travels in their place (a dask client's task that holds it, sent
    once; elsewhere the value itself)."""

    executor: Executor
    share: Callable[[Any], Any] = field(default=_itself)


def elsewhere(client: Any, retries: int = 0) -> Elsewhere:
    """``client`` as :class:`Elsewhere`: a dask client's executor, each task tried up to
    ``retries`` more times where it raises, and its shared values as tasks of their own (a
    new worker computes one again where its holder died, which scattered data could not);
    any other ``concurrent.futures.Executor`` as it is."""
    if not hasattr(client, "get_executor"):
        return Elsewhere(client)
    executor = client.get_executor(pure=False, **({"retries": retries} if retries else {}))
    return Elsewhere(executor, functools.partial(client.submit, _itself, pure=False))


_PREPARED = False


def prepare_worker_process() -> None:
    """Once per worker process, before its first task: torch's threads (from
    THREADS_VARIABLE) and, in a worker process of its own, weights that load once."""
    global _PREPARED
    if _PREPARED:
        return
    import torch

    threads = os.environ.get(THREADS_VARIABLE)
    if threads:
        torch.set_num_threads(int(threads))
    # Only in a worker process of its own (a nanny's or a pool's child): a worker that shares
    # the caller's process leaves that process's own runs as they were.
    if multiprocessing.parent_process() is not None:
        from ..weights import keep_weights_for_good

        keep_weights_for_good()
    _PREPARED = True
