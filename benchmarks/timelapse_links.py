"""What time mode decides for each pixel of a sequence (issue 33, docs/timelapse.md): for
frames 2-5 of a smear sequence (``stacks.SMEAR_SEQUENCES``), a row of the previous content, the
content, and the link's masks as the run computes them (on the canvas, cut to the frame):
``reliable`` (held to the warped previous result), ``fresh`` (starts afresh), ``restyled``
(optimised again, not held) and the flow's magnitude (white: 3 px or more).

    python benchmarks/timelapse_links.py nuclei 160 docs/images/timelapse_nuclei_160px_links.png

No optimisation runs: a few seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import stacks
import torch
from PIL import Image

from napari_style_transfer.frames import link_frames
from napari_style_transfer.pipeline.canvas import Canvas


def as_tensor(frame: np.ndarray) -> torch.Tensor:
    rgb = np.repeat(frame[..., None], 3, -1) if frame.ndim == 2 else frame
    return torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]


def link_rows(movie: np.ndarray, frames: range) -> np.ndarray:
    canvas = Canvas.around(movie.shape[1:3])
    m = canvas.margin
    rows = []
    for t in frames:
        link = link_frames(canvas.pad(as_tensor(movie[t - 1])), canvas.pad(as_tensor(movie[t])))
        masks = [mask[0, 0, m:-m, m:-m].numpy() for mask in (link.reliable, link.fresh, link.restyled)]
        flow = link.flow[0, :, m:-m, m:-m].numpy()
        panels = [movie[t - 1], movie[t], *masks, np.clip(np.hypot(flow[0], flow[1]) / 3, 0, 1)]
        rows.append(np.concatenate([np.pad(p.astype(np.float32), 2, constant_values=1) for p in panels], 1))
    return np.concatenate(rows, 0)


def main(argv: list[str]) -> None:
    name, side, out = argv[0], int(argv[1]), Path(argv[2])
    movie, _ = stacks.SMEAR_SEQUENCES[name](side, stacks.SMEAR_FRAMES)
    sheet = (np.clip(link_rows(movie, range(2, 6)), 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(sheet)
    image.resize((sheet.shape[1] * 2, sheet.shape[0] * 2), Image.NEAREST).save(out)


if __name__ == "__main__":
    main(sys.argv[1:])
