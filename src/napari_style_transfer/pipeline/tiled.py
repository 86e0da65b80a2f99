"""A run at full resolution (``size="full"``): the composition set on the whole image at
the working size (today's run, at ``tile_size``), then refined at each doubling of
resolution up to full size in tiles, every tile starting from the coarser level enlarged
2x over its window, all tiles of a level sharing one objective (the style's targets at that
level's scale). Each level goes into a store of :mod:`..zarr_output` tile by tile (the
levels below full size into its scratch stores), so a rerun skips what is finished.

The tile planner here makes a level's tile jobs and reads their windows; the sinks of
:mod:`.zarr_sink` write each tile's core. The optimiser is the one every run uses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import tiles
from ..engine import LBFGS_HISTORY, free_memory_bytes, resize, resolve_device, with_backend_flags
from ..frames import FrameLink
from ..large_images import LargeImage, read_downscaled
from ..memory import release_freed_memory
from ..options import StyleOptions
from ..speed_probe import with_threads
from ..zarr_output import (
    ResultStore,
    check_tiff_frames,
    open_result_store,
    pyramid_tiff_path,
    store_for,
    write_pyramidal_tiff,
)
from .executors import Elsewhere
from .jobs import Carry, IndependentFrames, Job
from .optimise import Optimiser, load_model
from .plan import Level, Plan, plan
from .reader import FrameReader, JobInput, finish, read_styles, to_tensor
from .records import Progress, StepRecord
from .runner import memory_errors
from .slide_inputs import (
    CompositionSource,
    SlideContent,
    SlideLabels,
    describe_slide,
    open_slide_labels,
    refuse_time_series,
)
from .zarr_sink import FeatheredLevel, FeatheredPiece, TileCell, WholeImage

#: ``size`` of a full-resolution run.
FULL = "full"
#: The largest automatic tile on the CPU: larger tiles gain little there, and take minutes each.
CPU_TILE_LIMIT = 512


def tile_precision(precision: str) -> str:
    """What a full-resolution run computes in for ``precision``: ``auto`` is fp32 here. In
    bf16, L-BFGS's line search fails in some tiles (rounding most likely hides the decrease it
    looks for), and such a tile, with its few steps, ends less styled than its neighbours: a patch
    the size of a tile (docs/slides.md, "4096 px at 10 steps, a tile-sized patch from bf16"). An
    explicit choice holds."""
    return "fp32" if precision == "auto" else precision


@dataclass(frozen=True)
class FullPlan:
    """A checked full-resolution run: the composition's plan (today's run at the first
    level's size, a frame at a time), the content read region by region, the levels and
    the tile geometry, and ``style_regions`` read region by region."""

    composition: Plan
    slide: SlideContent
    levels: tuple[tiles.Level, ...]  # coarse to fine; the last is the full resolution
    tile_size: int
    margin: int
    #: pixels across each tile border over which neighbours are blended (0: cores cut at
    #: the store's cells, seams show); half of it each side, inside the context margin
    blend: int = 0
    labels: SlideLabels | None = None

    @property
    def image(self) -> LargeImage:
        """The content, read region by region."""
        return self.slide.image

    @property
    def frames(self) -> list[tuple[int, ...]]:
        """Every frame's index, in the order they run (one empty tuple for a 2D image)."""
        return self.image.frames()

    @property
    def result_shape(self) -> tuple[int, ...]:
        """(*frames, H, W) for grey kept grey, else (*frames, H, W, 3 or 4 with alpha)."""
        shape = (*self.image.frames_shape, *self.levels[-1].shape)
        if self.slide.channels == "grey" and self.composition.options.keep_grey:
            return shape
        return (*shape, 4 if self.slide.channels == "rgba" else 3)

    def settings(self) -> dict[str, Any]:
        """What a rerun must share to resume the store (see ``zarr_output.run_settings``)."""
        p = self.composition
        settings = {
            "options": p.options.to_dict() | {"size": FULL},
            "schedule": [list(level.shape) for level in self.levels],
            "value_scaling": p.content.scaling,
            "styles": len(p.styles),
            "blend": self.blend,
        }
        if p.regions is not None:  # (absent without: stores made before regions keep resuming)
            settings["style_regions"] = p.regions.described()
        return settings


def plan_full(content: Any, style: Any, *, style_regions: Any = None, **options: Any) -> FullPlan:
    """Check a full-resolution run; raise StyleTransferError if it cannot run. ``content``
    and ``style_regions`` may be larger than memory (see :func:`.slide_inputs.describe_slide`):
    neither is read whole."""
    options.pop("size", None)
    base = StyleOptions.from_kwargs(options)
    refuse_time_series(base.frames)
    slide = describe_slide(content)
    layers = base.content_layers + base.style_layers
    tile_size = base.tile_size or _auto_tile_size(base)
    free = free_memory_bytes(resolve_device(base.device))
    tiles.check_tile_size(tile_size, layers, free, base.optimizer, LBFGS_HISTORY)
    levels = tuple(tiles.level_schedule(slide.image.shape, tile_size, layers))
    styles = len(style) if isinstance(style, list | tuple) else 1
    labels = None if style_regions is None else open_slide_labels(style_regions, slide.image, styles)
    composition = _composition_plan(slide, style, levels[0], labels, options | {"tile_size": tile_size})
    margin = tiles.context_margin(layers)
    blend = 2 * (min(margin, tile_size // 2) // 2)  # the margin, even, at most half a tile
    return FullPlan(composition, slide, levels, tile_size, margin, blend, labels)


def _composition_plan(
    slide: SlideContent, style: Any, first: tiles.Level, labels: SlideLabels | None, options: dict[str, Any]
) -> Plan:
    """Today's plan at the first level: its content the slide's block means there (read
    band by band), its styles scaled as the full resolution's (``style_scale`` is relative
    to the content's own pixels), its regions the label image sampled to its size."""
    shrink = max(first.shape) / max(slide.image.shape)
    count = len(style) if isinstance(style, list | tuple) else 1
    asked = StyleOptions.from_kwargs(options)
    scaled = tuple(scale * shrink for scale in asked.style_scales(count))
    regions = None if labels is None else labels.composition(first.shape)
    content = CompositionSource(slide, first)
    p = plan(
        content, style, style_regions=regions, **(options | {"size": max(first.shape), "style_scale": scaled})
    )
    return dataclasses.replace(
        p, options=dataclasses.replace(p.options, style_scale=asked.style_scale), scale=shrink
    )


def _auto_tile_size(opts: StyleOptions) -> int:
    device = resolve_device(opts.device)
    layers = opts.content_layers + opts.style_layers
    largest = tiles.largest_tile_size(free_memory_bytes(device), layers, opts.optimizer, LBFGS_HISTORY)
    limit = CPU_TILE_LIMIT if device.type == "cpu" else largest
    return max(tiles.min_tile_size(layers), min(largest, limit))


def open_store(fp: FullPlan, out: Any, force: bool = False) -> ResultStore:
    """The result store at ``out`` (a path or a zarr store), created or reopened to resume."""
    return open_result_store(out, fp.result_shape, fp.settings(), fp.tile_size, force=force)


def run_full(fp: FullPlan, store: ResultStore, elsewhere: Elsewhere | None = None) -> Iterator[StepRecord]:
    """The records of a full-resolution run into ``store``, skipping finished tiles.
    ``elsewhere``: run each level's tiles as tasks there (a dask cluster: see
    :mod:`.tile_tasks`), one record per tile, its last step's; the composition and the
    blending of each level stay here."""
    p = fp.composition
    return with_backend_flags(
        with_threads(_run_full(fp, store, elsewhere), p.options.threads), p.options, p.device
    )


def _targets(fp: FullPlan, store: ResultStore) -> list[ResultStore]:
    """Where each level goes: the levels below full size into scratch stores (made here,
    before any tile runs; every frame's in one), the last into ``store``."""
    frames = fp.image.frames_shape
    scratch = [
        store.scratch(level_name((h, w)), (*frames, h, w, 3))
        for h, w in (lvl.shape for lvl in fp.levels[:-1])
    ]
    return [*scratch, store]


def level_name(shape: tuple[int, ...]) -> str:
    """The scratch store (inside the result store) of a level below full size, (H, W) pixels."""
    return "level-{}x{}".format(*shape)


def pieces_name(shape: tuple[int, ...]) -> str:
    """The scratch store (inside its level's store) of a blended level's pieces, (H, W) pixels."""
    return "pieces-{}x{}".format(*shape)


def _run_full(fp: FullPlan, store: ResultStore, elsewhere: Elsewhere | None) -> Iterator[StepRecord]:
    started = time.perf_counter()
    p = fp.composition
    targets = _targets(fp, store)
    planners = [TileLevel(fp, fp.levels[k], targets[k - 1], targets[k]) for k in range(1, len(fp.levels))]
    composed = targets[0].finished()
    compose = [frame for frame in fp.frames if not composed[frame].all()]
    jobs = len(compose) + sum(len(planner.jobs()) for planner in planners)
    if not jobs:  # a run stopped while blending a level ends it
        for frame in fp.frames:
            for planner in planners:
                planner.finalise(frame)
        return
    with memory_errors(p):
        model = load_model(p, tile_precision(p.options.precision))
        progress = Progress(
            started,
            str(p.device),
            model.weights.description,
            jobs,
            p.options.steps * jobs,
            p.options.snapshot_every,
        )
        tasks = None if elsewhere is None else _tile_tasks(elsewhere, fp, store, progress)
        number = 0
        for frame in fp.frames:  # each frame its own composition and tiles, one after the other
            if frame in compose:
                optimiser = Optimiser(p, model, read_styles(p), progress)
                yield from _compose(fp, optimiser, targets[0], Job(number, frame, p.levels))
                number += 1
            for planner in planners:
                if tasks is not None:
                    number = yield from tasks.run_level(planner, frame, number)
                    continue
                # one level's optimiser at a time (its objective holds a tile's features): kept
                # for every level, they made the memory grow with the number of levels
                optimiser = Optimiser(planner.plan, model, read_styles(planner.plan), progress)
                number = yield from _run_level(planner, optimiser, frame, number)


def _tile_tasks(elsewhere: Elsewhere, fp: FullPlan, store: ResultStore, progress: Progress) -> Any:
    """What runs each level's tiles as tasks ``elsewhere`` (:class:`.tile_tasks.TileTasks`)."""
    from .tile_tasks import TileTasks  # it builds on this module's planner

    return TileTasks(elsewhere, fp, store, progress)


def _compose(fp: FullPlan, optimiser: Optimiser, target: ResultStore, job: Job) -> Iterator[StepRecord]:
    """One frame's composition: today's run at the first level, into its cells of ``target``."""
    p = fp.composition
    reader = FrameReader(p) if len(fp.levels) == 1 else _WorkingImages(p, fp.levels[0].shape)
    yield from optimiser.run_jobs([job], IndependentFrames(p), reader, WholeImage(target), 1)


def _run_level(
    planner: TileLevel, optimiser: Optimiser, frame: tuple[int, ...], first: int
) -> Generator[StepRecord, None, int]:
    """One frame's unfinished tiles of one level, then the level blended; returns the next
    job's number."""
    number = first
    for job in planner.tile_jobs(number, frame):
        assert job.tile is not None
        optimiser.plan = planner.plan_for(job)  # the tile's guide, where style_regions are given
        yield from optimiser.run_jobs([job], planner, planner, planner.sink(job.tile), 1)
        release_freed_memory()  # else the heap's freed blocks stay resident and add up, tile by tile
        number += 1
    planner.finalise(frame)
    return number


def _working(image: torch.Tensor) -> np.ndarray:
    """A level's image as it is optimised, (H, W, 3) in [0, 1]: what the next level starts from."""
    return image[0].permute(1, 2, 0).float().clamp(0, 1).cpu().numpy()


class _WorkingImages(FrameReader):
    """The composition's frame, its image kept as optimised (RGB, at ``shape``) for the next level."""

    def __init__(self, p: Plan, shape: tuple[int, int]):
        super().__init__(p)
        self.shape = shape

    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        inputs, link = super().read(jobs)
        finish = functools.partial(_resized_working, shape=self.shape)
        return [JobInput(job_input.content, finish) for job_input in inputs], link


def _resized_working(image: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    return _working(resize(image, *shape))


@dataclass(frozen=True)
class TileJob(Job):
    """A tile of one level of frame ``index``: its window is what the job optimises, its
    core what it keeps."""

    tile: tiles.Tile | None = None


class TileLevel:
    """The planner (and reader) of one level's tiles: a job per unfinished tile of a frame,
    its window of the content read at the level's scale, its start the coarser level
    (``coarser``) enlarged 2x over the window; the level goes into ``target``."""

    def __init__(self, fp: FullPlan, level: tiles.Level, coarser: ResultStore, target: ResultStore):
        self.full, self.level, self.target = fp, level, target
        self.last = level is fp.levels[-1]
        self.coarser = coarser.level_image(0)
        self.grid = tiles.tile_grid(level.shape, fp.tile_size, fp.margin)
        self.plan = _level_plan(fp.composition, level.shape, fp.image.shape)
        self.feathered: FeatheredLevel | None = None
        if fp.blend:
            size = fp.tile_size + fp.blend  # a core widened by half the band each side
            rows, columns = target.grid
            channels = fp.result_shape[len(fp.image.frames_shape) + 2 :] if self.last else (3,)
            name = pieces_name(level.shape)
            shape = (*fp.image.frames_shape, rows * size, columns * size, *channels)
            pieces = target.scratch(name, shape, size)
            self.feathered = FeatheredLevel(target, pieces, self.grid, fp.blend)

    def sink(self, tile: tiles.Tile) -> TileCell | FeatheredPiece:
        """Where a tile's result goes: its core into its cell, or its feathered core to be blended."""
        return self.feathered.sink(tile) if self.feathered else TileCell(self.target, tile)

    def finalise(self, frame: tuple[int, ...] = ()) -> None:
        """Blend the level's unfinished cells of ``frame`` from its tiles' pieces (all done by now)."""
        if self.feathered:
            self.feathered.finalise(frame)

    def jobs(self) -> list[Job]:
        """Every frame's unfinished tiles."""
        return [job for frame in self.full.frames for job in self.tile_jobs(frame=frame)]

    def tile_jobs(self, first: int = 0, frame: tuple[int, ...] = ()) -> list[TileJob]:
        steps = self.full.composition.options.steps
        style_shapes = self.plan.style_shapes
        return [
            TileJob(first + n, frame, (Level(tile.window.shape, style_shapes, steps),), tile=tile)
            for n, tile in enumerate(self._unfinished(frame))
        ]

    def _unfinished(self, frame: tuple[int, ...] = ()) -> list[tiles.Tile]:
        records = self.feathered.pieces if self.feathered else self.target
        return [tile for tile in self.grid if not records.is_finished(tile.row, tile.column, frame)]

    def plan_for(self, job: TileJob) -> Plan:
        """The level's plan for one tile: with ``style_regions``, its window of the labels."""
        labels, p = self.full.labels, self.plan
        if labels is None or p.regions is None or job.tile is None:
            return p
        window = labels.window(job.index, self.level.shape, job.tile.window, p.regions.dropped)
        return dataclasses.replace(p, regions=window)  # type: ignore[arg-type]  # Regions.at's interface

    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        (job,) = jobs
        assert isinstance(job, TileJob) and job.tile is not None
        raw = read_downscaled(self.full.image, job.tile.window, self.level.downscale, job.index)
        described = self.plan.content
        rgba = described.channels == "rgba"
        values = described.map(raw[..., :3] if rgba else raw)
        content = to_tensor(
            np.repeat(values[..., None], 3, axis=-1) if described.grey else values, self.plan.device
        )
        if not self.last:
            return [JobInput(content, _working)], None
        opts = self.plan.options
        grey = described.grey and opts.keep_grey
        alpha = described.unit_alpha(raw[..., 3]) if rgba else None  # carried through, not styled
        colours = content if opts.content_colours == "luminance" and not described.grey else None
        return [JobInput(content, functools.partial(finish, grey=grey, alpha=alpha, colours=colours))], None

    def reader(self) -> TileLevel:
        """Itself: a tile's window is read when its turn comes."""
        return self

    def close(self) -> None:
        """Nothing is read ahead."""

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        assert isinstance(job, TileJob) and job.tile is not None
        return Carry(start=self._start(job.tile.window, job.index))

    def keep(self, job: Job, carry: Carry, canvases: torch.Tensor) -> None:
        """Nothing: each tile starts from the coarser level, never from another tile."""

    def _start(self, window: tiles.Region, frame: tuple[int, ...] = ()) -> torch.Tensor:
        """The coarser level enlarged 2x over ``window``: read with a pixel of context on each
        side (what bilinear enlarging reads), enlarged, cut to the window."""
        region = start_region(window, self.coarser.shape)
        coarse = to_tensor(self.coarser.read(region, frame), self.plan.device)
        enlarged = resize(coarse, 2 * region.shape[0], 2 * region.shape[1])
        top, left = window.top - 2 * region.top, window.left - 2 * region.left
        return enlarged[..., top : top + window.shape[0], left : left + window.shape[1]].clamp(0, 1)


def start_region(window: tiles.Region, coarser: tuple[int, int]) -> tiles.Region:
    """The region of the coarser level (of shape ``coarser``) that a tile's start over
    ``window`` reads: half the window, with a pixel of context on each side."""
    height, width = coarser
    return tiles.Region(
        max(0, window.top // 2 - 1),
        max(0, window.left // 2 - 1),
        min(height, math.ceil(window.bottom / 2) + 1),
        min(width, math.ceil(window.right / 2) + 1),
    )


def _level_plan(p: Plan, shape: tuple[int, int], full: tuple[int, int]) -> Plan:
    """``p`` at a finer level of ``shape`` of a content of ``full`` pixels: the styles at the
    matching scale (``style_scale`` as at the working size), so every tile of the level
    shares their targets."""
    content = max(full)
    style_shapes = []
    for style, scale in zip(p.styles, p.options.style_scales(len(p.styles)), strict=True):
        factor = max(shape) / content * scale
        style_shapes.append((max(1, round(style.shape[0] * factor)), max(1, round(style.shape[1] * factor))))
    level = Level(shape, tuple(style_shapes), p.options.steps)
    return dataclasses.replace(p, levels=(level,), scale=max(shape) / content)


def stylize_full(
    content: Any,
    style: Any,
    *,
    out: Any = None,
    force: bool = False,
    elsewhere: Elsewhere | None = None,
    **options: Any,
) -> Any:
    """:func:`~napari_style_transfer.api.stylize` with ``size="full"``: the result written
    tile by tile into the OME-Zarr store ``out`` (a ``.zarr`` path or a zarr store) and
    returned as its full-resolution zarr array, opened lazily (OME axis order: ``t, c, y, x``,
    those present); without ``out``, a numpy array (*frames, H, W[, 3|4]) made in memory.
    ``out`` a ``.tif`` path: the tiles go into the store beside it (``.ome.zarr``, kept to
    resume), exported as a pyramidal BigTIFF once every tile is done; the store's array is
    returned. ``elsewhere``: where each level's tiles run as tasks (see :func:`run_full`)."""
    import zarr

    fp = plan_full(content, style, **options)
    tiff = pyramid_tiff_path(out)
    if tiff is not None:
        check_tiff_frames(tiff, fp.image.frames_shape)
    store = open_store(fp, zarr.storage.MemoryStore() if out is None else store_for(out), force)
    for _ in run_full(fp, store, elsewhere):
        pass
    if tiff is not None:
        write_pyramidal_tiff(tiff, store)
    if out is not None:
        return store.levels[0]
    whole = tiles.Region(0, 0, *fp.levels[-1].shape)
    result = store.level_image(0)
    frames = [result.read(whole, frame) for frame in fp.frames]
    return np.stack(frames).reshape(fp.result_shape)


def tiles_finished(level: ResultStore) -> int:
    """How many tiles of one level of a result store are done: a level whose tiles are
    blended records each tile in its pieces store (``scratch/pieces-HxW`` inside the level's
    own group) before its cells are blended at the level's end, so there the pieces count."""
    pieces = "scratch/" + pieces_name(level.shape[:2])
    counted = ResultStore(level.group[pieces], level.tile_size) if pieces in level.group else level
    return int(counted.finished().sum())
