"""Time mode against independent frames on the bundled Nuclei time-lapse at the widget's
defaults (issue 33, docs/timelapse.md): size 512, 300 steps, later frames' ``time_steps``
auto, coarse to fine auto; weights ``random``, fp32, 1 torch thread. Time mode's single
forward pass (``time_passes=0``), which goes frame by frame; or with ``--passes N`` time mode in
passes (the widget's default is 2), whose first styling of each frame alone is the independent
run (the same pixels: tested in tests/test_time_passes.py), so one run gives both sides.

The two runs advance frame by frame side by side (time mode's frame t, then the independent
frame t), and each finished pair is saved, so a run stopped early still measures the frames
it finished and ``--resume`` goes on from them. Hours on a CPU at 512 px:

    nice -n 10 python benchmarks/timelapse_widget.py                      # the widget's defaults
    nice -n 10 python benchmarks/timelapse_widget.py --size 256 --steps 100   # the demo's
    python benchmarks/timelapse_widget.py --size 96 --steps 20 --time-steps 10 --frames 3  # a check
    nice -n 10 python benchmarks/timelapse_widget.py --passes 2 --precision auto --threads 2

Time passes are not resumable: the passes need every frame's first styling. Each frame's first
styling and each pass's frame are still saved in ``--work`` as they finish.

Writes ``--work`` (default /tmp/timelapse_widget_SIZEpx: each frame's pair, .npz), the
measures of the smear part (benchmarks/stacks.py) as json beside the docs, the section
"Measured at SIZE px" of docs/timelapse.md and the montage docs/images/timelapse_nuclei_SIZEpx.png
(content, time, independent, each mode's change from the frame before x4). Pixel measures
only: they do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import stacks

ROOT = Path(__file__).resolve().parents[1]
#: Shown in the montage at most this many pixels a side per frame (512 px frames are halved).
MONTAGE_TILE = 256


def finished_frames(run):
    """Yield each frame's result (2D) of an ``iter_stylize`` run as it finishes."""
    from napari_style_transfer.api import StyleResult

    for item in run:
        if isinstance(item, StyleResult):
            return
        if item.step % 25 == 0:  # how far a long run has got
            print(f"  frame {item.frame_number} step {item.step} of {item.steps}", flush=True)
        if item.step == item.steps:
            yield item.image if item.image is not None else item.render()


def section(entry: dict, settings: dict, done: int, machine: dict) -> str:
    """The docs/timelapse.md section of one size's run."""

    def numbers(values: list, form: str = "{}") -> str:
        return " ".join(form.format(v) for v in values)

    size, passes = settings["size"], settings.get("passes", 0)
    later = entry["smeared"]
    flicker = (
        f"{entry['flicker']:.4f} / {entry['flicker_independent']:.4f} "
        f"({entry['flicker'] / entry['flicker_independent']:.2f})"
        if "flicker" in entry
        else "-"
    )
    command = f"python benchmarks/timelapse_widget.py --size {size} --steps {settings['steps']}"
    if settings["time_steps"]:
        command += f" --time-steps {settings['time_steps']}"
    if passes:
        command += f" --passes {passes}"
    if settings.get("precision", "fp32") != "fp32":
        command += f" --precision {settings['precision']}"
    mode = f"time mode in {passes} passes" if passes else "time mode's single forward pass"
    if passes:
        same = [
            f"| smeared against the same content (goal < 2%) | {numbers(entry['smeared_same'], '{:.1%}')} |",
            f"| its floor (independent runs judged by the others) | "
            f"{numbers(entry['smeared_same_floor'], '{:.1%}')} |",
            f"| border band added over the nearest independent run (goal <= 10%) | "
            f"{numbers(entry['band_added'], '{:.1%}')} |",
            f"| its floor | {numbers(entry['band_added_floor'], '{:.1%}')} |",
        ]
    else:
        same = []
    minutes = f", {settings['seconds'] / 60:.0f} min" if "seconds" in settings else ""
    name = f"{size}px" + (f"_passes{passes}" if passes else "")
    return "\n".join(
        [
            heading(settings),
            "",
            f"Written by `{command}` on {machine['date']} (load average {machine['load']:.2f}{minutes}): "
            f"the bundled Nuclei time-lapse, {done} of its 8 frames finished, {mode}, {settings['steps']} "
            f"steps for each frame alone and {settings['time_steps'] or 'auto (half)'} for later ones, "
            f"coarse to fine auto, precision {settings.get('precision', 'fp32')}, weights `random` "
            "(mechanics only). The measures of the smear table above, by later frame (objects: every frame).",
            "",
            "| measure | by frame |",
            "| --- | --- |",
            f"| smeared windows against the frame's own independent run | {numbers(later, '{:.1%}')} |",
            *same,
            f"| objects: time | {numbers(entry['objects'])} |",
            f"| objects: independent | {numbers(entry['objects_independent'])} |",
            f"| objects: content | {numbers(entry['objects_content'])} |",
            f"| border band against independent | {numbers(entry['band'], '{:.1%}')} |",
            f"| border band, raw: time | {numbers(entry['band_raw'], '{:.1%}')} |",
            f"| border band, raw: independent | {numbers(entry['band_raw_independent'], '{:.1%}')} |",
            f"| static flicker: time / independent (goal <= 1/3) | {flicker} |",
            f"| static drift (time) | {numbers(entry.get('drift', []), '{:.4f}')} |",
            "",
            f"![content, time mode, independent frames, each one's change from the frame before (x4), {size} px]"
            f"(images/timelapse_nuclei_{name}.png)",
            "",
        ]
    )


def shrink(stack: np.ndarray, side: int) -> np.ndarray:
    from PIL import Image

    if stack.shape[-1] <= side:
        return stack
    return np.stack(
        [np.asarray(Image.fromarray(f.astype(np.float32)).resize((side, side), Image.BOX)) for f in stack]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--time-steps", type=int, default=0, help="later frames' steps (0: auto, half)")
    parser.add_argument("--frames", type=int, default=8, help="the first FRAMES of the sample's 8")
    parser.add_argument("--passes", type=int, default=0, help="time passes (0: the single forward pass)")
    parser.add_argument("--precision", default="fp32", help="fp32, or auto as in the widget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--work", type=Path, help="where each finished frame pair is kept")
    parser.add_argument("--resume", action="store_true", help="go on from the pairs in --work")
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "timelapse.md")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    name = f"{args.size}px" + (f"_passes{args.passes}" if args.passes else "")
    work = args.work or Path(f"/tmp/timelapse_widget_{name}")
    work.mkdir(parents=True, exist_ok=True)
    movie, masks = stacks.nuclei(args.size, 8)
    movie, masks = movie[: args.frames], masks[: args.frames]
    style = stacks.style_image(args.size)
    settings = {
        "size": args.size,
        "steps": args.steps,
        "time_steps": args.time_steps,
        "passes": args.passes,
        "precision": args.precision,
    }
    options = {
        "size": args.size,
        "steps": args.steps,
        "time_steps": args.time_steps,
        "weights": "random",
        "snapshot_every": 0,
        "precision": args.precision,
    }
    started = time.perf_counter()
    if args.passes:
        done = run_passes(movie, style, options, args.passes, work, started)
    else:
        done = run_single_pass(movie, style, options, args, work, started)
    settings["seconds"] = round(time.perf_counter() - started)
    report(done, movie, masks, settings, args)
    return 0


def run_single_pass(movie, style, options: dict, args, work: Path, started: float) -> dict:
    """Time mode's single forward pass beside independent frames, frame pair by frame pair
    (resumable from the pairs in ``work``)."""
    from napari_style_transfer import iter_stylize

    pairs = sorted(work.glob("frame_*.npz"))
    done: dict[str, list] = {"time": [], "independent": []}
    if args.resume and pairs:
        for path in pairs:
            with np.load(path) as pair:
                done["time"].append(pair["time"])
                done["independent"].append(pair["independent"])
    start = len(done["time"])
    if start < args.frames:
        # a time series' first frame is an independent run of it (the same pixels: checked at
        # 96 px, difference 0.0), so the independent side starts at frame 1; a resumed time
        # series restarts from its first frame (each frame needs the one before)
        timed = finished_frames(iter_stylize(movie, style, **options, frames="time", time_passes=0))
        independent = finished_frames(
            iter_stylize(movie[max(start, 1) :], style, **options, frames="independent")
        )
        for t in range(args.frames):
            frame_time = next(timed)
            if t < start:
                continue
            done["time"].append(frame_time)
            done["independent"].append(frame_time if t == 0 else next(independent))
            np.savez_compressed(
                work / f"frame_{t}.npz", time=done["time"][t], independent=done["independent"][t]
            )
            print(f"frame {t} done after {time.perf_counter() - started:.0f} s", flush=True)
    return done


def run_passes(movie, style, options: dict, passes: int, work: Path, started: float) -> dict:
    """Time mode in ``passes`` passes; each frame's first styling (pass 0) is its independent run."""
    from napari_style_transfer import iter_stylize
    from napari_style_transfer.api import StyleResult

    alone: dict[int, np.ndarray] = {}
    for item in iter_stylize(movie, style, **options, frames="time", time_passes=passes):
        if isinstance(item, StyleResult):
            np.savez_compressed(work / "time.npz", time=item.image)
            return {"time": list(item.image), "independent": [alone[t] for t in range(len(movie))]}
        if item.step % 25 == 0:
            print(
                f"  pass {item.pass_number} frame {item.frame_number} step {item.step} of {item.steps}",
                flush=True,
            )
        if item.step == item.steps:
            print(
                f"pass {item.pass_number} frame {item.frame_number} done after "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            if item.pass_number == 0:
                alone[item.frame_number] = item.image
                np.savez_compressed(work / f"alone_{item.frame_number}.npz", independent=item.image)
            else:  # a run stopped early keeps what its passes finished, with the seconds they took
                np.savez_compressed(
                    work / f"pass{item.pass_number}_{item.frame_number}.npz",
                    image=item.image,
                    seconds=time.perf_counter() - started,
                )
    raise RuntimeError("the run ended without its result")


def heading(settings: dict) -> str:
    """The doc's section heading of one run's settings (passes have their own)."""
    if settings.get("passes"):
        return f"## Time passes measured at {settings['size']} px"
    return f"## Measured at {settings['size']} px"


def report(done: dict, movie: np.ndarray, masks: np.ndarray, settings: dict, args) -> None:
    """Measures, json, the doc's section and the montage of the frames finished."""
    timed, independent = np.stack(done["time"]), np.stack(done["independent"])
    frames = len(timed)
    content = stacks._resize_stack(movie[:frames], timed.shape[1:])
    shown = stacks._resize_masks(masks[:frames], timed.shape[1:])
    entry = stacks.smear_measures(timed, independent, content, shown, max(2, settings["size"] // 16))
    machine = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "load": os.getloadavg()[0]}
    print("measures", json.dumps(entry), flush=True)
    name = f"{settings['size']}px" + (f"_passes{settings['passes']}" if settings.get("passes") else "")
    out = args.doc.parent / f"timelapse_{name}.json"
    out.write_text(json.dumps({**settings, "frames": frames, "machine": machine, "nuclei": entry}, indent=1))
    stacks.replace_section(args.doc, heading(settings), section(entry, settings, frames, machine))
    tile = min(MONTAGE_TILE, settings["size"])
    shown_images = {
        label: shrink(stack, tile)
        for label, stack in (("content", content), ("time", timed), ("independent", independent))
    }
    rows = {
        **shown_images,
        "time: change": stacks.frame_changes(shown_images["time"]),
        "independent: change": stacks.frame_changes(shown_images["independent"]),
    }
    stacks._sheet(rows, args.images / f"timelapse_nuclei_{name}.png", 120, 2 if tile <= 128 else 1)


if __name__ == "__main__":
    raise SystemExit(main())
