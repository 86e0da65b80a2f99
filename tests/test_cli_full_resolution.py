"""``napari-style-transfer CONTENT STYLE --size full -o RESULT.ome.zarr``: the content at its own
resolution, tile by tile into an OME-Zarr store, resumable (docs/slides.md)."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image
from test_cli_help import SRC, run_python

from napari_style_transfer import styled_files
from napari_style_transfer.cli import PROG, main
from napari_style_transfer.pipeline import tiled

# tiles of 32 px; shallow layers keep the windows small and the runs quick
FAST = [
    "--tile-size", "32", "--steps", "2", "--seed", "1", "--weights", "random", "--schedule", "none",
    "--content-layers", "conv2_2", "--style-layers", "conv1_1,conv2_1", "--quiet",
]  # fmt: skip
#: 96 x 80 px in tiles of 32: the composition at 24 x 20, 2 x 2 tiles at 48 x 40, 3 x 3 at 96 x 80
TILES = 1 + 4 + 9


@pytest.fixture
def files(tmp_path, rng, style):
    """A 96 x 80 RGB content (larger than a tile) and a style, as PNG files."""
    content, style_path = tmp_path / "slide.png", tmp_path / "style.png"
    Image.fromarray((rng.random((96, 80, 3)) * 255).astype(np.uint8)).save(content)
    Image.fromarray((style * 255).astype(np.uint8)).save(style_path)
    return str(content), str(style_path)


def full(files, out, *more):
    return main([*files, "--size", "full", "-o", str(out), *FAST, *more])


@pytest.fixture
def recorded_runs(monkeypatch):
    """The step records of every tiled run the command makes, one list per run."""
    runs = []
    run_full = tiled.run_full

    def recording(*args):
        runs.append([])
        for record in run_full(*args):
            runs[-1].append(record)
            yield record

    monkeypatch.setattr(tiled, "run_full", recording)
    return runs


def test_a_run_writes_an_ome_zarr_store_with_its_settings(files, tmp_path, capsys):
    out = tmp_path / "result.ome.zarr"
    assert full(files, out) == 0
    group = zarr.open_group(str(out), mode="r")
    assert group["0"].shape == (3, 96, 80)  # OME order: c, y, x
    assert np.asarray(group["finished_tiles"][...]).all()
    stored = group.attrs["napari-style-transfer"]
    assert stored["tile_size"] == 32
    assert stored["settings"]["options"]["size"] == "full"
    assert stored["settings"]["options"]["steps"] == 2
    assert group.attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "c"
    assert f"({80}x{96} px, {TILES} tiles of 32 px)" in capsys.readouterr().out


def test_a_second_run_skips_every_tile(files, tmp_path, recorded_runs, capsys):
    out = tmp_path / "result.ome.zarr"
    full(files, out)
    first = np.asarray(zarr.open_group(str(out))["0"][...])
    capsys.readouterr()
    assert full(files, out) == 0
    assert len(recorded_runs[0]) == 2 * TILES  # two steps a tile
    assert recorded_runs[1] == []
    assert f"{TILES} already done" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(zarr.open_group(str(out))["0"][...]), first)


def test_force_redoes_every_tile(files, tmp_path, recorded_runs):
    out = tmp_path / "result.ome.zarr"
    full(files, out)
    assert full(files, out, "--force") == 0
    assert len(recorded_runs[1]) == len(recorded_runs[0])


def test_ctrl_c_keeps_the_finished_tiles_and_the_same_command_resumes_to_the_uninterrupted_result(
    files, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "result.ome.zarr"
    run_full = tiled.run_full

    def pressed_after_three_tiles(*args):
        for record in run_full(*args):
            if record.frame_number == 3:  # the fourth tile's first step: three are in the store
                signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends
            yield record

    monkeypatch.setattr(tiled, "run_full", pressed_after_three_tiles)
    assert full(files, out) == 130
    message = capsys.readouterr().err
    assert f"3 of {TILES} tiles are finished and kept in {out}" in message
    assert "run the same command again to resume" in message
    monkeypatch.setattr(tiled, "run_full", run_full)
    assert full(files, out) == 0
    assert "3 already done" in capsys.readouterr().out
    whole = tmp_path / "whole.ome.zarr"
    full(files, whole)
    resumed, uninterrupted = (np.asarray(zarr.open_group(str(path))["0"][...]) for path in (out, whole))
    np.testing.assert_allclose(resumed, uninterrupted, atol=1e-6)


def test_ctrl_c_sent_to_the_command_keeps_the_finished_tiles_and_exits_130(files, tmp_path, capsys):
    out = tmp_path / "result.ome.zarr"
    argv = [*files, "--size", "full", "-o", str(out), *FAST]
    # the command, held at its fourth tile's first step (three in the store) until the signal comes
    code = (
        "import sys\nfrom napari_style_transfer.cli import main\nfrom napari_style_transfer.pipeline import tiled\n"
        "run_full = tiled.run_full\n"
        "def held(*args):\n"
        "    for record in run_full(*args):\n"
        "        if record.frame_number == 3:\n"
        "            print('held', flush=True)\n"
        "            sys.stdin.readline()\n"
        "        yield record\n"
        "tiled.run_full = held\n"
        f"sys.exit(main({argv!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    ) as command:
        assert command.stdout.readline() == "held\n"
        command.send_signal(signal.SIGINT)
        _, message = command.communicate(timeout=120)
    assert command.returncode == 130, message
    assert f"3 of {TILES} tiles are finished and kept in {out}: run the same command again" in message
    assert main(argv) == 0
    assert "3 already done" in capsys.readouterr().out


def test_a_tif_result_is_a_pyramidal_bigtiff_made_from_a_store_beside_it(files, tmp_path, capsys):
    out = tmp_path / "result.tif"
    assert full(files, out) == 0
    store = tmp_path / "result.ome.zarr"
    assert f"from the tiles in {store}" in capsys.readouterr().out
    with tifffile.TiffFile(out) as tiff:
        assert tiff.is_bigtiff and tiff.pages[0].is_tiled
        pixels = tiff.series[0].asarray()
    stored = np.moveaxis(np.asarray(zarr.open_group(str(store))["0"][...]), 0, -1)
    np.testing.assert_array_equal(pixels, stored)
    assert styled_files.read_settings(out)["options"]["size"] == "full"


def test_a_zarr_folder_is_taken_as_the_content(files, tmp_path, rng):
    content = tmp_path / "slide.zarr"
    pixels = np.asarray(Image.open(files[0]))
    zarr.create_array(str(content), data=pixels, chunks=(32, 32, 3))
    out = tmp_path / "result.ome.zarr"
    assert main([str(content), files[1], "--size", "full", "-o", str(out), *FAST]) == 0
    from_png = tmp_path / "from_png.ome.zarr"
    full(files, from_png)
    results = (np.asarray(zarr.open_group(str(path))["0"][...]) for path in (out, from_png))
    np.testing.assert_array_equal(*results)


def test_bad_requests_are_refused_in_one_line_before_torch_is_imported(files, tmp_path, rng):
    content, style = files
    stack, a_file = tmp_path / "stack.npy", tmp_path / "notes.txt"
    np.save(stack, rng.random((3, 64, 64)).astype(np.float32))
    a_file.write_text("a file, not a folder")
    store = str(tmp_path / "r.ome.zarr")
    refused = {
        "r.png cannot be: give -o r.ome.zarr": [content, style, "-o", str(tmp_path / "r.png")],
        "is a stack of 3 frames (3,), and the pyramidal BigTIFF r.tif holds one 2D image: give "
        "r.ome.zarr as the output": [str(stack), style, "-o", str(tmp_path / "r.tif")],
        "--frames time cannot be used with --size full: a stack's frames are styled one after the other, "
        "each on its own; use --frames independent": [str(stack), style, "-o", store, "--frames", "time"],
        "--snapshot-dir cannot be used with --size full": [content, style, "-o", store, "--snapshot-dir", "s"],
        "leave out --output-dtype": [content, style, "-o", store, "--output-dtype", "same"],
        f"{a_file} is a file, not a folder": [content, style, "-o", str(a_file / "r.ome.zarr")],
    }  # fmt: skip
    runs = {expected: argv + ["--size", "full", "--weights", "random"] for expected, argv in refused.items()}
    runs["--force redoes the tiles of a --size full run"] = [content, style, "-o", "r.png", "--force"]
    runs["--size full is for one image"] = ["demo", "-o", str(tmp_path / "demo"), "--size", "full"]
    batch = ["batch", "-o", str(tmp_path / "out"), "--style", style, "--workers", "0", content]
    runs["--size full is for one image: napari-style-transfer CONTENT"] = [*batch, "--size", "full"]
    code = (
        "import sys\nfrom napari_style_transfer.cli import main\n"
        f"for argv in {list(runs.values())!r}:\n"
        "    print(main(argv), file=sys.stderr)\n"
        "print('torch' in sys.modules)\n"
    )
    result = run_python(code)
    assert result.stdout.split() == ["False"], result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 * len(runs)  # one line of error, one of exit status, each
    for expected, line, status in zip(runs, lines[::2], lines[1::2], strict=True):
        assert line.startswith(f"{PROG}: error: ") and expected in line, line
        assert status == "2"


def test_a_store_made_with_other_settings_is_refused_with_the_apis_fix(files, tmp_path, capsys):
    out = tmp_path / "result.ome.zarr"
    full(files, out)
    capsys.readouterr()
    assert full(files, out, "--steps", "3") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "other settings (options.steps)" in line
    assert "write to a new path, or delete it to start over" in line


def test_a_store_resumes_with_other_threads_and_snapshots(files, tmp_path, capsys):
    out = tmp_path / "result.ome.zarr"
    full(files, out)
    capsys.readouterr()
    assert full(files, out, "--threads", "1", "--snapshot-every", "0") == 0
    assert "already done" in capsys.readouterr().out


def test_size_takes_full_or_a_whole_number(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([*files, "-o", str(tmp_path / "r.ome.zarr"), "--size", "fulll"])
    assert "expected a number, got 'fulll'" in capsys.readouterr().err


def test_a_runs_help_offers_size_full_and_the_batchs_does_not():
    from napari_style_transfer.cli import build_batch_parser, build_parser

    assert "--size PX|full" in build_parser().format_help()
    assert "--size PX " in build_batch_parser().format_help()
