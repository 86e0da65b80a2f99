"""The dark rim along a result's border (issue 32): each border line against the lines inside.

For each padding mode of the extractor's convolutions, a demo pair is styled and each of the
two outermost lines is compared with the four lines inside it (line 1 - mean of lines 2-5,
line 2 - mean of lines 3-6), over the channels and the four borders (signed mean and largest
magnitude). Untrained weights show the mechanics only. Usage:
    python benchmarks/border_rim.py [--size 128] [--steps 15] [--weights random]
"""

from __future__ import annotations

import argparse

import numpy as np

from napari_style_transfer import stylize
from napari_style_transfer._sample_data import DEMO_PAIRS, load_sample
from napari_style_transfer.vgg import VGGFeatures

MODES = ("zeros", "reflect", "replicate")


def border_steps(image: np.ndarray) -> list[tuple[float, float]]:
    """(signed mean, largest magnitude) over the four borders of line k+1 minus lines k+2..k+5."""
    image = image if image.ndim == 3 else image[..., None]
    out = []
    for k in (0, 1):
        steps = []
        for axis in (0, 1):
            for edge in (image, np.flip(image, axis)):
                lines = np.moveaxis(edge, axis, 0).mean(axis=-1)  # (lines, length), channels averaged
                steps.append(float(lines[k].mean() - lines[k + 1 : k + 5].mean()))
        out.append((float(np.mean(steps)), float(np.max(np.abs(steps)))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--weights", default="random")
    args = parser.parse_args()
    defaults = VGGFeatures.__init__.__defaults__
    for pair in ("astronaut_swirl", "nuclei_he_stain"):
        content, style = (load_sample(key) for key in DEMO_PAIRS[pair][:2])
        for mode in MODES:
            VGGFeatures.__init__.__defaults__ = (defaults[0], mode)
            result = stylize(
                content, style, size=args.size, steps=args.steps, weights=args.weights, keep_grey=False
            )
            (m1, a1), (m2, a2) = border_steps(np.asarray(result))
            print(f"{pair:16s} {mode:9s} line1 {m1:+.4f} (max |{a1:.4f}|)  line2 {m2:+.4f} (max |{a2:.4f}|)")
    VGGFeatures.__init__.__defaults__ = defaults


if __name__ == "__main__":
    main()
