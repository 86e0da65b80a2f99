"""A run end to end: plan -> planner's jobs -> executor -> sink, and the result.

:func:`run` styles a plan in this process; :func:`run_frames_on` spreads a stack's
independent frames over a ``concurrent.futures.Executor``, each frame a run of its own
(:func:`run_frame`) that gives what this process would give for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .._image import ImageInput, describe_image
from .._torch_compat import hide_triton
from ..errors import OutOfMemoryError, StyleTransferError
from ..options import StyleOptions

hide_triton()

import torch  # noqa: E402

from ..engine import Losses, channels_last_used, compute_dtype, precision_used, with_backend_flags  # noqa: E402
from ..speed_probe import with_threads  # noqa: E402
from .executors import prepare_worker_process, run_on  # noqa: E402
from .jobs import IndependentFrames, Planner  # noqa: E402
from .memory_checks import frames_per_batch  # noqa: E402
from .optimise import Optimiser, load_model  # noqa: E402
from .plan import Plan, plan  # noqa: E402
from .reader import read_styles  # noqa: E402
from .records import Progress, StepRecord, StyleResult  # noqa: E402
from .sinks import NumpySink, Sink  # noqa: E402
from .time_passes import TimePasses  # noqa: E402
from .time_series import TimeChains  # noqa: E402

#: torch.OutOfMemoryError since torch 2.5; the CUDA-only name before.
_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

#: What torch's allocators say when they fail outside CUDA's OutOfMemoryError: the CPU's
#: "DefaultCPUAllocator: can't allocate memory" (Linux, macOS) or "not enough memory"
#: (Windows), and MPS's "MPS backend out of memory".
_ALLOCATION_FAILURES = ("can't allocate memory", "not enough memory", "out of memory")


def planner_for(p: Plan) -> Planner:
    """Independent frames (a 2D image is one), or for ``frames="time"`` time chains (one
    forward pass) or, with ``time_passes``, each frame alone and then passes both ways."""
    if p.options.frames != "time":
        return IndependentFrames(p)
    return TimePasses(p) if p.options.time_passes else TimeChains(p)


def run(p: Plan, sink: Sink | None = None) -> Iterator[StepRecord | StyleResult]:
    """The records of a run of ``p`` in this thread, then its result. Finished frames go to
    ``sink`` (default: a :class:`NumpySink`, whose array is the result's image); running out
    of memory is an :class:`OutOfMemoryError` that says which size would fit."""
    return with_backend_flags(with_threads(_run(p, sink), p.options.threads), p.options, p.device)


def _run(p: Plan, sink: Sink | None) -> Iterator[StepRecord | StyleResult]:
    started = time.perf_counter()
    planner = planner_for(p)
    jobs = planner.jobs()
    frames = len({job.index for job in jobs})  # a frame styled again in time passes counts once
    reader = planner.reader()  # a time series' frames are read from now on, while the weights load
    try:
        with memory_errors(p):
            model = load_model(p)
            progress = Progress(
                started,
                str(p.device),
                model.weights.description,
                frames,
                sum(job.steps for job in jobs),
                p.options.snapshot_every,
            )
            optimiser = Optimiser(p, model, read_styles(p), progress)
            # independent frames go through the network batch by batch, chosen now (with the
            # weights loaded) from the memory free now
            batch = frames_per_batch(
                p.content, p.content_shape, p.largest_style, p.options, p.device, p.regions is not None
            )
            results = NumpySink(p.content.stack_shape) if sink is None else sink
            yield from optimiser.run_jobs(jobs, planner, reader, results, batch)
            losses = optimiser.final_losses()
    finally:
        reader.close()
        # the run has finished or was closed: its tensors are gone, give the memory back
        if p.device.type == "cuda":
            torch.cuda.empty_cache()
    yield _result(p, results.result, losses, progress, model.weights.kind, started, frames)


@contextmanager
def memory_errors(p: Plan) -> Iterator[None]:
    """Running out of memory inside, as an :class:`OutOfMemoryError` that says what fits."""
    try:
        yield
    except (_OUT_OF_MEMORY, MemoryError) as error:  # MemoryError: numpy's allocations
        raise _ran_out_of_memory(p) from error
    except RuntimeError as error:
        if not any(words in str(error).lower() for words in _ALLOCATION_FAILURES):
            raise
        raise _ran_out_of_memory(p) from error


def _result(
    p: Plan, image: Any, losses: Losses, progress: Progress, weights_kind: str, started: float, frames: int
) -> StyleResult:
    opts = p.options
    return StyleResult(
        image=image,
        losses=losses,
        steps_done=opts.steps,
        steps=opts.steps,
        seconds=time.perf_counter() - started,
        device=str(p.device),
        weights=progress.weights,
        weights_kind=weights_kind,
        options=opts,
        content_scale=p.scale,
        value_scaling=p.content.scaling,
        frames=frames,
        schedule=tuple(max(level.content_shape) for level in p.levels),
        frame_steps=tuple(progress.frame_steps),
        styles=len(p.styles),
        regions=None if p.regions is None else p.regions.described(),
        precision=precision_used(opts.precision, p.device),
        channels_last=channels_last_used(
            opts.channels_last, p.device, compute_dtype(opts.precision, p.device)
        ),
        threads=torch.get_num_threads(),  # what threads=0 (auto) became: set for the run's steps
    )


def _ran_out_of_memory(p: Plan) -> OutOfMemoryError:
    smaller = max(16, max(p.content_shape) // 2 // 16 * 16)
    other = "device='cpu'" if p.device.type != "cpu" else "close other programs"
    return OutOfMemoryError(
        f"{p.device} ran out of memory at a working size of {max(p.content_shape)} px: use a smaller size "
        f"(for example {smaller}) or {other}"
    )


class FrameOfStack:
    """One frame of a stack as a frame source (see ``_image.is_frame_source``): its values,
    and the stack's value range, so that a frame styled alone (as a task elsewhere) maps its
    values exactly as the whole stack's run maps them. Picklable."""

    def __init__(self, stack: ImageInput, index: tuple[int, ...]):
        self.data = np.ascontiguousarray(stack.data[index])
        self.value_range = (stack.low, stack.high)
        self.scaling = stack.scaling
        self.alpha_as_is = stack.alpha_as_is
        self.shape, self.dtype, self.ndim = self.data.shape, self.data.dtype, self.data.ndim

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.data[index]


def run_frame(frame: Any, style: Any, options: dict[str, Any]) -> StyleResult:
    """A task: one frame (a :class:`FrameOfStack`) styled in the worker that runs it, alone
    as the whole stack's run styles it."""
    prepare_worker_process()
    for item in run(plan(frame, style, **options)):
        if isinstance(item, StyleResult):
            return item
    raise AssertionError("the run ended without a result")  # pragma: no cover


def check_frames_spread(
    content: Any, style: Any, options: dict[str, Any]
) -> tuple[ImageInput, ImageInput, dict[str, Any]]:
    """The content and style described and the options validated, for a stack whose frames
    are spread over workers; a time series (whose frames wait for each other) is refused."""
    opts = StyleOptions.from_kwargs(options)
    if opts.frames != "independent":
        raise StyleTransferError(
            f"frames={opts.frames!r} runs a stack frame after frame, so it cannot be spread over a cluster; "
            "use frames='independent', or run without client="
        )
    return (
        describe_image(content, "content"),
        describe_image(style, "style", allow_stack=False),
        opts.to_dict(),
    )


def run_frames_on(executor: Any, content: Any, style: Any, sink: Sink | None = None, **options: Any) -> Any:
    """``content``'s frames each styled as a task on ``executor`` (a
    ``concurrent.futures.Executor``), into ``sink`` (default: a :class:`NumpySink`, whose
    array comes back); each frame's image is what :func:`run` of the whole stack gives it."""
    described, style_in, checked = check_frames_spread(content, style, options)
    results = NumpySink(described.stack_shape) if sink is None else sink
    style_array = np.asarray(style_in.data)
    tasks = ((index, (FrameOfStack(described, index), style_array, checked)) for index in described.frames())
    for index, result in run_on(executor, run_frame, tasks):
        results.take(index, result.image[()])
    return results.result
