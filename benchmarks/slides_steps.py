"""Seams, the enlargement grid and consistency of a full-resolution run against its steps per
tile and level (issue 31, docs/slides.md "More steps per tile"): a seamless tissue of
``--size`` px (``slides.tissue_block``, 1024 px blocks; 2048 by default) styled with
``size="full"``, tiles of ``--tile-size`` (512), shallow layers, untrained weights,
``--threads`` torch threads (1); one fresh process per step count.

    OMP_NUM_THREADS=1 python benchmarks/slides_steps.py 1 10 --montage docs/images/slides_2048_steps_corner.png
    python benchmarks/slides_steps.py 10 --tile-size 2048      # untiled: one tile per level
    python benchmarks/slides_steps.py 10 --size 4096 --naive   # and cut, style, stitch beside it

``--tile-size`` at least ``--size`` runs the same coarse-to-fine levels with one tile each: the
untiled reference for the consistency measure. ``--naive`` adds the cut-style-stitch result:
each 512 px piece styled alone at its own size with the same steps, the pieces put side by side.

Prints per step count the seams (``slides.seams``: at tile borders, elsewhere), the eight
strongest step positions of each axis (the enlargements' grid shows as positions 3 mod 4),
the consistency over 512 px windows (``slides.consistency``) and the same spread relative to
each image's own standard deviation. The montage: 512 px at 100% where four tiles meet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: the consistency windows, the naive run's pieces and the montage's crop (px)
TILE = 512
BLOCK = 1024


def content(size: int) -> np.ndarray:
    from slides import tissue_block

    blocks = range(size // BLOCK)
    return np.concatenate([np.concatenate([tissue_block(r, c) for c in blocks], 1) for r in blocks], 0)


def strongest_steps(image: np.ndarray, count: int = 8) -> list[list[tuple[int, float]]]:
    from slides import EDGE

    found = []
    for axis in (1, 0):
        profile = np.abs(np.diff(image, axis=axis)).mean(axis=-1).mean(axis=1 - axis)
        ratio = profile / np.median(profile)
        ratio[:EDGE], ratio[-EDGE:] = 0, 0
        found.append([(int(i), round(float(ratio[i]), 2)) for i in np.argsort(ratio)[-count:][::-1]])
    return found


def relative_spread(image: np.ndarray) -> float:
    """The spread of 512 px windows' means over the image's own standard deviation (channels averaged)."""
    from slides import window_spread

    means, _ = window_spread(image, TILE)
    return float((means / image.reshape(-1, image.shape[-1]).std(axis=0)).mean())


def styled(args: argparse.Namespace, out: Path) -> None:
    from slides import style_texture
    from slides_largest import SHALLOW

    from napari_style_transfer import stylize

    options = {"steps": args.steps[0], "weights": "random", "seed": 0, "threads": args.threads} | SHALLOW
    source, style = content(args.size), style_texture(256)
    if args.child_naive:
        result = np.zeros_like(source)
        for top in range(0, args.size, TILE):
            for left in range(0, args.size, TILE):
                piece = (slice(top, top + TILE), slice(left, left + TILE))
                result[piece] = stylize(source[piece], style, size=TILE, **options)
    else:
        result = stylize(source, style, size="full", tile_size=args.tile_size, **options)
    np.save(out, result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", type=int, nargs="+")
    parser.add_argument("--size", type=int, default=2048, help=f"the tissue's side, a multiple of {BLOCK} px")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--naive", action="store_true", help="also cut, style, stitch (the last step count)")
    parser.add_argument("--montage", type=Path)
    parser.add_argument("--save", type=Path, help="a folder to keep each result in, as .npy")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-naive", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size % BLOCK:
        parser.error(f"--size must be a multiple of {BLOCK}")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.child:
        styled(args, args.child)
        return
    from slides import consistency, seams

    source = content(args.size)
    print(json.dumps({"content": {"seams": seams(source, TILE), "relative_spread": relative_spread(source)}}))
    shown = [source]
    runs = [(steps, False) for steps in args.steps] + [(args.steps[-1], True)] * args.naive
    common = ["--size", str(args.size), "--tile-size", str(args.tile_size), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as folder:
        for steps, naive in runs:
            name = f"{steps} steps" + ", cut, style, stitch" * naive
            out = Path(args.save or folder) / f"result-{steps}{'-naive' * naive}.npy"
            child = [sys.executable, __file__, str(steps), *common, "--child", str(out)]
            started = time.perf_counter()
            subprocess.run(child + ["--child-naive"] * naive, check=True)
            result = np.load(out)
            shown.append(result)
            measured = {
                "seconds": round(time.perf_counter() - started, 1),
                "seams": seams(result, TILE if naive else min(args.tile_size, TILE)),
                "strongest": strongest_steps(result),
                "consistency": consistency(result, source, TILE),
                "relative_spread": relative_spread(result),
            }
            print(json.dumps({name: measured}), flush=True)
    if args.montage:
        from PIL import Image

        middle, half = args.size // 2, TILE // 2
        crops = [
            np.clip(image[middle - half : middle + half, middle - half : middle + half], 0, 1)
            for image in shown
        ]
        gap = np.ones((TILE, 10, 3), np.float32)
        row = np.concatenate([part for crop in crops for part in (crop, gap)][:-1], axis=1)
        Image.fromarray((row * 255).astype(np.uint8)).save(args.montage)


if __name__ == "__main__":
    main()
