"""The issue's largest slide, started in napari, killed, and finished by the CLI (issue 31).

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/slides_largest.py               # 16384 px, ~1 h quiet
    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/slides_largest.py --size 2048   # the same in minutes

1. A generated stationary tissue slide (uint8 RGB) is written a block at a time as an OME-Zarr
   pyramid (level 0 at full size, chunks of 512), and a 4096 px one beside it for comparison.
2. **napari** (a fresh process in a 1280 x 800 window): the pyramid is added as a multiscale
   layer, the dock is set to full resolution (tiled) into a store, and Run is pressed. When
   ``--kill-at`` of the run's tiles are done, a screenshot is taken and the process is
   SIGKILLed from here: no clean-up runs.
3. **CLI** (a fresh process): the same settings on the same store resume the run, skipping the
   tiles napari finished, to the end.
4. The 4096 px slide runs through the CLI alone, for the memory comparison.
5. The result is checked: every tile finished, seams on a crop where tiles meet, consistency
   over 512 px windows of the whole slide (read window by window), and a 100% montage of a
   region where four tiles meet.

Memory is each process's VmHWM (read from /proc while it runs: napari's is taken just
before the kill) and the largest RssAnon seen every 0.5 s. Writes a table between the
``slides-largest`` markers of ``docs/slides.md`` and ``docs/images/slides_largest_*.png``.
Untrained weights: mechanics (memory, resume, seams), never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from slides_memory import SAMPLE_ANON  # noqa: E402

BEGIN, END = "<!-- slides-largest:begin -->", "<!-- slides-largest:end -->"
SHALLOW = {"content_layers": "conv2_2", "style_layers": "conv1_1,conv2_1,conv3_1"}
DEFAULT_LAYERS = {"content_layers": "conv4_2", "style_layers": "conv1_1,conv2_1,conv3_1,conv4_1,conv5_1"}

NAPARI = r"""
import json, os, sys
import imageio.v3 as iio
import napari, zarr
from napari_style_transfer._napari.worker import StoreFinished, TileDone

args = json.loads(sys.argv[1])
print(json.dumps({"pid": os.getpid()}), flush=True)
viewer = napari.Viewer()
viewer.window._qt_window.resize(1280, 800)
group = zarr.open_group(args["content"], mode="r")
levels = [group[d["path"]] for d in group.attrs["multiscales"][0]["datasets"]]
slide = viewer.add_image(levels, multiscale=True, rgb=True, name="slide")
style = viewer.add_image(iio.imread(args["style"]), rgb=True, name="style", visible=False)
_, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
widget["content"].value, widget["style"].value = slide, style
for name, value in args["options"].items():
    widget[name].value = value
widget["full_resolution"].value = True
widget["store"].value = args["store"]
worker = widget.run()
shot, tiles = [], []

def on_update(update):  # queued to napari's thread: the screenshot sees what a user sees
    if isinstance(update, TileDone):
        tiles[:] = [update.done, update.total]
        print(json.dumps({"done": update.done, "total": update.total}), flush=True)
        if args["kill_at"] is not None and update.done >= args["kill_at"] * update.total and not shot:
            shot.append(viewer.screenshot(args["screenshot"], canvas_only=False))
            print(json.dumps({"kill": update.done, "total": update.total}), flush=True)
    elif isinstance(update, StoreFinished):
        print(json.dumps({"store": update.path}), flush=True)

def on_finished():  # after the widget's own handling of the end: the layers as a user sees them
    try:  # Qt swallows an exception here: napari must close whatever happens, or this waits
        viewer.screenshot(args["screenshot"], canvas_only=False)
        print(json.dumps({"finished": tiles[0] if tiles else 0, "total": tiles[1] if tiles else 0}), flush=True)
    finally:
        viewer.close()

worker.yielded.connect(on_update)
if args["kill_at"] is None:
    worker.finished.connect(on_finished)
napari.run()
"""

CLI = (
    SAMPLE_ANON
    + r"""
import json, sys, time
from napari_style_transfer.cli import main

started = time.perf_counter()
code = main(json.loads(sys.argv[1]))
seconds = time.perf_counter() - started
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"code": code, "hwm": int(status["VmHWM"].split()[0]), "anon": largest[0], "seconds": seconds}))
"""
)


def write_pyramid(path: Path, size: int) -> Path:
    """A ``size`` px tissue slide as an OME-Zarr pyramid (y, x, c), level 0 written a block
    at a time, each further level the block mean of the one above (dask, chunk by chunk)."""
    import dask.array as da
    import zarr
    from slides import tissue_block
    from slides_memory import BLOCK

    group = zarr.open_group(str(path), mode="w")
    level0 = group.create_array("0", shape=(size, size, 3), chunks=(512, 512, 3), dtype="uint8")
    for top in range(0, size, BLOCK):
        for left in range(0, size, BLOCK):
            block = (tissue_block(top // BLOCK, left // BLOCK, BLOCK) * 255).astype(np.uint8)
            level0[top : top + BLOCK, left : left + BLOCK] = block[: size - top, : size - left]
    paths, side = ["0"], size
    while side > 1024:
        above = da.from_zarr(group[paths[-1]])
        smaller = da.coarsen(np.mean, above, {0: 2, 1: 2}, trim_excess=True).astype(np.uint8)
        side //= 2
        paths.append(str(len(paths)))
        group.create_array(paths[-1], shape=smaller.shape, chunks=(512, 512, 3), dtype="uint8")
        da.to_zarr(smaller.rechunk((512, 512, 3)), group[paths[-1]])
    axes = [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}, {"name": "c", "type": "channel"}]
    datasets = [
        {"path": name, "coordinateTransformations": [{"type": "scale", "scale": [2.0**i, 2.0**i, 1.0]}]}
        for i, name in enumerate(paths)
    ]
    group.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": datasets}]
    return path


class ProcessMemory:
    """VmHWM and the largest RssAnon (KiB) of another process, sampled every 0.5 s."""

    def __init__(self, pid: int) -> None:
        self.pid, self.hwm, self.anon = pid, 0, 0
        threading.Thread(target=self._sample, daemon=True).start()

    def read(self) -> None:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM"):
                    self.hwm = max(self.hwm, int(line.split()[1]))
                elif line.startswith("RssAnon"):
                    self.anon = max(self.anon, int(line.split()[1]))

    def _sample(self) -> None:
        while True:
            try:
                self.read()
            except OSError:  # the process has gone
                return
            time.sleep(0.5)


def run_napari(
    content: Path, style: Path, store: Path, options: dict, kill_at: float | None, shot: Path
) -> dict:
    """Run in napari until ``kill_at`` of the tiles are done, then SIGKILL it; with
    ``kill_at`` None, to the end (a store begun before is resumed), then close napari."""
    settings = {
        "content": str(content),
        "style": str(style),
        "store": str(store),
        "options": options,
        "kill_at": kill_at,
        "screenshot": str(shot),
    }
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", NAPARI, json.dumps(settings)], stdout=subprocess.PIPE, text=True
    )
    memory, got = None, {}
    assert child.stdout is not None
    for line in child.stdout:
        message = json.loads(line)
        if "pid" in message:
            memory = ProcessMemory(message["pid"])
        elif "kill" in message and memory is not None:
            memory.read()
            os.kill(memory.pid, signal.SIGKILL)
            got = {"done": message["kill"], "total": message["total"]}
        elif "finished" in message and memory is not None:
            memory.read()
            got |= {"finished": message["finished"], "total": message["total"]}
        elif "store" in message:
            got["store_finished"] = True
    child.wait()
    if not ("done" in got or "finished" in got) or memory is None:
        raise SystemExit(f"napari stopped before it was killed or finished (exit status {child.returncode})")
    return got | {"hwm": memory.hwm, "anon": memory.anon, "seconds": time.perf_counter() - started}


def run_cli(content: Path, style: Path, store: Path, options: dict) -> dict:
    argv = [str(content), str(style), "-o", str(store), "--size", "full", "-q"]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run([sys.executable, "-c", CLI, json.dumps(argv)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the CLI run failed:\n{done.stderr}")
    *said, measured = done.stdout.strip().splitlines()
    return json.loads(measured) | {"said": said[-1] if said else ""}  # "wrote ... (N tiles, M already done)"


def check_result(content: Path, store: Path, tile_size: int, shot_folder: Path) -> dict:
    """Every tile finished; seams on a 4096 px crop around the centre; consistency over
    512 px windows of the whole slide, read window by window; a 100% montage at the centre."""
    import imageio.v3 as iio
    import zarr
    from slides import seams

    result = zarr.open_group(str(store), mode="r")
    level0 = result["0"]  # (c, y, x)
    source = zarr.open_group(str(content), mode="r")["0"]  # (y, x, c)
    size = source.shape[0]
    # both in [0, 1]: the content is uint8, the store float32 (or the content's dtype)
    to_unit = 1 / 255 if level0.dtype == np.uint8 else 1.0
    half = min(2048, size // 2)
    centre = size // 2
    crop = np.moveaxis(level0[:, centre - half : centre + half, centre - half : centre + half], 0, -1)
    seam_peak, elsewhere = seams(crop.astype(np.float32) * to_unit, tile_size)
    # windows' per-channel mean and std, the result against the content
    stats: dict[str, list] = {"result": [], "content": []}
    window = 512
    for top in range(0, size - window + 1, window):
        band_result = np.moveaxis(level0[:, top : top + window], 0, -1).astype(np.float32) * to_unit
        band_content = np.asarray(source[top : top + window]).astype(np.float32) / 255
        for left in range(0, size - window + 1, window):
            for name, band in (("result", band_result), ("content", band_content)):
                cell = band[:, left : left + window].reshape(-1, 3)
                stats[name].append((cell.mean(axis=0), cell.std(axis=0)))
    spreads = {}
    for name, cells in stats.items():
        means = np.array([m for m, _ in cells])
        stds = np.array([s for _, s in cells])
        spreads[name] = (means.std(axis=0), stds.std(axis=0))
    consistency = [float((spreads["result"][i] / spreads["content"][i]).mean()) for i in (0, 1)]
    # where four tiles meet: the tile corner nearest the centre, 256 px either side, at 100%
    corner = (centre // tile_size) * tile_size
    picture = [
        np.asarray(source[corner - 256 : corner + 256, corner - 256 : corner + 256]),
        np.moveaxis(level0[:, corner - 256 : corner + 256, corner - 256 : corner + 256], 0, -1)
        * to_unit
        * 255,
    ]
    picture[1] = np.clip(picture[1], 0, 255).astype(np.uint8)
    gap = np.full((512, 8, 3), 255, np.uint8)
    iio.imwrite(
        shot_folder / "slides_largest_corner.png", np.concatenate([picture[0], gap, picture[1]], axis=1)
    )
    return {
        "finished": bool(np.asarray(result["finished_tiles"][...]).all()),
        "levels": len([key for key in result.array_keys() if key.isdigit()]),
        "seam_peak": seam_peak,
        "seam_elsewhere": elsewhere,
        "consistency": consistency,
        "corner": corner,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--compare", type=int, default=4096, help="px; a CLI-only run for the memory")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--layers", choices=("shallow", "default"), default="shallow")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's own); 1 on a shared machine"
    )
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of napari's tiles done at the kill")
    parser.add_argument(
        "--finish-in",
        choices=("cli", "napari"),
        default="cli",
        help="where the killed run is resumed to the end",
    )
    parser.add_argument("--folder", type=Path, default=Path("/tmp/slides-largest"))
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    import imageio.v3 as iio
    from slides import style_texture

    layers = SHALLOW if args.layers == "shallow" else DEFAULT_LAYERS
    options = {"steps": args.steps, "tile_size": args.tile_size, "weights": "random", "seed": 0} | layers
    options |= {"threads": args.threads} if args.threads else {}
    args.folder.mkdir(parents=True, exist_ok=True)
    style = args.folder / "style.png"
    iio.imwrite(style, (style_texture(256) * 255).astype(np.uint8))
    rows: dict[str, dict] = {}
    started = time.perf_counter()
    for size in (args.compare, args.size):
        content = args.folder / f"slide-{size}.zarr"
        if not (content / "zarr.json").exists():
            write_pyramid(content, size)
            print(f"wrote {content} in {time.perf_counter() - started:.0f} s", flush=True)
    compare_store = args.folder / f"result-{args.compare}.ome.zarr"
    for old in args.folder.glob("result-*.ome.zarr"):  # a run from nothing (the slides are kept)
        shutil.rmtree(old)
    rows[f"{args.compare} px, CLI"] = run_cli(
        args.folder / f"slide-{args.compare}.zarr", style, compare_store, options
    )
    print(rows, flush=True)
    content, store = args.folder / f"slide-{args.size}.zarr", args.folder / f"result-{args.size}.ome.zarr"
    shot = args.images / "slides_largest_napari.png"
    rows[f"{args.size} px, napari (killed)"] = run_napari(content, style, store, options, args.kill_at, shot)
    print(rows, flush=True)
    if args.finish_in == "napari":
        end_shot = args.images / "slides_largest_napari_end.png"
        rows[f"{args.size} px, napari (resumed)"] = run_napari(content, style, store, options, None, end_shot)
    else:
        rows[f"{args.size} px, CLI (resumed)"] = run_cli(content, style, store, options)
    print(rows, flush=True)
    checks = check_result(content, store, args.tile_size, args.images)
    lines = table(args, rows, checks, time.perf_counter() - started)
    print("\n".join(lines), flush=True)
    if not args.no_write:
        from slides import write_table

        write_table(lines, BEGIN, END)


def table(args: argparse.Namespace, rows: dict[str, dict], checks: dict, seconds: float) -> list[str]:
    lines = [
        f"OME-Zarr pyramid input, tiles of {args.tile_size}, {args.steps} step per tile and level, "
        f"{args.layers} layers, a 256 px style, untrained weights, CPU, "
        f"{args.threads or 'default'} torch thread(s); a fresh process for each row.",
        "",
        "| run | tiles | VmHWM | peak RssAnon | wall time |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, got in rows.items():
        if "done" in got:
            tiles = f"{got['done']} of {got['total']}, then SIGKILL"
        elif "finished" in got:
            tiles = f"resumed: {got['finished']} of {got['total']} to the end, the store finished"
        else:
            tiles = got["said"]
        lines.append(
            f"| {name} | {tiles} | {got['hwm'] / 1024:.0f} MiB | {got['anon'] / 1024:.0f} MiB "
            f"| {got['seconds'] / 60:.1f} min |"
        )
    cli = [got for name, got in rows.items() if "CLI" in name]
    lines += [""]
    if len(cli) == 2:
        lines.append(
            f"CLI VmHWM, {args.size} px against {args.compare} px: {cli[1]['hwm'] / cli[0]['hwm'] - 1:+.1%}; "
            f"RssAnon {cli[1]['anon'] / cli[0]['anon'] - 1:+.1%}."
        )
    lines += [
        f"Result: every tile finished: {checks['finished']}; {checks['levels']} pyramid levels; seams on a "
        f"4096 px crop at the centre {checks['seam_peak']:.2f}x at tile borders, {checks['seam_elsewhere']:.2f}x "
        f"elsewhere; consistency over 512 px windows (mean, std spread against the content's) "
        f"{checks['consistency'][0]:.2f}x, {checks['consistency'][1]:.2f}x.",
        f"Measured in {seconds / 60:.0f} min, load average {os.getloadavg()[0]:.1f} at the end.",
    ]
    return lines


if __name__ == "__main__":
    main()
