"""TIFF results: float32 in [0, 1] by default, or the content's own dtype and units
(``--output-dtype same``), for a run and for a batch; the settings in the description."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from tiny_runs import tiny_args

from napari_style_transfer._image import describe_image
from napari_style_transfer.cli import main
from napari_style_transfer.styled_files import read_settings

FAST = tiny_args(steps=2)
LOW, HIGH = 1000, 40000


@pytest.fixture
def grey16(tmp_path, content):
    """A 40 x 48 16-bit grey TIFF whose values span LOW..HIGH, and the style as .npy."""
    values = content[..., 0].astype(np.float64)
    values = LOW + (values - values.min()) / (values.max() - values.min()) * (HIGH - LOW)
    path = tmp_path / "grey16.tif"
    tifffile.imwrite(path, np.rint(values).astype(np.uint16))
    return path


@pytest.fixture
def style_file(tmp_path, style):
    path = tmp_path / "style.npy"
    np.save(path, style)
    return path


def test_a_16_bit_grey_tiff_gives_a_float32_tiff_in_0_1_with_its_settings(tmp_path, grey16, style_file):
    out = tmp_path / "result.tif"
    assert main([str(grey16), str(style_file), "-o", str(out), *FAST, "--style-weight", "1e5"]) == 0
    written = tifffile.imread(out)
    assert written.dtype == np.float32 and written.shape == (27, 32)
    assert written.min() >= 0.0 and written.max() <= 1.0 and written.max() > written.min()
    settings = read_settings(out)
    assert settings["options"]["style_weight"] == 1e5 and settings["options"]["steps"] == 2
    assert settings["value_scaling"] == f"data range {LOW}..{HIGH}"


def test_output_dtype_same_gives_uint16_in_the_contents_units(tmp_path, grey16, style_file):
    unit, same = tmp_path / "unit.tif", tmp_path / "same.tif"
    assert main([str(grey16), str(style_file), "-o", str(unit), *FAST]) == 0
    assert main([str(grey16), str(style_file), "-o", str(same), *FAST, "--output-dtype", "same"]) == 0
    written = tifffile.imread(same)
    assert written.dtype == np.uint16
    assert written.min() >= LOW and written.max() <= HIGH and written.max() > 255
    # the same run, mapped back through the content's data range
    expected = LOW + tifffile.imread(unit).astype(np.float64) * (HIGH - LOW)
    np.testing.assert_allclose(written, expected, rtol=0, atol=1)
    assert read_settings(same)["value_scaling"] == f"data range {LOW}..{HIGH}"


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_output_dtype_same_gives_float_content_its_own_range(tmp_path, content, style_file, suffix):
    values = content.astype(np.float64) / 255.0 * 10.0 - 5.0  # -5..5, outside [0, 1]
    np.save(tmp_path / "content.npy", values)
    out = tmp_path / f"result{suffix}"
    assert (
        main(
            [str(tmp_path / "content.npy"), str(style_file), "-o", str(out), *FAST, "--output-dtype", "same"]
        )
        == 0
    )
    written = tifffile.imread(out) if suffix == ".tif" else np.load(out)
    assert written.dtype == np.float64 and written.shape == (27, 32, 3)
    assert values.min() <= written.min() and written.max() <= values.max() and np.ptp(written) > 1.0


def test_output_dtype_same_to_png_is_refused_before_the_run_for_16_bit_content(
    tmp_path, grey16, style_file, capsys
):
    out = tmp_path / "result.png"
    assert main([str(grey16), str(style_file), "-o", str(out), *FAST, "--output-dtype", "same"]) == 2
    error = capsys.readouterr().err.strip()
    assert "--output-dtype same keeps the content's uint16" in error and "write a .tif or .npy file" in error
    assert len(error.splitlines()) == 1 and not out.exists()


def test_the_scale_maps_a_frame_back_to_the_contents_own_values():
    rng = np.random.default_rng(3)
    rgba16 = rng.integers(0, 65536, (20, 24, 4), dtype=np.uint16)
    wide = np.array([[-1.7e308, 0.0], [3.0, 1.7e308]] * 8)  # high - low overflows float64
    edges = np.array([[np.iinfo(np.int64).min, 0], [5, np.iinfo(np.int64).max]] * 8, dtype=np.int64)
    for data in (rgba16, wide, edges):
        described = describe_image(data, "content")
        frame = described.frame()
        unit = (
            np.concatenate([frame.rgb, frame.alpha[..., None]], axis=-1)
            if frame.alpha is not None
            else frame.rgb[..., 0]
        )
        back = described.value_scale().to_own_units(unit)
        assert back.dtype == data.dtype
        if (
            data.dtype == np.int64
        ):  # float32 keeps 24 bits of 2**64: the extremes come back, not wrapped around
            assert back[0, 0] == data.min() and back[1, 1] > 2**62
        else:
            # float32 frames: about 7 digits of the range (and a rounding of integers)
            tolerance = 1e-6 * np.abs(data.astype(np.float64)).max() + 1
            np.testing.assert_allclose(back, data, rtol=0, atol=tolerance)
            assert back.min() == data.min() and back.max() == data.max()


def test_a_batch_with_output_dtype_same_writes_the_inputs_dtype(tmp_path, grey16, style_file):
    out = tmp_path / "out"
    argv = ["batch", str(grey16), "--style", str(style_file), "-o", str(out), "--workers", "0", *FAST]
    assert main([*argv, "--output-dtype", "same"]) == 0
    written = tifffile.imread(out / "grey16__style.tif")
    assert (
        written.dtype == np.uint16 and written.min() >= LOW and written.max() <= HIGH and written.max() > 255
    )
    assert read_settings(out / "grey16__style.tif")["batch"]["output_dtype"] == "same"
    assert json.loads((out / "batch.json").read_text())["output_dtype"] == "same"
    # a result in the other dtype is not this one's: the float32 batch makes it again
    assert main(argv) == 0
    assert json.loads((out / "batch.json").read_text())["items"][0]["status"] == "done"
    assert tifffile.imread(out / "grey16__style.tif").dtype == np.float32
