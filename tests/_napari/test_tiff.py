"""The plugin's TIFF writer and reader: a styled layer's settings survive a save and an open."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from napari_style_transfer._napari.tiff import KEY, get_reader

SETTINGS = {
    "content": "cells",
    "style": "stain",
    "options": {"size": 32, "steps": 4, "style_weight": 1e6, "style_layers": ["conv1_1", "conv2_1"]},
    "losses": {"total": 12.5, "content": 2.5, "style": 10.0},
    "value_range": [-5.0, 300.0],
}


def test_a_styled_layer_saved_by_the_plugin_opens_with_its_settings(viewer, tmp_path):
    import napari

    data = np.linspace(-5, 300, 27 * 32, dtype=np.float32).reshape(27, 32)
    layer = viewer.add_image(
        data,
        name="cells styled",
        colormap="magenta",
        contrast_limits=(-5.0, 300.0),
        scale=(2.0, 3.0),
        blending="additive",
        metadata={"style_transfer": SETTINGS},
    )
    path = str(tmp_path / "styled.tif")
    assert napari.save_layers(path, [layer], plugin="napari-style-transfer") == [path]

    description = json.loads(tifffile.TiffFile(path).pages[0].description)
    assert description[KEY]["style_transfer"] == SETTINGS

    (opened,) = viewer.open(path, plugin="napari-style-transfer")
    assert opened.metadata["style_transfer"] == SETTINGS
    np.testing.assert_array_equal(opened.data, data)
    assert opened.data.dtype == np.float32 and opened.name == "cells styled [1]"  # napari numbers the twin
    assert tuple(opened.contrast_limits) == (-5.0, 300.0) and tuple(opened.scale) == (2.0, 3.0)
    assert opened.colormap.name == "magenta" and str(opened.blending) == "additive"


def test_the_reader_claims_only_tiffs_with_the_plugins_settings(tmp_path):
    plain, other_json = tmp_path / "plain.tif", tmp_path / "other.tif"
    tifffile.imwrite(plain, np.zeros((8, 8), np.uint16))
    tifffile.imwrite(other_json, np.zeros((8, 8), np.uint16), description='{"shape": [8, 8]}', metadata=None)
    (tmp_path / "styled.png").write_bytes(b"")
    assert get_reader(str(plain)) is None and get_reader(str(other_json)) is None
    assert get_reader(str(tmp_path / "styled.png")) is None
