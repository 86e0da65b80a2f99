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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import tiles
from .._image import describe_image
from ..engine import LBFGS_HISTORY, free_memory_bytes, resize, resolve_device, with_backend_flags
from ..errors import StyleTransferError
from ..frames import FrameLink
from ..large_images import LargeImage, open_large_image, read_downscaled
from ..options import StyleOptions
from ..zarr_output import ResultStore, open_result_store
from .jobs import Carry, IndependentFrames, Job
from .optimise import Optimiser, load_model
from .plan import Level, Plan, plan
from .reader import FrameReader, JobInput, finish, read_styles, to_tensor
from .records import Progress, StepRecord
from .runner import memory_errors
from .zarr_sink import FeatheredLevel, FeatheredPiece, TileCell, WholeImage

#: ``size`` of a full-resolution run.
FULL = "full"
#: The largest automatic tile on the CPU: larger tiles gain little there, and take minutes each.
CPU_TILE_LIMIT = 512


@dataclass(frozen=True)
class FullPlan:
    """A checked full-resolution run: the composition's plan (today's run at the first
    level's size), the content read region by region, the levels and the tile geometry."""

    composition: Plan
    image: LargeImage
    levels: tuple[tiles.Level, ...]  # coarse to fine; the last is the full resolution
    tile_size: int
    margin: int
    #: pixels across each tile border over which neighbours are blended (0: cores cut at
    #: the store's cells, seams show); half of it each side, inside the context margin
    blend: int = 0

    @property
    def result_shape(self) -> tuple[int, ...]:
        content = self.composition.content
        grey = content.grey and self.composition.options.keep_grey
        return content.shape if grey else (*content.shape, 3)

    def settings(self) -> dict[str, Any]:
        """What a rerun must share to resume the store (see ``zarr_output.run_settings``)."""
        p = self.composition
        return {
            "options": p.options.to_dict() | {"size": FULL},
            "schedule": [list(level.shape) for level in self.levels],
            "value_scaling": p.content.scaling,
            "styles": len(p.styles),
            "blend": self.blend,
        }


def plan_full(content: Any, style: Any, *, style_regions: Any = None, **options: Any) -> FullPlan:
    """Check a full-resolution run; raise StyleTransferError if it cannot run."""
    if style_regions is not None:
        raise StyleTransferError("style_regions cannot be used with size='full' yet: leave one out")
    options.pop("size", None)
    described = describe_image(content, "content")
    if described.stack_shape or described.channels == "rgba":
        raise StyleTransferError(
            f"size='full' takes a 2D grey or RGB image for now, got shape {np.shape(content)}: "
            "give one frame without alpha, or a working size"
        )
    base = StyleOptions.from_kwargs(options)
    layers = base.content_layers + base.style_layers
    tile_size = base.tile_size or _auto_tile_size(base)
    free = free_memory_bytes(resolve_device(base.device))
    tiles.check_tile_size(tile_size, layers, free, base.optimizer, LBFGS_HISTORY)
    levels = tuple(tiles.level_schedule(described.shape, tile_size, layers))
    composition = plan(content, style, **(options | {"size": max(levels[0].shape), "tile_size": tile_size}))
    margin = tiles.context_margin(layers)
    blend = 2 * (min(margin, tile_size // 2) // 2)  # the margin, even, at most half a tile
    return FullPlan(composition, open_large_image(content), levels, tile_size, margin, blend)


def _auto_tile_size(opts: StyleOptions) -> int:
    device = resolve_device(opts.device)
    layers = opts.content_layers + opts.style_layers
    largest = tiles.largest_tile_size(free_memory_bytes(device), layers, opts.optimizer, LBFGS_HISTORY)
    limit = CPU_TILE_LIMIT if device.type == "cpu" else largest
    return max(tiles.min_tile_size(layers), min(largest, limit))


def open_store(fp: FullPlan, out: Any, force: bool = False) -> ResultStore:
    """The result store at ``out`` (a path or a zarr store), created or reopened to resume."""
    return open_result_store(out, fp.result_shape, fp.settings(), fp.tile_size, force=force)


def run_full(fp: FullPlan, store: ResultStore) -> Iterator[StepRecord]:
    """The records of a full-resolution run into ``store``, skipping finished tiles."""
    p = fp.composition
    return with_backend_flags(_run_full(fp, store), p.options, p.device)


def _targets(fp: FullPlan, store: ResultStore) -> list[ResultStore]:
    """Where each level goes: the levels below full size into scratch stores (made here,
    before any tile runs), the last into ``store``."""
    scratch = [store.scratch(f"level-{h}x{w}", (h, w, 3)) for h, w in (lvl.shape for lvl in fp.levels[:-1])]
    return [*scratch, store]


def _run_full(fp: FullPlan, store: ResultStore) -> Iterator[StepRecord]:
    started = time.perf_counter()
    p = fp.composition
    targets = _targets(fp, store)
    planners = [TileLevel(fp, fp.levels[k], targets[k - 1], targets[k]) for k in range(1, len(fp.levels))]
    compose = not targets[0].finished().all()
    jobs = int(compose) + sum(len(planner.jobs()) for planner in planners)
    if not jobs:  # a run stopped while blending a level ends it
        for planner in planners:
            planner.finalise()
        return
    steps = p.options.steps * jobs
    with memory_errors(p):
        model = load_model(p)
        progress = Progress(
            started, str(p.device), model.weights.description, jobs, steps, p.options.snapshot_every
        )
        if compose:
            optimiser = Optimiser(p, model, read_styles(p), progress)
            reader = FrameReader(p) if len(fp.levels) == 1 else _WorkingImages(p, fp.levels[0].shape)
            frames = IndependentFrames(p)
            yield from optimiser.run_jobs(frames.jobs(), frames, reader, WholeImage(targets[0]), 1)
        number = int(compose)
        for planner in planners:
            optimiser = Optimiser(planner.plan, model, read_styles(planner.plan), progress)
            for job in planner.tile_jobs(number):
                assert job.tile is not None
                yield from optimiser.run_jobs([job], planner, planner, planner.sink(job.tile), 1)
                number += 1
            planner.finalise()


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
    """A tile of one level: its window is what the job optimises, its core what it keeps."""

    tile: tiles.Tile | None = None


class TileLevel:
    """The planner (and reader) of one level's tiles: a job per unfinished tile, its window
    of the content read at the level's scale, its start the coarser level (``coarser``)
    enlarged 2x over the window; the level goes into ``target``."""

    def __init__(self, fp: FullPlan, level: tiles.Level, coarser: ResultStore, target: ResultStore):
        self.full, self.level, self.target = fp, level, target
        self.last = level is fp.levels[-1]
        self.coarser = coarser.level_image(0)
        self.grid = tiles.tile_grid(level.shape, fp.tile_size, fp.margin)
        self.plan = _level_plan(fp.composition, level.shape)
        self.feathered: FeatheredLevel | None = None
        if fp.blend:
            size = fp.tile_size + fp.blend  # a core widened by half the band each side
            rows, columns = target.grid
            channels = fp.result_shape[2:] if self.last else (3,)
            name = "pieces-{}x{}".format(*level.shape)
            pieces = target.scratch(name, (rows * size, columns * size, *channels), size)
            self.feathered = FeatheredLevel(target, pieces, self.grid, fp.blend)

    def sink(self, tile: tiles.Tile) -> TileCell | FeatheredPiece:
        """Where a tile's result goes: its core into its cell, or its feathered core to be blended."""
        return self.feathered.sink(tile) if self.feathered else TileCell(self.target, tile)

    def finalise(self) -> None:
        """Blend the level's unfinished cells from its tiles' pieces (all done by now)."""
        if self.feathered:
            self.feathered.finalise()

    def jobs(self) -> list[Job]:
        return list(self.tile_jobs())

    def tile_jobs(self, first: int = 0) -> list[TileJob]:
        steps = self.full.composition.options.steps
        style_shapes = self.plan.style_shapes
        return [
            TileJob(first + n, (), (Level(tile.window.shape, style_shapes, steps),), tile=tile)
            for n, tile in enumerate(self._unfinished())
        ]

    def _unfinished(self) -> list[tiles.Tile]:
        records = self.feathered.pieces if self.feathered else self.target
        return [tile for tile in self.grid if not records.is_finished(tile.row, tile.column)]

    def read(self, jobs: Sequence[Job]) -> tuple[list[JobInput], FrameLink | None]:
        (job,) = jobs
        assert isinstance(job, TileJob) and job.tile is not None
        content = self._content(job.tile.window)
        opts = self.plan.options
        if not self.last:
            return [JobInput(content, _working)], None
        grey = self.plan.content.grey and opts.keep_grey
        colours = content if opts.content_colours == "luminance" and not self.plan.content.grey else None
        return [JobInput(content, functools.partial(finish, grey=grey, alpha=None, colours=colours))], None

    def _content(self, window: tiles.Region) -> torch.Tensor:
        raw = read_downscaled(self.full.image, window, self.level.downscale)
        values = self.plan.content.map(raw)
        rgb = np.repeat(values[..., None], 3, axis=-1) if self.plan.content.grey else values
        return to_tensor(rgb, self.plan.device)

    def reader(self) -> TileLevel:
        """Itself: a tile's window is read when its turn comes."""
        return self

    def close(self) -> None:
        """Nothing is read ahead."""

    def carry(self, job: Job, link: FrameLink | None) -> Carry:
        assert isinstance(job, TileJob) and job.tile is not None
        return Carry(start=self._start(job.tile.window))

    def keep(self, job: Job, carry: Carry, images: torch.Tensor) -> None:
        """Nothing: each tile starts from the coarser level, never from another tile."""

    def _start(self, window: tiles.Region) -> torch.Tensor:
        """The coarser level enlarged 2x over ``window``: read with a pixel of context on each
        side (what bilinear enlarging reads), enlarged, cut to the window."""
        height, width = self.coarser.shape
        region = tiles.Region(
            max(0, window.top // 2 - 1),
            max(0, window.left // 2 - 1),
            min(height, math.ceil(window.bottom / 2) + 1),
            min(width, math.ceil(window.right / 2) + 1),
        )
        coarse = to_tensor(self.coarser.read(region), self.plan.device)
        enlarged = resize(coarse, 2 * region.shape[0], 2 * region.shape[1])
        top, left = window.top - 2 * region.top, window.left - 2 * region.left
        return enlarged[..., top : top + window.shape[0], left : left + window.shape[1]].clamp(0, 1)


def _level_plan(p: Plan, shape: tuple[int, int]) -> Plan:
    """``p`` at a finer level of ``shape``: the styles at the matching scale (``style_scale``
    as at the working size), so every tile of the level shares their targets."""
    content = max(p.content.shape)
    style_shapes = []
    for style, scale in zip(p.styles, p.options.style_scales(len(p.styles)), strict=True):
        factor = max(shape) / content * scale
        style_shapes.append((max(1, round(style.shape[0] * factor)), max(1, round(style.shape[1] * factor))))
    level = Level(shape, tuple(style_shapes), p.options.steps)
    return dataclasses.replace(p, levels=(level,), scale=max(shape) / content)


def stylize_full(content: Any, style: Any, *, out: Any = None, force: bool = False, **options: Any) -> Any:
    """:func:`~napari_style_transfer.api.stylize` with ``size="full"``: the result written
    tile by tile into the OME-Zarr store ``out`` (a ``.zarr`` path or a zarr store) and
    returned as its full-resolution zarr array, opened lazily (OME axis order: ``c, y, x``
    for colour); without ``out``, a numpy array (H, W) or (H, W, 3) made in memory."""
    import zarr

    fp = plan_full(content, style, **options)
    store = open_store(fp, zarr.storage.MemoryStore() if out is None else out, force)
    for _ in run_full(fp, store):
        pass
    if out is not None:
        return store.levels[0]
    height, width = store.levels[0].shape[-2:]
    return store.level_image(0).read(tiles.Region(0, 0, height, width))


def tiles_finished(level: ResultStore) -> int:
    """How many tiles of one level of a result store are done: a level whose tiles are
    blended records each tile in its pieces store (``scratch/pieces-HxW`` inside the level's
    own group) before its cells are blended at the level's end, so there the pieces count."""
    pieces = "scratch/pieces-{}x{}".format(*level.shape[:2])
    counted = ResultStore(level.group[pieces], level.tile_size) if pieces in level.group else level
    return int(counted.finished().sum())
