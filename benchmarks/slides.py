"""Seams, consistency and peak memory of full-resolution (tiled) runs, issue 31; and their
speed on a dask cluster (the ``cluster`` part).

    python benchmarks/slides.py              # small: 256 px, tiles of 64 (a few minutes on 2 cores)
    python benchmarks/slides.py --size 4096 --tile-size 512 --steps 50 --layers default
                                             # the issue's sizes: for a quiet machine (and 16384)
    python benchmarks/slides.py cluster --size 2048 --tile-size 512 --steps 50 --layers default
                                             # megapixels per minute, here and on 1 and 2 workers

On a generated stationary tissue texture (blobs and noise, RGB) it runs five ways and
measures each result:

- ``tiled, cut``: ``size="full"`` with cores cut at the store's cells (``blend=0``: the
  scheme before seams were hidden);
- ``tiled, blended``: ``size="full"`` as it runs now, neighbours blended across their
  context margins;
- ``offset 2nd pass``: the other scheme, emulated here (it is not in the pipeline): a second
  pass over the cut run's full level with the grid moved by ``tiles.grid_offset``;
- ``untiled``: the whole image as one run at its own size (the reference);
- ``cut, style, stitch``: each tile styled alone as its own image, stitched (the naive way).

**seams**: the mean gradient magnitude of the result along each column (and row), divided by
its median over columns (rows); the largest ratio at a tile border (goal: at most 1.15; an
untiled 512 px texture gives 1.09 by the issue) and the largest elsewhere (leaving out the image's outer 4 px). **consistency**:
over windows of ``--window`` px, the spread (standard deviation) of the per-channel mean and
of the per-channel standard deviation, divided by the content's same spread (goal: at most
1.2). **peak memory**: VmHWM of a fresh process running ``size="full"`` into a zarr store at
two image sizes with the same tile size (it should not grow with the image).

Writes a table between the ``slides-benchmark`` markers of ``docs/slides.md`` and a montage of
the region where four tiles meet, ``docs/images/slides_seams.png``. Untrained weights (no
download here) show the mechanics of tiling, never the look of a trained style transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "slides.md"
MONTAGE = ROOT / "docs" / "images" / "slides_seams.png"
BEGIN, END = "<!-- slides-benchmark:begin -->", "<!-- slides-benchmark:end -->"
CLUSTER_BEGIN, CLUSTER_END = (
    "<!-- slides-cluster-benchmark:begin -->",
    "<!-- slides-cluster-benchmark:end -->",
)
#: shallow layers keep the margin (and so each tile's window) small on a loaded CPU
#: steps this close to the image's edges are left out of "elsewhere"
EDGE = 4
SHALLOW = {"content_layers": ["conv2_2"], "style_layers": ["conv1_1", "conv2_1", "conv3_1"]}


def tissue(size: int, seed: int = 0) -> np.ndarray:
    """A stationary synthetic tissue texture (size, size, 3) in [0, 1]: purple nuclei-like
    blobs on a pink stroma with fine fibres and noise, the same statistics everywhere."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    nuclei = gaussian(rng.random((size, size)), sigma=3) > 0.53
    nuclei = gaussian(nuclei.astype(float), sigma=1)
    fibres = gaussian(rng.random((size, size)), sigma=(1, 6))
    fibres = (fibres - fibres.mean()) / fibres.std()
    stroma = np.array([0.93, 0.70, 0.80]) + 0.05 * fibres[..., None]
    purple = np.array([0.35, 0.20, 0.55])
    image = stroma * (1 - nuclei[..., None]) + purple * nuclei[..., None]
    image += 0.03 * rng.standard_normal(image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def tissue_block(row: int, col: int, block: int = 1024, seed: int = 0) -> np.ndarray:
    """Block (row, col), ``block`` px a side, of an endless stationary tissue like
    :func:`tissue`, seamless with its neighbours: each block's noise comes from its own seed
    and the filters see the neighbours' noise across the borders, so a slide of any size
    can be written a block at a time with no block edge in it (fixed normalisation, no
    per-block statistics)."""
    from skimage.filters import gaussian

    pad = 32  # beyond 4 sigma of the widest filter (6 px)

    def noise(r: int, c: int) -> np.ndarray:
        return np.random.default_rng([seed, r + 2**20, c + 2**20]).random((2, block, block))

    around = np.block([[noise(r, c) for c in (col - 1, col, col + 1)] for r in (row - 1, row, row + 1)])
    field = around[:, block - pad : 2 * block + pad, block - pad : 2 * block + pad]
    nuclei = gaussian(gaussian(field[0], sigma=3) > 0.53, sigma=1)
    # filtered uniform noise: mean 1/2, std sqrt(1/12) / sqrt(4 pi sigma_y sigma_x)
    fibres = (gaussian(field[1], sigma=(1, 6)) - 0.5) / (np.sqrt(1 / 12) / np.sqrt(4 * np.pi * 6))
    nuclei, fibres = nuclei[pad:-pad, pad:-pad], fibres[pad:-pad, pad:-pad]
    stroma = np.array([0.93, 0.70, 0.80]) + 0.05 * fibres[..., None]
    purple = np.array([0.35, 0.20, 0.55])
    image = stroma * (1 - nuclei[..., None]) + purple * nuclei[..., None]
    pixels = np.random.default_rng([seed, row + 2**20, col + 2**20, 1]).standard_normal(image.shape)
    return np.clip(image + 0.03 * pixels, 0, 1).astype(np.float32)


def style_texture(size: int = 96, seed: int = 1) -> np.ndarray:
    """A generated style: coloured diagonal stripes with noise (no painting)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    wave = 0.5 + 0.5 * np.sin((x + y) / 4.0)
    image = np.stack([wave, 1 - wave, 0.5 + 0.3 * np.cos(x / 6.0)], axis=-1)
    return np.clip(image + 0.1 * rng.standard_normal(image.shape), 0, 1).astype(np.float32)


def seams(image: np.ndarray, tile_size: int) -> tuple[float, float]:
    """(largest ratio at a tile border, largest elsewhere) of the mean gradient magnitude per
    column and per row to its median; a border at ``k * tile_size`` is the step from pixel
    ``k * tile_size - 1`` to ``k * tile_size``."""
    at_borders, elsewhere = [], []
    for axis in (1, 0):  # columns (steps along x), then rows
        steps = np.abs(np.diff(image, axis=axis)).mean(axis=-1)  # channels averaged
        profile = steps.mean(axis=1 - axis)  # one value per step position
        ratio = profile / np.median(profile)
        border = np.zeros(ratio.shape, bool)
        border[tile_size - 1 :: tile_size] = True  # step i goes from pixel i to i + 1
        inside = np.zeros(ratio.shape, bool)
        inside[EDGE:-EDGE] = True  # the image's own edges (zero padding) are no seams
        at_borders.append(ratio[border].max() if border.any() else np.nan)
        elsewhere.append(ratio[~border & inside].max())
    return float(np.nanmax(at_borders)), float(max(elsewhere))


def window_spread(image: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the spread over windows of the window's mean, and of its std."""
    height, width = image.shape[:2]
    cells = [
        image[top : top + window, left : left + window].reshape(-1, image.shape[-1])
        for top in range(0, height - window + 1, window)
        for left in range(0, width - window + 1, window)
    ]
    means = np.array([cell.mean(axis=0) for cell in cells])
    stds = np.array([cell.std(axis=0) for cell in cells])
    return means.std(axis=0), stds.std(axis=0)


def consistency(result: np.ndarray, content: np.ndarray, window: int) -> tuple[float, float]:
    """(mean spread, std spread) of the result relative to the content's, averaged over channels."""
    result_mean, result_std = window_spread(result, window)
    content_mean, content_std = window_spread(content, window)
    return float((result_mean / content_mean).mean()), float((result_std / content_std).mean())


def run_four(content: np.ndarray, style: np.ndarray, tile_size: int, options: dict) -> dict[str, np.ndarray]:
    import dataclasses

    import zarr

    from napari_style_transfer import api
    from napari_style_transfer.pipeline import tiled

    results: dict[str, np.ndarray] = {}
    for name, blend in (("tiled, cut", 0), ("tiled, blended", None)):
        fp = tiled.plan_full(content, style, size="full", tile_size=tile_size, **options)
        if blend is not None:
            fp = dataclasses.replace(fp, blend=blend)
        store = tiled.open_store(fp, zarr.storage.MemoryStore())
        for _ in tiled.run_full(fp, store):
            pass
        results[name] = np.moveaxis(np.asarray(store.levels[0][...]), 0, -1)
    results["offset 2nd pass"] = offset_second_pass(content, style, results["tiled, cut"], tile_size, options)
    results["untiled"] = api.stylize(content, style, size=max(content.shape[:2]), **options)
    stitched = np.zeros_like(content)
    height, width = content.shape[:2]
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            piece = content[top : top + tile_size, left : left + tile_size]
            stitched[top : top + tile_size, left : left + tile_size] = api.stylize(
                piece, style, size=max(piece.shape[:2]), **options
            )
    results["cut, style, stitch"] = stitched
    return results


def offset_second_pass(
    content: np.ndarray, style: np.ndarray, first: np.ndarray, tile_size: int, options: dict
) -> np.ndarray:
    """The other scheme, emulated for the comparison (not in the pipeline): a second pass over
    the full level of a cut run (``first``), its grid moved by ``tiles.grid_offset``, each
    tile starting from ``first`` over its window, its core written where it falls."""
    import time as clock

    import zarr

    from napari_style_transfer import tiles
    from napari_style_transfer.pipeline import tiled
    from napari_style_transfer.pipeline.optimise import Optimiser, load_model
    from napari_style_transfer.pipeline.reader import read_styles, to_tensor
    from napari_style_transfer.pipeline.records import Progress

    fp = tiled.plan_full(content, style, size="full", tile_size=tile_size, **options)
    targets = tiled._targets(fp, tiled.open_store(fp, zarr.storage.MemoryStore()))
    level = tiled.TileLevel(fp, fp.levels[-1], targets[-2], targets[-1])
    stride = tiles.min_tile_size(fp.composition.options.layers)
    offset = tiles.grid_offset(fp.composition.options.seed or 0, 1, tile_size, stride)
    level.grid = tiles.tile_grid(fp.levels[-1].shape, tile_size, fp.margin, offset=offset)
    level._unfinished = lambda frame=(): level.grid  # type: ignore[method-assign]
    level._start = lambda window, frame=(): to_tensor(first[window.slices], fp.composition.device)  # type: ignore[method-assign]
    result = first.copy()

    class Core:
        def __init__(self, tile: tiles.Tile):
            self.tile = tile

        def take(self, index: tuple[int, ...], image: np.ndarray) -> None:
            result[self.tile.core.slices] = image[self.tile.core.within(self.tile.window)]

    p = fp.composition
    model = load_model(p)
    jobs = level.tile_jobs()
    progress = Progress(clock.perf_counter(), str(p.device), model.weights.description, len(jobs), 1, 0)
    optimiser = Optimiser(level.plan, model, read_styles(level.plan), progress)
    for job in jobs:
        for _ in optimiser.run_jobs([job], level, level, Core(job.tile), 1):  # type: ignore[arg-type]
            pass
    return result


def peak_memory(size: int, tile_size: int, options: dict) -> float:
    """VmHWM (MiB) of a fresh process running ``size="full"`` of a ``size`` px texture into a zarr store."""
    code = f"""
import json, sys, tempfile
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from slides import tissue, style_texture
from napari_style_transfer import api
with tempfile.TemporaryDirectory() as folder:
    api.stylize(tissue({size}), style_texture(), size="full", tile_size={tile_size},
                out=folder + "/r.ome.zarr", **json.loads({json.dumps(json.dumps(options))}))
status = open("/proc/self/status").read()
print([line for line in status.splitlines() if line.startswith("VmHWM")][0].split()[1])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1]) / 1024


def montage(results: dict[str, np.ndarray], tile_size: int, zoom: int) -> None:
    """Crops around a point where four tiles meet, side by side, each pixel shown ``zoom`` x ``zoom``."""
    from skimage.io import imsave

    corner, half = 2 * tile_size, tile_size // 2
    crops = [
        image[corner - half : corner + half, corner - half : corner + half] for image in results.values()
    ]
    gap = np.ones((2 * half, 4, 3), np.float32)
    row = np.concatenate([part for crop in crops for part in (crop, gap)][:-1], axis=1)
    row = row.repeat(zoom, axis=0).repeat(zoom, axis=1)
    MONTAGE.parent.mkdir(parents=True, exist_ok=True)
    imsave(MONTAGE, (np.clip(row, 0, 1) * 255).astype(np.uint8), check_contrast=False)


def _warm(weights: str) -> None:
    """In this process or a worker: the package imported and the network loaded, kept."""
    from napari_style_transfer.pipeline.executors import prepare_worker_process
    from napari_style_transfer.weights import load_vgg19_features

    prepare_worker_process()
    load_vgg19_features(weights)


def megapixels_per_minute(
    content: np.ndarray, style: np.ndarray, tile_size: int, options: dict, workers: int
) -> tuple[float, float]:
    """(megapixels per minute, seconds) of ``size="full"`` of ``content`` into a zarr store,
    its tiles on a LocalCluster of ``workers`` processes (0: in this process). The cluster's
    start and each process's first load of the network are left out (a slide runs for hours
    on one), here as on the workers."""
    import tempfile
    from contextlib import nullcontext

    from napari_style_transfer import api
    from napari_style_transfer.distributed import cluster_client
    from napari_style_transfer.weights import keeping_weights

    where = nullcontext(None) if workers == 0 else cluster_client(workers=workers)
    with where as client, keeping_weights(), tempfile.TemporaryDirectory() as folder:
        _warm(options["weights"])
        if client is not None:
            client.run(_warm, options["weights"])  # this script's function travels by value
        started = time.perf_counter()
        out = f"{folder}/r.ome.zarr"
        api.stylize(content, style, size="full", tile_size=tile_size, out=out, client=client, **options)
        seconds = time.perf_counter() - started
    return content.shape[0] * content.shape[1] / 1e6 / (seconds / 60), seconds


def cluster_table(args: argparse.Namespace, options: dict) -> list[str]:
    """The ``cluster`` part's table: the same slide here and on each number of workers."""
    content, style = tissue(args.size), style_texture()
    lines = [
        f"{args.size} x {args.size} px synthetic tissue, tiles of {args.tile_size}, {args.steps} steps per "
        f"tile and level, {args.layers} layers, untrained weights; the composition and the blending on the "
        "client, the tiles on a LocalCluster started here (torch threads shared out among the workers).",
        "",
        "| tiles run | seconds | megapixels per minute |",
        "| --- | --- | --- |",
    ]
    for workers in (0, *args.workers):
        rate, seconds = megapixels_per_minute(content, style, args.tile_size, options, workers)
        where = "in this process" if workers == 0 else f"{workers} worker{'s' * (workers > 1)}"
        lines.append(f"| {where} | {seconds:.1f} | {rate:.3f} |")
    return lines


def write_table(lines: list[str], begin: str = BEGIN, end: str = END) -> None:
    """``lines`` between the markers ``begin`` and ``end`` of docs/slides.md (added at its end)."""
    text = PAGE.read_text()
    block = "\n".join([begin, *lines, end])
    if begin in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    PAGE.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "part", nargs="?", choices=("seams", "cluster"), default="seams", help="what to measure"
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--window", type=int, default=64, help="consistency windows (px)")
    parser.add_argument("--layers", choices=("shallow", "default"), default="shallow")
    parser.add_argument("--memory-sizes", type=int, nargs=2, default=(192, 384))
    parser.add_argument("--workers", type=int, nargs="+", default=(1, 2), help="cluster part: workers to try")
    parser.add_argument(
        "--print-only", action="store_true", help="print the table, leave the docs as they are"
    )
    args = parser.parse_args()
    options = {"steps": args.steps, "seed": 0, "weights": "random", "schedule": "none"}
    if args.layers == "shallow":
        options |= SHALLOW
    if args.part == "cluster":
        lines = cluster_table(args, options)
        if not args.print_only:
            write_table(lines, CLUSTER_BEGIN, CLUSTER_END)
        print("\n".join(lines))
        return
    content, style = tissue(args.size), style_texture()
    started = time.perf_counter()
    results = run_four(content, style, args.tile_size, options)
    lines = [
        f"{args.size} x {args.size} px synthetic tissue, tiles of {args.tile_size}, {args.steps} steps "
        f"per tile and level, {args.layers} layers, untrained weights; consistency over "
        f"{args.window} px windows (the content's spread = 1).",
        "",
        "| run | seam peak at tile borders | largest elsewhere | spread of means | spread of stds |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, result in results.items():
        border, other = seams(result, args.tile_size)
        means, stds = consistency(result, content, args.window)
        lines.append(f"| {name} | {border:.2f}x | {other:.2f}x | {means:.2f}x | {stds:.2f}x |")
    small, large = args.memory_sizes
    memory = [peak_memory(size, args.tile_size, options) for size in (small, large)]
    lines += [
        "",
        f'Peak resident memory (VmHWM, fresh process, `size="full"` into a zarr store, tiles of '
        f"{args.tile_size}): {small} px {memory[0]:.0f} MiB, {large} px {memory[1]:.0f} MiB "
        f"({(memory[1] / memory[0] - 1) * 100:+.1f}%).",
        "",
        f"Measured in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f} at the end "
        "(timings mean something only near 0).",
    ]
    montage(results, args.tile_size, zoom=3)
    write_table(lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
