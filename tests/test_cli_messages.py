"""What the command line prints besides its results: the API's messages in the command line's
own syntax, warnings on lines of their own beside the progress bar, one final bar line."""

from __future__ import annotations

import pytest

from napari_style_transfer import iter_stylize
from napari_style_transfer.cli import command_line_syntax, main, warning_line
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


def test_a_batch_workers_fallback_warning_is_one_line_in_the_command_lines_words(
    image_files, tmp_path, capfd, monkeypatch
):
    """The warning is raised in a worker process; it comes back with the item's outcome."""
    # the worker processes inherit these: an empty weights cache, and every download refused
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    for variable in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    content, style = map(str, image_files)
    argv = ["batch", "-o", str(tmp_path / "out"), "--style", style, "--workers", "1", "-q", *TINY, content]
    assert main(argv) == 0
    err = capfd.readouterr().err  # the workers' stderr too
    warnings = [line for line in on_a_terminal(err) if "warning" in line.lower()]
    assert all(line.startswith("napari-style-transfer: warning: ") for line in warnings)
    (fallback,) = [line for line in warnings if "ImageNet VGG19 weights are unavailable" in line]
    assert "use --weights random" in fallback and "weights=" not in fallback
    assert ".py:" not in err  # no source line of a raw Python warning


def test_a_warning_of_several_lines_is_shown_in_one():
    # dask's, when its dashboard's port is taken
    message = (
        "Port 8787 is already in use.\nPerhaps you already have a cluster running?\nHosting on 4290 instead"
    )
    assert warning_line(message) == (
        "napari-style-transfer: warning: Port 8787 is already in use. "
        "Perhaps you already have a cluster running? Hosting on 4290 instead"
    )
    assert warning_line("use weights='random'") == "napari-style-transfer: warning: use --weights random"
