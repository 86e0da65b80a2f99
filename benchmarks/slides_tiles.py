"""Where a full-resolution run's time and memory go, tile by tile (issue 31).

    python benchmarks/slides_tiles.py profile --size 2048 --steps 1   # CPU-time fractions
    python benchmarks/slides_tiles.py trace --size 2048 --steps 1     # memory after each tile

Both run ``stylize(slide, style, size="full", out=...)`` in this process on a generated
tissue slide (``slides_memory.write_slide``: a zarr array written a block at a time), tiles
of 512 (``--tile-size``), default layers, untrained weights, one torch thread.

- ``profile``: cProfile with the process's CPU time as its clock (``time.process_time``),
  so other processes on a loaded machine change the total little and the fractions less;
  prints the share of the run in the optimiser's evaluations (forward and backward), the
  content targets, the style targets, the model, reading, blending and writing, and the
  evaluations per job.
- ``trace``: after each tile (its piece written) and each level's blend, the resident
  anonymous memory (RssAnon) and glibc's heap (``mallinfo2``: bytes in use and bytes freed
  but kept), and the largest RssAnon sampled every 0.05 s since the previous line.
"""

from __future__ import annotations

import argparse
import cProfile
import ctypes
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

#: (label, module file, function) of the parts the profile reports, as cumulative CPU time
PARTS = (
    ("optimiser evaluations (forward + backward)", "lbfgs.py", "_evaluate"),
    ("content targets (a forward per tile)", "objective.py", "content_features"),
    ("style targets (per level)", "objective.py", "__init__"),
    ("the model (once)", "optimise.py", "load_model"),
    ("the composition (its evaluations included)", "tiled.py", "_compose"),
    ("tile windows read", "tiled.py", "read"),
    ("tile starts (coarser level enlarged)", "tiled.py", "_start"),
    ("tile pieces written", "zarr_sink.py", "take"),
    ("levels blended", "zarr_sink.py", "finalise"),
    ("memory given back (malloc_trim)", "memory.py", "release_freed_memory"),
)


def _run(folder: Path, size: int, steps: int, tile_size: int) -> None:
    import slides_memory
    from slides import style_texture

    from napari_style_transfer import api

    content = folder / f"slide-{size}.zarr"
    if not content.exists():
        slides_memory.write_slide(content, size, "zarr")
    out = folder / f"result-{time.time_ns()}.ome.zarr"
    options = {"steps": steps, "tile_size": tile_size, "weights": "random", "seed": 0, "threads": 1}
    api.stylize(str(content), style_texture(256), size="full", out=str(out), **options)


def profile(folder: Path, size: int, steps: int, tile_size: int) -> None:
    from napari_style_transfer import lbfgs

    evaluations_before = _count_evaluations(lbfgs)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    _run(folder, size, steps, tile_size)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in stats.values())
    print(f"{size} px, {steps} step(s) per tile and level: {total:.1f} s of CPU time")
    for label, module, function in PARTS:
        hits = [entry for key, entry in stats.items() if key[0].endswith(module) and key[2] == function]
        seconds = sum(entry[3] for entry in hits)
        print(f"| {label} | {seconds:.1f} s | {seconds / total:.1%} |")
    print(f"evaluations: {evaluations_before()}")


def _count_evaluations(lbfgs: Any) -> Callable[[], int]:
    counted = [0]
    evaluate = lbfgs.BoxLBFGS._evaluate

    def counting(self, x):
        counted[0] += 1
        return evaluate(self, x)

    lbfgs.BoxLBFGS._evaluate = counting
    return lambda: counted[0]


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon", "VmHWM")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) // 1024
    return fields


def trace(folder: Path, size: int, steps: int, tile_size: int) -> None:
    from napari_style_transfer.pipeline import zarr_sink

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    samples: list[tuple[float, int]] = []

    def sample() -> None:
        while True:
            samples.append((time.perf_counter(), _status()["RssAnon"]))
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    lines: list[str] = []
    since = [time.perf_counter()]

    def mark(what: str) -> None:
        now, heap, status = time.perf_counter(), libc.mallinfo2(), _status()
        peak = max([rss for at, rss in samples if since[0] <= at <= now] or [status["RssAnon"]])
        since[0] = now
        lines.append(
            f"| {what} | {peak} | {status['RssAnon']} | {heap.uordblks >> 20} | {heap.fordblks >> 20} "
            f"| {status['VmHWM']} |"
        )

    take, finalise = zarr_sink.FeatheredPiece.take, zarr_sink.FeatheredLevel.finalise

    def taken(piece, index, image):
        take(piece, index, image)
        window = piece.tile.window.shape
        mark(f"{piece.level.shape[0]} px r{piece.tile.row}c{piece.tile.column} ({window[0]}x{window[1]})")

    def finalised(level, frame=()):
        finalise(level, frame)
        mark(f"{level.shape[0]} px blended")

    zarr_sink.FeatheredPiece.take, zarr_sink.FeatheredLevel.finalise = taken, finalised
    _run(folder, size, steps, tile_size)
    print(
        "| after | peak RssAnon since the line above (MiB) | RssAnon | heap in use | heap freed, kept | VmHWM |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("profile", "trace"))
    parser.add_argument("--size", type=int, default=2048, help="the slide's side, px")
    parser.add_argument("--steps", type=int, default=1, help="per tile and level")
    parser.add_argument("--tile-size", type=int, default=512)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        measure = profile if args.part == "profile" else trace
        measure(Path(folder), args.size, args.steps, args.tile_size)


if __name__ == "__main__":
    main()
