"""The command line against hostile, damaged and awkward files: decompression bombs, broken
headers, unwritable or full targets, outputs that would overwrite inputs, exact integers."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin
from tiny_runs import tiny_args

from napari_style_transfer import memory
from napari_style_transfer.cli import CommandLineError, build_parser, main, write_image
from napari_style_transfer.files import ImageFileError, read_image

FAST = tiny_args(steps=2)


def exit_status(argv):
    """main()'s return value, or the status argparse exits with."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the style transfer starts: the refusal must come before the run."""
    import napari_style_transfer.api as api

    def started(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(api, "iter_stylize", started)


@contextmanager
def address_space_limited(extra_bytes: int = 2**30):
    """Cap this process's address space at 1 GiB over what it maps now, so that a regression
    which decodes a bomb fails with MemoryError instead of filling the machine's memory."""
    import resource

    status = Path("/proc/self/status").read_text().splitlines()
    mapped = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + extra_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- crafted files ------------------------------------------------------------------------


def bmp_header(width: int, height: int) -> bytes:
    """A 54-byte 24-bit BMP that declares width x height pixels and holds none."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


def tiff_file(width: int, height: int, pages: int = 1, strip: bytes = b"") -> bytes:
    """A grey 8-bit TIFF of ``pages`` pages that declare width x height pixels each, all
    pointing at the one ``strip`` of data (empty: the file holds no pixels)."""
    entry_count, ifd_size = 9, 2 + 9 * 12 + 4
    strip_at = 8
    first_ifd = strip_at + len(strip) + len(strip) % 2
    out = bytearray(b"II*\x00" + struct.pack("<I", first_ifd) + strip + b"\x00" * (len(strip) % 2))
    for page in range(pages):
        following = first_ifd + (page + 1) * ifd_size if page + 1 < pages else 0
        entries = [  # tag, type (3 SHORT, 4 LONG), count, value
            (256, 4, 1, width),
            (257, 4, 1, height),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, strip_at),
            (277, 3, 1, 1),
            (278, 4, 1, height),
            (279, 4, 1, min(width * height, 2**32 - 1)),
        ]
        out += struct.pack("<H", entry_count)
        out += b"".join(struct.pack("<HHII", *entry) for entry in entries)
        out += struct.pack("<I", following)
    return bytes(out)


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    """An .npy file that declares ``shape`` and holds no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


# --- 1. decompression bombs ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "declared"),
    [
        ("bomb.bmp", bmp_header(100_000, 100_000), "declares 100000 x 100000 px, 3 bands of 1 byte"),
        ("bomb.tif", tiff_file(100_000, 100_000), "declares 100000 x 100000 px, 1 band of 1 byte"),
        (
            "bomb.npy",
            npy_header((100_000, 100_000, 3)),
            "declares an array of shape (100000, 100000, 3) float32",
        ),
    ],
    ids=["bmp", "tiff", "npy"],
)
def test_a_tiny_file_declaring_a_huge_image_is_refused_before_decoding(
    tmp_path, image_files, capsys, name, data, declared
):
    bomb = tmp_path / name
    bomb.write_bytes(data)
    assert len(data) < 200
    with address_space_limited():
        status = main([str(bomb), str(image_files[1]), "-o", str(tmp_path / "r.png"), *FAST])
    assert status == 2
    err = one_line_error(capsys)
    assert declared in err and "of memory this run can use" in err
    assert "downscale or crop it first" in err


def test_a_tiff_with_many_pages_is_refused_by_pages_times_page_size(tmp_path, image_files, capsys):
    # 10,000 pages of 1024 x 1024 (10 GB once decoded) sharing one 1 MB strip: a 2 MB file
    bomb = tmp_path / "pages.tif"
    bomb.write_bytes(tiff_file(1024, 1024, pages=10_000, strip=bytes(1024 * 1024)))
    with address_space_limited():
        status = main([str(bomb), str(image_files[1]), "-o", str(tmp_path / "r.tif"), *FAST])
    assert status == 2
    err = one_line_error(capsys)
    assert "declares 10000 pages of 1024 x 1024 px, 1 band of 1 byte (9.8 GB)" in err
    assert "of memory this run can use" in err


@pytest.fixture
def small_memory(monkeypatch):
    """Memory for one 32 x 32 grey page (1 kB) and not for three."""
    monkeypatch.setattr(memory, "available_ram_bytes", lambda *args, **kwargs: 2_000)


@pytest.fixture
def decoding_fails(monkeypatch):
    """Decoding pixels of any kind fails the test."""

    def decoded(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    from PIL import ImageFile, PngImagePlugin

    for cls in (ImageFile.ImageFile, TiffImagePlugin.TiffImageFile, PngImagePlugin.PngImageFile):
        monkeypatch.setattr(cls, "load", decoded)
    monkeypatch.setattr(np, "load", decoded)


def test_a_multi_page_tiff_over_the_memory_is_refused_before_any_page_is_decoded(
    tmp_path, image_files, capsys, small_memory, decoding_fails
):
    pages = [Image.fromarray(np.full((32, 32), 60 * i, np.uint8)) for i in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    assert main([str(tmp_path / "stack.tif"), str(image_files[1]), "-o", str(tmp_path / "r.tif"), *FAST]) == 2
    err = one_line_error(capsys)
    assert "declares 3 pages of 32 x 32 px, 1 band of 1 byte (3072 bytes)" in err
    assert "more than the 1800 bytes of memory this run can use" in err


def test_a_bigtiff_counts_its_pages_too(tmp_path, image_files, capsys, small_memory, decoding_fails):
    import tifffile

    tifffile.imwrite(
        tmp_path / "big.tif", np.zeros((3, 32, 32), np.uint8), bigtiff=True, photometric="minisblack"
    )
    assert main([str(tmp_path / "big.tif"), str(image_files[1]), "-o", str(tmp_path / "r.tif"), *FAST]) == 2
    assert "declares 3 pages of 32 x 32 px" in one_line_error(capsys)


def test_an_npy_over_the_memory_is_refused_before_loading(
    tmp_path, image_files, capsys, small_memory, decoding_fails
):
    np.save(tmp_path / "big.npy", np.zeros((32, 32), np.float32))
    assert main([str(tmp_path / "big.npy"), str(image_files[1]), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "declares an array of shape (32, 32) float32 (4096 bytes)" in one_line_error(capsys)


def test_a_png_over_the_memory_is_refused_before_decoding(
    tmp_path, image_files, capsys, small_memory, decoding_fails
):
    assert main([*map(str, image_files), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "declares 48 x 40 px, 3 bands of 1 byte (5760 bytes)" in one_line_error(capsys)


def test_a_multi_page_tiff_within_the_memory_is_read_as_a_stack(tmp_path):
    from napari_style_transfer.cli import read_image

    pages = [Image.fromarray(np.full((32, 32), 60 * i, np.uint8)) for i in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    stack = read_image(tmp_path / "stack.tif", "content")
    assert stack.shape == (3, 32, 32) and list(stack[:, 0, 0]) == [0, 60, 120]


# --- 2. damaged files ----------------------------------------------------------------------


def garbled_npy() -> bytes:
    raw = io.BytesIO()
    np.save(raw, np.zeros((4, 5), np.float32))
    return raw.getvalue().replace(b"(4, 5)", b"(4, 5(")


def npz_bytes() -> bytes:
    raw = io.BytesIO()
    np.savez(raw, image=np.zeros((4, 5)))
    return raw.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("empty.npy", b"", "could not read content image"),
        ("garbled.npy", garbled_npy(), "its header is damaged"),
        ("archive.npy", npz_bytes(), "is an .npz archive, not an .npy array"),
        (
            "short.npy",
            npy_header((64, 64)) + bytes(100),
            "is truncated: its header declares 16384 bytes of data",
        ),
    ],
    ids=["empty", "garbled-header", "npz", "truncated"],
)
def test_a_damaged_npy_gives_one_line(tmp_path, image_files, capsys, name, data, message):
    (tmp_path / name).write_bytes(data)
    assert main([str(tmp_path / name), str(image_files[1]), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert message in one_line_error(capsys)


@pytest.mark.parametrize(
    ("name", "data"),
    [("tall.bmp", bmp_header(10, -(2**31))), ("wide.tif", tiff_file(2**31, 1))],  # Pillow: OverflowError
    ids=["bmp", "tiff"],
)
def test_a_header_whose_size_overflows_gives_one_line(tmp_path, image_files, capsys, monkeypatch, name, data):
    # memory enough for the declared size, so the reader itself meets it (before allocating)
    monkeypatch.setattr(memory, "available_ram_bytes", lambda *args, **kwargs: 2**50)
    (tmp_path / name).write_bytes(data)
    assert main([str(tmp_path / name), str(image_files[1]), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "could not read content image" in one_line_error(capsys)


@pytest.mark.parametrize(
    "error",
    [
        struct.error("unpack requires a buffer of 4 bytes"),
        Image.DecompressionBombError("too many pixels"),
        SyntaxError("not a TIFF file"),
        EOFError(),
        zipfile.BadZipFile("File is not a zip file"),
        MemoryError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_error_a_reader_raises_on_a_bad_file_gives_one_line(
    image_files, tmp_path, capsys, monkeypatch, error
):
    def fails(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", fails)
    assert main([*map(str, image_files), "-o", str(tmp_path / "r.png"), *FAST]) == 2
    assert "content image" in one_line_error(capsys)


def test_whatever_a_decoder_raises_is_a_damaged_file_with_its_cause_kept(image_files, tmp_path):
    # Pillow raises TypeError("Missing dimensions") for a damaged page: the type a decoder
    # raises is its own affair, so reading fails as the file's fault and keeps the cause
    def fails(*args, **kwargs):
        raise TypeError("Missing dimensions")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Image, "open", fails)
        with pytest.raises(ImageFileError, match="the file is damaged \\(Missing dimensions\\)") as raised:
            read_image(image_files[0], "content")
    assert isinstance(raised.value.__cause__, TypeError)


# --- 3. writing ----------------------------------------------------------------------------


def test_an_output_folder_that_refuses_new_files_is_refused_before_the_run(
    tmp_path, image_files, capsys, monkeypatch, no_run
):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):  # what a read-only folder does (even to root)
        if Path(path).parent == read_only and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    assert main([*map(str, image_files), "-o", str(read_only / "r.png"), *FAST]) == 2
    err = one_line_error(capsys)
    assert f"cannot write into the output folder {read_only}: Permission denied" in err
    assert list(read_only.iterdir()) == []


def test_a_snapshot_dir_that_cannot_be_created_is_refused_before_the_run(
    tmp_path, image_files, capsys, no_run
):
    (tmp_path / "afile").write_text("not a folder")
    argv = [
        *map(str, image_files),
        "-o",
        str(tmp_path / "r.png"),
        "--snapshot-dir",
        str(tmp_path / "afile" / "snaps"),
    ]
    assert main([*argv, *FAST]) == 2
    assert "cannot create the --snapshot-dir folder" in one_line_error(capsys)


def test_a_full_disk_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    out = tmp_path / "r.png"
    Image.fromarray(np.full((8, 8), 7, np.uint8)).save(out)
    before = out.read_bytes()
    real_save = Image.Image.save

    def save_until_the_disk_is_full(self, fp, format=None, **params):
        encoded = io.BytesIO()
        real_save(self, encoded, format=format or "PNG", **params)
        half = encoded.getvalue()[: len(encoded.getvalue()) // 2]
        if isinstance(fp, str | os.PathLike):
            with open(fp, "wb") as file:
                file.write(half)
        else:
            fp.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", save_until_the_disk_is_full)
    with pytest.raises(CommandLineError, match="No space left on device"):
        write_image(out, np.ones((16, 16, 3), np.float32))
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]  # no temporary file left


def test_a_written_file_has_the_permissions_of_a_plain_open(tmp_path):
    umask = os.umask(0o022)
    try:
        write_image(tmp_path / "r.png", np.ones((16, 16, 3), np.float32))
    finally:
        os.umask(umask)
    assert (tmp_path / "r.png").stat().st_mode & 0o777 == 0o644


def test_a_snapshot_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, image_files, capsys):
    snaps = tmp_path / "snaps"
    (snaps / "snapshot_step0001.png").mkdir(parents=True)  # a folder where the first snapshot goes
    out = tmp_path / "r.png"
    argv = [
        *map(str, image_files),
        "-o",
        str(out),
        *FAST,
        "--steps",
        "3",
        "--snapshot-every",
        "1",
        "--snapshot-dir",
        str(snaps),
    ]
    assert main(argv) == 0
    assert out.is_file() and (snaps / "snapshot_step0002.png").is_file()
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "could not write" in warnings[0] and "snapshot_step0001.png" in warnings[0]
    assert warnings[0].endswith("the run goes on")


@pytest.mark.parametrize("which", ["content", "style"])
def test_an_output_that_is_an_input_is_refused_before_the_run(tmp_path, image_files, capsys, no_run, which):
    target = image_files[0] if which == "content" else image_files[1]
    before = target.read_bytes()
    spelled_otherwise = tmp_path / "sub" / ".." / target.name
    (tmp_path / "sub").mkdir()
    assert main([*map(str, image_files), "-o", str(spelled_otherwise), *FAST]) == 2
    assert f"is the {which} image" in one_line_error(capsys)
    assert target.read_bytes() == before


def test_an_output_that_is_a_hard_link_to_an_input_is_refused(tmp_path, image_files, capsys, no_run):
    link = tmp_path / "link.png"
    os.link(image_files[0], link)
    assert main([*map(str, image_files), "-o", str(link), *FAST]) == 2
    assert "is the content image" in one_line_error(capsys)


def test_an_upper_case_npy_suffix_writes_exactly_the_named_file(tmp_path, image_files):
    out = tmp_path / "OUT.NPY"
    assert main([*map(str, image_files), "-o", str(out), *FAST]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUT.NPY", "content.png", "style.png"]
    assert np.load(out).shape == (27, 32, 3)


def test_missing_output_and_snapshot_folders_are_created_and_said(tmp_path, image_files, capsys):
    out, snaps = tmp_path / "new" / "deeper" / "r.png", tmp_path / "snaps"
    argv = [
        *map(str, image_files),
        "-o",
        str(out),
        *FAST,
        "--steps",
        "3",
        "--snapshot-every",
        "2",
        "--snapshot-dir",
        str(snaps),
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"created folder {out.parent}" in err and f"created folder {snaps}" in err
    assert out.is_file() and (snaps / "snapshot_step0002.png").is_file()


# --- 4. integers ---------------------------------------------------------------------------


def test_a_seed_beyond_float_precision_reaches_the_options_exactly(tmp_path, image_files):
    out = tmp_path / "r.png"
    assert main([*map(str, image_files), "-o", str(out), *FAST, "--seed", "9007199254740993"]) == 0
    with Image.open(out) as image:
        assert json.loads(image.text["napari-style-transfer"])["options"]["seed"] == 9007199254740993


def test_the_largest_documented_seed_is_accepted(tmp_path, image_files):
    argv = [
        *map(str, image_files),
        "-o",
        str(tmp_path / "r.png"),
        *FAST,
        "--init",
        "noise",
        "--seed",
        str(2**64 - 1),
    ]
    assert main(argv) == 0


def test_a_seed_past_the_largest_is_refused_with_the_options_message(tmp_path, image_files, capsys):
    assert main([*map(str, image_files), "-o", str(tmp_path / "r.png"), *FAST, "--seed", str(2**64)]) == 2
    assert "seed must be between -2**63 and 2**64 - 1, got 18446744073709551616" in one_line_error(capsys)


@pytest.mark.parametrize(("text", "steps"), [("1e3", 1000), ("2.0", 2), ("12", 12)])
def test_whole_numbers_may_be_written_as_decimals(text, steps):
    args = build_parser().parse_args(["c.png", "s.png", "-o", "r.png", "--steps", text])
    assert args.steps == steps and type(args.steps) is int


@pytest.mark.parametrize(
    ("text", "message"), [("1.5", "expected a whole number"), ("1e999999999", "at most 100 digits")]
)
def test_an_integer_option_refuses_what_is_not_a_whole_number(capsys, text, message):
    assert exit_status(["c.png", "s.png", "-o", "r.png", "--steps", text]) == 2
    assert message in one_line_error(capsys)


# --- Ctrl-C twice, snapshots over inputs --------------------------------------------------------

#: Run in a subprocess: the first Ctrl-C after step 2, the second while the partial result is
#: being written (after its bytes, before the file takes its name), both as real SIGINTs.
DOUBLE_CTRL_C = """
import os, signal, sys
import napari_style_transfer.api as api
import napari_style_transfer.cli as cli
import napari_style_transfer.files as files

real_run, real_write = api.iter_stylize, files.write_replacing

def first_ctrl_c_after_step_2(*args, **kwargs):
    for record in real_run(*args, **kwargs):
        yield record
        if getattr(record, "step", 0) == 2:
            os.kill(os.getpid(), signal.SIGINT)

def second_ctrl_c_while_writing(path, write):
    def write_then_ctrl_c(file):
        write(file)
        os.kill(os.getpid(), signal.SIGINT)
    real_write(path, write_then_ctrl_c)

api.iter_stylize = first_ctrl_c_after_step_2
files.write_replacing = second_ctrl_c_while_writing
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_second_ctrl_c_while_the_partial_result_is_written_does_not_lose_it(tmp_path, image_files):
    import subprocess
    import sys

    import napari_style_transfer

    out = tmp_path / "partial.png"
    source = str(Path(napari_style_transfer.__file__).parents[1])
    environment = {**os.environ, "PYTHONPATH": source, "OMP_NUM_THREADS": "1"}
    argv = [*map(str, image_files), "-o", str(out), *FAST, "--steps", "5"]
    finished = subprocess.run(
        [sys.executable, "-c", DOUBLE_CTRL_C, *argv],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 130, finished.stderr
    assert "writing the result, a moment" in finished.stderr and "Traceback" not in finished.stderr
    with Image.open(out) as image:
        settings = json.loads(image.text["napari-style-transfer"])
    assert settings["cancelled"] is True and settings["steps_done"] == 2
    assert [
        path.name for path in tmp_path.iterdir() if path.name.startswith(".")
    ] == []  # no partial file left


@pytest.mark.parametrize("name", ["snapshot_step0001.png", "SNAPSHOT_frame0002_step0010.png"])
def test_a_snapshot_dir_holding_an_input_named_as_a_snapshot_is_refused(
    tmp_path, image_files, capsys, no_run, name
):
    snaps = tmp_path / "snaps"
    snaps.mkdir()
    content = snaps / name
    content.write_bytes(image_files[0].read_bytes())
    argv = [str(content), str(image_files[1]), "-o", str(tmp_path / "r.png"), "--snapshot-dir", str(snaps)]
    assert main([*argv, *FAST]) == 2
    assert f"--snapshot-dir {snaps} holds the content image {content}, which a snapshot would replace" in (
        one_line_error(capsys)
    )


def test_a_snapshot_dir_reached_through_a_link_is_refused_too(tmp_path, image_files, capsys, no_run):
    (tmp_path / "snaps").mkdir()
    style = tmp_path / "snaps" / "snapshot_step0002.png"
    style.write_bytes(image_files[1].read_bytes())
    (tmp_path / "link").symlink_to(tmp_path / "snaps")
    argv = [
        str(image_files[0]),
        str(style),
        "-o",
        str(tmp_path / "r.png"),
        "--snapshot-dir",
        str(tmp_path / "link"),
    ]
    assert main([*argv, *FAST]) == 2
    assert "which a snapshot would replace" in one_line_error(capsys)


def test_snapshots_beside_inputs_of_other_names_are_fine(tmp_path, image_files):
    argv = [*map(str, image_files), "-o", str(tmp_path / "r.png"), "--snapshot-dir", str(tmp_path)]
    assert main([*argv, *FAST, "--steps", "2", "--snapshot-every", "1"]) == 0
    assert (tmp_path / "snapshot_step0001.png").is_file()
