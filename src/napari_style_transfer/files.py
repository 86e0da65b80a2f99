"""Image files in and out, with no napari, Qt or dask: the readers (which check a file's
declared size against the memory free before decoding it, and report any file they cannot
decode as an :class:`ImageFileError`) and the writers (atomic, carrying the settings in the
format of :mod:`.styled_files`), shared by the single-run command line and the batch.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import tokenize
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from . import memory
from ._image import ValueScale, to_uint8
from .atomic import write_replacing
from .errors import StyleTransferError
from .styled_files import png_info, write_styled_tiff

IMAGE_HINT = "PNG, JPEG, TIFF (multi-page: a stack), BMP or .npy"
#: What a TIFF or .npy result holds (``--output-dtype``, ``output_dtype``): float32 in
#: [0, 1], or the content's own dtype and units (its values mapped back through the scaling
#: that took them to [0, 1]). 8-bit formats (PNG, JPEG) are 8-bit either way.
OUTPUT_DTYPES = ("float32", "same")


class ImageFileError(StyleTransferError):
    """An image file that cannot be read or written; the message says which and why."""


def read_image(path: Path, role: str) -> np.ndarray:
    """An image file as numpy, keeping 16-bit and float data as they are (16-bit colour TIFFs
    through tifffile, since Pillow keeps only 8 bits of them).

    The size a file declares is checked against the memory this run can use before any pixel
    is decoded, so a small file that claims a huge image is refused instead of filling the
    memory; a damaged file gives a :class:`ImageFileError` too."""
    if not path.exists():
        raise ImageFileError(f"{role} image {path} does not exist")
    if path.is_dir():
        raise ImageFileError(f"{role} image {path} is a folder; give an image file")
    npy = path.suffix.lower() == ".npy"
    budget = int(memory.available_ram_bytes() * memory.HEADROOM)
    try:
        return _read_npy(path, role, budget) if npy else _read_picture(path, role, budget)
    except ImageFileError:
        raise
    except MemoryError:
        raise ImageFileError(
            f"not enough memory to read {role} image {path}; downscale or crop it first"
        ) from None
    except Exception as error:
        # Whatever the decoders (Pillow's plugins, numpy's header parser) raise on a damaged or
        # hostile file: its type depends on the library's version and the damage, so anything
        # raised while reading means the file cannot be read. The cause stays chained.
        kind = "as .npy" if npy else f"({IMAGE_HINT})"
        raise ImageFileError(f"could not read {role} image {path} {kind}: {one_line(error)}") from error


def one_line(error: BaseException) -> str:
    if isinstance(error, tokenize.TokenError | SyntaxError):
        return f"its header is damaged ({error.args[0] if error.args else type(error).__name__})"
    text = " ".join(str(error).split())[:300]
    if isinstance(error, OSError | ValueError | EOFError) and text:
        return text  # the decoders' own words say what is wrong
    return f"the file is damaged ({text or type(error).__name__})"


def _read_npy(path: Path, role: str, budget: int) -> np.ndarray:
    from numpy.lib import format as npy_format

    with open(path, "rb") as file:
        if file.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):  # what np.load takes for an .npz
            raise ImageFileError(
                f"{role} image {path} is an .npz archive, not an .npy array; save one array with numpy.save"
            )
        file.seek(0)
        version = npy_format.read_magic(file)
        # version 3.0 differs from 2.0 only in the encoding of field names, which images lack
        read_header = npy_format.read_array_header_2_0
        if version == (1, 0):
            read_header = npy_format.read_array_header_1_0
        shape, _, dtype = read_header(file)
        declared = math.prod(shape) * dtype.itemsize
        _check_fits(path, role, f"an array of shape {shape} {dtype}", declared, budget)
        stored = os.fstat(file.fileno()).st_size - file.tell()
    if declared > stored:
        raise ImageFileError(
            f"{role} image {path} is truncated: its header declares {_size_text(declared)} "
            f"of data, the file holds {_size_text(stored)}"
        )
    return np.load(path, allow_pickle=False)


def _read_picture(path: Path, role: str, budget: int) -> np.ndarray:
    from PIL import Image, ImageSequence

    with _no_pixel_limit(Image), Image.open(path) as image:  # reads the header only
        deep = _deep_colour(image)
        page_bytes = _decoded_bytes(image, deep)
        if image.format == "TIFF":
            enough = budget // max(page_bytes, 1) + 1  # this many pages are already too many
            pages, complete = _tiff_pages(path, max(enough, _PAGES_COUNTED))
        else:
            pages, complete = getattr(image, "n_frames", 1), True
        what = _declared_text(image, pages, deep)
        _check_fits(path, role, what if complete else f"at least {what}", pages * page_bytes, budget)
        if deep:
            return _read_deep_colour(path, role, image.format or "")
        frames: list[np.ndarray] = []
        declared = 0
        first_size = image.size
        for page in ImageSequence.Iterator(image):
            # the count above may have stopped early, so each page is checked before decoding
            if page.size != first_size:
                raise ImageFileError(
                    f"the pages of {role} image {path} differ in size; give pages of one size"
                )
            declared += _decoded_bytes(page, deep)
            so_far = _declared_text(page, len(frames) + 1, deep)
            _check_fits(path, role, f"at least {so_far}", declared, budget)
            frames.append(_as_array(page))
    if len(frames) == 1:
        return frames[0]
    if len({frame.shape for frame in frames}) > 1:
        raise ImageFileError(f"the pages of {role} image {path} differ in size; give pages of one size")
    return np.stack(frames)  # a multi-page TIFF is a stack, stylized page by page


def _decoded_bytes(image: Any, deep: bool) -> int:
    """Bytes of one page as the array :func:`_as_array` makes of it, from the header alone."""
    width, height = image.size
    return width * height * _bands(image.mode) * _sample_bytes(image.mode, deep)


def _bands(mode: str) -> int:
    from PIL import Image

    converted = {"P": 4, "PA": 4, "LA": 4, "CMYK": 3, "YCbCr": 3, "RGBX": 3}  # as _as_array converts them
    return converted.get(mode) or Image.getmodebands(mode)


def _sample_bytes(mode: str, deep: bool) -> int:
    if deep or mode.startswith("I;16"):
        return 2
    return 4 if mode in ("I", "F") or mode.startswith(("I;32", "F;32")) else 1


def _declared_text(image: Any, pages: int, deep: bool) -> str:
    width, height = image.size
    bands, sample = _bands(image.mode), _sample_bytes(image.mode, deep)
    frames = f"{pages} pages of " if pages > 1 else ""
    return (
        f"{frames}{width} x {height} px, {bands} band{'s' if bands > 1 else ''} "
        f"of {sample} byte{'s' if sample > 1 else ''}"
    )


def _check_fits(path: Path, role: str, what: str, declared: int, budget: int) -> None:
    if declared > budget:
        raise ImageFileError(
            f"{role} image {path} declares {what} ({_size_text(declared)}), more than the "
            f"{_size_text(budget)} of memory this run can use; downscale or crop it first, "
            "or save the region you need as .npy"
        )


def _size_text(count: int) -> str:
    return memory.format_bytes(count) if count >= 2**20 else f"{count} bytes"


#: A TIFF's pages are counted exactly up to this many (a few milliseconds a thousand), and
#: beyond it only as far as needed to show that they do not fit in memory.
_PAGES_COUNTED = 100_000


def _tiff_pages(path: Path, limit: int) -> tuple[int, bool]:
    """The pages of a TIFF, counted by walking its chain of image directories (a few bytes
    each) without decoding any, and whether that is all of them: the count stops at
    ``limit`` pages; a loop or a damaged link ends the chain as Pillow would end it."""
    with open(path, "rb") as file:
        header = file.read(16)
        order = {b"II": "<", b"MM": ">"}.get(header[:2])
        if order is None or len(header) < 8:
            return 1, True
        version = struct.unpack(order + "H", header[2:4])[0]
        if version == 43 and len(header) == 16:  # BigTIFF: 8-byte counts and offsets
            count_format, entry_size, offset_format = "Q", 20, "Q"
            offset = struct.unpack(order + "Q", header[8:16])[0]
        else:
            count_format, entry_size, offset_format = "H", 12, "I"
            offset = struct.unpack(order + "I", header[4:8])[0]
        count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
        pages, seen = 0, set()
        while offset and offset not in seen:
            if pages == limit:
                return pages, False
            seen.add(offset)
            file.seek(offset)
            raw = file.read(count_size)
            if len(raw) < count_size:
                break
            entries = struct.unpack(order + count_format, raw)[0]
            pages += 1
            file.seek(offset + count_size + entries * entry_size)
            raw = file.read(offset_size)
            if len(raw) < offset_size:
                break
            offset = struct.unpack(order + offset_format, raw)[0]
    return max(pages, 1), True


@contextmanager
def _no_pixel_limit(pil_image_module: Any) -> Iterator[None]:
    """Pillow refuses images over 179 megapixels as possible decompression bombs; a slide
    the user chose is no bomb, and :func:`read_image` checks the declared size against the
    memory this run can use instead, before decoding."""
    saved = pil_image_module.MAX_IMAGE_PIXELS
    pil_image_module.MAX_IMAGE_PIXELS = None
    try:
        yield
    finally:
        pil_image_module.MAX_IMAGE_PIXELS = saved


def _deep_colour(image: Any) -> bool:
    """16 bits a channel of colour, which Pillow would hand over as 8 bits."""
    if image.mode not in ("RGB", "RGBA"):
        return False
    rawmodes = [tile.args[0] if isinstance(tile.args, tuple) else tile.args for tile in image.tile]
    return any(";16" in str(rawmode) for rawmode in rawmodes)


def _read_deep_colour(path: Path, role: str, kind: str) -> np.ndarray:
    if kind != "TIFF":
        raise ImageFileError(
            f"{role} image {path} is a 16-bit colour {kind}, which can only be read as 8 bits here; "
            "save it as a 16-bit TIFF or .npy"
        )
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as error:  # tifffile raises many types (missing codecs, damaged files)
        raise ImageFileError(
            f"could not read 16-bit colour TIFF {role} image {path}: {error}; save it uncompressed or as .npy"
        ) from None


def _as_array(image: Any) -> np.ndarray:
    if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1", "RGBX"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.asarray(image)


def write_image(
    path: Path, image: np.ndarray, metadata: dict[str, Any] | None = None, scale: ValueScale | None = None
) -> None:
    """Write a [0, 1] float image (or stack) in the format its suffix names (``OUT.NPY`` is
    written as named; the folder must exist): TIFF through :func:`write_tiff`; .npy as
    float32, or with ``scale`` in the content's units and dtype; other formats as 8-bit,
    PNG carrying ``metadata`` as a JSON text chunk. A stack needs a TIFF or .npy."""
    from PIL import Image

    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        write_tiff(path, image, metadata, scale)
        return
    frames = frames_of(image)
    if suffix == ".npy":
        data = image.astype(np.float32) if scale is None else scale.to_own_units(image)

        def write(file: Any) -> None:
            np.save(file, data)  # to a file object: given a name, np.save would add .npy to OUT.NPY

    elif len(frames) > 1:
        raise ImageFileError(
            f"the result is a stack of {len(frames)} frames: write it to a .tif or .npy file, not {path.name}"
        )
    else:
        extra: dict[str, Any] = {}
        if metadata is not None and suffix == ".png":
            extra["pnginfo"] = png_info(metadata)
        picture = Image.fromarray(to_uint8(frames[0]))

        def write(file: Any) -> None:
            picture.save(file, format=Image.registered_extensions().get(suffix), **extra)

    try:
        write_replacing(path, write)
    except (OSError, ValueError, KeyError) as error:
        raise ImageFileError(f"could not write {path}: {error}") from None


def prepare_folder(folder: Path, what: str = "output") -> bool:
    """Create ``folder`` if it is missing and make sure a file can be created in it, so that
    an unwritable place is refused before a run and not after it. ``what`` names the folder
    in the messages; returns whether the folder was created."""
    if folder.exists() and not folder.is_dir():
        raise ImageFileError(f"the {what} folder {folder} is a file; give a folder")
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ImageFileError(
            f"cannot create the {what} folder {folder}: {error.strerror or one_line(error)}"
        ) from None
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=".napari-style-transfer-", suffix=".probe")
    except OSError as error:
        raise ImageFileError(
            f"cannot write into the {what} folder {folder}: {error.strerror or error}; "
            "give a folder you can write to"
        ) from None
    os.close(descriptor)
    os.unlink(probe)
    return created


def same_file(first: Path, second: Path) -> bool:
    """The same file by resolved path, or by identity (hard links, case-blind file systems)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def frames_of(image: np.ndarray) -> list[np.ndarray]:
    """The 2D frames of a result: (H, W), (H, W, 3|4), or a stack of those."""
    colour = image.ndim >= 3 and image.shape[-1] in (3, 4)
    spatial = image.ndim - (1 if colour else 0)
    if spatial <= 2:
        return [image]
    tail = image.shape[spatial - 2 :]
    return list(image.reshape(-1, *tail))


def write_tiff(
    path: Path, image: np.ndarray, metadata: dict[str, Any] | None = None, scale: ValueScale | None = None
) -> None:
    """Write a [0, 1] float image or stack as a TIFF through tifffile: float32 in [0, 1], so
    that no precision of the result is lost, or with ``scale`` in the content's own units and
    dtype (:meth:`ValueScale.to_own_units`); ``metadata`` goes as JSON into the
    ImageDescription tag (``tifffile`` and ImageJ show it). A stack is one page per frame;
    the file is replaced atomically."""
    data = np.clip(image, 0.0, 1.0).astype(np.float32) if scale is None else scale.to_own_units(image)
    try:
        write_styled_tiff(path, data, metadata)
    except (OSError, ValueError) as error:
        raise ImageFileError(f"could not write {path}: {error}") from None


def result_suffix(content: np.ndarray, frames: int) -> str:
    """The file type a batch writes a result in: ``.png`` for a 2D result of 8-bit content
    (PNG holds it exactly), ``.tif`` (float32) for stacks and for content of more than 8
    bits, whose precision an 8-bit PNG would throw away."""
    return ".png" if frames == 1 and fits_8_bits(content.dtype) else ".tif"


def fits_8_bits(dtype: np.dtype) -> bool:
    """Whether an 8-bit file (PNG, JPEG) holds content of ``dtype`` without loss."""
    return dtype in (np.uint8, np.bool_)
