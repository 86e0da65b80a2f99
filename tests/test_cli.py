"""The command line: runs, the demo, --help for every option, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from tiny_runs import tiny_args

from napari_style_transfer.cli import main
from napari_style_transfer.options import StyleOptions

FAST = tiny_args(steps=3)


def test_a_run_writes_the_result_with_its_settings(tmp_path, image_files, capsys):
    out = tmp_path / "out" / "result.png"
    assert main([*map(str, image_files), "-o", str(out), *FAST, "--style-weight", "1e5"]) == 0
    with Image.open(out) as image:
        assert image.size == (32, 27) and image.mode == "RGB"
        metadata = json.loads(image.text["napari-style-transfer"])
    assert metadata["options"]["style_weight"] == 1e5
    assert metadata["weights"].startswith("random")
    assert "wrote" in capsys.readouterr().out


def test_snapshots_go_into_the_snapshot_dir(tmp_path, image_files):
    snaps = tmp_path / "snaps"
    argv = [
        *map(str, image_files),
        "-o",
        str(tmp_path / "r.png"),
        *FAST,
        "--snapshot-every",
        "1",
        "--snapshot-dir",
        str(snaps),
    ]
    assert main(argv) == 0
    # the last step (3) is the result itself
    assert sorted(p.name for p in snaps.iterdir()) == [f"snapshot_step000{i}.png" for i in (1, 2)]


def test_16_bit_grey_and_npy_inputs(tmp_path, image_files):
    grey = tmp_path / "grey16.png"
    Image.fromarray((np.arange(40 * 48).reshape(40, 48) * 20).astype(np.uint16)).save(grey)
    npy = tmp_path / "style.npy"
    np.save(npy, np.random.default_rng(0).random((36, 36, 3)))
    assert main([str(grey), str(npy), "-o", str(tmp_path / "r.png"), *FAST]) == 0
    with Image.open(tmp_path / "r.png") as image:
        assert image.mode == "L"


def test_the_demo_writes_content_style_snapshots_and_result(tmp_path):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "-o",
                str(out),
                "--size",
                "32",
                "--steps",
                "4",
                "--snapshot-every",
                "2",
                "--weights",
                "random",
                "-q",
            ]
        )
        == 0
    )
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "content.png",
        "result.png",
        "snapshot_step0002.png",
        "style.png",
    ]  # step 4 is result.png


def test_the_demo_runs_every_pair(tmp_path):
    from napari_style_transfer._sample_data import DEMO_PAIRS

    for pair in DEMO_PAIRS:
        out = tmp_path / pair
        assert (
            main(
                [
                    "demo",
                    "-o",
                    str(out),
                    "--pair",
                    pair,
                    "--size",
                    "32",
                    "--steps",
                    "1",
                    "--weights",
                    "random",
                    "-q",
                ]
            )
            == 0
        )
        assert (out / "result.png").is_file()


@pytest.mark.parametrize("demo", [False, True])
def test_help_lists_every_option_with_its_default(demo, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--help"] if demo else ["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for field in dataclasses.fields(StyleOptions):
        assert "--" + field.name.replace("_", "-") in text
    assert "(default: conv4_2)" in text


def exit_status(argv):
    """main()'s return value, or the status argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "steps must be at least 1"),
        (["--steps", "many"], "argument --steps: expected a number"),
        (["--optimizer", "sgd"], "invalid choice: 'sgd'"),
        (["--style-layers", "conv1_1,conv9_9"], "unknown layer 'conv9_9'"),
        (["--device", "tpu"], "device must be auto, cpu, cuda, cuda:N or mps"),
        (["--weights", "/no/such/file.pth"], "weights file /no/such/file.pth does not exist"),
    ],
)
def test_a_bad_value_gives_one_line_and_exit_status_2(image_files, tmp_path, capsys, extra, message):
    assert exit_status([*map(str, image_files), "-o", str(tmp_path / "r.png"), *FAST, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        (["missing.png", "style"], "content image missing.png does not exist"),
        (["content", "folder"], "is a folder"),
        (["content", "notimage"], "could not read style image"),
    ],
)
def test_a_bad_path_gives_one_line(tmp_path, image_files, capsys, paths, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "notimage.png").write_text("hello")
    named = {
        "content": image_files[0],
        "style": image_files[1],
        "folder": tmp_path / "folder",
        "notimage": tmp_path / "notimage.png",
    }
    argv = [str(named.get(p, p)) for p in paths]
    assert main([*argv, "-o", str(tmp_path / "r.png"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_installed_command_exists_and_reports_errors_without_a_traceback(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_style_transfer",
            "nope.png",
            "nope2.png",
            "-o",
            str(tmp_path / "x.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "napari-style-transfer: error: content image nope.png does not exist"


def test_a_time_pass_names_its_snapshots_by_pass_beside_the_frames_first(tmp_path, content, style):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.stack([content, np.roll(content, 2, axis=1)]))
    style_path, snaps = tmp_path / "style.npy", tmp_path / "snaps"
    np.save(style_path, style)
    options = ["--frames", "time", "--time-passes", "1", "--time-steps", "2", "--snapshot-every", "2"]
    argv = [
        str(stack),
        str(style_path),
        "-o",
        str(tmp_path / "r.tif"),
        *FAST,
        *options,
        "--snapshot-dir",
        str(snaps),
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in snaps.iterdir()) == [
        "snapshot_frame0000_step0002.png",
        "snapshot_frame0001_pass1_step0002.png",
        "snapshot_frame0001_step0002.png",
    ]


def test_a_stack_run_names_snapshots_by_frame_and_writes_a_tiff(tmp_path, content, style):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.stack([content, content[:, ::-1]]))
    style_path = tmp_path / "style.npy"
    np.save(style_path, style)
    out, snaps = tmp_path / "result.tif", tmp_path / "snaps"
    argv = [
        str(stack),
        str(style_path),
        "-o",
        str(out),
        *FAST,
        "--snapshot-every",
        "3",
        "--snapshot-dir",
        str(snaps),
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in snaps.iterdir()) == [
        "snapshot_frame0000_step0003.png",
        "snapshot_frame0001_step0003.png",
    ]
    import tifffile

    from napari_style_transfer.styled_files import read_settings

    written = tifffile.imread(out)
    assert written.shape == (2, 27, 32, 3) and written.dtype == np.float32
    settings = read_settings(out)  # the ImageDescription's JSON
    assert settings["frames"] == 2 and settings["options"]["snapshot_every"] == 3


def test_a_stack_result_to_png_is_refused_before_the_run(tmp_path, content, style, capsys):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.stack([content, content]))
    style_path = tmp_path / "style.npy"
    np.save(style_path, style)
    assert main([str(stack), str(style_path), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "write it to a .tif or .npy file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("result", "has no extension"),
        ("result.xyz", "has the extension .xyz"),
        ("folder", "is a folder; give a file name"),
        ("afile/result.png", "afile is a file, not a folder"),
    ],
)
def test_an_unwritable_output_is_refused_in_one_line(tmp_path, image_files, capsys, output, message):
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    assert main([*map(str, image_files), "-o", str(tmp_path / output), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_paths_that_are_files_where_folders_are_needed_are_refused(tmp_path, image_files, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    assert (
        main([*map(str, image_files), "-o", str(tmp_path / "r.png"), "--snapshot-dir", str(afile), *FAST])
        == 2
    )
    assert "--snapshot-dir" in capsys.readouterr().err
    assert main(["demo", "-o", str(afile), *FAST]) == 2
    assert "give a folder" in capsys.readouterr().err


def test_rgba_content_to_jpeg_is_refused_before_the_run(tmp_path, content, image_files, capsys):
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([content, np.full(content.shape[:2], 128, np.uint8)])).save(rgba)
    assert main([str(rgba), str(image_files[1]), "-o", str(tmp_path / "r.jpg"), *FAST]) == 2
    assert "the result is an RGBA (transparent) image, which r.jpg cannot store" in capsys.readouterr().err
    assert main([*map(str, image_files), "-o", str(tmp_path / "r.xbm"), *FAST]) == 2  # 1-bit only
    assert "the result is a colour image, which r.xbm cannot store" in capsys.readouterr().err


def test_a_one_frame_stack_may_go_to_png(tmp_path, content, style):
    one = tmp_path / "one.npy"
    np.save(one, (content[None] / 255.0).astype(np.float32))
    np.save(tmp_path / "style.npy", style)
    assert main([str(one), str(tmp_path / "style.npy"), "-o", str(tmp_path / "r.png"), *FAST]) == 0
    assert (tmp_path / "r.png").exists()


def test_run_is_accepted_as_an_explicit_subcommand(tmp_path, image_files):
    assert main(["run", *map(str, image_files), "-o", str(tmp_path / "r.png"), *FAST]) == 0


def test_16_bit_colour_tiff_keeps_its_values_and_16_bit_colour_png_is_refused(tmp_path, image_files, capsys):
    import tifffile

    from napari_style_transfer.cli import read_image

    dim = (np.random.default_rng(0).random((30, 40, 3)) * 1000).astype(np.uint16)  # 10 bits of 16
    tifffile.imwrite(tmp_path / "rgb16.tif", dim)
    np.testing.assert_array_equal(read_image(tmp_path / "rgb16.tif", "content"), dim)

    png = tmp_path / "rgb16.png"
    png.write_bytes(_png_rgb16(dim))
    assert main([str(png), str(image_files[1]), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "16-bit colour PNG" in capsys.readouterr().err


def _png_rgb16(image: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (Pillow cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = image.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in image)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def interrupt_after(monkeypatch, records: int) -> list:
    """Make the run raise KeyboardInterrupt (as Ctrl-C does) after ``records`` steps; returns
    the list the records given so far go into."""
    import napari_style_transfer.api as api

    real = api.iter_stylize
    given = []

    def interrupted(*args, **kwargs):
        for number, record in enumerate(real(*args, **kwargs), start=1):
            given.append(record)
            yield record
            if number == records:
                raise KeyboardInterrupt

    monkeypatch.setattr(api, "iter_stylize", interrupted)
    return given


def test_ctrl_c_writes_the_last_step_with_the_settings(tmp_path, image_files, monkeypatch, capsys):
    interrupt_after(monkeypatch, 2)
    out = tmp_path / "r.png"
    assert main([*map(str, image_files), "-o", str(out), *FAST, "--steps", "5"]) == 130
    assert "interrupted after step 2" in capsys.readouterr().err
    with Image.open(out) as image:
        metadata = json.loads(image.text["napari-style-transfer"])
    assert metadata["cancelled"] is True and metadata["steps_done"] == 2
    assert metadata["options"]["steps"] == 5 and metadata["weights"].startswith("random")


def test_ctrl_c_on_a_stack_keeps_the_finished_frames(tmp_path, content, style, monkeypatch, capsys):
    frames = np.stack([content, content[:, ::-1], content[::-1], content])
    np.save(tmp_path / "stack.npy", frames)
    np.save(tmp_path / "style.npy", style)
    interrupt_after(monkeypatch, 3 + 3 + 1)  # two whole frames of 3 steps, one step of the third
    out = tmp_path / "r.npy"
    assert main([str(tmp_path / "stack.npy"), str(tmp_path / "style.npy"), "-o", str(out), *FAST]) == 130
    assert "interrupted after step 1 of frame 3 of 4" in capsys.readouterr().err
    partial = np.load(out)
    assert partial.shape == (4, 27, 32, 3)
    assert all(partial[i].max() > 0 for i in range(3)) and partial[3].max() == 0


def test_ctrl_c_in_a_time_pass_names_the_pass_and_keeps_every_frame(
    tmp_path, content, style, monkeypatch, capsys
):
    frames = np.stack([content, np.roll(content, 2, axis=1), np.roll(content, 4, axis=1)])
    np.save(tmp_path / "movie.npy", frames)
    np.save(tmp_path / "style.npy", style)
    interrupt_after(monkeypatch, 3 * 3 + 1)  # every frame alone (3 steps), one step of the pass
    out = tmp_path / "r.npy"
    passes = ["--frames", "time", "--time-passes", "1", "--time-steps", "2"]
    assert (
        main([str(tmp_path / "movie.npy"), str(tmp_path / "style.npy"), "-o", str(out), *FAST, *passes])
        == 130
    )
    assert "interrupted after step 1 of frame 2 of 3 in pass 1" in capsys.readouterr().err
    partial = np.load(out)
    assert all(partial[i].max() > 0 for i in range(3))


def test_ctrl_c_in_the_first_frame_of_a_stack_still_writes_a_stack(tmp_path, content, style, monkeypatch):
    np.save(tmp_path / "stack.npy", np.stack([content, content[::-1], content]))
    np.save(tmp_path / "style.npy", style)
    interrupt_after(monkeypatch, 2)
    out = tmp_path / "r.npy"
    assert main([str(tmp_path / "stack.npy"), str(tmp_path / "style.npy"), "-o", str(out), *FAST]) == 130
    partial = np.load(out)
    assert partial.shape == (3, 27, 32, 3) and partial[0].max() > 0 and partial[1:].max() == 0


def test_ctrl_c_in_a_coarse_level_writes_the_result_size(tmp_path, image_files, monkeypatch):
    interrupt_after(monkeypatch, 1)  # the first step runs at 32 px of a 32,64 schedule
    out = tmp_path / "r.png"
    argv = [
        *map(str, image_files),
        "-o",
        str(out),
        *FAST,
        "--size",
        "64",
        "--schedule",
        "32,64",
        "--steps",
        "4",
    ]
    assert main(argv) == 130
    with Image.open(out) as image:
        assert image.size == (64, 53)


@pytest.mark.parametrize(("records", "level"), [(1, 32), (2, 64)])
def test_ctrl_c_says_which_level_of_the_schedule_the_result_comes_from(
    tmp_path, image_files, monkeypatch, capsys, records, level
):
    given = interrupt_after(monkeypatch, records)  # 4 steps of a 32,64 schedule: 1 at 32 px, 3 at 64 px
    out = tmp_path / "r.png"
    argv = [
        *map(str, image_files),
        "-o",
        str(out),
        *FAST,
        "--size",
        "64",
        "--schedule",
        "32,64",
        "--steps",
        "4",
    ]
    assert main(argv) == 130
    err = capsys.readouterr().err
    enlarged = "from the 32 px level of the schedule, enlarged to 64x53 px"
    assert (enlarged in err) == (level == 32), err
    with Image.open(out) as image:
        assert image.size == (64, 53)
        metadata = json.loads(image.text["napari-style-transfer"])
    assert metadata["level_size"] == given[-1].size == level
    assert metadata["losses"] == pytest.approx(dataclasses.asdict(given[-1].losses))
    assert metadata["losses"]["total"] > 0
