"""One styled-file format: what the command line, a batch and the napari writer store in a
result's file, any of them reads back; files of both earlier keys still read."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_style_transfer._napari.tiff import write_styled_tiff as napari_writer
from napari_style_transfer.batch import stylize_batch
from napari_style_transfer.files import write_image
from napari_style_transfer.styled_files import KEY, LAYER_KEY, read_settings, read_styled

SETTINGS = {"options": {"size": 32, "seed": 4}, "losses": {"total": 1.5}, "weights": "random"}
LOOK = {"colormap": {"name": "magenta"}, "scale": [2.0, 3.0]}
FAST = {"size": 32, "steps": 1, "weights": "random"}


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_the_writers_of_the_command_line_and_batches_store_settings_under_the_one_key(tmp_path, suffix):
    path = tmp_path / f"result{suffix}"
    write_image(path, np.full((6, 5, 3), 0.5, np.float32), SETTINGS)
    assert read_settings(path) == SETTINGS
    if suffix == ".png":
        assert json.loads(Image.open(path).text[KEY]) == SETTINGS
    else:
        assert json.loads(tifffile.TiffFile(path).pages[0].description) == {KEY: SETTINGS}


def test_the_napari_writer_stores_the_same_settings_under_the_same_key_and_the_look_beside(tmp_path):
    path = tmp_path / "layer.tif"
    napari_writer(str(path), np.zeros((6, 5), np.uint16), {"metadata": {"style_transfer": SETTINGS}, **LOOK})
    stored = json.loads(tifffile.TiffFile(path).pages[0].description)
    assert stored == {KEY: SETTINGS, LAYER_KEY: LOOK}
    assert read_styled(path).settings == SETTINGS and read_styled(path).layer == LOOK


def test_a_tiff_of_the_napari_writers_earlier_key_still_reads(tmp_path):
    path = tmp_path / "old.tif"
    old = {"napari_style_transfer": {"style_transfer": SETTINGS, "layer": LOOK}}
    tifffile.imwrite(path, np.zeros((4, 4), np.float32), description=json.dumps(old), metadata=None)
    styled = read_styled(path)
    assert styled.settings == SETTINGS and styled.layer == LOOK


def test_files_without_settings_or_of_other_kinds_carry_none(tmp_path):
    plain_tif, plain_png, array = tmp_path / "plain.tif", tmp_path / "plain.png", tmp_path / "a.npy"
    tifffile.imwrite(plain_tif, np.zeros((4, 4), np.uint8))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(plain_png)
    np.save(array, np.zeros((4, 4)))
    assert read_styled(plain_tif) is None and read_styled(plain_png) is None and read_styled(array) is None


def test_a_batch_resumes_over_its_result_saved_again_by_the_napari_writer(tmp_path, image_files):
    content = tmp_path / "cells.tif"
    tifffile.imwrite(content, np.random.default_rng(2).integers(0, 60000, (40, 48), dtype=np.uint16))
    out = tmp_path / "out"
    (first,) = stylize_batch([content], [image_files[1]], out, **FAST)
    result = out / "cells__style.tif"
    settings = read_settings(result)
    # as napari saves the layer its reader made of the file: the settings back, a look added
    napari_writer(str(result), tifffile.imread(result), {"metadata": {"style_transfer": settings}, **LOOK})
    (again,) = stylize_batch([content], [image_files[1]], out, **FAST)
    assert first["status"] == "done" and again["status"] == "skipped"


def test_a_batch_resumes_over_its_result_saved_by_the_earlier_napari_writer(tmp_path, image_files):
    out = tmp_path / "out"
    stylize_batch([image_files[0]], [image_files[1]], out, **FAST)
    result = out / "content__style.png"
    settings = read_settings(result)
    as_tiff = out / "content__style.tif"  # what a user saved from napari, under the old key
    old = {"napari_style_transfer": {"style_transfer": settings, "layer": {}}}
    tifffile.imwrite(as_tiff, np.asarray(Image.open(result)), description=json.dumps(old), metadata=None)
    result.unlink()
    (again,) = stylize_batch([image_files[0]], [image_files[1]], out, **FAST)
    assert again["status"] == "skipped" and again["output"] == str(as_tiff)
