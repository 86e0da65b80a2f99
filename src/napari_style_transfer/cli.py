"""Command line: ``napari-style-transfer CONTENT STYLE -o OUT``, ``napari-style-transfer demo`` and
``napari-style-transfer batch -o OUTDIR --style STYLE INPUT ...``.

Every option, its default and its help come from :class:`~.options.StyleOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shlex
import signal
import sys
import warnings
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._image import ImageInput, ValueScale, describe_image, resize_image, working_shape
from ._sample_data import DEMO_PAIRS, load_sample
from .errors import StyleTransferError
from .files import (
    IMAGE_HINT,
    OUTPUT_DTYPES,
    ImageFileError,
    fits_8_bits,
    frames_of,
    prepare_folder,
    read_image,
    same_file,
    write_image,
)
from .large_images import TIFF_SUFFIXES, LargeImage, open_large_image
from .options import DEMO_DEFAULTS, StyleOptions, choices, frame_in_stack, help_text
from .tiles import tile_grid
from .zarr_output import (
    TIFF_OUTPUTS,
    ResultStore,
    check_tiff_frames,
    pyramid_tiff_path,
    store_for,
    write_pyramidal_tiff,
)

PROG = "napari-style-transfer"
#: ``--size full``: the content's own resolution, computed in tiles (``pipeline.tiled.FULL``,
#: spelled out here because that module imports torch, which options are checked before).
FULL = "full"
#: What a ``--size full`` result is written to: an OME-Zarr store (``.zarr``, ``.ome.zarr``),
#: or a tiled pyramidal BigTIFF made from a store beside it once every tile is done.
STORE_SUFFIX = ".zarr"
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
        where = (
            f" of {frame_in_stack(record.frame_number, record.frames, record.pass_number)}"
            if record.frames > 1
            else ""
        )
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


class CtrlC:
    """Ctrl-C during a run: the first stops it (``KeyboardInterrupt``, which :func:`run` turns
    into :class:`RunInterrupted`); from then on, and once :meth:`saving` is called, a Ctrl-C
    only says that the result is being written, so that writing it cannot be cut short. In a
    thread other than the main one (where Python delivers signals) it changes nothing."""

    def __enter__(self) -> CtrlC:
        try:
            self._previous = signal.signal(signal.SIGINT, self._stop)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *_: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def saving(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._wait)

    def _stop(self, *_: object) -> None:
        self.saving()
        raise KeyboardInterrupt

    @staticmethod
    def _wait(*_: object) -> None:
        # os.write: a print here could land inside another print to stderr and fail
        os.write(2, f"\n{PROG}: writing the result, a moment...\n".encode())


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


def _size(text: str) -> int | str:
    """``--size``: a whole number of pixels, or ``full``."""
    return FULL if text.strip().lower() == FULL else _whole_number(text)


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


#: Where each run option appears in ``--help`` (and in the documentation's option table), in
#: the order the groups are shown. tests/test_cli_help.py checks that every StyleOptions field
#: has a group.
OPTION_GROUPS: dict[str, tuple[str, ...]] = {
    "inputs and outputs": ("size", "snapshot_every", "keep_grey"),
    "style": (
        "style_weight",
        "content_weight",
        "tv_weight",
        "style_scale",
        "style_blend",
        "style_loss",
        "style_layers",
        "style_layer_weights",
        "content_layers",
        "content_colours",
        "weights",
        "pooling",
    ),
    "optimisation": ("steps", "optimizer", "learning_rate", "init", "seed", "average", "schedule"),
    "stacks (3D+ content)": ("frames", "temporal_weight", "time_steps", "time_passes"),
    "performance": (
        "device",
        "precision",
        "batch_frames",
        "tile_size",
        "channels_last",
        "threads",
        "cudnn_benchmark",
    ),
}
#: The group of a batch's own options (after the run options').
BATCH_GROUP = "batch (dask cluster)"
#: The group of a run's cluster options (those of a batch, for a ``--size full`` run's tiles).
RUN_CLUSTER_GROUP = f"tiles on a dask cluster (--size {FULL})"


def option_groups(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The parser's argument groups of :data:`OPTION_GROUPS`, created in that order."""
    return {title: parser.add_argument_group(title) for title in OPTION_GROUPS}


def add_option_arguments(
    parser: argparse.ArgumentParser,
    defaults: dict[str, Any] | None = None,
    groups: dict[str, Any] | None = None,
) -> None:
    """One ``--option`` per StyleOptions field, defaults and help read from there, each in its
    group of :data:`OPTION_GROUPS` (``groups``: the parser's, from :func:`option_groups`)."""
    defaults = {**dataclasses.asdict(StyleOptions()), **(defaults or {})}
    groups = groups or option_groups(parser)
    group_of = {name: groups[title] for title, names in OPTION_GROUPS.items() for name in names}
    for field in dataclasses.fields(StyleOptions):
        _add_option(group_of[field.name], field, defaults[field.name])


def _add_option(group: Any, field: dataclasses.Field, default: Any) -> None:
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
    elif field.name == "size":  # "full" parsed everywhere, to be refused in words where not offered
        kwargs.update(type=_size, metavar="PX")
        shown = default
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


RUN_EXAMPLES = f"""examples:
  {PROG} photo.png swirl.png -o photo_swirl.png
      one image in the style of another (300 steps at 512 px: see --steps, --size)
  {PROG} nuclei.tif he_stain.png -o nuclei_he.tif --no-keep-grey --style-weight 1e5
      a grey fluorescence image stained in the colours of an H&E-like style
  {PROG} movie.tif swirl.png -o movie_swirl.tif --frames time --size 256 --steps 200
      a time-lapse (T x Y x X): each frame starts from the previous result, warped

'{PROG} run CONTENT STYLE ...' is the same. '{PROG} demo --help': the demo on bundled
samples; '{PROG} batch --help': many images and styles on a dask cluster.
"""

DEMO_EXAMPLES = f"""examples:
  {PROG} demo -o demo-output
      astronaut + swirl, 256 px, 100 steps; writes content.png, style.png, snapshots, result.png
  {PROG} demo -o nuclei --pair nuclei_he_stain --no-keep-grey
      the synthetic fluorescence nuclei stained like the H&E-like sample
  {PROG} demo -o quick --steps 20 --size 128 --weights random
      a quick look without ImageNet weights (untrained network: texture only)
"""

BATCH_EXAMPLES = f"""examples:
  {PROG} batch -o styled/ --style stain.png images/*.tif
      every image with one style, on a local dask cluster (one worker per CUDA GPU, else one)
  {PROG} batch -o styled/ --style a.png --style b.png --workers 0 --steps 200 images/*.png
      every image with two styles, in this process
  {PROG} batch -o styled/ --style stain.png --scheduler tcp://HOST:8786 images/*.tif
      on a running cluster (dask scheduler and dask worker started elsewhere)

A rerun skips the results already made with the same settings (--force redoes them). Exit
status 0 when every item succeeded, 1 when one failed, 2 for a usage error.
"""


def _new_parser(prog: str, usage: str, description: str) -> _Parser:
    # a short usage line, so that --help opens with the examples; the description holds them:
    # keep its line breaks
    return _Parser(
        prog=prog,
        usage=f"{prog} {usage}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser(demo: bool = False) -> argparse.ArgumentParser:
    """The parser of a run (``demo=False``) or of the demo; options grouped as in
    :data:`OPTION_GROUPS`."""
    if demo:
        parser = _new_parser(
            f"{PROG} demo",
            "-o FOLDER [--pair PAIR] [options]",
            "Style a bundled sample pair and write the content, the style, the snapshots and the "
            "result as PNG files.\nThe defaults are smaller than a run's (256 px, 100 steps).\n\n"
            + DEMO_EXAMPLES,
        )
        groups = option_groups(parser)
        files = groups["inputs and outputs"]
        files.add_argument("-o", "--output", type=Path, required=True, help="folder for the PNG files")
        files.add_argument(
            "--pair", choices=tuple(DEMO_PAIRS), default=next(iter(DEMO_PAIRS)), help="which sample pair"
        )
    else:
        parser = _new_parser(
            PROG,
            "CONTENT STYLE [STYLE ...] -o OUTPUT [options]",
            "Neural style transfer (Gatys et al., CVPR 2016): redraw CONTENT in the style of STYLE.\n\n"
            + RUN_EXAMPLES,
        )
        groups = option_groups(parser)
        _add_run_files(groups["inputs and outputs"])
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups["inputs and outputs"].add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser, DEMO_DEFAULTS if demo else None, groups)
    if not demo:
        _offer_full_size(parser)
        add_cluster_arguments(
            parser,
            RUN_CLUSTER_GROUP,
            f"with --size {FULL}: run the tiles on a local dask cluster of N worker processes, writing "
            "them into -o as they finish (default, or 0: in this process)",
        )
    return parser


def _offer_full_size(parser: argparse.ArgumentParser) -> None:
    """``--size full`` in a run's help (the demo and a batch refuse it)."""
    size = next(action for action in parser._actions if action.dest == "size")
    size.metavar = f"PX|{FULL}"
    full = f"; {FULL}: the content's own resolution, in tiles of --tile-size, into -o NAME.ome.zarr"
    size.help = (size.help or "").replace(" (default:", full + " (default:")


def _add_run_files(files: Any) -> None:
    """A run's inputs and outputs: the content, the styles, the regions, the result, snapshots."""
    files.add_argument("content", type=Path, help=f"content image ({IMAGE_HINT})")
    files.add_argument(
        "style",
        type=Path,
        nargs="*",
        help=f"style image(s) ({IMAGE_HINT}); several are blended by --style-blend",
    )
    files.add_argument(
        "--style",
        dest="more_styles",
        type=Path,
        action="append",
        default=[],
        metavar="STYLE",
        help="a further style image (repeatable), as the positional ones",
    )
    files.add_argument(
        "--style-regions",
        type=Path,
        metavar="LABELS",
        help="integer label image of the content's aspect ratio: label k takes the k-th style, 0 only the content "
        f"(.npy, .tif or .png; with --size {FULL} of any size, and .npy, TIFF or .zarr read region by region)",
    )
    files.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="result image file (.png: 8-bit, .tif: float32 or --output-dtype, both with the settings; "
        f"a stack needs .tif or .npy); with --size {FULL}: an OME-Zarr store (.ome.zarr, written tile by "
        "tile, resumable) or a .tif (a pyramidal BigTIFF made from a .ome.zarr store beside it)",
    )
    files.add_argument(
        "--force",
        action="store_true",
        help=f"with --size {FULL}: redo the tiles the store already holds (by default a rerun with the "
        "same settings resumes, skipping them)",
    )
    files.add_argument(
        "--snapshot-dir", type=Path, help="also write every snapshot as a PNG into this folder"
    )
    add_output_dtype_argument(files, "a .tif or .npy result", "a .png or .jpg result is")


def parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str], full_size: bool = False
) -> argparse.Namespace:
    """Parse ``argv`` and check every run option's value, before anything imports torch (a bad
    value is refused at once, not after seconds of loading). ``full_size``: whether this
    command takes ``--size full`` (a run of one image does; the demo and a batch do not)."""
    args = parser.parse_args(argv)
    options = _options(args)
    if options["size"] == FULL:
        if not full_size:
            raise CommandLineError(
                f"--size {FULL} is for one image: {PROG} CONTENT STYLE --size {FULL} -o RESULT.ome.zarr"
            )
        from .pipeline.slide_inputs import refuse_time_series  # no torch: refused at once

        refuse_time_series(options["frames"])
        del options["size"]  # the tile planner sets the working size from --tile-size
    StyleOptions.from_kwargs(options)  # raises StyleTransferError naming the bad value
    return args


def _options(args: argparse.Namespace) -> dict[str, Any]:
    return {field.name: getattr(args, field.name) for field in dataclasses.fields(StyleOptions)}


def run(
    content: np.ndarray,
    style: np.ndarray | list[np.ndarray],
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
            if record.is_snapshot and snapshot_dir is not None and not twin and record.image is not None:
                frame = f"frame{record.frame_number:04d}_" if record.frames > 1 else ""
                if record.pass_number:  # a time pass: the frame's earlier snapshots stay
                    frame += f"pass{record.pass_number}_"
                try:
                    write_image(snapshot_dir / snapshot_name(record.step, frame), record.image)
                except CommandLineError as error:  # a lost snapshot must not cost the run
                    bar.write(f"{PROG}: warning: {error}; the run goes on", file=sys.stderr)
            if record.frames > 1 and record.step == record.steps and record.image is not None:
                finished[record.frame] = record.image
            last = record
    except KeyboardInterrupt:
        stopped = None if last is None else _what_was_made(last, finished, args, stack_shape, frame_shape)
        if stopped is None:  # nothing made yet
            raise
        raise stopped from None
    finally:
        bar.close()
    raise AssertionError("the run ended without a result")  # pragma: no cover


def _what_was_made(
    last: Any,
    finished: dict[tuple[int, ...], np.ndarray],
    args: argparse.Namespace,
    stack_shape: tuple[int, ...],
    frame_shape: tuple[int, int] | None,
) -> RunInterrupted | None:
    """What a run stopped after the step ``last`` made, at the result's size; None before
    any image was kept."""
    image = last.kept_image()
    if image is None:
        return None
    if frame_shape is not None:
        image = resize_image(image, frame_shape)
    frames_done = int(last.step == last.steps)
    if last.frames > 1:
        # the frames that went through the network with the last one (batch_frames) have
        # their images of this step too
        current = {
            frame: frame_image for frame, frame_image in last.batch_images().items() if frame not in finished
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
    return RunInterrupted(image, last, options, frames_done, frame_shape)


def _partial_stack(
    stack_shape: tuple[int, ...],
    finished: dict[tuple[int, ...], np.ndarray],
    current: dict[tuple[int, ...], np.ndarray],
) -> np.ndarray:
    """The stack as far as it got: finished frames, the interrupted frames' last images
    (one, or a batch's), zeros after that."""
    from .pipeline.sinks import NumpySink

    stack = NumpySink(stack_shape, zeroed=True)
    for index, image in {**finished, **current}.items():
        stack.take(index, image)
    return stack.result


def _main_run(argv: Sequence[str]) -> int:
    args = parse_arguments(build_parser(), argv, full_size=True)
    style_paths = args.style + args.more_styles
    if not style_paths:
        raise CommandLineError("give a style image after the content (or with --style FILE)")
    roles = ["style"] if len(style_paths) == 1 else [f"style {i}" for i in range(1, len(style_paths) + 1)]
    inputs = {"content": args.content, **dict(zip(roles, style_paths, strict=True))}
    if args.style_regions is not None:
        inputs["--style-regions"] = args.style_regions
    if args.size == FULL:
        return _main_full(args, style_paths, inputs)
    if args.workers is not None or args.scheduler is not None or args.dashboard:
        raise CommandLineError(
            f"--workers, --scheduler and --dashboard run the tiles of a --size {FULL} run on a dask "
            f"cluster; leave them out (many images go to a cluster with `{PROG} batch`)"
        )
    if args.force:
        raise CommandLineError(
            f"--force redoes the tiles of a --size {FULL} run; leave it out (a run at a working size "
            "always writes its result anew)"
        )
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
    height, width = described.shape
    frame_shape = working_shape(height, width, args.size)
    with CtrlC() as ctrl_c:
        try:
            result = run(content, style, args, args.snapshot_dir, described.stack_shape, frame_shape, regions)
        except RunInterrupted as stop:
            ctrl_c.saving()  # a KeyboardInterrupt raised by other means than Ctrl-C
            return _save_partial(stop, args.output, scale)
        ctrl_c.saving()
        write_image(args.output, result.image, result.metadata(), scale)
    _report(result, args.output)
    return 0


def _main_full(args: argparse.Namespace, style_paths: list[Path], inputs: dict[str, Path]) -> int:
    """``--size full``: the content at its own resolution, tile by tile into the OME-Zarr
    store of ``-o`` (or one beside a ``.tif`` result, exported once every tile is done)."""
    store_path = _check_full_output(args, inputs)
    if args.workers is None and args.scheduler is None:
        args.workers = 0  # a run's tiles stay in this process unless a cluster is asked for
    check_cluster_arguments(args, f"--size {FULL}", "tiles")
    _prepare_folder(store_path.parent, "output")  # before reading a content that may be large
    content = _read_full_content(args.content, args.output)
    regions = None if args.style_regions is None else _open_full_input(args.style_regions, "style regions")
    styles = [read_image(path, "style") for path in style_paths]
    from .pipeline import tiled

    style = styles[0] if len(styles) == 1 else styles
    fp = tiled.plan_full(content, style, style_regions=regions, **_options(args))
    store = tiled.open_store(fp, store_path, args.force)
    frames = len(fp.frames)  # each frame its composition (one tile) and its tiles
    total = frames * (
        1 + sum(len(tile_grid(level.shape, fp.tile_size, fp.margin)) for level in fp.levels[1:])
    )
    before = _finished_tiles(store)
    with cluster_of(args) as client, CtrlC() as ctrl_c:
        try:
            _run_tiles(
                tiled.run_full(fp, store, _tiles_elsewhere(client, args.quiet)), total, before, args.quiet
            )
        except KeyboardInterrupt:
            ctrl_c.saving()
            print(
                f"{PROG}: interrupted; {_finished_tiles(store)} of {total} tiles are finished and kept in "
                f"{store_path}: run the same command again to resume ({before} were done before this run; "
                "--force starts over)",
                file=sys.stderr,
            )
            return 130
        ctrl_c.saving()
        if store_path != args.output:
            write_pyramidal_tiff(args.output, store)
    height, width = fp.levels[-1].shape
    stack = f", {frames} frames" if fp.image.frames_shape else ""
    skipped = f", {before} already done" if before else ""
    kept = f" from the tiles in {store_path}" if store_path != args.output else ""
    print(
        f"wrote {args.output}{kept} ({width}x{height} px{stack}, {total} tiles of {fp.tile_size} px{skipped})"
    )
    return 0


def _tiles_elsewhere(client: Any, quiet: bool) -> Any:
    """Where a ``--size full`` run's tiles go: the cluster of ``client`` (its dashboard's
    address said, where it serves one), or None (this process)."""
    if client is None:
        return None
    from .distributed import dashboard
    from .pipeline.executors import elsewhere
    from .pipeline.tile_tasks import TILE_RETRIES

    link = dashboard(client)
    if link and not quiet:
        print(f"dask dashboard: {link}", file=sys.stderr)
    return elsewhere(client, retries=TILE_RETRIES)


def _check_full_output(args: argparse.Namespace, inputs: dict[str, Path]) -> Path:
    """Refuse before the run what a ``--size full`` run cannot write; the store's path."""
    output: Path = args.output
    suffix = output.suffix.lower()
    if suffix not in (STORE_SUFFIX, *TIFF_OUTPUTS):
        raise CommandLineError(
            f"--size {FULL} makes a result as large as the content, written tile by tile, which "
            f"{output.name} cannot be: give -o {output.with_suffix('.ome.zarr').name} (an OME-Zarr store) "
            f"or -o {output.with_suffix('.tif').name} (a pyramidal BigTIFF)"
        )
    if args.snapshot_dir is not None:
        raise CommandLineError(f"--snapshot-dir cannot be used with --size {FULL} yet: leave it out")
    if args.output_dtype != "float32":
        raise CommandLineError(f"--size {FULL} writes float32 in [0, 1]: leave out --output-dtype")
    store: Path = store_for(output)
    for path in {output, store}:
        _check_parent(path)
        if path.exists() and not path.is_dir() and path.suffix.lower() == STORE_SUFFIX:
            raise CommandLineError(f"{path} is a file, not a zarr store; give another -o")
        for role, input_path in inputs.items():
            if same_file(path, input_path):
                raise CommandLineError(
                    f"output {path} is the {role} image {input_path}; give another -o (inputs are never overwritten)"
                )
    if output.is_dir() and suffix != STORE_SUFFIX:
        raise CommandLineError(
            f"output {output} is a folder; give a file name such as {output / 'result.tif'}"
        )
    return store


def _open_full_input(path: Path, role: str) -> Any:
    """An input of a ``--size full`` run (the content, ``--style-regions``): a ``.npy``, a
    TIFF or a zarr / OME-Zarr folder opened lazily through :mod:`.large_images` (read region
    by region, never whole, and opened again by path on a cluster's workers), any other
    image file read whole."""
    if path.is_dir() or path.suffix.lower() in (".npy", *TIFF_SUFFIXES):
        return open_large_image(path)
    return read_image(path, role)


def _read_full_content(path: Path, output: Path) -> Any:
    """The content of a ``--size full`` run (see :func:`_open_full_input`); a stack is
    refused where ``output`` is a TIFF, whose pyramidal BigTIFF export holds one 2D image."""
    content = _open_full_input(path, "content")
    lazy = isinstance(content, LargeImage)
    frames = content.frames_shape if lazy else describe_image(content, "content").stack_shape
    tiff = pyramid_tiff_path(output)
    if tiff is not None:
        check_tiff_frames(tiff, frames, str(path))
    return content


def _finished_tiles(store: ResultStore) -> int:
    """The tiles recorded as finished in a result store: its own and its scratch levels' (the
    levels below full size; the composition is one tile of the coarsest)."""
    from .pipeline import tiled

    scratch = dict(store.group["scratch"].groups()) if "scratch" in store.group else {}
    levels = [store] + [
        ResultStore(group, store.tile_size)
        for name, group in scratch.items()
        if not name.startswith("pieces-")
    ]
    return sum(tiled.tiles_finished(level) for level in levels)


def _run_tiles(records: Any, total: int, before: int, quiet: bool) -> None:
    """Run the tiled ``records`` with a progress bar of tiles (``total``, the composition
    counted as one; ``before`` of them finished before this run). A tile is in the store
    once the next one starts or the run ends."""
    from tqdm import tqdm

    if before and not quiet:
        done = "all" if before == total else before
        print(f"{PROG}: {done} of {total} tiles already done in the store; resuming", file=sys.stderr)
    with tqdm(
        total=total, initial=before, unit="tile", disable=quiet or before == total, file=sys.stderr
    ) as bar:
        current = None
        for record in records:  # none where every tile is done
            if current is not None and record.frame_number != current:
                bar.update(1)
            current = record.frame_number
            bar.set_postfix(loss=f"{record.losses.total:.4g}", refresh=False)
        if current is not None:
            bar.update(1)


def _main_demo(argv: Sequence[str]) -> int:
    args = parse_arguments(build_parser(demo=True), argv)
    content_key, style_key, _ = DEMO_PAIRS[args.pair]
    content, style = load_sample(content_key), load_sample(style_key)
    out: Path = args.output
    if out.exists() and not out.is_dir():
        raise CommandLineError(f"{out} is a file; the demo writes several images: give a folder")

    described = describe_image(content, "content")
    _prepare_folder(out, "output")
    write_image(out / "content.png", _preview(described))
    write_image(out / "style.png", _preview(describe_image(style, "style")))
    frame_shape = working_shape(*described.shape, args.size)
    with CtrlC() as ctrl_c:
        try:
            result = run(content, style, args, out, frame_shape=frame_shape)
        except RunInterrupted as stop:
            ctrl_c.saving()  # a KeyboardInterrupt raised by other means than Ctrl-C
            return _save_partial(stop, out / "result.png")
        ctrl_c.saving()
        write_image(out / "result.png", result.image, result.metadata())
    _report(result, out / "result.png")
    return 0


def build_batch_parser() -> argparse.ArgumentParser:
    parser = _new_parser(
        f"{PROG} batch",
        "-o OUTDIR --style STYLE [--style STYLE ...] [options] INPUT [INPUT ...]",
        "Style every INPUT with every --style and write each result as OUTDIR/<input stem>__<style stem>.png\n"
        "(2D results of 8-bit inputs) or .tif (stacks, inputs of more than 8 bits; see --output-dtype),\n"
        "with its settings, and OUTDIR/batch.json.\n\n" + BATCH_EXAMPLES,
    )
    groups = option_groups(parser)
    files = groups["inputs and outputs"]
    files.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help=f"input images ({IMAGE_HINT})")
    files.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUTDIR", help="folder for the results"
    )
    files.add_argument(
        "--style",
        type=Path,
        action="append",
        required=True,
        dest="styles",
        metavar="STYLE",
        help="a style image; give --style several times for several styles",
    )
    add_output_dtype_argument(files, "each .tif result", "a .png result (2D, 8-bit input) is")
    files.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser, groups=groups)
    cluster = add_cluster_arguments(
        parser,
        BATCH_GROUP,
        "start a local dask cluster of N worker processes (default: one per CUDA GPU, else one); "
        "0 runs the items in this process",
    )
    cluster.add_argument("--force", action="store_true", help="redo items whose result is already there")
    return parser


def add_cluster_arguments(parser: argparse.ArgumentParser, title: str, workers_help: str) -> Any:
    """The cluster's options, one source for a batch's and a ``--size full`` run's, in a
    group of ``title`` (returned): ``--workers`` (helped by ``workers_help``), ``--scheduler``,
    ``--connect-timeout``, ``--dashboard``."""
    cluster = parser.add_argument_group(title)
    where = cluster.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_number(int), metavar="N", help=workers_help)
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a running dask cluster: its scheduler's address (tcp://HOST:PORT) or scheduler file",
    )
    cluster.add_argument(
        "--connect-timeout",
        type=_number(float),
        default=10.0,
        metavar="SECONDS",
        help="give up reaching --scheduler after this long (default: 10)",
    )
    cluster.add_argument(
        "--dashboard",
        action="store_true",
        help="serve dask's dashboard for a cluster started here, on this machine only (127.0.0.1:8787, "
        "or a free port), and print its address with the progress; off by default",
    )
    return cluster


def check_cluster_arguments(args: argparse.Namespace, run: str, parts: str) -> None:
    """Refuse, before torch or dask is imported, cluster numbers out of range and a cluster
    asked for (``--workers`` not 0, or ``--scheduler``) without dask's distributed installed.
    ``run``, ``parts``: what would go to the cluster, in words ("a batch", "items")."""
    if args.workers is not None and args.workers < 0:
        raise CommandLineError(f"--workers must be 0 (this process) or more, got {args.workers}")
    if args.connect_timeout <= 0:
        raise CommandLineError(f"--connect-timeout must be above 0 seconds, got {args.connect_timeout:g}")
    if args.workers != 0 and not _installed("distributed"):
        flag = "--scheduler" if args.scheduler else f"{run} on a local cluster"
        raise CommandLineError(
            f"{flag} needs dask's distributed, which is not installed: "
            f"pip install 'napari-style-transfer[distributed]', or run the {parts} here with --workers 0"
        )


def cluster_of(args: argparse.Namespace) -> Any:
    """The cluster that ``args`` ask for, as a context manager: a client of a running one
    (``--scheduler``) or of one started here (``--workers N``, N > 0), or None (here:
    ``--workers 0``)."""
    from contextlib import nullcontext

    if args.workers == 0:
        return nullcontext(None)
    from .distributed import cluster_client

    dashboard = "127.0.0.1:8787" if args.dashboard else None
    return cluster_client(
        args.workers, args.scheduler, connect_timeout=args.connect_timeout, dashboard_address=dashboard
    )


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a half-imported module
        return False


def parse_batch_arguments(argv: Sequence[str]) -> argparse.Namespace:
    """A batch's arguments, checked before torch or dask is imported: the run options, the
    cluster's numbers, and that dask's distributed is installed where a cluster is asked for."""
    args = parse_arguments(build_batch_parser(), argv)
    check_cluster_arguments(args, "a batch", "items")
    return args


def _main_batch(argv: Sequence[str]) -> int:
    from .batch import FAILED, RECORD_NAME, stylize_batch

    args = parse_batch_arguments(argv)
    options = _options(args)
    # Everything that can be wrong before a task starts is refused before a cluster starts.
    from .batch import plan_batch

    plan_batch(args.inputs, args.styles, args.output, output_dtype=args.output_dtype, **options)
    with cluster_of(args) as client:
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


#: What the snapshots of a run are called (``--snapshot-dir``, the demo's folder).
SNAPSHOT_NAME = re.compile(r"snapshot_(frame\d+_(pass\d+_)?)?step\d+\.png", re.IGNORECASE)


def snapshot_name(step: int, frame: str = "") -> str:
    """A snapshot's file name; ``frame`` is ``frameNNNN_`` in a stack (``frameNNNN_passP_`` in a
    time pass)."""
    return f"snapshot_{frame}step{step:04d}.png"


def _check_snapshot_dir(snapshot_dir: Path, inputs: dict[str, Path]) -> None:
    """Refuse a --snapshot-dir where a snapshot could replace an input: one named as
    snapshots are, in that folder (as given, or where a link to it leads)."""
    if snapshot_dir.exists() and not snapshot_dir.is_dir():
        raise CommandLineError(f"--snapshot-dir {snapshot_dir} is a file; give a folder")
    for role, path in inputs.items():
        for entry in (path, path.resolve()):
            if SNAPSHOT_NAME.fullmatch(entry.name) and same_file(entry.parent, snapshot_dir):
                raise CommandLineError(
                    f"--snapshot-dir {snapshot_dir} holds the {role} image {path}, which a snapshot "
                    "would replace; give another --snapshot-dir or rename the image (inputs are never overwritten)"
                )


def _check_output_path(output: Path, snapshot_dir: Path | None, inputs: dict[str, Path]) -> None:
    """Refuse before the run, not after it, a result path that cannot be written or that
    would overwrite an input."""
    from PIL import Image

    if output.is_dir():
        raise CommandLineError(
            f"output {output} is a folder; give a file name such as {output / 'result.png'}"
        )
    for role, path in inputs.items():
        if same_file(output, path):
            raise CommandLineError(
                f"output {output} is the {role} image {path}; "
                "give another file name (inputs are never overwritten)"
            )
    _check_parent(output)
    suffix = output.suffix.lower()
    if suffix != ".npy" and Image.registered_extensions().get(suffix) not in Image.SAVE:
        raise CommandLineError(
            f"output {output} has {f'the extension {suffix}' if suffix else 'no extension'}; "
            "give a .png (keeps the settings), .tif, .jpg or .npy file"
        )
    if snapshot_dir is not None:
        _check_snapshot_dir(snapshot_dir, inputs)


def _check_parent(output: Path) -> None:
    """Refuse an output whose folder cannot exist: the nearest existing parent is a file."""
    existing = next((parent for parent in output.absolute().parents if parent.exists()), None)
    if existing is None or not existing.is_dir():
        where = f"{existing} is a file, not a folder" if existing is not None else "its drive does not exist"
        raise CommandLineError(f"cannot write {output}: {where}")


def _prepare_folder(folder: Path, what: str) -> None:
    """Just before the run: create a missing folder (and say so), and make sure a file can be
    created in it."""
    if prepare_folder(folder, what):
        print(f"{PROG}: created folder {folder}", file=sys.stderr)


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


def warning_line(message: Any) -> str:
    """A warning as this command's one line, in its flag syntax (dask's warnings, for one,
    come in several lines)."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return f"{PROG}: warning: {command_line_syntax(text)}"


def _warn_in_one_line(message: Any, category: type, *_: Any, **__: Any) -> None:
    from tqdm import tqdm

    # through tqdm, which takes a progress bar off its line first and draws it again after
    tqdm.write(warning_line(message), file=sys.stderr)


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
