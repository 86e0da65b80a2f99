"""A full-resolution level's tiles as tasks elsewhere (an executor: a dask cluster's, a
process pool), each written into the store as it finishes and recorded there, so a rerun
resumes as after a run in this thread.

Where the store is on a file system (a ``.zarr`` path: shared with the workers), each task
reopens it, reads its start from the coarser level and writes its own piece. Elsewhere (a
store in memory) the start travels with the task and the piece comes back to be written
here. The composition and the blending of a level stay with the caller (:mod:`.tiled`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import tiles
from ..engine import with_backend_flags
from ..errors import StyleTransferError
from ..memory import release_freed_memory
from ..speed_probe import with_threads
from ..zarr_output import ResultStore
from .executors import Elsewhere, prepare_worker_process, run_on
from .optimise import Optimiser, load_model
from .reader import read_styles
from .records import Progress, StepRecord
from .runner import memory_errors
from .tiled import FullPlan, TileJob, TileLevel, _targets, open_store, start_region, tile_precision

#: Times a tile's task that raises is started again before the tile counts as failed (on a
#: dask cluster: its ``retries``; a task whose worker dies is started again by the
#: scheduler's own allowed-failures).
TILE_RETRIES = 2


@dataclass(frozen=True)
class LevelWork:
    """What every tile task of one level takes: the run's plan, which level (an index into
    ``full.levels``), and where the workers open the store (a zarr store on a file system and
    the group's path in it), or None where they cannot (the pieces come back)."""

    full: FullPlan
    level: int
    location: tuple[Any, str] | None


@dataclass(frozen=True)
class CoarseWindow:
    """The part of the coarser level that one tile's start reads, sent with its task where
    the workers cannot open the store; read as :class:`TileLevel` reads a level."""

    shape: tuple[int, int]  # the whole coarser level's
    region: tiles.Region
    pixels: np.ndarray

    def level_image(self, level: int = 0) -> CoarseWindow:
        return self

    def read(self, region: tiles.Region, frame: tuple[int, ...] = ()) -> np.ndarray:
        return self.pixels[region.within(self.region)]


@dataclass(frozen=True)
class TileOutcome:
    """What a tile task gives back: its last step's record (without its image) and, where
    the worker could not write into the store, the tile's cell of the level's records store
    (its feathered piece, or its core where the level is not blended)."""

    record: StepRecord
    cell: np.ndarray | None


def run_tile(work: LevelWork, job: TileJob, coarse: CoarseWindow | None) -> TileOutcome:
    """A task: one tile of ``work``'s level optimised in the worker that runs it, as the
    run in one thread optimises it (the same start, content window and style targets)."""
    prepare_worker_process()
    fp = work.full
    coarser, target = _stores(work, coarse)
    planner = TileLevel(fp, fp.levels[work.level], coarser, target)
    assert job.tile is not None
    p = planner.plan_for(job)  # the tile's guide, where style_regions are given
    with memory_errors(p):
        model = load_model(p, tile_precision(p.options.precision))
        progress = Progress(time.perf_counter(), str(p.device), model.weights.description, 1, job.steps, 0)
        optimiser = Optimiser(p, model, read_styles(p), progress)
        records = optimiser.run_jobs([job], planner, planner, planner.sink(job.tile), 1)
        steps = with_threads(records, p.options.threads)  # an explicit count holds on the workers too
        for last in with_backend_flags(steps, p.options, p.device):  # noqa: B007  # the last is kept
            pass
    release_freed_memory()  # a worker runs tile after tile: see tiled._run_level
    bare = dataclasses.replace(last, image=None, _live=None, _cursor=None, _finish=None, _batch=None)
    if work.location is not None:
        return TileOutcome(bare, None)
    kept = _records(planner)
    return TileOutcome(bare, kept.level_image(0).read(kept.cell(job.tile.row, job.tile.column), job.index))


def _stores(work: LevelWork, coarse: CoarseWindow | None) -> tuple[ResultStore, ResultStore]:
    """The coarser level and the level's target, in a worker: the shared store's (made by
    the client before any task: zarr metadata is not safe to create from several processes
    at once), or the coarse window that came with the task and a store in memory."""
    import zarr

    fp = work.full
    if work.location is None:
        assert coarse is not None
        # TileLevel reads its coarser level only through level_image(0).shape and .read
        return cast(ResultStore, coarse), _targets(fp, open_store(fp, zarr.storage.MemoryStore()))[work.level]
    store, path = work.location
    levels = _targets(fp, ResultStore(zarr.open_group(store, path=path, mode="r+"), fp.tile_size))
    return levels[work.level - 1], levels[work.level]


def _records(planner: TileLevel) -> ResultStore:
    """Where a level records its finished tiles: its pieces where blended, else itself."""
    return planner.feathered.pieces if planner.feathered else planner.target


def shared_location(store: ResultStore) -> tuple[Any, str] | None:
    """Where workers can open ``store`` themselves (a zarr store on a file system, local or
    shared, and the group's path), or None (a store in memory: pieces come back)."""
    import zarr

    inner = store.group.store
    if isinstance(inner, zarr.storage.LocalStore):  # absolute: a worker's folder may be another
        return zarr.storage.LocalStore(Path(inner.root).resolve()), store.group.path
    return (inner, store.group.path) if isinstance(inner, zarr.storage.FsspecStore) else None


class TileTasks:
    """Runs each level's tile jobs as tasks ``elsewhere``: the level's work travels once
    (``Elsewhere.share``), each tile's record is yielded as it comes back (its pieces
    already in the store), and tiles that fail for good are reported by position once the
    level's other tiles are in."""

    def __init__(self, elsewhere: Elsewhere, fp: FullPlan, store: ResultStore, progress: Progress):
        self.elsewhere, self.full, self.progress = elsewhere, fp, progress
        self.location = shared_location(store)

    def run_level(
        self, planner: TileLevel, frame: tuple[int, ...], first: int
    ) -> Generator[StepRecord, None, int]:
        """One frame's unfinished tiles of ``planner``'s level as tasks, then the level
        blended here; returns the next job's number."""
        jobs = planner.tile_jobs(first, frame)
        yield from self.run(planner, jobs)
        planner.finalise(frame)
        return first + len(jobs)

    def run(self, planner: TileLevel, jobs: list[TileJob]) -> Iterator[StepRecord]:
        if not jobs:
            return
        work = LevelWork(self.full, self.full.levels.index(planner.level), self.location)
        shared = self.elsewhere.share(work)
        tasks = ((job, (shared, job, self._coarse(planner, job))) for job in jobs)
        failures: list[tuple[TileJob, BaseException]] = []
        returned = run_on(
            self.elsewhere.executor, run_tile, tasks, failed=lambda *failure: failures.append(failure)
        )
        for job, outcome in returned:
            assert job.tile is not None
            if outcome.cell is not None:
                _records(planner).write_tile(job.tile.row, job.tile.column, outcome.cell, job.index)
            yield self._counted(job, outcome.record)
        if failures:
            raise _failed(planner, failures, len(jobs))

    def _coarse(self, planner: TileLevel, job: TileJob) -> CoarseWindow | None:
        if self.location is not None:
            return None  # the worker reads it from the store
        assert job.tile is not None
        region = start_region(job.tile.window, planner.coarser.shape)
        return CoarseWindow(planner.coarser.shape, region, planner.coarser.read(region, job.index))

    def _counted(self, job: TileJob, record: StepRecord) -> StepRecord:
        """``record`` as a step of the whole run: its place among the run's steps and time."""
        progress = self.progress
        counted = dataclasses.replace(
            record,
            seconds=time.perf_counter() - progress.started,
            frames=progress.frames,
            steps_before=progress.steps_before,
            run_steps=progress.run_steps,
        )
        progress.finished([job], record.steps)
        return counted


def _failed(
    planner: TileLevel, failures: list[tuple[TileJob, BaseException]], tried: int
) -> StyleTransferError:
    height, width = planner.level.shape
    where = "; ".join(
        f"row {job.tile.row}, column {job.tile.column} (pixels {job.tile.core.top}:{job.tile.core.bottom}, "
        f"{job.tile.core.left}:{job.tile.core.right}): {_in_words(error)}"
        for job, error in failures
        if job.tile is not None
    )
    return StyleTransferError(
        f"{len(failures)} of {tried} tiles of the {height}x{width} px level failed on the cluster, tried again "
        f"as often as allowed: {where}. The tiles that finished are kept in the store: run again with the same "
        "settings to resume"
    )


def _in_words(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
