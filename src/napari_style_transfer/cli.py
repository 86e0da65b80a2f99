"""Command line: ``napari-style-transfer CONTENT STYLE -o OUT`` and ``napari-style-transfer demo``.

Every option, its default and its help come from :class:`~.options.StyleOptions`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._image import to_uint8
from ._sample_data import DEMO_PAIRS, load_sample
from .errors import StyleTransferError
from .options import DEMO_DEFAULTS, StyleOptions, choices, help_text

PROG = "napari-style-transfer"
_IMAGE_HINT = "PNG, JPEG, TIFF (multi-page: a stack), BMP or .npy"


class CommandLineError(Exception):
    """A user error reported as one line on stderr (exit status 2)."""


class RunInterrupted(Exception):
    """Ctrl-C during a run; carries the image of the last finished step."""

    def __init__(self, image: np.ndarray, step: int):
        super().__init__(f"interrupted after step {step}")
        self.image = image
        self.step = step


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage plus error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
            return int(value)
        return value

    parse.__name__ = kind.__name__
    return parse


def _optional(parse: Any) -> Any:
    def parse_optional(text: str) -> Any:
        return None if text.lower() in ("none", "default") else parse(text)

    parse_optional.__name__ = parse.__name__
    return parse_optional


def _layers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def add_option_arguments(parser: argparse.ArgumentParser, defaults: dict[str, Any] | None = None) -> None:
    """One ``--option`` per StyleOptions field, defaults and help read from there."""
    defaults = {**dataclasses.asdict(StyleOptions()), **(defaults or {})}
    group = parser.add_argument_group("style-transfer options")
    for field in dataclasses.fields(StyleOptions):
        default = defaults[field.name]
        flag = "--" + field.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": field.name, "default": default}
        if isinstance(default, tuple):
            kwargs.update(type=_layers, metavar="LAYER,...")
            shown = ",".join(default)
        elif field.name in ("learning_rate", "seed"):
            kwargs.update(type=_optional(_number(float if field.name == "learning_rate" else int)))
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
            f"Run '{PROG} demo --help' for the demo on bundled samples.",
        )
        parser.add_argument("content", type=Path, help=f"content image ({_IMAGE_HINT})")
        parser.add_argument("style", type=Path, help=f"style image ({_IMAGE_HINT})")
        parser.add_argument("-o", "--output", type=Path, required=True, help="result image file (.png keeps the settings; a stack needs .tif or .npy)")
        parser.add_argument("--snapshot-dir", type=Path, help="also write every snapshot as a PNG into this folder")
        parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_option_arguments(parser, DEMO_DEFAULTS if demo else None)
    return parser


def read_image(path: Path, role: str) -> np.ndarray:
    """An image file as numpy, keeping 16-bit and float data as they are."""
    if not path.exists():
        raise CommandLineError(f"{role} image {path} does not exist")
    if path.is_dir():
        raise CommandLineError(f"{role} image {path} is a folder; give an image file")
    if path.suffix.lower() == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise CommandLineError(f"could not read {role} image {path} as .npy: {error}") from None
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = [_as_array(frame) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise CommandLineError(f"could not read {role} image {path} ({_IMAGE_HINT}): {error}") from None
    if len(frames) == 1:
        return frames[0]
    if len({frame.shape for frame in frames}) > 1:
        raise CommandLineError(f"the pages of {role} image {path} differ in size; give pages of one size")
    return np.stack(frames)  # a multi-page TIFF is a stack, stylized page by page


def _as_array(image: Any) -> np.ndarray:
    if image.mode in ("P", "PA", "LA", "CMYK", "YCbCr", "1", "RGBX"):
        image = image.convert("RGBA" if "A" in image.mode or "transparency" in image.info else "RGB")
    return np.asarray(image)


def write_image(path: Path, image: np.ndarray, metadata: dict[str, Any] | None = None) -> None:
    """Write a [0, 1] float image as 8-bit; PNG files carry ``metadata`` as a JSON text chunk.

    A stack (more than one frame) goes to a multi-page TIFF, or to .npy as float32."""
    from PIL import Image, PngImagePlugin

    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if suffix == ".npy":
            np.save(path, image.astype(np.float32))
            return
        frames = _frames(image)
        if len(frames) > 1:
            if suffix not in (".tif", ".tiff"):
                raise CommandLineError(
                    f"the result is a stack of {len(frames)} frames: write it to a .tif or .npy file, not {path.name}"
                )
            pages = [Image.fromarray(to_uint8(frame)) for frame in frames]
            pages[0].save(path, save_all=True, append_images=pages[1:])
            return
        info = None
        if metadata is not None and suffix == ".png":
            info = PngImagePlugin.PngInfo()
            info.add_text(PROG, json.dumps(metadata))
        Image.fromarray(to_uint8(frames[0])).save(path, pnginfo=info)
    except (OSError, ValueError, KeyError) as error:
        raise CommandLineError(f"could not write {path}: {error}") from None


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


def run(content: np.ndarray, style: np.ndarray, args: argparse.Namespace, snapshot_dir: Path | None) -> Any:
    """Run with a progress bar; write snapshots as they come; return the StyleResult."""
    from tqdm import tqdm

    from .api import StyleResult, iter_stylize

    records = iter_stylize(content, style, **_options(args))
    bar = tqdm(total=args.steps, unit="step", disable=args.quiet, file=sys.stderr)
    last = None
    try:
        for record in records:
            if isinstance(record, StyleResult):
                return record
            if last is None:
                bar.total = record.frames * record.steps
                if not args.quiet:
                    bar.write(f"device {record.device}; weights {record.weights}")
            bar.set_postfix(loss=f"{record.losses.total:.4g}", refresh=False)
            bar.update(1)
            if record.is_snapshot and snapshot_dir is not None:
                frame = f"frame{record.frame_number:04d}_" if record.frames > 1 else ""
                write_image(snapshot_dir / f"snapshot_{frame}step{record.step:04d}.png", record.image)
            last = record
    except KeyboardInterrupt:
        if last is None:
            raise
        try:
            image = last.render()
        except RuntimeError:  # interrupted between two steps: the last snapshot is what is left
            image = last.image
        if image is None:
            raise
        raise RunInterrupted(image, last.step) from None
    finally:
        bar.close()
    raise AssertionError("the run ended without a result")  # pragma: no cover


def _main_run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    content = read_image(args.content, "content")
    style = read_image(args.style, "style")
    _check_output_kind(content, args.output)
    try:
        result = run(content, style, args, args.snapshot_dir)
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
    write_image(out / "content.png", _preview(content))
    write_image(out / "style.png", _preview(style))
    try:
        result = run(content, style, args, out)
    except RunInterrupted as stop:
        return _save_partial(stop, out / "result.png")
    write_image(out / "result.png", result.image, result.metadata())
    _report(result, out / "result.png")
    return 0


def _preview(image: np.ndarray) -> np.ndarray:
    from ._image import describe_image

    frame = describe_image(image, "sample").frame()
    return frame.rgb[..., 0] if frame.grey else frame.rgb


def _check_output_kind(content: np.ndarray, output: Path) -> None:
    """Refuse before the run, not after it, an output format that cannot hold a stack."""
    from ._image import describe_image

    stack = describe_image(content, "content").stack_shape
    if stack and output.suffix.lower() not in (".tif", ".tiff", ".npy"):
        raise CommandLineError(
            f"the content is a stack of {int(np.prod(stack))} frames, so the result is one too: "
            f"write it to a .tif or .npy file, not {output.name}"
        )


def _save_partial(stop: RunInterrupted, path: Path) -> int:
    write_image(path, stop.image, {"cancelled": True, "steps_done": stop.step})
    print(f"{PROG}: interrupted after step {stop.step}; wrote the partial result to {path}", file=sys.stderr)
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["demo"]:
            return _main_demo(argv[1:])
        return _main_run(argv)
    except (CommandLineError, StyleTransferError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
