"""What the command line prints besides its results: the API's messages in the command line's
own syntax, warnings on lines of their own beside the progress bar, one final bar line."""

from __future__ import annotations

import pytest

from napari_style_transfer import iter_stylize
from napari_style_transfer.cli import command_line_syntax, main
from napari_style_transfer.errors import StyleTransferError

TINY = ["--size", "32", "--steps", "2"]


def on_a_terminal(stream: str) -> list[str]:
    """The lines a terminal shows for ``stream``: a carriage return goes back to the start of
    the line, and what follows overwrites what was there."""
    shown = []
    for line in stream.split("\n"):
        screen = ""
        for part in line.split("\r"):
            screen = part + screen[len(part) :]
        shown.append(screen.rstrip())
    return shown


@pytest.mark.parametrize(
    ("api", "command_line"),
    [
        (
            "use weights='random' or weights=\"my file.pth\"",
            "use --weights random or --weights 'my file.pth'",
        ),
        ("with optimizer='adam' only", "with --optimizer adam only"),
        ("frames=time: the weight", "--frames time: the weight"),
        ("keep_grey=False, keep_grey=True", "--no-keep-grey, --keep-grey"),
        ("content_weight=1e-3.", "--content-weight 1e-3."),
        ("use style_scale 0.5 or less; style_regions", "use --style-scale 0.5 or less; --style-regions"),
        # not the API's keywords: prose, file names, paths, other keywords
        ("at size 32, a larger size", "at size 32, a larger size"),
        (
            "read /data/style_scale/weights=1.png and style_blend.png",
            "read /data/style_scale/weights=1.png and style_blend.png",
        ),
        ("run without client=", "run without client="),
    ],
)
def test_the_apis_keywords_are_written_as_flags(api, command_line):
    assert command_line_syntax(api) == command_line


def test_a_refusal_names_the_options_by_their_flags(image_files, tmp_path, capsys, content, style):
    with pytest.raises(StyleTransferError, match="works with optimizer='adam' only"):
        iter_stylize(content, style, average=0.9, weights="random")
    argv = [
        *map(str, image_files),
        "-o",
        str(tmp_path / "r.png"),
        *TINY,
        "--weights",
        "random",
        "--average",
        "0.9",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "works with --optimizer adam only" in err and "optimizer=" not in err


def test_the_fallback_warning_has_a_line_of_its_own_beside_the_bar(
    image_files, tmp_path, capsys, torch_home, offline
):
    assert main([*map(str, image_files), "-o", str(tmp_path / "r.png"), *TINY]) == 0  # weights auto, offline
    err = capsys.readouterr().err
    (warning,) = [line for line in on_a_terminal(err) if "warning" in line]
    assert warning.startswith("napari-style-transfer: warning: ImageNet VGG19 weights are unavailable")
    assert "%|" not in warning
    assert "use --weights random" in warning and "weights=" not in warning


def test_the_bar_draws_its_final_line_once(image_files, tmp_path, capsys):
    argv = [*map(str, image_files), "-o", str(tmp_path / "r.png"), *TINY, "--weights", "random"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert err.count("100%") == 1
    assert err.count("2/2") == 1
