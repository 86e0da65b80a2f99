"""Seams, the enlargement grid and consistency of a full-resolution run against its steps per
tile and level (issue 31, docs/slides.md "More steps per tile"): a 2048 px seamless tissue
(``slides.tissue_block``, 2 x 2 blocks) styled with ``size="full"``, tiles of 512, shallow
layers, untrained weights, 1 torch thread; one fresh process per step count.

    OMP_NUM_THREADS=1 python benchmarks/slides_steps.py 1 10 --montage docs/images/slides_2048_steps_corner.png

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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE, TILE = 2048, 512


def content() -> np.ndarray:
    from slides import tissue_block

    return np.concatenate([np.concatenate([tissue_block(r, c) for c in range(2)], 1) for r in range(2)], 0)


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


def styled(steps: int, out: Path) -> None:
    from slides import style_texture
    from slides_largest import SHALLOW

    from napari_style_transfer import stylize

    options = {"tile_size": TILE, "steps": steps, "weights": "random", "seed": 0, "threads": 1} | SHALLOW
    np.save(out, stylize(content(), style_texture(256), size="full", **options))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("steps", type=int, nargs="+")
    parser.add_argument("--montage", type=Path)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    if args.child:
        styled(args.steps[0], args.child)
        return
    from slides import consistency, seams

    source = content()
    print(json.dumps({"content": {"seams": seams(source, TILE), "relative_spread": relative_spread(source)}}))
    shown = [source]
    with tempfile.TemporaryDirectory() as folder:
        for steps in args.steps:
            out = Path(folder) / f"result-{steps}.npy"
            subprocess.run([sys.executable, __file__, str(steps), "--child", str(out)], check=True)
            result = np.load(out)
            shown.append(result)
            measured = {
                "seams": seams(result, TILE),
                "strongest": strongest_steps(result),
                "consistency": consistency(result, source, TILE),
                "relative_spread": relative_spread(result),
            }
            print(json.dumps({f"{steps} steps": measured}), flush=True)
    if args.montage:
        from PIL import Image

        middle, half = SIZE // 2, TILE // 2
        crops = [
            np.clip(image[middle - half : middle + half, middle - half : middle + half], 0, 1)
            for image in shown
        ]
        gap = np.ones((TILE, 10, 3), np.float32)
        row = np.concatenate([part for crop in crops for part in (crop, gap)][:-1], axis=1)
        Image.fromarray((row * 255).astype(np.uint8)).save(args.montage)


if __name__ == "__main__":
    main()
