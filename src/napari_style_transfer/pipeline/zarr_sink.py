"""Sinks that write a full-resolution run into a result store (:mod:`..zarr_output`), a
tile's cell at a time, each cell recorded as finished once written (what a rerun skips)."""

from __future__ import annotations

import numpy as np

from ..tiles import Region, Tile, feathered_core
from ..zarr_output import ResultStore


class TileCell:
    """The sink of one tile's job: the tile's core, cut from its window's image, written as
    the tile's cell of ``store`` (the grid's cores are the store's cells: no overlap, no offset)."""

    def __init__(self, store: ResultStore, tile: Tile):
        self.store, self.tile = store, tile

    def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
        core = image[self.tile.core.within(self.tile.window)]
        self.store.write_tile(self.tile.row, self.tile.column, core, index)

    @property
    def result(self) -> ResultStore:
        return self.store


class WholeImage:
    """The sink of an untiled job (the composition): its image cut into the store's cells,
    each written and recorded."""

    def __init__(self, store: ResultStore):
        self.store = store

    def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
        rows, columns = self.store.grid
        for row in range(rows):
            for column in range(columns):
                cell = self.store.cell(row, column)
                self.store.write_tile(row, column, image[cell.slices], index)

    @property
    def result(self) -> ResultStore:
        return self.store


class FeatheredLevel:
    """One level whose tiles overlap by their context margins and are blended, so no seam
    shows: each tile's job writes its feathered core (:func:`..tiles.feathered_core`) into
    a cell of ``pieces`` (a scratch store with cells of ``piece`` pixels, recorded there),
    and once every tile is done, :meth:`finalise` writes each cell of ``target`` as the
    weighted mean of the pieces that reach it (at most its 3x3 neighbours). Both records
    make it resumable: a rerun skips finished pieces, then finished cells."""

    def __init__(self, target: ResultStore, pieces: ResultStore, grid: list[Tile], band: int):
        self.target, self.pieces, self.band = target, pieces, band
        self.shape = target.level_image(0).shape
        self.tiles = {(tile.row, tile.column): tile for tile in grid}

    def sink(self, tile: Tile) -> FeatheredPiece:
        return FeatheredPiece(self, tile)

    def finalise(self, frame: tuple[int, ...] = ()) -> None:
        rows, columns = self.target.grid
        for row in range(rows):
            for column in range(columns):
                if not self.target.is_finished(row, column, frame):
                    self.target.write_tile(
                        row, column, self._blend(self.target.cell(row, column), frame), frame
                    )

    def _blend(self, cell: Region, frame: tuple[int, ...]) -> np.ndarray:
        row, column = cell.top // self.target.tile_size, cell.left // self.target.tile_size
        total: np.ndarray | None = None
        weights = np.zeros(cell.shape, np.float32)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                tile = self.tiles.get((row + dy, column + dx))
                if tile is None:
                    continue
                region, weight = feathered_core(tile, self.shape, self.band)
                overlap = _intersection(region, cell)
                if overlap is None:
                    continue
                piece = self._piece(tile, region, frame)[overlap.within(region)]
                share = weight[overlap.within(region)]
                if total is None:
                    total = np.zeros((*cell.shape, *piece.shape[2:]), np.float32)
                total[overlap.within(cell)] += piece * (share[..., None] if piece.ndim == 3 else share)
                weights[overlap.within(cell)] += share
        assert total is not None  # a cell's own tile always reaches it
        return total / (weights[..., None] if total.ndim == 3 else weights)

    def _piece(self, tile: Tile, region: Region, frame: tuple[int, ...]) -> np.ndarray:
        cell = self.pieces.cell(tile.row, tile.column)
        stored = self.pieces.level_image(0).read(cell, frame)
        return stored[: region.shape[0], : region.shape[1]]


class FeatheredPiece:
    """The sink of one tile's job on a :class:`FeatheredLevel`: its feathered core, cut from
    its window's image, padded to a whole cell of the pieces store and recorded there."""

    def __init__(self, level: FeatheredLevel, tile: Tile):
        self.level, self.tile = level, tile

    def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
        region, _ = feathered_core(self.tile, self.level.shape, self.level.band)
        piece = image[region.within(self.tile.window)]
        size = self.level.pieces.tile_size
        padded = np.zeros((size, size, *piece.shape[2:]), np.float32)
        padded[: piece.shape[0], : piece.shape[1]] = piece
        self.level.pieces.write_tile(self.tile.row, self.tile.column, padded, index)

    @property
    def result(self) -> ResultStore:
        return self.level.target


def _intersection(a: Region, b: Region) -> Region | None:
    region = Region(max(a.top, b.top), max(a.left, b.left), min(a.bottom, b.bottom), min(a.right, b.right))
    return region if region.bottom > region.top and region.right > region.left else None
