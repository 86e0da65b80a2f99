"""What a refresh of a full-resolution run's layer costs napari's thread: the reads of the
filling pictures (``_napari/filling.py``) for a store caught halfway through its last level.

    python benchmarks/filling_reads.py                         # an 8192 px slide, tiles of 512
    python benchmarks/filling_reads.py --side 16384            # the issue's slide (writes ~3 GB)
    python benchmarks/filling_reads.py --side 2048 --tile 256  # a quick check that it works

No optimisation runs: the run is planned (shallow layers, as a slide would be), its stores are
made where the run makes them and filled with noise, every level below full size finished and
half of full resolution's tiles done as pieces (not blended yet). Then it times, each the
median of ``--repeats``: the coarsest pyramid level read whole (what napari reads at each
refresh: its thumbnail, and the view zoomed out), and a 1280 x 800 screen at full resolution
where finished pieces meet the coarser level enlarged. Timings mean something only on an
otherwise idle machine; the numbers printed say which machine and load they came from. The
coarsest level grows with the slide (the store's pyramid stops at chunks of 32 px: 1/16 of
the side at tiles of 512), and napari reads it whole at each refresh.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_style_transfer._napari.filling import filling_pyramid
from napari_style_transfer.pipeline.tiled import level_name, open_store, pieces_name, plan_full
from napari_style_transfer.tiles import Region

SHALLOW = {"content_layers": "conv2_2", "style_layers": "conv1_1,conv2_1", "weights": "random"}


def half_finished_store(side: int, tile: int, folder: Path):
    """A store planned for a ``side`` x ``side`` RGB slide, as a run leaves it halfway through
    its last level: the levels below full size finished, half of the last level's pieces."""
    rng = np.random.default_rng(0)
    import zarr

    # never read: a lazy slide (no pixels written but a corner, for the contrast check)
    content = zarr.create_array(
        zarr.storage.MemoryStore(), shape=(side, side, 3), chunks=(tile, tile, 3), dtype="uint8"
    )
    content[:tile, :tile] = rng.integers(0, 255, (tile, tile, 3), np.uint8)
    style = rng.random((64, 64, 3), np.float32)
    fp = plan_full(content, style, size="full", tile_size=tile, **SHALLOW)
    store = open_store(fp, str(folder / "slide styled.ome.zarr"))
    for level in fp.levels[:-1]:
        fill(store.scratch(level_name(level.shape), (*level.shape, 3)), rng, 1.0)
    rows, columns = store.grid
    size = tile + fp.blend
    pieces = store.scratch(pieces_name(fp.levels[-1].shape), (rows * size, columns * size, 3), size)
    fill(pieces, rng, 0.5)
    return fp, store


def fill(store, rng: np.random.Generator, share: float) -> None:
    """Write noise into the first ``share`` of ``store``'s cells, row by row, each recorded."""
    rows, columns = store.grid
    for number in range(round(rows * columns * share)):
        row, column = divmod(number, columns)
        cell = store.cell(row, column)
        store.write_tile(row, column, rng.random((*cell.shape, 3), np.float32))


def median_ms(read, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        read()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=8192, help="the slide's side (px)")
    parser.add_argument("--tile", type=int, default=512, help="tile size (px)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fp, store = half_finished_store(args.side, args.tile, Path(folder))
        pyramid = filling_pyramid(fp, store)
        coarsest = pyramid[-1]
        middle = args.side // 2  # where finished pieces meet the enlarged level
        screen = Region(middle - 400, middle - 640, middle + 400, middle + 640)
        screen_ms = median_ms(lambda: pyramid[0][screen.slices], args.repeats)
        coarsest_ms = median_ms(lambda: np.asarray(coarsest), args.repeats)
    print(f"slide {args.side} px, tiles {args.tile}, levels {[level.shape for level in fp.levels]}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"coarsest level {coarsest.shape}, read whole: {coarsest_ms:.0f} ms (median of {args.repeats})")
    print(f"a 1280 x 800 screen at full resolution: {screen_ms:.0f} ms (median of {args.repeats})")


if __name__ == "__main__":
    main()
