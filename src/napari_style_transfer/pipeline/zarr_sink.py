"""Sinks that write a full-resolution run into a result store (:mod:`..zarr_output`), a
tile's cell at a time, each cell recorded as finished once written (what a rerun skips)."""

from __future__ import annotations

import numpy as np

from ..tiles import Tile
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
