"""Regenerate the bundled sample images.

    python sample_data/make_samples.py            # everything (photos need scikit-image)
    python sample_data/make_samples.py --generated-only --out DIR

The style images and the synthetic microscopy images are drawn here from fixed seeds with
numpy alone, so the same command always writes the same pixels. The photographs are copied
from scikit-image's data module, which documents each as public domain or CC0 (see README.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 512


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Value noise: a coarse random grid upsampled bicubically to ``shape``, in [0, 1]."""
    coarse = rng.random((cells + 3, cells + 3)).astype(np.float32)
    image = Image.fromarray(coarse, mode="F").resize(shape[::-1], Image.BICUBIC)
    values = np.asarray(image, dtype=np.float32)
    return (values - values.min()) / (values.max() - values.min())


def _palette(values: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    """Map values in [0, 1] through a piecewise-linear colour ramp to uint8 RGB."""
    stops = np.linspace(0.0, 1.0, len(colours))
    table = np.asarray(colours, dtype=np.float32)
    rgb = np.stack([np.interp(values, stops, table[:, c]) for c in range(3)], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def swirl(size: int = 384, seed: int = 1) -> np.ndarray:
    """Swirling brush-stroke bands in night blues and yellows (a style made for the demo)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    warp_x = _smooth_noise(rng, (size, size), 4) * 2.5
    warp_y = _smooth_noise(rng, (size, size), 4) * 2.5
    bands = np.sin(2 * np.pi * (6 * x + warp_x) + 3 * np.sin(2 * np.pi * (3 * y + warp_y)))
    strokes = np.sin(2 * np.pi * 40 * (x * 0.6 + y * 0.8 + 0.05 * warp_y))
    values = 0.5 + 0.4 * bands + 0.08 * strokes + 0.1 * (_smooth_noise(rng, (size, size), 24) - 0.5)
    colours = [(12, 24, 70), (30, 70, 150), (90, 140, 200), (230, 210, 110), (250, 240, 190)]
    return _palette(np.clip(values, 0, 1), colours)


def mosaic(size: int = 384, seed: int = 2, tiles: int = 140) -> np.ndarray:
    """Stained-glass tiles: Voronoi cells of saturated colours with dark lead lines."""
    rng = np.random.default_rng(seed)
    centres = rng.random((tiles, 2)).astype(np.float32) * size
    colours = rng.choice(
        np.array(
            [(200, 40, 40), (240, 170, 30), (40, 110, 190), (40, 150, 90), (150, 60, 160), (235, 225, 200)]
        ),
        size=tiles,
    )
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    distances = (y[..., None] - centres[:, 0]) ** 2 + (x[..., None] - centres[:, 1]) ** 2
    order = np.argsort(distances, axis=-1)
    nearest, second = order[..., 0], order[..., 1]
    d1 = np.sqrt(np.take_along_axis(distances, nearest[..., None], -1)[..., 0])
    d2 = np.sqrt(np.take_along_axis(distances, second[..., None], -1)[..., 0])
    rgb = colours[nearest].astype(np.float32)
    rgb *= (0.8 + 0.35 * _smooth_noise(rng, (size, size), 32))[..., None]
    lead = np.clip((d2 - d1) / 3.0, 0.0, 1.0)[..., None]
    rgb = rgb * lead + 25 * (1 - lead)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def he_stain(size: int = 384, seed: int = 3, nuclei: int = 90) -> np.ndarray:
    """A haematoxylin-and-eosin-like texture: pink fibrous stroma with purple nuclei."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    fibres = np.sin(2 * np.pi * (x / 23.0 + 2.0 * _smooth_noise(rng, (size, size), 6)))
    stroma = (
        0.55
        + 0.2 * fibres * _smooth_noise(rng, (size, size), 10)
        + 0.25 * _smooth_noise(rng, (size, size), 40)
    )
    nucleus = np.zeros((size, size), np.float32)
    for cy, cx, r in zip(
        rng.random(nuclei) * size, rng.random(nuclei) * size, 5 + rng.random(nuclei) * 7, strict=True
    ):
        stretch = 0.6 + rng.random() * 0.8
        nucleus = np.maximum(nucleus, np.exp(-((((y - cy) / (r * stretch)) ** 2 + ((x - cx) / r) ** 2) ** 2)))
    eosin = np.array([238, 160, 200], np.float32) * 0.55 + np.array([255, 235, 245], np.float32) * 0.45
    pink = eosin[None, None] * (0.75 + 0.3 * np.clip(stroma, 0, 1))[..., None]
    purple = (
        np.array([85, 40, 140], np.float32) * (0.8 + 0.4 * _smooth_noise(rng, (size, size), 60))[..., None]
    )
    rgb = pink * (1 - nucleus[..., None]) + purple * nucleus[..., None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _nucleus(
    y: np.ndarray, x: np.ndarray, centre: Sequence[float], radii: Sequence[float], angle: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A soft-edged elliptical nucleus on the pixel grid (y, x): its body in [0, 1] and the
    coordinates (u, v) along its axes, in radii (centre and radii as (y, x))."""
    dy, dx = y - centre[0], x - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[1]
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[0]
    return 1.0 / (1.0 + np.exp((np.sqrt(u**2 + v**2) - 1.0) * 8.0)), u, v


def nuclei_fluorescence(size: int = 384, seed: int = 4, count: int = 60) -> np.ndarray:
    """A synthetic 16-bit fluorescence image of nuclei (12-bit camera range, noisy background)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    signal = np.zeros((size, size), np.float32)
    for _ in range(count):
        cy, cx = rng.random(2) * size
        ry, rx = 8 + rng.random(2) * 10
        angle = rng.random() * np.pi
        body, _, _ = _nucleus(y, x, (cy, cx), (ry, rx), angle)
        signal += body * (0.5 + rng.random())
    chromatin = 0.7 + 0.6 * _smooth_noise(rng, (size, size), 48)
    photons = 180 + 2200 * signal * chromatin
    counts = rng.poisson(photons).astype(np.float32) + rng.normal(0, 12, photons.shape)
    return np.clip(counts, 0, 4095).astype(np.uint16)


def nuclei_timelapse(frames: int = 8, size: int = 192, seed: int = 5, count: int = 14) -> np.ndarray:
    """A synthetic 16-bit fluorescence time-lapse of nuclei, (frames, size, size): about half
    sit still, the others crawl 1-3 px a frame and turn a little, each carrying its own
    chromatin pattern; the camera noise is new in every frame."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    centres = rng.random((count, 2)) * size
    radii = 8 + rng.random((count, 2)) * 8
    angles = rng.random(count) * np.pi
    brightness = 0.5 + rng.random(count)
    moving = rng.random(count) < 0.5
    velocities = rng.normal(0.0, 1.5, (count, 2)) * moving[:, None]
    turns = rng.normal(0.0, 0.05, count) * moving
    phases = rng.random((count, 2)) * 2 * np.pi
    stack = np.empty((frames, size, size), np.uint16)
    for t in range(frames):
        signal = np.zeros((size, size), np.float32)
        for i in range(count):
            body, u, v = _nucleus(y, x, centres[i] + velocities[i] * t, radii[i], angles[i] + turns[i] * t)
            chromatin = 0.75 + 0.25 * np.sin(4 * u + phases[i, 0]) * np.sin(4 * v + phases[i, 1])
            signal += body * chromatin * brightness[i]
        photons = 180 + 2200 * signal
        counts = rng.poisson(photons).astype(np.float32) + rng.normal(0, 12, photons.shape)
        stack[t] = np.clip(counts, 0, 4095)
    return stack


GENERATED = {
    "swirl.png": swirl,
    "mosaic.png": mosaic,
    "he_stain.png": he_stain,
    "nuclei_fluorescence.png": nuclei_fluorescence,
    "nuclei_timelapse.tif": nuclei_timelapse,
}

#: Photographs taken from scikit-image's data module: file name -> skimage.data function.
PHOTOS = {"astronaut.png": "astronaut", "chelsea.png": "chelsea", "coffee.png": "coffee"}


def write_generated(out: Path) -> None:
    for name, make in GENERATED.items():
        if name.endswith(".tif"):  # a stack: Pillow writes one page
            import tifffile

            tifffile.imwrite(out / name, make(), compression="zlib", metadata={"axes": "TYX"})
        else:
            Image.fromarray(make()).save(out / name, optimize=True)


def write_photos(out: Path) -> None:
    from skimage import data

    for name, function in PHOTOS.items():
        image = Image.fromarray(getattr(data, function)())
        if max(image.size) > MAX_SIDE:
            scale = MAX_SIDE / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        image.save(out / name, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: sample_data/)")
    parser.add_argument("--generated-only", action="store_true", help="skip the scikit-image photographs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_generated(args.out)
    if not args.generated_only:
        write_photos(args.out)


if __name__ == "__main__":
    main()
