"""Command line: ``napari-style-transfer CONTENT STYLE -o OUT``, ``napari-style-transfer demo`` and
``napari-style-transfer batch -o OUTDIR --style STYLE INPUT ...``.

Every option, its default and its help come from :class:`~.options.StyleOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
import tempfile
import warnings
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._image import ImageInput, ValueScale, resize_image, working_shape
from ._sample_data import DEMO_PAIRS, load_sample
from .errors import StyleTransferError
from .files import (
    IMAGE_HINT,
    OUTPUT_DTYPES,
    ImageFileError,
    fits_8_bits,
    frames_of,
    one_line,
    read_image,
    write_image,
)
from .options import DEMO_DEFAULTS, StyleOptions, choices, help_text

PROG = "napari-style-transfer"
#: A user error reported as one line on stderr (exit status 2); a file that cannot be read or
#: written is one, so the readers' error serves.
CommandLineError = ImageFileError


class RunInterrupted(Exception):
    """Ctrl-C during a run; carries what it made: the last finished step's image, or for a
    stack every finished frame plus that image in the current one.

    ``result_shape`` (H, W) is the result's size: a step of a coarser level of the schedule
    was enlarged to it, which :attr:`origin` says and the metadata records (``level_size``,
    the longest side the step ran at, and its ``losses``)."""

    def __init__(
        self,
        image: np.ndarray,
        record: Any,
        options: dict[str, Any],
        frames_done: int,
        result_shape: tuple[int, int] | None = None,
    ):
        where = f" of frame {record.frame_number + 1} of {record.frames}" if record.frames > 1 else ""
        super().__init__(f"interrupted after step {record.step}{where}")
        self.image = image
        self.step = record.step
        self.origin = ""
        if result_shape is not None and 0 < record.size < max(result_shape):
            what = "it comes" if record.frames == 1 else "its unfinished frames come"
            height, width = result_shape
            self.origin = (
                f"; {what} from the {record.size} px level of the schedule, enlarged to {width}x{height} px"
            )
        self.metadata = {
            "cancelled": True,
            "steps_done": record.step,
            "frames_done": frames_done,
            "frames": record.frames,
            "level_size": record.size,
            "losses": vars(record.losses).copy(),
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


def option_flag(name: str) -> str:
    """The command-line flag of a keyword of the API (a StyleOptions field, ``style_regions``)."""
    return "--" + name.replace("_", "-")


def _keyword_patterns() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """What :func:`command_line_syntax` rewrites: ``name=value`` of a keyword that has a flag
    here, and (unambiguous outside code) a bare keyword with an underscore."""
    names = [field.name for field in dataclasses.fields(StyleOptions)] + ["style_regions"]
    alone = r"(?<![\w./\\-])({})"  # not the end of a longer name or part of a path
    value = r"""(?:'([^']*)'|"([^"]*)"|([\w.+~/:-]*\w))"""
    assignment = re.compile(alone.format("|".join(names)) + "=" + value)
    bare = re.compile(alone.format("|".join(name for name in names if "_" in name)) + r"(?![\w/\\]|\.\w)")
    return assignment, bare


_ASSIGNMENT, _BARE_KEYWORD = _keyword_patterns()
#: The API's True/False keywords, written as ``--name`` / ``--no-name`` here.
_SWITCHES = frozenset(
    field.name for field in dataclasses.fields(StyleOptions) if isinstance(field.default, bool)
)


def command_line_syntax(text: str) -> str:
    """An API message in this command line's syntax: ``weights='random'`` as ``--weights random``,
    ``keep_grey=False`` as ``--no-keep-grey``, ``style_scale`` as ``--style-scale``. Only the
    API's keywords are rewritten; the API's own messages keep Python's syntax."""

    def assigned(match: re.Match[str]) -> str:
        name = match.group(1)
        value = next(group for group in match.groups()[1:] if group is not None)
        if value in ("True", "False") and name in _SWITCHES:
            return option_flag(name) if value == "True" else option_flag(name).replace("--", "--no-", 1)
        return f"{option_flag(name)} {shlex.quote(value)}"

    text = _ASSIGNMENT.sub(assigned, text)
    return _BARE_KEYWORD.sub(lambda match: option_flag(match.group(1)), text)


def add_option_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One ``--option`` per StyleOptions field, defaults and help read from there."""
    defaults = {**dataclasses.asdict(StyleOptions()), **(defaults or {})}
    group = parser.add_argument_group("style-transfer options")
    for field in dataclasses.fields(StyleOptions):
        default = defaults[field.name]
        flag = option_flag(field.name)
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
            group.add_argument(
                "--no-content-colours",
                dest=field.name,
                action="store_const",
                const=False,
                help="keep the style's colours",
            )
            shown = default if default else "off"
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
        group.add_argument(flag, help=command_line_syntax(help_text(field.name)) + suffix, **kwargs)


def add_output_dtype_argument(parser: argparse.ArgumentParser, results: str, eight_bits: str) -> None:
    """``--output-dtype``: what ``results`` hold; ``eight_bits`` says which results it leaves alone."""
    parser.add_argument(
        "--output-dtype",
        choices=OUTPUT_DTYPES,
        default="float32",
        help=f"what {results} holds: float32 in [0, 1] (default), or 'same': the content's own dtype and "
        "units, its values mapped back through the scaling that took them to [0, 1] (uint16 content "
        f"spanning 1000..40000 gives uint16 in 1000..40000); {eight_bits} 8-bit either way",
    )


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
            f"'{PROG} run CONTENT STYLE ...' is the same. Run '{PROG} demo --help' for the demo on bundled samples, "
            f"'{PROG} batch --help' for many images and styles.",
        )
        parser.add_argument("content", type=Path, help=f"content image ({IMAGE_HINT})")
        parser.add_argument(
            "style",
            type=Path,
            nargs="*",
            help=f"style image(s) ({IMAGE_HINT}); several are blended by --style-blend",
        )
        parser.add_argument(
            "--style",
            dest="more_styles",
            type=Path,
            action="append",
            default=[],
            metavar="STYLE",
            help="a further style image (repeatable), as the positional ones",
        )
        parser.add_argument(
            "--style-regions",
            type=Path,
            metavar="LABELS",
            help="integer label image of the content's aspect ratio: label k takes the k-th style, 0 only the content (.npy, .tif or .png)",
        )
        parser.add_argument(
            "-o",
            "--output",
            type=Path,
            required=True,
            help="result image file (.png: 8-bit, .tif: float32 or --output-dtype, both with the settings; "
            "a stack needs .tif or .npy)",
        )
        parser.add_argument(
            "--snapshot-dir", type=Path, help="also write every snapshot as a PNG into this folder"
        )
        add_output_dtype_argument(parser, "a .tif or .npy result", "a .png or .jpg result is")
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser, DEMO_DEFAULTS if demo else None)
    return parser


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
            if bar.n + 1 < bar.total:
                bar.update(1)
            else:  # the last step is drawn by close(), which draws the final line anyway: once
                bar.n += 1
            # a 2D run's last step is the result itself: no twin snapshot file (a stack's frames
            # keep theirs, a PNG preview of each frame of the TIFF)
            twin = record.frames == 1 and record.step == record.steps
            if record.is_snapshot and snapshot_dir is not None and not twin:
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
        frames_done = int(last.step == last.steps)
        if last.frames > 1:
            # the frames that went through the network with the last one (batch_frames) have
            # their images of this step too
            current = {
                frame: frame_image
                for frame, frame_image in last.batch_images().items()
                if frame not in finished
            }
            if frame_shape is not None:
                current = {
                    frame: resize_image(frame_image, frame_shape) for frame, frame_image in current.items()
                }
            if last.frame not in finished:
                current.setdefault(last.frame, image)
            image = _partial_stack(stack_shape, finished, current)
            frames_done = len(finished)
        options = StyleOptions.from_kwargs(_options(args)).to_dict()
        raise RunInterrupted(image, last, options, frames_done, frame_shape) from None
    finally:
        bar.close()
    raise AssertionError("the run ended without a result")  # pragma: no cover


def _partial_stack(
    stack_shape: tuple[int, ...],
    finished: dict[tuple[int, ...], np.ndarray],
    current: dict[tuple[int, ...], np.ndarray],
) -> np.ndarray:
    """The stack as far as it got: finished frames, the interrupted frames' last images
    (one, or a batch's), zeros after that."""
    shape = next(iter({**finished, **current}.values())).shape
    stack = np.zeros(stack_shape + shape, dtype=np.float32)
    for index, image in {**finished, **current}.items():
        stack[index] = image
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
    scale = _output_scale(described, args.output, args.output_dtype)
    _prepare_folder(args.output.parent, "output")
    if args.snapshot_dir is not None:
        _prepare_folder(args.snapshot_dir, "--snapshot-dir")
    frame_shape = working_shape(*described.shape, args.size)
    try:
        result = run(content, style, args, args.snapshot_dir, described.stack_shape, frame_shape, regions)
    except RunInterrupted as stop:
        return _save_partial(stop, args.output, scale)
    write_image(args.output, result.image, result.metadata(), scale)
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


def build_batch_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} batch",
        description="Style every INPUT with every --style and write each result as "
        "OUTDIR/<input stem>__<style stem>.png (2D results of 8-bit inputs) or .tif (stacks, inputs of "
        "more than 8 bits; see --output-dtype), with its settings, and OUTDIR/batch.json. A rerun skips "
        "the results already made with the same settings. Runs on a dask cluster: started here (--workers) "
        "or running (--scheduler). Exit status 0 when every item succeeded, 1 when one failed.",
    )
    parser.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help=f"input images ({IMAGE_HINT})")
    parser.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the results"
    )
    parser.add_argument(
        "--style",
        type=Path,
        action="append",
        required=True,
        dest="styles",
        metavar="STYLE",
        help="a style image; give --style several times for several styles",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_number(int),
        metavar="N",
        help="start a local dask cluster of N worker processes (default: one per CUDA GPU, else one); "
        "0 runs the items in this process",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a running dask cluster: its scheduler's address (tcp://HOST:PORT) or scheduler file",
    )
    parser.add_argument(
        "--connect-timeout",
        type=_number(float),
        default=10.0,
        metavar="SECONDS",
        help="give up reaching --scheduler after this long (default: 10)",
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve dask's dashboard for a cluster started here, on this machine only (127.0.0.1:8787, "
        "or a free port), and print its address with the progress; off by default",
    )
    add_output_dtype_argument(parser, "each .tif result", "a .png result (2D, 8-bit input) is")
    parser.add_argument("--force", action="store_true", help="redo items whose result is already there")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser)
    return parser


def _main_batch(argv: Sequence[str]) -> int:
    from contextlib import nullcontext

    from .batch import FAILED, RECORD_NAME, stylize_batch

    args = build_batch_parser().parse_args(argv)
    if args.workers is not None and args.workers < 0:
        raise CommandLineError(f"--workers must be 0 (this process) or more, got {args.workers}")
    if args.connect_timeout <= 0:
        raise CommandLineError(f"--connect-timeout must be above 0 seconds, got {args.connect_timeout:g}")
    options = _options(args)
    # Everything that can be wrong before a task starts is refused before a cluster starts.
    from .batch import plan_batch

    plan_batch(args.inputs, args.styles, args.output, output_dtype=args.output_dtype, **options)
    if args.workers == 0:
        where: Any = nullcontext(None)
    else:
        from .distributed import cluster_client

        dashboard = "127.0.0.1:8787" if args.dashboard else None
        where = cluster_client(
            args.workers, args.scheduler, connect_timeout=args.connect_timeout, dashboard_address=dashboard
        )
    with where as client:
        records = stylize_batch(
            args.inputs,
            args.styles,
            args.output,
            client=client,
            force=args.force,
            progress=not args.quiet,
            output_dtype=args.output_dtype,
            wording=command_line_syntax,
            **options,
        )
    counts = {status: sum(r["status"] == status for r in records) for status in ("done", "skipped", FAILED)}
    print(
        f"{counts['done']} done, {counts['skipped']} skipped, {counts[FAILED]} failed "
        f"of {len(records)} items; record in {args.output / RECORD_NAME}"
    )
    return 1 if counts[FAILED] else 0


def _preview(described: Any) -> np.ndarray:
    """A described sample image as [0, 1] floats, grey or RGB, for a PNG."""
    frame = described.frame()
    return frame.rgb[..., 0] if frame.grey else frame.rgb


def _check_output_path(output: Path, snapshot_dir: Path | None, inputs: dict[str, Path]) -> None:
    """Refuse before the run, not after it, a result path that cannot be written or that
    would overwrite an input."""
    from PIL import Image

    if output.is_dir():
        raise CommandLineError(
            f"output {output} is a folder; give a file name such as {output / 'result.png'}"
        )
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
            raise CommandLineError(f"cannot create the {what} folder {folder}: {one_line(error)}") from None
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


def _output_scale(described: ImageInput, output: Path, output_dtype: str) -> ValueScale | None:
    """The content's value scale for ``--output-dtype same`` (None for float32), refused
    before the run where an 8-bit output format cannot hold the content's dtype."""
    if output_dtype != "same":
        return None
    scale = described.value_scale()
    if output.suffix.lower() not in (".tif", ".tiff", ".npy") and not fits_8_bits(scale.dtype):
        raise CommandLineError(
            f"--output-dtype same keeps the content's {scale.dtype}, which {output.name} (8 bits) "
            "cannot hold: write a .tif or .npy file, or leave out --output-dtype same"
        )
    return scale


def _save_partial(stop: RunInterrupted, path: Path, scale: ValueScale | None = None) -> int:
    write_image(path, stop.image, stop.metadata, scale)
    print(f"{PROG}: {stop}; wrote the partial result to {path}{stop.origin}", file=sys.stderr)
    return 130


def _report(result: Any, path: Path) -> None:
    frames = frames_of(result.image)
    height, width = frames[0].shape[:2]
    stack = f", {len(frames)} frames" if len(frames) > 1 else ""
    print(
        f"wrote {path} ({width}x{height} px{stack}) after {result.steps_done} steps "
        f"in {result.seconds:.1f} s on {result.device}; loss {result.losses.total:.4g} "
        f"(content {result.losses.content:.4g}, style {result.losses.style:.4g}); weights: {result.weights}"
    )


def _warn_in_one_line(message: Any, category: type, *_: Any, **__: Any) -> None:
    from tqdm import tqdm

    # through tqdm, which takes a progress bar off its line first and draws it again after
    tqdm.write(f"{PROG}: warning: {command_line_syntax(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_in_one_line  # not the package's source line
            if argv[:1] == ["demo"]:
                return _main_demo(argv[1:])
            if argv[:1] == ["batch"]:
                return _main_batch(argv[1:])
            return _main_run(argv[1:] if argv[:1] == ["run"] else argv)
    except (CommandLineError, StyleTransferError) as error:
        print(f"{PROG}: error: {command_line_syntax(str(error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
