"""Command line: several styles, blend, style loss, regions, colour mode, averaged iterates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_style_transfer import stylize
from napari_style_transfer.cli import build_parser, main

TINY = ["--size", "32", "--steps", "2", "--weights", "random", "--snapshot-every", "0", "-q"]


def settings_of(path) -> dict:
    return json.loads(Image.open(path).text["napari-style-transfer"])


@pytest.fixture
def second_style(tmp_path) -> str:
    path = tmp_path / "second.png"
    image = np.zeros((36, 36, 3), np.uint8)
    image[..., 2] = 220
    Image.fromarray(image).save(path)
    return str(path)


def test_several_styles_positional_and_repeated_flag_are_blended(image_files, second_style, tmp_path):
    content, style = image_files
    out = tmp_path / "out.png"
    assert (
        main(
            [
                str(content),
                str(style),
                "--style",
                second_style,
                "-o",
                str(out),
                *TINY,
                "--style-blend",
                "0.7,0.3",
            ]
        )
        == 0
    )
    metadata = settings_of(out)
    assert metadata["styles"] == 2
    assert metadata["options"]["style_blend"] == [0.7, 0.3]


def test_one_positional_style_runs_as_before(image_files, tmp_path):
    content, style = image_files
    out = tmp_path / "out.png"
    assert main([str(content), str(style), "-o", str(out), *TINY]) == 0
    assert settings_of(out)["styles"] == 1


def test_style_regions_file_is_read_and_described_in_the_settings(image_files, second_style, tmp_path):
    content, style = image_files
    labels = np.zeros((40, 48), np.uint8)
    labels[:, :16], labels[:, 32:] = 1, 2
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "out.png"
    args = [
        str(content),
        str(style),
        second_style,
        "--style-regions",
        str(tmp_path / "labels.npy"),
        "-o",
        str(out),
    ]
    assert main([*args, *TINY, "--size", "64"]) == 0
    assert settings_of(out)["style_regions"]["labels"] == [0, 1, 2]


def test_style_loss_colours_and_average_reach_the_run(image_files, tmp_path):
    content, style = image_files
    out = tmp_path / "out.png"
    extra = [
        "--style-loss",
        "sliced",
        "--content-colours",
        "histogram",
        "--optimizer",
        "adam",
        "--average",
        "0.9",
        "--style-layer-weights",
        "1,1,1,1,0.5",
    ]
    assert main([str(content), str(style), "-o", str(out), *TINY, *extra]) == 0
    options = settings_of(out)["options"]
    assert (options["style_loss"], options["content_colours"], options["average"]) == (
        "sliced",
        "histogram",
        0.9,
    )
    assert options["style_layer_weights"] == [1, 1, 1, 1, 0.5]


def test_bare_content_colours_flag_is_the_luminance_mode_and_no_turns_it_off():
    parser = build_parser()
    assert (
        parser.parse_args(["c.png", "s.png", "-o", "o.png", "--content-colours"]).content_colours
        == "luminance"
    )
    assert (
        parser.parse_args(["c.png", "s.png", "-o", "o.png", "--no-content-colours"]).content_colours is False
    )


def test_a_run_without_a_style_is_refused_in_one_line(image_files, tmp_path, capsys):
    content, _ = image_files
    assert main([str(content), "-o", str(tmp_path / "out.png"), *TINY]) == 2
    assert "give a style image" in capsys.readouterr().err


def test_bad_blend_is_refused_in_one_line(image_files, tmp_path, capsys):
    content, style = image_files
    assert (
        main([str(content), str(style), "-o", str(tmp_path / "out.png"), *TINY, "--style-blend", "1,2"]) == 2
    )
    assert "--style-blend has 2 weights but there is 1 style" in capsys.readouterr().err


def test_the_cli_result_equals_the_api_result_for_two_styles(
    image_files, second_style, tmp_path, content, style
):
    content_path, style_path = image_files
    out = tmp_path / "out.npy"
    assert (
        main(
            [str(content_path), str(style_path), second_style, "-o", str(out), *TINY, "--style-blend", "1,0"]
        )
        == 0
    )
    second = np.asarray(Image.open(second_style))
    expected = stylize(
        content,
        [np.asarray(Image.open(style_path)), second],
        size=32,
        steps=2,
        weights="random",
        style_blend=(1, 0),
    )
    np.testing.assert_array_equal(np.load(out), expected)
