"""The background side of a napari run: a generator of typed updates for a thread_worker.

Everything heavy (importing torch, loading weights, building VGG19, optimising) happens in
the generator, i.e. in the worker thread; the widget only renders the updates it yields.
Errors travel as a :class:`Failed` update, so napari shows no exception dialog.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Started:
    """Weights and network are ready; the first step is running."""

    device: str
    weights: str


@dataclass(frozen=True)
class Progress:
    step: int
    steps: int
    total_loss: float
    content_loss: float
    style_loss: float
    steps_per_second: float
    record: Any = field(repr=False)  # the StepRecord, to render its image on request


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
    image: np.ndarray | None  # the last step's image; None if no step finished


@dataclass(frozen=True)
class Failed:
    message: str
    step: int  # steps finished before the error
    image: np.ndarray | None  # the last step's image, if any
    details: str = ""  # the traceback, for the log


Update = Started | Progress | Snapshot | Finished | Cancelled | Failed


def style_transfer_updates(
    content: np.ndarray, style: np.ndarray, options: dict[str, Any], cancel: threading.Event
) -> Iterator[Update]:
    """Run the engine and describe what happens; stops within one step of ``cancel`` being set."""
    last = None
    try:
        from ..api import StyleResult, iter_stylize  # torch is imported here, in the worker thread

        records = iter_stylize(content, style, **options)
        first_step_at = None
        for item in records:
            if isinstance(item, StyleResult):
                yield Finished(item)
                return
            if first_step_at is None:
                first_step_at = item.seconds
                yield Started(item.device, item.weights)
            last = item
            elapsed = item.seconds - first_step_at
            rate = (item.step - 1) / elapsed if item.step > 1 and elapsed > 0 else 0.0
            yield Progress(
                item.step,
                item.steps,
                item.losses.total,
                item.losses.content,
                item.losses.style,
                rate,
                item,
            )
            if item.is_snapshot:
                yield Snapshot(item.step, item.image)
            if cancel.is_set():
                records.close()
                yield Cancelled(item.step, item.render())
                return
    except Exception as error:  # any failure becomes a message for the user
        image = _last_image(last)
        yield Failed(_describe(error), last.step if last else 0, image, traceback.format_exc())


def _last_image(record: Any) -> np.ndarray | None:
    if record is None:
        return None
    try:
        return record.render()
    except RuntimeError:  # the run went on past this record: its image is gone
        return record.image


def _describe(error: Exception) -> str:
    from ..errors import StyleTransferError

    if isinstance(error, StyleTransferError):
        return str(error)
    return f"{type(error).__name__}: {error}"

