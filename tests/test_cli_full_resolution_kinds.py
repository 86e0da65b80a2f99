"""``--size full`` from the command line for what the API takes at full size besides a 2D
grey or RGB image: stacks (frame after frame, resumable), RGBA (alpha carried) and
``--style-regions`` (a label image sampled per tile); each gives the API's store
(docs/slides.md, "Stacks, RGBA, style_regions")."""

import signal

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from test_cli_full_resolution import FAST

from napari_style_transfer import api
from napari_style_transfer.cli import main
from napari_style_transfer.files import read_image
from napari_style_transfer.pipeline import tiled

#: FAST's settings as the API's keywords
API = {
    "size": "full",
    "tile_size": 32,
    "steps": 2,
    "seed": 1,
    "weights": "random",
    "schedule": "none",
    "content_layers": ["conv2_2"],
    "style_layers": ["conv1_1", "conv2_1"],
}
#: 64 x 48 px in tiles of 32: the composition at 32 x 24, then 2 x 2 tiles at 64 x 48
TILES_PER_FRAME = 1 + 4


@pytest.fixture
def style_file(tmp_path, style):
    path = tmp_path / "style.png"
    Image.fromarray((style * 255).astype(np.uint8)).save(path)
    return path


def stored(path):
    return np.asarray(zarr.open_group(str(path))["0"][...])


def by_the_api(content, style_path, out, **more):
    """The API's full-resolution store of the same inputs, as its array."""
    style = read_image(style_path, "style")
    styles = [style, *(read_image(path, "style") for path in more.pop("more_styles", ()))]
    api.stylize(content, styles if len(styles) > 1 else style, out=str(out), **API, **more)
    return stored(out)


def test_a_stack_runs_frame_after_frame_resumes_after_ctrl_c_and_equals_the_apis_store(
    tmp_path, rng, style_file, monkeypatch, capsys
):
    content = tmp_path / "stack.npy"
    np.save(content, (rng.random((2, 64, 48, 3)) * 255).astype(np.uint8))
    out = tmp_path / "result.ome.zarr"
    argv = [str(content), str(style_file), "--size", "full", "-o", str(out), *FAST]
    run_full = tiled.run_full

    def pressed_in_the_second_frame(*args):
        for record in run_full(*args):
            if record.frame_number == TILES_PER_FRAME + 1:  # the second frame's first tile
                signal.raise_signal(signal.SIGINT)
            yield record

    monkeypatch.setattr(tiled, "run_full", pressed_in_the_second_frame)
    assert main(argv) == 130
    kept = TILES_PER_FRAME + 1  # the first frame whole and the second's composition
    assert f"{kept} of {2 * TILES_PER_FRAME} tiles are finished" in capsys.readouterr().err
    monkeypatch.setattr(tiled, "run_full", run_full)
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert f"(48x64 px, 2 frames, {2 * TILES_PER_FRAME} tiles of 32 px, {kept} already done)" in said
    resumed = stored(out)
    assert resumed.shape == (2, 3, 64, 48)  # OME order: t, c, y, x
    whole = by_the_api(np.load(content), style_file, tmp_path / "api.ome.zarr")
    np.testing.assert_allclose(resumed, whole, rtol=0, atol=1e-6)


def test_an_rgba_slide_keeps_its_alpha_in_the_store_and_in_a_tif(tmp_path, rng, style_file):
    pixels = (rng.random((64, 48, 4)) * 255).astype(np.uint8)
    content = tmp_path / "rgba.png"
    Image.fromarray(pixels).save(content)
    out = tmp_path / "result.tif"
    assert main([str(content), str(style_file), "--size", "full", "-o", str(out), *FAST]) == 0
    store = stored(tmp_path / "result.ome.zarr")
    assert store.shape == (4, 64, 48)
    np.testing.assert_allclose(store[3], pixels[..., 3] / 255, atol=1e-6)  # carried, unstyled
    np.testing.assert_allclose(store, by_the_api(pixels, style_file, tmp_path / "api.ome.zarr"), atol=1e-6)
    with tifffile.TiffFile(out) as tiff:
        assert tiff.pages[0].extrasamples  # the alpha is marked as such
        np.testing.assert_array_equal(tiff.series[0].asarray(), np.moveaxis(store, 0, -1))


def test_style_regions_at_full_size_take_a_label_image_of_another_size(tmp_path, rng, style_file):
    pixels = (rng.random((64, 48, 3)) * 255).astype(np.uint8)
    content, labels, other = tmp_path / "slide.png", tmp_path / "labels.npy", tmp_path / "other.png"
    Image.fromarray(pixels).save(content)
    Image.fromarray((rng.random((24, 24, 3)) * 255).astype(np.uint8)).resize((36, 36)).save(other)
    regions = np.ones((128, 96), np.uint8)  # twice the content's size: label 1 left, 2 right
    regions[:, 48:] = 2
    np.save(labels, regions)
    out, unguided = tmp_path / "result.ome.zarr", tmp_path / "unguided.ome.zarr"
    styles = [str(content), str(style_file), "--style", str(other), "--size", "full", *FAST]
    assert main([*styles, "-o", str(out), "--style-regions", str(labels)]) == 0
    stored_settings = zarr.open_group(str(out)).attrs["napari-style-transfer"]["settings"]
    assert "style_regions" in stored_settings
    guided = by_the_api(
        pixels, style_file, tmp_path / "api.ome.zarr", more_styles=[other], style_regions=regions
    )
    np.testing.assert_allclose(stored(out), guided, rtol=0, atol=1e-6)
    np.save(tmp_path / "ones.npy", np.ones((64, 48), np.uint8))
    assert main([*styles, "-o", str(unguided), "--style-regions", str(tmp_path / "ones.npy")]) == 0
    assert np.abs(stored(unguided) - stored(out)).max() > 1e-3  # the regions do guide it
