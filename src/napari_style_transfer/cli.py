"""Command line: ``napari-style-transfer CONTENT STYLE -o OUT`` and ``napari-style-transfer demo``.

Every option, its default and its help come from :class:`~.options.StyleOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import struct
import sys
import tempfile
import tokenize
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, memory
from ._image import resize_image, to_uint8, working_shape
from ._sample_data import DEMO_PAIRS, load_sample
from .errors import StyleTransferError
from .options import DEMO_DEFAULTS, StyleOptions, choices, help_text

PROG = "napari-style-transfer"
_IMAGE_HINT = "PNG, JPEG, TIFF (multi-page: a stack), BMP or .npy"


class CommandLineError(Exception):
    """A user error reported as one line on stderr (exit status 2)."""


class RunInterrupted(Exception):
    """Ctrl-C during a run; carries what it made: the last finished step's image, or for a
    stack every finished frame plus that image in the current one."""

    def __init__(self, image: np.ndarray, record: Any, options: dict[str, Any]):
        where = f" of frame {record.frame_number + 1} of {record.frames}" if record.frames > 1 else ""
        super().__init__(f"interrupted after step {record.step}{where}")
        self.image = image
        self.step = record.step
        self.metadata = {
            "cancelled": True,
            "steps_done": record.step,
            "frames_done": record.frame_number + (record.step == record.steps),
            "frames": record.frames,
            "weights": record.weights,
            "device": record.device,
            "options": options,
        }


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage plus error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        if kind is float:
            try:
                return float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        return _whole_number(text)

    parse.__name__ = kind.__name__
    return parse


def _whole_number(text: str) -> int:
    """An integer read exactly (through float, 2**53 + 1 would lose its last bit); '1e3' and
    '2.0' are taken as the whole numbers they are."""
    try:
        value = Decimal(text)  # exact, unlike float
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value.adjusted() > 100:  # int() of '1e999999999' would take all the memory
        raise argparse.ArgumentTypeError(f"expected a whole number of at most 100 digits, got {text!r}")
    return int(value)


def _optional(parse: Any) -> Any:
    def parse_optional(text: str) -> Any:
        return None if text.lower() in ("none", "default") else parse(text)

    parse_optional.__name__ = parse.__name__
    return parse_optional


def _layers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _numbers(text: str) -> float | tuple[float, ...]:
    """'0.7,0.3' as a tuple of numbers, a single number as itself ('' is none)."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    return values[0] if len(values) == 1 and "," not in text else values


def add_option_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One ``--option`` per StyleOptions field, defaults and help read from there."""
    defaults = {**dataclasses.asdict(StyleOptions()), **(defaults or {})}
    group = parser.add_argument_group("style-transfer options")
    for field in dataclasses.fields(StyleOptions):
        default = defaults[field.name]
        flag = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if field.metadata.get("numbers"):
            kwargs.update(type=_numbers, metavar="NUMBER,...")
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            shown = shown if shown != "" else None
        elif isinstance(default, tuple):
            kwargs.update(type=_layers, metavar="LAYER,...")
            shown = ",".join(default)
        elif field.name == "content_colours":  # a mode; the bare flag is the luminance mode, as before
            kwargs.update(nargs="?", const="luminance", choices=choices(field.name))
            group.add_argument("--no-content-colours", dest=field.name, action="store_const", const=False, help="keep the style's colours")
            shown = "off" if not default else default
        elif field.name in ("learning_rate", "seed", "average"):
            kwargs.update(type=_optional(_number(int if field.name == "seed" else float)))
            shown = default
        elif choices(field.name):
            kwargs["choices"] = choices(field.name)
            shown = default
        elif isinstance(default, bool):
            kwargs["action"] = argparse.BooleanOptionalAction
            shown = "on" if default else "off"
        elif not isinstance(default, int | float):
            shown = default
        else:
            kwargs["type"] = _number(type(default))
            shown = f"{default:g}" if isinstance(default, float) else default
        suffix = "" if shown is None else f" (default: {shown})"
        group.add_argument(flag, help=help_text(field.name) + suffix, **kwargs)


def build_parser(demo: bool = False) -> argparse.ArgumentParser:
    if demo:
        parser = _Parser(
            prog=f"{PROG} demo",
            description="Run style transfer on a bundled sample pair and write the content, the style, "
            "the snapshots and the result as PNG files. Defaults are smaller than a run's so the "
            "demo finishes in a minute or two on a laptop CPU.",
        )
        parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the PNG files")
        parser.add_argument(
            "--pair", choices=tuple(DEMO_PAIRS), default=next(iter(DEMO_PAIRS)), help="which sample pair"
        )
    else:
        parser = _Parser(
            prog=PROG,
            description="Neural style transfer (Gatys et al., CVPR 2016): redraw CONTENT in the style of STYLE. "
            f"'{PROG} run CONTENT STYLE ...' is the same. Run '{PROG} demo --help' for the demo on bundled samples.",
        )
        parser.add_argument("content", type=Path, help=f"content image ({_IMAGE_HINT})")
        parser.add_argument("style", type=Path, nargs="*", help=f"style image(s) ({_IMAGE_HINT}); several are blended by --style-blend")
        parser.add_argument("--style", dest="more_styles", type=Path, action="append", default=[], metavar="STYLE", help="a further style image (repeatable), as the positional ones")
        parser.add_argument(
            "--style-regions", type=Path, metavar="LABELS", help="integer label image of the content's aspect ratio: label k takes the k-th style, 0 only the content (.npy, .tif or .png)"
        )
        parser.add_argument("-o", "--output", type=Path, required=True, help="result image file (.png keeps the settings; a stack needs .tif or .npy)")
        parser.add_argument("--snapshot-dir", type=Path, help="also write every snapshot as a PNG into this folder")
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser, DEMO_DEFAULTS if demo else None)
    return parser


def read_image(path: Path, role: str) -> np.ndarray:
    """An image file as numpy, keeping 16-bit and float data as they are (16-bit colour TIFFs
    through tifffile, since Pillow keeps only 8 bits of them).

    The size a file declares is checked against the memory this run can use before any pixel
    is decoded, so a small file that claims a huge image is refused instead of filling the
    memory; a damaged file gives a :class:`CommandLineError` too."""
    if not path.exists():
        raise CommandLineError(f"{role} image {path} does not exist")
    if path.is_dir():
        raise CommandLineError(f"{role} image {path} is a folder; give an image file")
    from PIL import Image

    npy = path.suffix.lower() == ".npy"
    budget = int(memory.available_ram_bytes() * memory.HEADROOM)
    try:
        return _read_npy(path, role, budget) if npy else _read_picture(path, role, budget)
    except MemoryError:
        raise CommandLineError(
            f"not enough memory to read {role} image {path}; downscale or crop it first"
        ) from None
    except (*_UNREADABLE, Image.DecompressionBombError) as error:
        kind = "as .npy" if npy else f"({_IMAGE_HINT})"
        raise CommandLineError(f"could not read {role} image {path} {kind}: {_one_line(error)}") from None


#: What readers raise on a damaged or hostile file (Pillow's plugins, numpy's header parser,
#: the zip reader behind .npz); anything else from reading is a bug and keeps its traceback.
_UNREADABLE = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    tokenize.TokenError,
    struct.error,
    OverflowError,
    NotImplementedError,
    zipfile.BadZipFile,
)


def _one_line(error: BaseException) -> str:
    if isinstance(error, tokenize.TokenError | SyntaxError):
        return f"its header is damaged ({error.args[0] if error.args else type(error).__name__})"
    return " ".join(str(error).split()) or f"the file is damaged ({type(error).__name__})"


def _read_npy(path: Path, role: str, budget: int) -> np.ndarray:
    from numpy.lib import format as npy_format

    with open(path, "rb") as file:
        if file.read(4) in (b"PK\x03\x04", b"PK\x05\x06"):  # what np.load takes for an .npz
            raise CommandLineError(
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
        raise CommandLineError(
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
            return _read_deep_colour(path, role, image.format)
        frames: list[np.ndarray] = []
        declared = 0
        first_size = image.size
        for page in ImageSequence.Iterator(image):
            # the count above may have stopped early, so each page is checked before decoding
            if page.size != first_size:
                raise CommandLineError(f"the pages of {role} image {path} differ in size; give pages of one size")
            declared += _decoded_bytes(page, deep)
            so_far = _declared_text(page, len(frames) + 1, deep)
            _check_fits(path, role, f"at least {so_far}", declared, budget)
            frames.append(_as_array(page))
    if len(frames) == 1:
        return frames[0]
    if len({frame.shape for frame in frames}) > 1:
        raise CommandLineError(f"the pages of {role} image {path} differ in size; give pages of one size")
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
        raise CommandLineError(
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
        raise CommandLineError(
            f"{role} image {path} is a 16-bit colour {kind}, which can only be read as 8 bits here; "
            "save it as a 16-bit TIFF or .npy"
        )
    import tifffile

    try:
        return tifffile.imread(path)
    except Exception as error:  # tifffile raises many types (missing codecs, damaged files)
        raise CommandLineError(
            f"could not read 16-bit colour TIFF {role} image {path}: {error}; save it uncompressed or as .npy"
        ) from None


def _as_array(image: Any) -> np.ndarray:
    if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1", "RGBX"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.asarray(image)


def write_image(path: Path, image: np.ndarray, metadata: dict[str, Any] | None = None) -> None:
    """Write a [0, 1] float image as 8-bit; PNG files carry ``metadata`` as a JSON text chunk.

    A stack (more than one frame) goes to a multi-page TIFF, or to .npy as float32. The format
    follows the suffix in any case (``OUT.NPY`` is written as named); the folder must exist."""
    from PIL import Image, PngImagePlugin

    suffix = path.suffix.lower()
    frames = _frames(image)
    if suffix == ".npy":
        data = image.astype(np.float32)

        def write(file: Any) -> None:
            np.save(file, data)  # to a file object: given a name, np.save would add .npy to OUT.NPY

    elif len(frames) > 1:
        if suffix not in (".tif", ".tiff"):
            raise CommandLineError(
                f"the result is a stack of {len(frames)} frames: write it to a .tif or .npy file, not {path.name}"
            )
        pages = [Image.fromarray(to_uint8(frame)) for frame in frames]

        def write(file: Any) -> None:
            description = _tiff_description(metadata)
            pages[0].save(file, format="TIFF", save_all=True, append_images=pages[1:], **description)

    else:
        extra: dict[str, Any] = {}
        if metadata is not None and suffix == ".png":
            extra["pnginfo"] = PngImagePlugin.PngInfo()
            extra["pnginfo"].add_text(PROG, json.dumps(metadata))
        elif suffix in (".tif", ".tiff"):
            extra = _tiff_description(metadata)
        picture = Image.fromarray(to_uint8(frames[0]))

        def write(file: Any) -> None:
            picture.save(file, format=Image.registered_extensions().get(suffix), **extra)

    try:
        _write_replacing(path, write)
    except (OSError, ValueError, KeyError) as error:
        raise CommandLineError(f"could not write {path}: {error}") from None


def _write_replacing(path: Path, write: Any) -> None:
    """``write(file)`` into a temporary file beside ``path``, then rename it to ``path``: a
    full disk or a crash leaves the file that was there intact, never a truncated one."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(descriptor, "w+b") as file:  # multi-page TIFF reads back what it wrote
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _new_file_mode(path))  # mkstemp's 0600 would hide the result from others
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _new_file_mode(path: Path) -> int:
    """The permissions ``open(path, "w")`` would give: the old file's, else 0666 less the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _tiff_description(metadata: dict[str, Any] | None) -> dict[str, Any]:
    """The settings as JSON in the TIFF ImageDescription tag (``tifffile`` and ImageJ show it)."""
    return {} if metadata is None else {"description": json.dumps({PROG: metadata})}


def _frames(image: np.ndarray) -> list[np.ndarray]:
    """The 2D frames of a result: (H, W), (H, W, 3|4), or a stack of those."""
    colour = image.ndim >= 3 and image.shape[-1] in (3, 4)
    spatial = image.ndim - (1 if colour else 0)
    if spatial <= 2:
        return [image]
    tail = image.shape[spatial - 2 :]
    return list(image.reshape(-1, *tail))


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(StyleOptions)}


def run(
    content: np.ndarray,
    style: np.ndarray,
    args: argparse.Namespace,
    snapshot_dir: Path | None,
    stack_shape: tuple[int, ...] = (),
    frame_shape: tuple[int, int] | None = None,
    style_regions: np.ndarray | None = None,
) -> Any:
    """Run with a progress bar; write snapshots as they come; return the StyleResult.

    Ctrl-C raises :class:`RunInterrupted` with what was made so far, at the result's size
    ``frame_shape`` (H, W) when given (a run stopped in a coarse-to-fine level is smaller)."""
    from tqdm import tqdm

    from .api import StyleResult, iter_stylize

    records = iter_stylize(content, style, style_regions=style_regions, **_options(args))
    bar = tqdm(total=args.steps, unit="step", disable=args.quiet, file=sys.stderr)
    last = None
    finished: dict[tuple[int, ...], np.ndarray] = {}  # the frames of a stack done so far
    try:
        for record in records:
            if isinstance(record, StyleResult):
                return record
            if last is None:
                bar.total = record.run_steps or record.frames * record.steps
                if not args.quiet:
                    bar.write(f"device {record.device}; weights {record.weights}")
            bar.set_postfix(loss=f"{record.losses.total:.4g}", refresh=False)
            bar.update(1)
            if record.is_snapshot and snapshot_dir is not None:
                frame = f"frame{record.frame_number:04d}_" if record.frames > 1 else ""
                try:
                    write_image(snapshot_dir / f"snapshot_{frame}step{record.step:04d}.png", record.image)
                except CommandLineError as error:  # a lost snapshot must not cost the run
                    bar.write(f"{PROG}: warning: {error}; the run goes on", file=sys.stderr)
            if record.frames > 1 and record.step == record.steps:
                finished[record.frame] = record.image
            last = record
    except KeyboardInterrupt:
        if last is None:
            raise
        image = last.kept_image()
        if image is None:
            raise
        if frame_shape is not None:
            image = resize_image(image, frame_shape)
        if last.frames > 1:
            image = _partial_stack(stack_shape, finished, last, image)
        options = StyleOptions.from_kwargs(_options(args)).to_dict()
        raise RunInterrupted(image, last, options) from None
    finally:
        bar.close()
    raise AssertionError("the run ended without a result")  # pragma: no cover


def _partial_stack(
    stack_shape: tuple[int, ...], finished: dict[tuple[int, ...], np.ndarray], last: Any, current: np.ndarray
) -> np.ndarray:
    """The stack as far as it got: finished frames, the interrupted frame's last image,
    zeros after that."""
    stack = np.zeros(stack_shape + current.shape, dtype=np.float32)
    for index, image in finished.items():
        stack[index] = image
    if last.frame not in finished:
        stack[last.frame] = current
    return stack


def _main_run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    style_paths = args.style + args.more_styles
    if not style_paths:
        raise CommandLineError("give a style image after the content (or with --style FILE)")
    roles = ["style"] if len(style_paths) == 1 else [f"style {i}" for i in range(1, len(style_paths) + 1)]
    inputs = {"content": args.content, **dict(zip(roles, style_paths, strict=True))}
    if args.style_regions is not None:
        inputs["--style-regions"] = args.style_regions
    _check_output_path(args.output, args.snapshot_dir, inputs)
    content = read_image(args.content, "content")
    styles = [read_image(path, "style") for path in style_paths]
    style = styles[0] if len(styles) == 1 else styles
    regions = None if args.style_regions is None else read_image(args.style_regions, "style regions")
    described = _check_output_kind(content, args.output, args.keep_grey)
    _prepare_folder(args.output.parent, "output")
    if args.snapshot_dir is not None:
        _prepare_folder(args.snapshot_dir, "--snapshot-dir")
    frame_shape = working_shape(*described.shape, args.size)
    try:
        result = run(content, style, args, args.snapshot_dir, described.stack_shape, frame_shape, regions)
    except RunInterrupted as stop:
        return _save_partial(stop, args.output)
    write_image(args.output, result.image, result.metadata())
    _report(result, args.output)
    return 0


def _main_demo(argv: Sequence[str]) -> int:
    args = build_parser(demo=True).parse_args(argv)
    content_key, style_key, _ = DEMO_PAIRS[args.pair]
    content, style = load_sample(content_key), load_sample(style_key)
    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise CommandLineError(f"{out} is a file; the demo writes several images: give a folder")
    from ._image import describe_image

    described = describe_image(content, "content")
    _prepare_folder(out, "output")
    write_image(out / "content.png", _preview(described))
    write_image(out / "style.png", _preview(describe_image(style, "style")))
    frame_shape = working_shape(*described.shape, args.size)
    try:
        result = run(content, style, args, out, frame_shape=frame_shape)
    except RunInterrupted as stop:
        return _save_partial(stop, out / "result.png")
    write_image(out / "result.png", result.image, result.metadata())
    _report(result, out / "result.png")
    return 0


def _preview(described: Any) -> np.ndarray:
    """A described sample image as [0, 1] floats, grey or RGB, for a PNG."""
    frame = described.frame()
    return frame.rgb[..., 0] if frame.grey else frame.rgb


def _check_output_path(output: Path, snapshot_dir: Path | None, inputs: dict[str, Path]) -> None:
    """Refuse before the run, not after it, a result path that cannot be written or that
    would overwrite an input."""
    from PIL import Image

    if output.is_dir():
        raise CommandLineError(f"output {output} is a folder; give a file name such as {output / 'result.png'}")
    for role, path in inputs.items():
        if _same_file(output, path):
            raise CommandLineError(
                f"output {output} is the {role} image {path}; "
                "give another file name (inputs are never overwritten)"
            )
    existing = next((parent for parent in output.absolute().parents if parent.exists()), None)
    if existing is None or not existing.is_dir():
        where = f"{existing} is a file, not a folder" if existing is not None else "its drive does not exist"
        raise CommandLineError(f"cannot write {output}: {where}")
    suffix = output.suffix.lower()
    if suffix != ".npy" and Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise CommandLineError(
            f"output {output} has {f'the extension {suffix}' if suffix else 'no extension'}; "
            "give a .png (keeps the settings), .tif, .jpg or .npy file"
        )
    if snapshot_dir is not None and snapshot_dir.exists() and not snapshot_dir.is_dir():
        raise CommandLineError(f"--snapshot-dir {snapshot_dir} is a file; give a folder")


def _same_file(first: Path, second: Path) -> bool:
    """The same file by resolved path, or by identity (hard links, case-blind file systems)."""
    if first.resolve() == second.resolve():
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def _prepare_folder(folder: Path, what: str) -> None:
    """Just before the run: create a missing folder (and say so), and make sure a file can be
    created in it, so that an unwritable place is refused before the run and not after it."""
    if not folder.exists():
        try:
            folder.mkdir(parents=True)
        except OSError as error:
            raise CommandLineError(f"cannot create the {what} folder {folder}: {_one_line(error)}") from None
        print(f"{PROG}: created folder {folder}", file=sys.stderr)
    try:
        descriptor, probe = tempfile.mkstemp(dir=folder, prefix=f".{PROG}-", suffix=".probe")
    except OSError as error:
        raise CommandLineError(
            f"cannot write into the {what} folder {folder}: {error.strerror or error}; "
            "give a folder you can write to"
        ) from None
    os.close(descriptor)
    os.unlink(probe)


def _check_output_kind(content: np.ndarray, output: Path, keep_grey: bool) -> Any:
    """Refuse before the run an output format that cannot hold the result (a stack needs
    .tif or .npy; some formats take no alpha, or no colour). Returns the content described."""
    import io

    from PIL import Image

    from ._image import describe_image, frame_count

    described = describe_image(content, "content")
    frames = frame_count(described.stack_shape)
    suffix = output.suffix.lower()
    if frames > 1 and suffix not in (".tif", ".tiff", ".npy"):
        raise CommandLineError(
            f"the content is a stack of {frames} frames, so the result is one too: "
            f"write it to a .tif or .npy file, not {output.name}"
        )
    if suffix == ".npy":
        return described
    mode = {"rgba": "RGBA", "rgb": "RGB"}.get(described.channels, "L" if keep_grey else "RGB")
    try:  # what write_image will do, on one pixel
        Image.new(mode, (1, 1)).save(io.BytesIO(), format=Image.registered_extensions()[suffix])
    except (OSError, ValueError, KeyError) as error:
        kind = {"RGBA": "an RGBA (transparent)", "RGB": "a colour", "L": "a grey"}[mode]
        raise CommandLineError(
            f"the result is {kind} image, which {output.name} cannot store ({error}): write it as .png, .tif or .npy"
        ) from None
    return described


def _save_partial(stop: RunInterrupted, path: Path) -> int:
    write_image(path, stop.image, stop.metadata)
    print(f"{PROG}: {stop}; wrote the partial result to {path}", file=sys.stderr)
    return 130


def _report(result: Any, path: Path) -> None:
    frames = _frames(result.image)
    height, width = frames[0].shape[:2]
    stack = f", {len(frames)} frames" if len(frames) > 1 else ""
    print(
        f"wrote {path} ({width}x{height} px{stack}) after {result.steps_done} steps "
        f"in {result.seconds:.1f} s on {result.device}; loss {result.losses.total:.4g} "
        f"(content {result.losses.content:.4g}, style {result.losses.style:.4g}); weights: {result.weights}"
    )


def _warn_in_one_line(message: Any, category: type, *_: Any, **__: Any) -> None:
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_in_one_line  # not the package's source line
            if argv[:1] == ["demo"]:
                return _main_demo(argv[1:])
            return _main_run(argv[1:] if argv[:1] == ["run"] else argv)
    except (CommandLineError, StyleTransferError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
