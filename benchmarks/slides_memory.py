"""Peak memory of full-resolution runs whose content is larger than memory (issue 31):
it must follow the tile size, not the image size.

    python benchmarks/slides_memory.py                              # 1024, 2048, 4096 px, tiles of 512, 2 steps
    python benchmarks/slides_memory.py --sizes 1024 16384 --steps 1 # the issue's largest (hours on a CPU)
    python benchmarks/slides_memory.py --sizes 256 512 --tile-size 64 --layers shallow  # a check in a minute

Each size's slide (a generated stationary tissue texture, uint8 RGB) is written to disk
first, a block at a time (never whole in this process either), as a zarr array chunked
512 x 512 or, with ``--input tiff``, as a tiled BigTIFF. A fresh process then opens it
lazily and runs ``stylize(path, style, size="full", out=...)`` into an OME-Zarr store,
reporting its VmHWM (peak resident set: anonymous memory, file pages and shared memory) and
the largest RssAnon (anonymous memory alone: what the run allocated, without the page
cache of files it read) seen by a thread sampling /proc/self/status every 0.2 s.

Writes a table between the ``slides-memory`` markers of ``docs/slides.md``. Untrained
weights; memory does not depend on the number of steps, so 2 (or 1) are enough.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- slides-memory:begin -->", "<!-- slides-memory:end -->"
SHALLOW = {"content_layers": ["conv2_2"], "style_layers": ["conv1_1", "conv2_1", "conv3_1"]}
#: the side of each generated block: the texture is stationary, so blocks may be made apart
BLOCK = 1024

#: child code: the largest RssAnon (KiB) seen every 0.2 s, in ``largest[0]``
SAMPLE_ANON = """
import threading, time
largest = [0]
def sample():
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon"):
                largest[0] = max(largest[0], int(line.split()[1]))
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
"""

RUN = (
    SAMPLE_ANON
    + """
import json, sys, time
sys.path.insert(0, {benchmarks!r})
from slides import style_texture
from napari_style_transfer import api

started = time.perf_counter()
api.stylize({content!r}, style_texture({style_size}), size="full", out={out!r}, **json.loads({options!r}))
seconds = time.perf_counter() - started
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({{"hwm": int(status["VmHWM"].split()[0]), "anon": largest[0], "seconds": seconds}}))
"""
)


def write_slide(path: Path, size: int, kind: str) -> Path:
    """A ``size`` x ``size`` uint8 RGB tissue texture at ``path``, written a block at a time."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from slides import tissue

    def blocks():
        for top in range(0, size, BLOCK):
            for left in range(0, size, BLOCK):
                block = tissue(BLOCK, seed=top * size + left)
                shape = (min(BLOCK, size - top), min(BLOCK, size - left))
                yield top, left, (block[: shape[0], : shape[1]] * 255).astype(np.uint8)

    if kind == "zarr":
        import zarr

        array = zarr.create_array(path, shape=(size, size, 3), chunks=(512, 512, 3), dtype="uint8")
        for top, left, block in blocks():
            array[top : top + block.shape[0], left : left + block.shape[1]] = block
        return path
    import tifffile

    def tiles():  # tifffile asks for 512 px tiles row by row: a band of blocks at a time
        for top in range(0, size, BLOCK):
            band = np.zeros((min(BLOCK, size - top), size, 3), np.uint8)
            for left in range(0, size, BLOCK):
                block = (tissue(BLOCK, seed=top * size + left) * 255).astype(np.uint8)
                band[:, left : left + BLOCK] = block[: band.shape[0], : size - left]
            for row in range(0, band.shape[0], 512):
                for left in range(0, size, 512):
                    yield band[row : row + 512, left : left + 512]

    tifffile.imwrite(
        path, tiles(), shape=(size, size, 3), dtype="uint8", tile=(512, 512), photometric="rgb", bigtiff=True
    )
    return path


def measure(content: Path, out: Path, style_size: int, options: dict) -> dict[str, float]:
    code = RUN.format(
        benchmarks=str(ROOT / "benchmarks"),
        content=str(content),
        out=str(out),
        style_size=style_size,
        options=json.dumps(options),
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the run of {content} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--layers", choices=("shallow", "default"), default="default")
    parser.add_argument("--input", choices=("zarr", "tiff"), default="zarr")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--style-size", type=int, default=256, help="px; at the composition it shrinks as the slide does"
    )
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    options = {"steps": args.steps, "tile_size": args.tile_size, "weights": "random", "seed": 0}
    options |= {"device": args.device} | (SHALLOW if args.layers == "shallow" else {})
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from slides import write_table

    rows: list[tuple[int, dict[str, float]]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            suffix = ".zarr" if args.input == "zarr" else ".tif"
            content = write_slide(Path(folder) / f"slide-{size}{suffix}", size, args.input)
            rows.append(
                (size, measure(content, Path(folder) / f"result-{size}.ome.zarr", args.style_size, options))
            )
            lines = table(args, rows, time.perf_counter() - started)
            print("\n".join(lines), flush=True)
            if not args.no_write:  # after each size: a long run that is stopped keeps what it measured
                write_table(lines, BEGIN, END)


def table(args: argparse.Namespace, rows: list[tuple[int, dict[str, float]]], seconds: float) -> list[str]:
    first = rows[0][1]
    lines = [
        f"{args.input} input, tiles of {args.tile_size}, {args.steps} steps per tile and level, "
        f"{args.layers} layers, a {args.style_size} px style, untrained weights, device {args.device}; "
        "a fresh process per size.",
        "",
        "| slide | VmHWM | peak RssAnon | vs the first (VmHWM, RssAnon) | run |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, got in rows:
        change = f"{got['hwm'] / first['hwm'] - 1:+.1%}, {got['anon'] / first['anon'] - 1:+.1%}"
        lines.append(
            f"| {size} x {size} px | {got['hwm'] / 1024:.0f} MiB | {got['anon'] / 1024:.0f} MiB | {change} "
            f"| {got['seconds'] / 60:.1f} min |"
        )
    load = os.getloadavg()[0]
    return [
        *lines,
        "",
        f"Measured in {seconds:.0f} s, load average {load:.1f} at the end (times mean something only near 0).",
    ]


if __name__ == "__main__":
    main()
