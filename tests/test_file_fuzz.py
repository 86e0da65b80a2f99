"""Damaged and hostile image files: reading one gives an image or the package's own error.

Mutations (bytes flipped, overwritten, cut, repeated) of valid single- and multi-page TIFFs,
PNGs and .npy files go through the readers every command and batch use; whatever the
decoders make of them, the answer is an array or :class:`ImageFileError`, and reading the
settings of one gives settings or None.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from napari_style_transfer.batch import stylize_batch
from napari_style_transfer.cli import main
from napari_style_transfer.files import ImageFileError, read_image, write_image
from napari_style_transfer.styled_files import read_styled

TINY = ["--size", "32", "--steps", "1", "--weights", "random", "-q"]


def encoded(kind: str) -> bytes:
    """A small valid file of each kind the readers take, carrying settings where it can."""
    rng = np.random.default_rng(7)
    buffer = io.BytesIO()
    if kind == "npy":
        np.save(buffer, rng.random((6, 5), dtype=np.float32))
    elif kind == "png":
        Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(buffer, format="PNG")
    elif kind == "tiff":
        tifffile.imwrite(
            buffer, rng.random((6, 5), dtype=np.float32), description='{"napari-style-transfer": {}}'
        )
    else:  # a stack, one page per frame
        pages = rng.integers(0, 60000, (3, 6, 5), dtype=np.uint16)
        tifffile.imwrite(buffer, pages, photometric="minisblack", metadata=None)
    return buffer.getvalue()


SUFFIX = {"npy": ".npy", "png": ".png", "tiff": ".tif", "stack": ".tif"}
VALID = {kind: encoded(kind) for kind in SUFFIX}


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(sorted(VALID)))
    data = bytearray(VALID[kind])
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        how = draw(st.sampled_from(["byte", "word", "cut", "repeat"]))
        if how == "byte":
            data[at] = draw(st.integers(0, 255))
        elif how == "word":  # a header field (size, offset, count) set to an extreme
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            data[at : at + 4] = struct.pack("<I", value)
        elif how == "cut":
            del data[at:]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 64))]
        if not data:
            data = bytearray(b"\0")
    return kind, bytes(data)


@pytest.mark.filterwarnings("ignore:Tag data larger than file")  # Pillow's, on damaged headers
@seed(35)
@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=mutated())
def test_a_mutated_file_reads_as_an_image_or_the_packages_error(tmp_path_factory, case):
    kind, data = case
    path = tmp_path_factory.mktemp("fuzz") / f"mutated{SUFFIX[kind]}"
    path.write_bytes(data)
    try:
        image = read_image(path, "content")
    except ImageFileError as error:
        assert str(error).startswith(("could not read", "content image", "the pages of"))
    else:
        assert isinstance(image, np.ndarray) and image.size > 0
    styled = read_styled(path)
    assert styled is None or isinstance(styled.settings, dict)


def damaged_stack(path: Path) -> Path:
    """A two-page TIFF whose second page lost its width and height tags: Pillow raises
    TypeError("Missing dimensions") for it (issue 35: a traceback, a whole batch ended)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((2, 8, 8), np.uint8), photometric="minisblack", metadata=None)
    data = bytearray(buffer.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first : first + 2])[0]
    second = struct.unpack("<I", data[first + 2 + 12 * entries : first + 6 + 12 * entries])[0]
    for index in range(struct.unpack("<H", data[second : second + 2])[0]):
        at = second + 2 + 12 * index
        if struct.unpack("<H", data[at : at + 2])[0] in (256, 257):  # ImageWidth, ImageLength
            data[at : at + 2] = struct.pack("<H", 65000 + index)
    path.write_bytes(data)
    return path


def test_a_damaged_page_of_a_stack_is_one_line_from_the_command(tmp_path, image_files, capsys):
    damaged = damaged_stack(tmp_path / "damaged.tif")
    assert main([str(damaged), str(image_files[1]), "-o", str(tmp_path / "out.tif"), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not read content image" in err and "Missing dimensions" in err


def test_a_damaged_page_of_a_stack_fails_its_batch_item_alone(tmp_path, image_files, capsys):
    damaged = damaged_stack(tmp_path / "damaged.tif")
    args = ["batch", str(damaged), str(image_files[0]), "--style", str(image_files[1])]
    assert main([*args, "-o", str(tmp_path / "out"), "--workers", "0", *TINY]) == 1
    records = stylize_batch(
        [damaged, image_files[0]], [image_files[1]], tmp_path / "out", steps=1, size=32, weights="random"
    )
    assert [record["status"] for record in records] == ["failed", "skipped"]
    assert "Missing dimensions" in records[0]["message"]


def test_an_unexpected_error_in_an_item_fails_it_alone(tmp_path, image_files, monkeypatch):
    import napari_style_transfer.api as api

    real = api.iter_stylize

    def fails_on_the_first(content, style, **options):
        if content.shape[0] == 7:
            raise KeyError("a bug in the engine")
        return real(content, style, **options)

    monkeypatch.setattr(api, "iter_stylize", fails_on_the_first)
    odd = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (7, 40, 3), dtype=np.uint8)).save(odd)
    records = stylize_batch(
        [odd, image_files[0]], [image_files[1]], tmp_path / "out", steps=1, size=32, weights="random"
    )
    assert [record["status"] for record in records] == ["failed", "done"]
    assert records[0]["message"].startswith("unexpected KeyError: 'a bug in the engine'")


@pytest.mark.parametrize("kind", sorted(VALID))
def test_the_valid_files_the_fuzzing_starts_from_read(tmp_path, kind):
    path = tmp_path / f"valid{SUFFIX[kind]}"
    path.write_bytes(VALID[kind])
    assert read_image(path, "content").shape[-2 if kind == "png" else -1] == 5


def test_a_result_written_by_the_package_reads_back(tmp_path):
    path = tmp_path / "result.tif"
    write_image(path, np.full((2, 6, 5), 0.5, np.float32), {"steps_done": 1})
    assert read_image(path, "content").shape == (2, 6, 5)
