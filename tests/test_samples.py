"""The bundled samples: documented, small, loadable, and the generated ones reproducible."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_style_transfer import _sample_data
from napari_style_transfer._sample_data import (
    AXIS_LABELS,
    DEMO_PAIRS,
    SAMPLES,
    load_sample,
    read_sample_file,
    sample_dir,
)

ROOT = Path(__file__).resolve().parents[1]


def _generator_module():
    spec = importlib.util.spec_from_file_location("make_samples", ROOT / "sample_data" / "make_samples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("key", list(SAMPLES))
def test_every_sample_loads_and_is_at_most_512_px(key):
    image = load_sample(key)
    frame = image[0] if key in AXIS_LABELS else image
    assert max(frame.shape[:2]) <= 512
    assert image.dtype in (np.uint8, np.uint16)


def test_the_microscopy_sample_is_16_bit_grey():
    image = load_sample("nuclei_fluorescence")
    assert image.ndim == 2 and image.dtype == np.uint16 and image.max() > 255


def test_the_time_lapse_sample_is_a_16_bit_stack_whose_nuclei_move_and_whose_noise_is_new():
    stack = load_sample("nuclei_timelapse").astype(np.float32)
    assert stack.ndim == 3 and len(stack) > 2 and load_sample("nuclei_timelapse").dtype == np.uint16
    change = np.abs(np.diff(stack, axis=0))
    assert (change > 1000).mean() > 0.001  # nuclei moved: large changes in places
    background = stack[0] < 400
    assert np.median(change[0][background]) > 0  # fresh camera noise, not a copied frame


def test_every_image_file_is_a_sample_and_named_in_the_readme():
    readme = (ROOT / "sample_data" / "README.md").read_text()
    files = {p.name for p in sample_dir().iterdir() if p.suffix in (".png", ".tif")}
    assert files == {name for name, _ in SAMPLES.values()}
    for name in files:
        assert f"`{name}`" in readme


def test_generated_images_are_reproduced_exactly(tmp_path):
    make_samples = _generator_module()
    make_samples.write_generated(tmp_path)
    for name in make_samples.GENERATED:
        new, bundled = read_sample_file(tmp_path / name), read_sample_file(ROOT / "sample_data" / name)
        np.testing.assert_array_equal(new, bundled, err_msg=name)


@pytest.mark.parametrize("key", list(SAMPLES) + list(DEMO_PAIRS))
def test_every_sample_command_returns_napari_layer_data(key):
    layers = getattr(_sample_data, key)()
    assert len(layers) == (2 if key in DEMO_PAIRS else 1)
    for data, kwargs, kind in layers:
        assert kind == "image" and isinstance(data, np.ndarray)
        assert kwargs.get("rgb", False) == (data.ndim == 3 and data.shape[-1] == 3)
        assert kwargs.get("axis_labels") == AXIS_LABELS.get(kwargs["name"])


def test_the_manifest_lists_every_sample_and_pair():
    import yaml

    manifest = yaml.safe_load((ROOT / "napari.yaml").read_text())
    keys = {entry["key"] for entry in manifest["contributions"]["sample_data"]}
    assert keys == set(SAMPLES) | set(DEMO_PAIRS)
