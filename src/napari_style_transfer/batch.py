"""Batches: every input image with every style, each result written as its task finishes.

``stylize_batch`` plans the items (``OUTDIR/<input stem>__<style stem>.<ext>``), checks what
can be checked before any task starts, skips items whose result is already there with the
same settings, and keeps ``OUTDIR/batch.json`` up to date. Without a client the items run in
this process, one after the other; with a ``dask.distributed`` client they run on its
workers (see :mod:`.distributed`, imported only then). No dask, napari or Qt at import time,
and torch only once an item runs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._image import ValueScale, describe_image, frame_count
from .atomic import write_replacing
from .errors import StyleTransferError
from .files import (
    OUTPUT_DTYPES,
    ImageFileError,
    prepare_folder,
    read_image,
    result_suffix,
    write_image,
)
from .options import StyleOptions
from .styled_files import read_settings

log = logging.getLogger(__name__)

#: The record of a batch, beside its results.
RECORD_NAME = "batch.json"

#: What a finished item's ``status`` is: made now, found made with the same settings, or not made.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"


@dataclass(frozen=True)
class Item:
    """One input with one style. Picklable: it travels to a worker as it is."""

    input: str
    style: str
    style_index: int  # into the batch's styles
    stem: str  # of the output file: "<input stem>__<style stem>"
    settings: dict[str, Any]  # what a result must carry to count as this item's (see resume)


@dataclass
class Outcome:
    """What running an item gave: the result and its metadata, or the error in one line."""

    image: np.ndarray | None
    metadata: dict[str, Any]
    suffix: str
    seconds: float
    device: str = ""
    weights: str = ""
    error: str = ""
    scale: ValueScale | None = None  # how the input's values were mapped to [0, 1]


@dataclass
class ItemRecord:
    """One line of ``batch.json``."""

    input: str
    style: str
    output: str | None
    status: str  # done, skipped, failed, or pending while the batch runs
    message: str = ""
    seconds: float = 0.0
    device: str = ""
    weights: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as plain values, for batch.json."""
        return dataclasses.asdict(self)


@dataclass
class Batch:
    """A checked plan: the items, the styles read once, where the results go."""

    items: list[Item]
    styles: list[np.ndarray]
    out_dir: Path
    options: dict[str, Any]  # StyleOptions fields, validated
    force: bool = False
    output_dtype: str = "float32"  # of the .tif results: one of OUTPUT_DTYPES

    def output_for(self, item: Item, suffix: str) -> Path:
        """Where ``item``'s result goes: the output folder, the item's name, ``suffix``."""
        return self.out_dir / f"{item.stem}{suffix}"


def plan_batch(
    inputs: Iterable[str | os.PathLike[str]],
    styles: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
    output_dtype: str = "float32",
    **options: Any,
) -> Batch:
    """Check a batch before any item runs: raise :class:`StyleTransferError` for no inputs or
    styles, options out of range, an unknown ``output_dtype``, an output folder that cannot be
    written, a style that cannot be read, two items that would write the same file, or an
    item that would write over an input or a style. Inputs are read only by their items (a
    damaged one fails alone)."""
    content_paths = [Path(path) for path in inputs]
    style_paths = [Path(path) for path in styles]
    if not content_paths:
        raise StyleTransferError("no input images given; give one or more image files (PNG, TIFF, .npy, ...)")
    if not style_paths:
        raise StyleTransferError("no style images given; give one or more style image files")
    opts = StyleOptions.from_kwargs(options).to_dict()
    if output_dtype not in OUTPUT_DTYPES:
        raise StyleTransferError(
            f"output_dtype must be one of {', '.join(OUTPUT_DTYPES)}, got {output_dtype!r}"
        )
    style_images = []
    for path in style_paths:
        image = read_image(path, "style")
        describe_image(image, f"style ({path})", allow_stack=False)
        style_images.append(image)
    out = Path(out_dir)
    items = _plan_items(content_paths, style_paths, out, opts, output_dtype)
    batch = Batch(items, style_images, out, opts, force, output_dtype)
    _refuse_overwriting_inputs(batch, [*content_paths, *style_paths])
    prepare_folder(out)
    return batch


def _plan_items(
    inputs: list[Path], styles: list[Path], out: Path, opts: dict[str, Any], output_dtype: str
) -> list[Item]:
    """Every input with every style, style by style; two that would write one file are refused."""
    items: list[Item] = []
    owners: dict[str, Path] = {}
    for style_index, style in enumerate(styles):
        for content in inputs:
            stem = f"{content.stem}__{style.stem}"
            if stem in owners:
                raise StyleTransferError(
                    f"{owners[stem]} and {content} with style {style} would both be written as "
                    f"{out / stem}.*; rename one of them (output names come from the file names)"
                )
            owners[stem] = content
            settings: dict[str, Any] = {
                "input": _identity(content),
                "style": _identity(style),
                "options": opts,
            }
            if output_dtype != "float32":  # results made before there was a choice stay valid
                settings["output_dtype"] = output_dtype
            items.append(Item(str(content), str(style), style_index, stem, _json(settings)))
    return items


#: What a batch may write for an item, whichever the result's type turns out to be.
RESULT_SUFFIXES = (".png", ".tif")


def _refuse_overwriting_inputs(batch: Batch, inputs: list[Path]) -> None:
    """Refuse a batch that would write a result (or its record) over one of its own inputs or
    styles: by path (links resolved) and by file identity (hard links, case-blind file systems)."""
    by_path = {path.resolve(): path for path in inputs}
    by_identity = {key: path for path in inputs if (key := _file_key(path)) is not None}
    writes = [(batch.out_dir / RECORD_NAME, "the batch's record")]
    for item in batch.items:
        what = f"the result of {item.input} with style {item.style}"
        writes += [(batch.output_for(item, suffix), what) for suffix in RESULT_SUFFIXES]
    for output, what in writes:
        key = _file_key(output)
        overwritten = by_path.get(output.resolve()) or (by_identity.get(key) if key else None)
        if overwritten is not None:
            raise StyleTransferError(
                f"{what} would be written as {output}, which is the input {overwritten}; "
                "give another output folder or rename the input (inputs are never overwritten)"
            )


def _file_key(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_dev, stat.st_ino)


def _identity(path: Path) -> dict[str, Any]:
    """A file as a result remembers it: where it is, and its size and time, so that an input
    changed since its result was made is made again."""
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path.absolute())}
    return {"path": str(path.absolute()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so that comparing settings
    written to a file with settings made now compares like with like."""
    return json.loads(json.dumps(value))


def existing_result(batch: Batch, item: Item) -> Path | None:
    """The item's result when it is already there with the same settings (and not ``force``)."""
    if batch.force:
        return None
    for suffix in RESULT_SUFFIXES:
        path = batch.output_for(item, suffix)
        if path.is_file():
            stored = read_settings(path)
            if stored is not None and stored.get("batch") == item.settings:
                return path
    return None


def run_item(item: Item, style: np.ndarray, options: dict[str, Any]) -> Outcome:
    """Read the item's input and style it. Any error comes back in the outcome, so that the
    batch goes on: one the user can cause (a damaged or too small image, memory) as its
    message; anything else, a bug, as its type and message, its traceback logged."""
    from .api import StyleResult, iter_stylize

    started = time.perf_counter()
    try:
        # the absolute path: a worker started elsewhere has another working folder
        content = read_image(Path(item.settings["input"]["path"]), "input")
        described = describe_image(content, "input")
        result = None
        for record in iter_stylize(content, style, **options):
            if isinstance(record, StyleResult):
                result = record
    except StyleTransferError as error:  # ImageFileError, OutOfMemoryError, WeightsError among them
        return Outcome(None, {}, "", time.perf_counter() - started, error=str(error))
    except Exception as error:  # noqa: BLE001 - one item's bug must not end the others
        log.exception("item %s with style %s failed unexpectedly", item.input, item.style)
        message = f"unexpected {type(error).__name__}: {error} (a bug: please report it)"
        return Outcome(None, {}, "", time.perf_counter() - started, error=message)
    assert result is not None, "iter_stylize ended without a result"
    metadata = {**result.metadata(), "batch": item.settings}
    suffix = result_suffix(content, frame_count(described.stack_shape))
    seconds = time.perf_counter() - started
    scale = described.value_scale()
    return Outcome(result.image, metadata, suffix, seconds, result.device, result.weights, scale=scale)


def write_outcome(batch: Batch, item: Item, outcome: Outcome) -> ItemRecord:
    """Write a finished item's result (atomically: a crash leaves no half file) and say how it went."""
    record = ItemRecord(item.input, item.style, None, FAILED, outcome.error, round(outcome.seconds, 3))
    record.device, record.weights = outcome.device, outcome.weights
    if outcome.image is None:
        return record
    path = batch.output_for(item, outcome.suffix)
    scale = outcome.scale if batch.output_dtype == "same" else None
    try:
        write_image(path, outcome.image, outcome.metadata, scale)  # a .png is 8-bit either way
    except ImageFileError as error:
        record.message = str(error)
        return record
    record.output, record.status = str(path), DONE
    return record


class BatchLog:
    """``batch.json``: every item in plan order, rewritten (atomically) as each one finishes."""

    def __init__(self, batch: Batch):
        self.path = batch.out_dir / RECORD_NAME
        self.options = batch.options
        self.output_dtype = batch.output_dtype
        self.records = [ItemRecord(item.input, item.style, None, "pending") for item in batch.items]
        self._lock = threading.Lock()

    def set(self, index: int, record: ItemRecord) -> None:
        """Record item ``index``'s outcome (from any thread) and save the log."""
        with self._lock:
            self.records[index] = record
            self.save()

    def save(self) -> None:
        """Write batch.json atomically: the previous one stays whole until the new one is."""
        items = [r.to_dict() for r in self.records]
        record = {"options": self.options, "output_dtype": self.output_dtype, "items": items}
        text = json.dumps(record, indent=1)
        write_replacing(self.path, lambda file: file.write(text.encode()))


class Progress:
    """One bar for the batch: items finished of all, failures, time left."""

    def __init__(self, total: int, enabled: bool, wording: Callable[[str], str] | None = None):
        from tqdm import tqdm

        self.failed = 0
        self.enabled = enabled
        self.wording = wording
        self.bar = tqdm(total=total, unit="item", disable=not enabled, file=sys.stderr, dynamic_ncols=True)

    def say(self, text: str) -> None:
        """Print ``text`` on a line of its own beside the progress bar (unless quiet)."""
        if self.enabled:
            self.bar.write(text if self.wording is None else self.wording(text), file=sys.stderr)

    def finished(self, record: ItemRecord) -> None:
        """Advance the bar by one item; a failed item's message is printed."""
        if record.status == FAILED:
            self.failed += 1
            self.say(f"failed: {record.input} with {record.style}: {record.message}")
        self.bar.set_postfix(failed=self.failed, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        """Draw the bar's final line."""
        self.bar.close()


def stylize_batch(
    inputs: Sequence[str | os.PathLike[str]],
    styles: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    client: Any = None,
    force: bool = False,
    progress: bool = False,
    on_item: Callable[[dict[str, Any]], None] | None = None,
    output_dtype: str = "float32",
    wording: Callable[[str], str] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Style every input image file with every style image file; write each result as
    ``out_dir/<input stem>__<style stem>.png`` (a 2D result of 8-bit input) or ``.tif``
    (stacks, inputs of more than 8 bits: float32 in [0, 1], or with ``output_dtype="same"``
    the input's dtype and units), carrying its settings, and
    ``out_dir/batch.json``. Returns one record per item (input, style, output, status
    ``done`` / ``skipped`` / ``failed``, message, seconds, device, weights).

    ``options`` are :class:`~napari_style_transfer.options.StyleOptions` fields, for every
    item. An item whose result exists with the same settings (options, output dtype, input and
    style file) is skipped unless ``force``. ``client``: a ``dask.distributed.Client``; the items then run
    on its workers (which must see the input files), results are written here. Without one
    they run in this process. ``on_item`` is called with each item's record as it finishes
    (skipped ones first). ``wording`` rewrites the lines the progress bar prints (the command
    line passes its flag syntax; the records keep the API's wording). Raises :class:`StyleTransferError` before any item runs for
    what can be checked then; an item that fails is recorded and the others go on.
    """
    batch = plan_batch(inputs, styles, out_dir, force=force, output_dtype=output_dtype, **options)
    log = BatchLog(batch)
    bar = Progress(len(batch.items), progress, wording)
    try:
        todo = []
        for index, item in enumerate(batch.items):
            found = existing_result(batch, item)
            if found is None:
                todo.append(index)
            else:
                log.records[index] = ItemRecord(
                    item.input, item.style, str(found), SKIPPED, "the result is already there"
                )
                bar.finished(log.records[index])
        log.save()
        for record in log.records:
            if on_item is not None and record.status == SKIPPED:
                on_item(record.to_dict())
        if client is None:
            outcomes = _run_here(batch, todo)
        else:
            from .distributed import run_batch

            outcomes = run_batch(client, batch, todo, say=bar.say if progress else None)
        for index, outcome in outcomes:
            record = write_outcome(batch, batch.items[index], outcome)
            log.set(index, record)
            bar.finished(record)
            if on_item is not None:
                on_item(record.to_dict())
    finally:
        bar.close()
    return [record.to_dict() for record in log.records]


def _run_here(batch: Batch, todo: list[int]) -> Iterator[tuple[int, Outcome]]:
    from .weights import keeping_weights  # imports torch: only once items run

    with keeping_weights():  # the items share one network
        for index in todo:
            item = batch.items[index]
            yield index, run_item(item, batch.styles[item.style_index], batch.options)
