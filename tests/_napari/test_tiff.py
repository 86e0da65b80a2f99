"""The plugin's TIFF writer and reader: a styled layer's settings survive a save and an open."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_style_transfer._napari.tiff import get_reader
from napari_style_transfer.styled_files import KEY

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
    assert description[KEY] == SETTINGS

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


# --- one format: the command line's, the batches' and the plugin's files open everywhere ------


def stripes(tmp_path):
    """A content TIFF of 16 bits (so that a batch writes its result as .tif) and a style PNG."""
    from PIL import Image

    rng = np.random.default_rng(3)
    content, style = tmp_path / "cells.tif", tmp_path / "stain.png"
    tifffile.imwrite(content, rng.integers(1000, 40000, (40, 48), dtype=np.uint16))
    Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)).save(style)
    return content, style


TINY = ["--size", "32", "--steps", "1", "--weights", "random", "-q"]


def test_a_result_of_the_command_line_opens_in_napari_with_its_settings(viewer, tmp_path):
    from napari_style_transfer.cli import main

    content, style = stripes(tmp_path)
    out = tmp_path / "result.tif"
    assert main([str(content), str(style), "-o", str(out), "--seed", "5", *TINY]) == 0
    (opened,) = viewer.open(str(out), plugin="napari-style-transfer")
    settings = opened.metadata["style_transfer"]
    assert settings["options"]["seed"] == 5 and settings["steps_done"] == 1
    assert opened.data.shape == (27, 32) and opened.name == "result"  # --size 32


def test_a_batch_resumes_over_its_results_saved_again_from_napari(viewer, tmp_path):
    import napari

    from napari_style_transfer.batch import stylize_batch

    content, style = stripes(tmp_path)
    out = tmp_path / "out"
    options = {"size": 32, "steps": 1, "weights": "random"}
    (first,) = stylize_batch([content], [style], out, **options)
    result = out / "cells__stain.tif"
    (opened,) = viewer.open(str(result), plugin="napari-style-transfer")
    opened.contrast_limits = (0.1, 0.9)  # looked at, adjusted, saved over by the plugin
    assert napari.save_layers(str(result), [opened], plugin="napari-style-transfer") == [str(result)]
    saved = tifffile.TiffFile(result).pages[0].description
    (again,) = stylize_batch([content], [style], out, **options)
    assert first["status"] == "done" and again["status"] == "skipped"
    assert json.loads(saved)["napari-layer"]["contrast_limits"] == [0.1, 0.9]


def test_files_of_both_earlier_keys_still_open_with_their_settings(viewer, tmp_path):
    plugin_file, command_file = tmp_path / "plugin.tif", tmp_path / "command.tif"
    data = np.zeros((8, 9), np.float32)
    old_plugin = {
        "napari_style_transfer": {"style_transfer": SETTINGS, "layer": {"colormap": {"name": "magenta"}}}
    }
    tifffile.imwrite(plugin_file, data, description=json.dumps(old_plugin), metadata=None)
    tifffile.imwrite(
        command_file, data, description=json.dumps({"napari-style-transfer": SETTINGS}), metadata=None
    )
    (from_plugin,) = viewer.open(str(plugin_file), plugin="napari-style-transfer")
    (from_command,) = viewer.open(str(command_file), plugin="napari-style-transfer")
    assert from_plugin.metadata["style_transfer"] == SETTINGS == from_command.metadata["style_transfer"]
    assert from_plugin.colormap.name == "magenta"


def test_save_styled_layer_names_the_file_for_the_plugins_reader_and_prefers_it(viewer, tmp_path):
    from napari.settings import get_settings

    from napari_style_transfer._napari.tiff import save_styled_layer

    layer = viewer.add_image(np.ones((6, 7), np.float32), metadata={"style_transfer": SETTINGS})
    path = save_styled_layer(layer, tmp_path / "cells styled")
    assert path == tmp_path / "cells styled.styled.tif"
    assert get_settings().plugins.extension2reader["*.styled.tif"] == "napari-style-transfer"
    (opened,) = viewer.open(str(path), plugin=None)  # as File > Open does: the preferred reader
    assert opened.metadata["style_transfer"] == SETTINGS


# --- crafted files: the reader checks what it reads --------------------------------------------


def crafted(tmp_path, look=None, settings=None, description=None, data=None) -> str:
    path = tmp_path / "crafted.tif"
    if description is None:
        stored = {"napari-style-transfer": SETTINGS if settings is None else settings}
        if look is not None:
            stored["napari-layer"] = look
        description = json.dumps(stored)
    data = np.zeros((8, 9), np.float32) if data is None else data
    tifffile.imwrite(path, data, description=description, metadata=None)
    return str(path)


@pytest.mark.parametrize(
    "description",
    [
        "[" * 100_000 + "]" * 100_000,  # RecursionError in json
        '{"napari-style-transfer": ' + "[" * 40 + "]" * 40 + "}",  # deeper than settings go
        '{"napari-style-transfer": {"options": 5}}',  # wrong type where readers look
        '{"napari-style-transfer": "x"}',
        '{"napari_style_transfer": {"style_transfer": 5}}',
        "not json {",
    ],
    ids=["100k-deep", "deep-settings", "options-5", "settings-text", "old-settings-5", "not-json"],
)
def test_a_description_that_is_not_valid_settings_is_left_to_naparis_own_reader(tmp_path, description):
    assert get_reader(crafted(tmp_path, description=description)) is None


@pytest.mark.parametrize(
    ("look", "left_out"),
    [
        ({"scale": [0, 0]}, "scale"),
        ({"scale": [1, float("nan")]}, "scale"),
        ({"translate": [1, 2, 3]}, "translate"),
        ({"rgb": True}, "rgb"),
        ({"rgb": "yes"}, "rgb"),
        ({"blending": "evil"}, "blending"),
        ({"affine": "x"}, "affine"),
        ({"affine": [[0, 0, 0], [0, 0, 0], [0, 0, 1]]}, "affine"),
        ({"rotate": {"a": 1}}, "rotate"),
        ({"shear": [1, 2, 3]}, "shear"),
        ({"colormap": "x"}, "colormap"),
        ({"colormap": {"name": "mine", "colors": [[2, 0, 0], [0, 0, 0]]}}, "colormap"),
        ({"colormap": {"name": "mine", "colors": [[1, 0], [0, 0, 0]]}}, "colormap"),
        ({"contrast_limits": [5, 1]}, "contrast_limits"),
        ({"gamma": -1}, "gamma"),
        ({"opacity": "1"}, "opacity"),
        ({"name": ["a"]}, "name"),
    ],
)
def test_saved_look_settings_napari_cannot_take_are_left_out_with_a_warning(tmp_path, look, left_out):
    path = crafted(tmp_path, look={**look, "opacity": 0.5} if left_out != "opacity" else look)
    reader = get_reader(path)
    with pytest.warns(UserWarning, match=f"left out, napari cannot take them: {left_out} "):
        ((data, kwargs, kind),) = reader(path)
    assert kwargs.get(left_out, "crafted") == "crafted"  # the name falls back to the file's
    assert kind == "image" and kwargs["metadata"] == {"style_transfer": SETTINGS}
    if left_out != "opacity":
        assert kwargs["opacity"] == 0.5  # the valid ones are kept


def test_an_old_files_layer_that_is_not_a_mapping_is_ignored(tmp_path):
    old = {"napari_style_transfer": {"style_transfer": SETTINGS, "layer": 5}}
    path = crafted(tmp_path, description=json.dumps(old))
    ((_, kwargs, _),) = get_reader(path)(path)
    assert kwargs == {"metadata": {"style_transfer": SETTINGS}, "name": "crafted"}


def test_every_look_the_plugin_writes_is_valid_for_the_reader(viewer, tmp_path):
    import napari

    layer = viewer.add_image(
        np.zeros((2, 6, 7, 3), np.float32),
        rgb=True,
        scale=(3, 0.5, 2),
        translate=(1, 2, 3),
        rotate=30,
        shear=(0.1, 0.2, 0.3),
        colormap="gray",
        gamma=0.8,
        metadata={"style_transfer": SETTINGS},
    )
    path = str(tmp_path / "look.tif")
    napari.save_layers(path, [layer], plugin="napari-style-transfer")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ((data, kwargs, _),) = get_reader(path)(path)
    assert data.shape == (2, 6, 7, 3) and kwargs["rgb"] is True
    assert kwargs["scale"] == [3, 0.5, 2] and kwargs["gamma"] == 0.8


def test_a_header_declaring_more_pixels_than_memory_is_refused_before_decoding(tmp_path, monkeypatch):
    from napari_style_transfer import memory
    from napari_style_transfer.files import ImageFileError

    path = crafted(tmp_path, data=np.zeros((64, 64), np.float32))
    monkeypatch.setattr(memory, "available_ram_bytes", lambda: 10_000)
    with pytest.raises(ImageFileError, match=r"declares 64x64 float32 .* more than the .* of memory free"):
        get_reader(path)(path)


def test_pixels_that_cannot_be_decoded_are_a_clear_error(tmp_path):
    from napari_style_transfer.files import ImageFileError

    path = crafted(tmp_path, data=np.arange(64 * 64, dtype=np.float32).reshape(64, 64))
    raw = Path(path).read_bytes()
    Path(path).write_bytes(raw[: len(raw) // 3] + raw[-400:])  # strips cut away, header kept
    reader = get_reader(path)
    with pytest.raises(ImageFileError, match="could not read .*crafted.tif"):
        reader(path)


def test_saving_as_styled_tif_picks_the_plugins_writer_without_naming_it(viewer, tmp_path):
    import napari

    from napari_style_transfer.styled_files import read_settings

    layer = viewer.add_image(np.ones((6, 7), np.float32), metadata={"style_transfer": SETTINGS})
    path = str(tmp_path / "result.styled.tif")
    assert napari.save_layers(path, [layer]) == [path]
    assert read_settings(Path(path)) == SETTINGS
