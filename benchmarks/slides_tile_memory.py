"""Where a full-resolution run's peak memory comes from, tile by tile (issue 31,
docs/slides.md "Where the 2-thread run's +11% came from"): the CLI run in this process, with
RssAnon recorded before and after each tile's ``malloc_trim``, glibc's heap figures
(``mallinfo2``) and the number of Python objects after each tile, the start and end of each
level's blend, and every 0.5 s a sample; one JSON line each into ``--trace``.

Run after ``benchmarks/slides_largest.py`` (it reuses that folder's slides, style and 16384 px
store): with ``--rows N`` the last N rows of the store's full-size tiles (and the level's cells
beside them) are marked unfinished and redone; a 4096 px run starts from an empty store.

    python benchmarks/slides_tile_memory.py --size 16384 --rows 8 --trace /tmp/t16384.jsonl
    python benchmarks/slides_tile_memory.py --size 4096 --trace /tmp/t4096.jsonl
    MALLOC_MMAP_THRESHOLD_=16777216 python benchmarks/slides_tile_memory.py --size 16384 --rows 1 --trace /tmp/t16.jsonl
    python benchmarks/slides_tile_memory.py --summary /tmp/t16384.jsonl /tmp/t4096.jsonl

Memory only (and seconds per tile, which need a quiet machine); untrained weights.
``slides_tiles.py trace`` does the like for a generated slide styled from the start.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import shutil
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from slides_largest import SHALLOW
from slides_tiles import MallInfo2  # glibc's mallinfo2 result

GRID = 32  # tiles a side of the 16384 px store at tiles of 512


class Trace:
    """One JSON line per event: the process's memory (KiB) and, where asked, glibc's heap (MiB)."""

    def __init__(self, path: Path) -> None:
        self.file, self.phase, self.started = path.open("w"), "start", time.perf_counter()
        self.libc = ctypes.CDLL("libc.so.6")
        self.libc.mallinfo2.restype = MallInfo2
        threading.Thread(target=self._sample, daemon=True).start()

    def write(self, kind: str, heap: bool = False, **extra: Any) -> None:
        status = {}
        with open("/proc/self/status") as lines:
            for line in lines:
                key, value = line.split(":", 1)
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    status[key] = int(value.split()[0])
        if heap:
            info = self.libc.mallinfo2()
            status |= {"arena_mb": info.arena >> 20, "mmap_mb": info.hblkhd >> 20}
            status |= {
                "inuse_mb": info.uordblks >> 20,
                "free_mb": info.fordblks >> 20,
                "objects": len(gc.get_objects()),
            }
        t = round(time.perf_counter() - self.started, 2)
        self.file.write(json.dumps({"t": t, "kind": kind, "phase": self.phase} | status | extra) + "\n")
        self.file.flush()

    def _sample(self) -> None:
        while True:
            self.write("sample")
            time.sleep(0.5)


def reset_rows(store: Path, rows: int) -> None:
    """Mark the last ``rows`` rows of the full-size level's tiles unfinished, and its cells from one row above."""
    import zarr

    group = zarr.open_group(store, mode="a")
    group["finished_tiles"][max(0, GRID - 1 - rows) :, :] = 0
    group["scratch/pieces-16384x16384/finished_tiles"][GRID - rows :, :] = 0


def run(args: argparse.Namespace) -> None:
    folder: Path = args.folder
    if args.size == 16384:
        store = folder / "result-16384.ome.zarr"
        reset_rows(store, args.rows)
    else:
        store = args.trace.with_suffix(".ome.zarr")
        shutil.rmtree(store, ignore_errors=True)
    trace = Trace(args.trace)
    from napari_style_transfer.pipeline import tiled, zarr_sink

    count = [0]
    trim = tiled.release_freed_memory

    def after_tile() -> bool:
        count[0] += 1
        trace.write("tile-before-trim", n=count[0])
        done = trim()
        trace.write("tile", heap=True, n=count[0])
        return done

    tiled.release_freed_memory = after_tile  # type: ignore[assignment]
    finalise = zarr_sink.FeatheredLevel.finalise

    def traced_finalise(self: Any, frame: tuple[int, ...] = ()) -> None:
        trace.phase = f"blend {self.shape}"
        trace.write("blend-begin")
        finalise(self, frame)
        trace.write("blend-end", heap=True)
        trace.phase = "tiles"

    zarr_sink.FeatheredLevel.finalise = traced_finalise  # type: ignore[method-assign]
    from napari_style_transfer.cli import main

    options = (
        {"steps": 1, "tile_size": 512, "weights": "random", "seed": 0} | SHALLOW | {"threads": args.threads}
    )
    argv = [
        str(folder / f"slide-{args.size}.zarr"),
        str(folder / "style.png"),
        "-o",
        str(store),
        "--size",
        "full",
        "-q",
    ]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    trace.phase = "tiles"
    trace.write("end", code=main(argv))


def summary(path: Path) -> str:
    """Per-tile peak RssAnon (the largest sample while the tile ran), seconds a tile, the blends' peak."""
    rows = [json.loads(line) for line in path.open()]
    tile, peaks = 0, {}
    for row in rows:
        if row["kind"] == "tile":
            tile = row["n"]
        if row["phase"] == "tiles" and row["kind"] in ("sample", "tile-before-trim"):
            peaks[tile] = max(peaks.get(tile, 0), row["RssAnon"] >> 10)
    values = [peaks[k] for k in sorted(peaks)[:-1]]  # the last key is after the last tile
    done = [row for row in rows if row["kind"] == "tile"]
    per_tile = (done[-1]["t"] - done[0]["t"]) / max(1, len(done) - 1)
    blends = [row["RssAnon"] >> 10 for row in rows if row["phase"].startswith("blend")]
    return (
        f"{path.name}: {len(done)} tiles, per-tile peak RssAnon median {statistics.median(values):.0f} MiB, "
        f"90th percentile {sorted(values)[int(0.9 * len(values))]} MiB, largest {max(values)} MiB; "
        f"VmHWM {max(row['VmHWM'] for row in rows) >> 10} MiB; {per_tile:.2f} s a tile; "
        f"blends at most {max(blends, default=0)} MiB RssAnon"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--folder", type=Path, default=Path("/tmp/slides-largest"), help="slides_largest.py's --folder"
    )
    parser.add_argument("--size", type=int, choices=(4096, 16384), default=16384)
    parser.add_argument("--rows", type=int, default=8, help="16384 px: rows of tiles to redo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace", type=Path, help="where the JSON lines go")
    parser.add_argument("--summary", type=Path, nargs="+", help="summarise traces instead of running")
    args = parser.parse_args()
    if args.summary:
        print("\n".join(summary(path) for path in args.summary))
        return
    if args.trace is None:
        parser.error("give --trace (where the JSON lines go) or --summary")
    run(args)


if __name__ == "__main__":
    main()
