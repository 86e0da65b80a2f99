"""The bundled sample images, for File > Open Sample and the command-line demo.

numpy and Pillow only: napari calls these functions on its GUI thread.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

#: Sample key -> (file in sample_data/, display name).
SAMPLES: dict[str, tuple[str, str]] = {
    "astronaut": ("astronaut.png", "Astronaut (content photo)"),
    "chelsea": ("chelsea.png", "Chelsea the cat (content photo)"),
    "coffee": ("coffee.png", "Coffee (content photo)"),
    "nuclei_fluorescence": ("nuclei_fluorescence.png", "Nuclei, 16-bit fluorescence (content, synthetic)"),
    "nuclei_timelapse": ("nuclei_timelapse.tif", "Nuclei time-lapse, 8 frames, 16-bit (content, synthetic)"),
    "swirl": ("swirl.png", "Swirl (style)"),
    "mosaic": ("mosaic.png", "Mosaic (style)"),
    "he_stain": ("he_stain.png", "H&E-like stain (style)"),
}

#: Sample key -> the axis labels its layer gets (a time-lapse's first axis is t, so the widget
#: offers it as a time series).
AXIS_LABELS: dict[str, tuple[str, ...]] = {"nuclei_timelapse": ("t", "y", "x")}

#: Demo pair key -> (content sample, style sample, display name).
DEMO_PAIRS: dict[str, tuple[str, str, str]] = {
    "astronaut_swirl": ("astronaut", "swirl", "Demo pair: astronaut + swirl"),
    "nuclei_he_stain": ("nuclei_fluorescence", "he_stain", "Demo pair: fluorescence nuclei + H&E-like stain"),
    "chelsea_mosaic": ("chelsea", "mosaic", "Demo pair: cat + mosaic"),
}


def sample_dir() -> Path:
    """The ``sample_data`` folder: inside the package of a wheel, or the checkout's top-level
    one for an editable install (the wheel alone copies it into the package)."""
    packaged = Path(str(files(__package__) / "sample_data"))
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sample_data"


def sample_path(key: str) -> Path:
    if key not in SAMPLES:
        raise KeyError(f"unknown sample {key!r}; samples are {', '.join(SAMPLES)}")
    return sample_dir() / SAMPLES[key][0]


def load_sample(key: str) -> np.ndarray:
    """A sample as numpy: (H, W, 3) uint8 for colour, (H, W) uint16 for the fluorescence image,
    (T, H, W) uint16 for the time-lapse."""
    return read_sample_file(sample_path(key))


def read_sample_file(path: Path) -> np.ndarray:
    """A sample file's pixels: a PNG through Pillow, a TIFF stack through tifffile."""
    if path.suffix == ".tif":
        import tifffile

        return tifffile.imread(path)
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image)


#: Layer metadata key that marks a demo pair's layers with their role ("content", "style").
DEMO_ROLE = "style_transfer_demo_role"


def layer_data(key: str, role: str | None = None) -> tuple[np.ndarray, dict[str, Any], str]:
    data = load_sample(key)
    kwargs: dict[str, Any] = {"name": key}
    if role is not None:
        kwargs["metadata"] = {DEMO_ROLE: role}
    if key in AXIS_LABELS:
        kwargs["axis_labels"] = AXIS_LABELS[key]
    if data.ndim == 3 and data.shape[-1] == 3:
        kwargs["rgb"] = True
    else:
        kwargs.update(colormap="gray", contrast_limits=(float(data.min()), float(data.max())))
    return data, kwargs, "image"


def _sample(key: str) -> Callable[[], list[tuple]]:
    def load() -> list[tuple]:
        return [layer_data(key)]

    load.__name__ = key
    load.__doc__ = f"Open the {SAMPLES[key][1]} sample as an Image layer."
    return load


def _pair(key: str) -> Callable[[], list[tuple]]:
    content, style, _ = DEMO_PAIRS[key]

    def load() -> list[tuple]:
        # the style first, so that the content is added last and shows on top; the widget
        # picks the roles by the metadata
        return [layer_data(style, "style"), layer_data(content, "content")]

    load.__name__ = key
    load.__doc__ = f"Open the {content} (content) and {style} (style) samples as two layers."
    return load


# One module attribute per sample and pair, for the napari.yaml commands.
astronaut = _sample("astronaut")
chelsea = _sample("chelsea")
coffee = _sample("coffee")
nuclei_fluorescence = _sample("nuclei_fluorescence")
nuclei_timelapse = _sample("nuclei_timelapse")
swirl = _sample("swirl")
mosaic = _sample("mosaic")
he_stain = _sample("he_stain")
astronaut_swirl = _pair("astronaut_swirl")
nuclei_he_stain = _pair("nuclei_he_stain")
chelsea_mosaic = _pair("chelsea_mosaic")
