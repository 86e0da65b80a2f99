"""numpy in, numpy out: ``stylize``, ``iter_stylize`` and ``plan``.

Thin wrappers over the run pipeline (:mod:`.pipeline`, docs/architecture.md): a plan is
checked, then run here, or its frames spread over an executor (a dask client's).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ._torch_compat import hide_triton
from .errors import StyleTransferError

hide_triton()

import numpy as np  # noqa: E402

from . import run_checks  # noqa: E402
from .pipeline import memory_checks, reader, time_series  # noqa: E402
from .pipeline import plan as _planning  # noqa: E402
from .pipeline.executors import elsewhere  # noqa: E402
from .pipeline.plan import Plan  # noqa: E402
from .pipeline.records import StepRecord, StyleResult  # noqa: E402
from .pipeline.runner import run, run_frames_on  # noqa: E402
from .pipeline.tile_tasks import TILE_RETRIES  # noqa: E402
from .pipeline.tiled import FULL, stylize_full  # noqa: E402

# Names that tests, benchmarks and other modules import from here; the pipeline holds them now.
_Plan = Plan
_levels = _planning._levels
STEP_SHARES = _planning.STEP_SHARES
_check_memory = memory_checks.check_memory
_frames_per_batch = memory_checks.frames_per_batch
AUTO_BATCH_LIMIT = memory_checks.AUTO_BATCH_LIMIT
AUTO_BATCH_PIXELS = memory_checks.AUTO_BATCH_PIXELS
AUTO_BATCH_CPU = memory_checks.AUTO_BATCH_CPU
READER_THREAD = reader.READER_THREAD
_read_frame = reader.read_frame
_reads_ahead = reader.reads_ahead
_to_tensor = reader.to_tensor
CARRY_CURVATURE_FRESH = time_series.CARRY_CURVATURE_FRESH


def iter_stylize(
    content: Any, style: Any, *, style_regions: Any = None, **options: Any
) -> Iterator[StepRecord | StyleResult]:
    """Style transfer as a generator: one :class:`StepRecord` per step, then a :class:`StyleResult`.

    ``content`` is a numpy array: (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA, of any
    integer or float dtype, or a stack of those (leading axes such as Z, T or channels), which
    is stylized frame by frame. With ``frames="independent"`` (the default: Z slices,
    channels, unrelated images) each frame is styled as if alone. With ``frames="time"`` the
    first leading axis is time (further leading axes are independent series): each later
    frame starts from the previous frame's result warped by the optical flow between their
    contents and is kept near it where the flow is reliable (``temporal_weight``), for
    ``time_steps`` steps at the working size. ``style`` is one 2D image or a list of them,
    blended by ``style_blend`` (default equal), each at its ``style_scale``. ``style_regions``
    is an integer label image covering the content (any size of the content's aspect ratio,
    resized by nearest neighbour; for a stack one for all frames or one per frame, shaped
    like the stack): label k >= 1 takes the k-th style, label 0 only the content. See
    ``describe_image`` for how values map to [0, 1]. ``options`` are the fields of
    :class:`~napari_style_transfer.options.StyleOptions`.

    Options, images, device and memory are checked now, raising ``StyleTransferError``; the
    weights load on the first ``next()``. Stop early by leaving the loop or calling
    ``close()``: the last record still renders its image.
    """
    p = plan(content, style, style_regions=style_regions, **options)
    return run_checks.warned_when_stalled(run(p), p.options)


def stylize(
    content: Any,
    style: Any,
    *,
    client: Any = None,
    style_regions: Any = None,
    out: Any = None,
    force: bool = False,
    **options: Any,
) -> Any:
    """Style transfer of numpy images; returns the result as float32 in [0, 1].

    The result has the working size (longest side ``size``) and the content's kind: grey in,
    grey out (RGB with ``keep_grey=False``); RGB in, RGB out; RGBA in, RGBA out with the
    alpha carried through; a stack in, a stack out. Options are those of
    :func:`iter_stylize`; use it to see progress, snapshots and which weights were used.
    ``client``: a ``dask.distributed.Client`` whose workers each style some of a stack's
    frames (``frames="independent"``), giving what this process would give (any
    ``concurrent.futures.Executor`` will do too).

    ``size="full"`` keeps the content's own resolution: the composition is set at
    ``tile_size``, then refined in tiles of ``tile_size`` at each doubling up to full size
    (docs/slides.md). The content may be larger than memory (a path to a ``.npy``, TIFF or
    ``.zarr``, a memmap, a dask or zarr array): it is read a region at a time, never whole;
    a stack's frames run one after the other, RGBA keeps its alpha, ``style_regions`` may be
    a label image of any size with the content's aspect ratio. With ``out`` (a ``.zarr``
    path or a zarr store) the result is written there tile by tile and returned as its
    lazily opened full-resolution zarr array (axes ``t, c, y, x``, those present); a rerun
    with the same settings skips finished tiles, ``force=True`` redoes them. With ``client``,
    each level's tiles run as tasks on its workers (a tile that raises is tried
    ``TILE_RETRIES`` more times), which write them into ``out`` where it is a path they can
    reach (a shared file system), else send them back to be written here; the composition
    and the blending run here.
    """
    if options.get("size") == FULL:
        where = None if client is None else elsewhere(client, retries=TILE_RETRIES)
        return stylize_full(
            content, style, style_regions=style_regions, out=out, force=force, elsewhere=where, **options
        )
    if out is not None or force:
        raise StyleTransferError("out= and force= are for a full-resolution run: give size='full' too")
    if client is not None:
        if style_regions is not None:
            raise StyleTransferError("style_regions cannot be used with client= yet: run without a client")
        # a dask client hands out a concurrent.futures.Executor: the pipeline never imports dask
        image: np.ndarray = run_frames_on(elsewhere(client).executor, content, style, **options)
        return image
    for item in iter_stylize(content, style, style_regions=style_regions, **options):
        if isinstance(item, StyleResult):
            return item.image
    raise AssertionError("iter_stylize ended without a result")  # pragma: no cover


def plan(content: Any, style: Any, *, style_regions: Any = None, **options: Any) -> Plan:
    """Check everything that can be checked before a run; raise StyleTransferError if wrong."""
    return _planning.plan(content, style, style_regions=style_regions, **options)
