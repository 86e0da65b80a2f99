"""The rim along a result's border (issue 32): each border line against the lines inside it,
with and without the canvas margin the image is optimised on (pipeline/canvas.py).

For each demo pair and margin, the pair is styled and three numbers are printed per line k
(k = 1, 2): |mean of line k - mean of lines k+1..k+4|, averaged over the four borders and the
channels, for the content at the working size, for the result, and for the result's lines
8-20 (the texture's own line-to-line difference, the reference a rim stands out from). Then
how far the result moved from the margin-0 one (mean |difference| inside 16 px of the border
and further in) and the pixels a step works on. Untrained weights show the mechanics only.
Usage:
    python benchmarks/border_rim.py [--size 128] [--steps 30] [--margins 0,8,16] [--weights random]
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_style_transfer import stylize
from napari_style_transfer._image import resize_image, working_shape
from napari_style_transfer._sample_data import DEMO_PAIRS, load_sample
from napari_style_transfer.pipeline import canvas

#: Lines from the border that count as the border band when results are compared.
BAND = 16


def line_step(image: np.ndarray, line: int) -> float:
    """|mean(line) - mean(the 4 lines inside it)| over the four borders and the channels
    (``line`` 0 is the outermost)."""
    image = np.asarray(image, dtype=np.float64)
    image = image if image.ndim == 3 else image[..., None]
    steps = []
    for edge in (image, image[::-1], image.transpose(1, 0, 2), image.transpose(1, 0, 2)[::-1]):
        lines = edge.mean(axis=1)  # (lines, channels)
        steps.append(lines[line] - lines[line + 1 : line + 5].mean(axis=0))
    return float(np.abs(steps).mean())


def texture_step(image: np.ndarray) -> float:
    """:func:`line_step` of lines 8-20: how much neighbouring lines differ away from the border."""
    return float(np.mean([line_step(image, line) for line in range(8, 20)]))


def styled(
    content: np.ndarray, style: np.ndarray, args: argparse.Namespace, margin: int, shape: tuple[int, int]
) -> tuple[np.ndarray, float]:
    """The result on a canvas of ``margin`` px, and the canvas's pixels over the image's."""
    saved, canvas.MARGIN = canvas.MARGIN, margin
    try:
        result = stylize(
            content,
            style,
            size=args.size,
            steps=args.steps,
            weights=args.weights,
            keep_grey=False,
            precision="fp32",
            snapshot_every=0,
        )
        area = np.prod(canvas.Canvas.around(shape).shape(shape)) / np.prod(shape)
    finally:
        canvas.MARGIN = saved
    return np.asarray(result), float(area)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--margins", default="0,8,16")
    parser.add_argument("--weights", default="random")
    args = parser.parse_args()
    margins = [int(m) for m in args.margins.split(",")]
    for pair in ("astronaut_swirl", "nuclei_he_stain"):
        content, style = (load_sample(key) for key in DEMO_PAIRS[pair][:2])
        shape = working_shape(*content.shape[:2], args.size)
        low, high = float(content.min()), float(content.max())  # roughly the run's own scaling
        scaled = resize_image((content.astype(np.float32) - low) / (high - low), shape)
        print(f"{pair}: content line1 {line_step(scaled, 0):.4f} line2 {line_step(scaled, 1):.4f}")
        reference = None
        for margin in margins:
            result, pixels = styled(content, style, args, margin, shape)
            reference = result if reference is None else reference
            moved = np.abs(result - reference)
            inside = moved[BAND:-BAND, BAND:-BAND]
            band = (moved.sum() - inside.sum()) / (moved.size - inside.size)
            print(
                f"  margin {margin:2d}: line1 {line_step(result, 0):.4f} line2 {line_step(result, 1):.4f} "
                f"texture {texture_step(result):.4f}; moved from margin {margins[0]}: border band "
                f"{band:.4f}, inside {inside.mean():.4f}; pixels x{pixels:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
