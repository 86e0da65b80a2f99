"""The tutorials' pictures, made by the runs the tutorials describe, on the bundled samples.

    python docs/make_pictures.py [--weights random] [--out docs/images]

Without ImageNet weights (this project's machines have no internet) the runs use an
untrained VGG19 (``--weights random``): the pictures show the mechanics (colours and texture
move over, the content stays), not the quality ImageNet weights give; each tutorial says so
under its picture. Needs matplotlib (the benchmarks extra). Sizes and steps are small so the
script takes a minute or two on a CPU.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--weights", default="random")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for make in (stain_transfer, time_lapse, regions, batch):
        path = args.out / f"tutorial_{make.__name__}.png"
        make(path, args.weights)
        print(f"wrote {path}")


def shown(image: np.ndarray) -> np.ndarray:
    """An image for display: floats in [0, 1], each image by its own minimum and maximum."""
    image = np.asarray(image, dtype=np.float32)
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else image * 0


def montage(path: Path, panels: list[tuple[str, np.ndarray]], columns: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = columns or len(panels)
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, (title, image) in zip(axes.ravel(), panels, strict=False):
        axis.imshow(shown(image), cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def stain_transfer(path: Path, weights: str) -> None:
    """Grey 16-bit fluorescence nuclei in the colours of the H&E-like sample (keep_grey=False)."""
    from napari_style_transfer import stylize
    from napari_style_transfer._sample_data import load_sample

    nuclei, stain = load_sample("nuclei_fluorescence"), load_sample("he_stain")
    result = stylize(nuclei, stain, keep_grey=False, size=160, steps=60, weights=weights, seed=0)
    grey = stylize(nuclei, stain, size=160, steps=60, weights=weights, seed=0)
    montage(
        path,
        [
            ("content: nuclei (16-bit)", nuclei),
            ("style: H&E-like", stain),
            ("keep_grey=False", result),
            ("keep_grey=True (default)", grey),
        ],
    )


def time_lapse(path: Path, weights: str) -> None:
    """The 8-frame nuclei time-lapse styled as a time series: frames 0, 3, 5, 7."""
    from napari_style_transfer import stylize
    from napari_style_transfer._sample_data import load_sample

    movie, stain = load_sample("nuclei_timelapse"), load_sample("he_stain")
    result = stylize(movie, stain, frames="time", keep_grey=False, size=128, steps=40, weights=weights)
    shown_frames = (0, 3, 5, 7)
    panels = [(f"content, frame {t}", movie[t]) for t in shown_frames]
    panels += [(f"result, frame {t}", result[t]) for t in shown_frames]
    montage(path, panels, columns=len(shown_frames))


def disc_labels(shape: tuple[int, int]) -> np.ndarray:
    """Label 1 in a centred disc, 2 around it, 0 in a band along the bottom."""
    height, width = shape
    y, x = np.mgrid[:height, :width]
    labels = np.where((y - height / 2) ** 2 + (x - width / 2) ** 2 < (0.3 * min(shape)) ** 2, 1, 2)
    labels[int(height * 0.85) :] = 0
    return labels.astype(np.uint8)


def regions(path: Path, weights: str) -> None:
    """Two styles, each in its region of a label image (what a Labels layer gives in napari)."""
    from napari_style_transfer import stylize
    from napari_style_transfer._sample_data import load_sample

    cat, swirl, mosaic = load_sample("chelsea"), load_sample("swirl"), load_sample("mosaic")
    labels = disc_labels(cat.shape[:2])
    result = stylize(cat, [swirl, mosaic], style_regions=labels, size=160, steps=60, weights=weights)
    montage(
        path,
        [
            ("content", cat),
            ("style 1: swirl", swirl),
            ("style 2: mosaic", mosaic),
            ("labels (0, 1, 2)", labels),
            ("result", result),
        ],
    )


def batch(path: Path, weights: str) -> None:
    """Two inputs with two styles: the four results a batch writes (here in this process;
    on a cluster the same pixels come back)."""
    from PIL import Image

    from napari_style_transfer import stylize_batch
    from napari_style_transfer._sample_data import sample_path

    inputs = [sample_path("astronaut"), sample_path("coffee")]
    styles = [sample_path("swirl"), sample_path("mosaic")]
    with tempfile.TemporaryDirectory() as folder:
        records = stylize_batch(inputs, styles, folder, progress=False, size=128, steps=40, weights=weights)
        panels = [
            (Path(record["output"]).stem.replace("__", " + "), np.asarray(Image.open(record["output"])))
            for record in records
        ]
    montage(path, panels, columns=2)


if __name__ == "__main__":
    main()
