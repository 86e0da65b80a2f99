"""Why a free canvas margin moves a time series' static pixels (issue 33, docs/timelapse.md):
the test's moving disc (tests/test_frames.py) scaled to each size, time mode with the later
frames' margin held and free (``canvas.HOLD_MARGIN``), the static pixels' move from frame 0
over the styling's own move, near the border (12 px) and away from it.

    OMP_NUM_THREADS=1 python benchmarks/timelapse_margin_share.py 48 96 160

Prints one JSON line per size and setting. Untrained weights, 4 steps a frame: mechanics only;
pixel measures, so the machine's load does not change them.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from scipy.ndimage import gaussian_filter

from napari_style_transfer import iter_stylize
from napari_style_transfer.pipeline import canvas

#: The test's disc at 48 px: radius, start, speed and the static mask's reach, scaled with the frame.
RADIUS, START, SPEED, REACH = 7, 12, 4, 13


def texture(size: int, seed: int = 0) -> np.ndarray:
    noise = gaussian_filter(np.random.default_rng(seed).random((size, size)), 1.5)
    return ((noise - noise.min()) / (noise.max() - noise.min())).astype(np.float32)


def moving_disc(size: int, frames: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The disc over a static texture, and the pixels it never comes near."""
    scale = size / 48
    background = 0.2 + 0.4 * texture(size)
    yy, xx = np.mgrid[0:size, 0:size]
    movie, near = [], np.zeros((size, size), bool)
    for t in range(frames):
        distance = np.hypot(yy - size / 2, xx - (START + SPEED * t) * scale)
        frame = background.copy()
        frame[distance < RADIUS * scale] = 0.95
        movie.append(frame)
        near |= distance < REACH * scale
    return np.stack(movie), ~near


def stripes() -> np.ndarray:
    """The test suite's style: a 36 px stripe texture."""
    rng = np.random.default_rng(0)
    _, x = np.mgrid[0:36, 0:36]
    texture = 0.5 + 0.5 * np.sin(x / 2.0)[..., None] * np.array([1.0, -1.0, 0.5])
    return np.clip(texture + 0.05 * rng.random((36, 36, 3)), 0, 1).astype(np.float32)


def measure(size: int, hold: bool) -> dict:
    movie, static = moving_disc(size)
    yy, xx = np.mgrid[0:size, 0:size]
    border = np.minimum(np.minimum(yy, xx), np.minimum(size - 1 - yy, size - 1 - xx)) < 12
    canvas.HOLD_MARGIN = hold
    options = {
        "size": size,
        "steps": 4,
        "weights": "random",
        "snapshot_every": 0,
        "frames": "time",
        "time_passes": 0,  # the single forward pass's margin
        "threads": 1,
    }
    timed = list(iter_stylize(movie, stripes(), **options))[-1].image
    styled = float(np.abs(timed[0] - movie[0])[static].mean())
    row: dict = {"size": size, "hold": hold, "styled": styled}
    for name, mask in (("all", static), ("border", static & border), ("inner", static & ~border)):
        row[name] = [round(float(np.abs(timed[t] - timed[0])[mask].mean()), 5) for t in range(1, len(movie))]
    row["ratio"] = round(max(row["all"]) / styled, 3)
    return row


if __name__ == "__main__":
    held = canvas.HOLD_MARGIN
    try:
        for size in [int(arg) for arg in sys.argv[1:]] or [48, 96, 160]:
            for hold in (True, False):
                print(json.dumps(measure(size, hold)), flush=True)
    finally:
        canvas.HOLD_MARGIN = held
