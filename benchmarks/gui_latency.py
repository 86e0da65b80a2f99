"""How long napari's event loop stalls while the Style Transfer widget runs.

    xvfb-run -a python benchmarks/gui_latency.py            # 64 and 128 px, each idle and loaded
    xvfb-run -a python benchmarks/gui_latency.py --quick    # 64 px only (13 minutes on a busy 2-core machine)

A 10 ms QTimer ticks on napari's GUI thread; the longest gap between two ticks is the longest
time napari could not react to the mouse or repaint. Each measurement runs in a fresh process:
first the viewer idles (the baseline), then the widget runs (CPU, untrained weights, the
bundled astronaut and swirl) with snapshot layers being added. Every measurement is made with
no extra load and with two CPU hogs (``python -c 'while True: pass'``) started by this script,
which compete with both napari and the run. Whatever else the machine was doing at the time
also counts: the load average is recorded with each table.

Replaces the ``GUI responsiveness`` section of ``docs/benchmarks.md`` (its other sections come
from ``benchmarks/run.py``, which rewrites the file: ``--section-only`` puts this section back
from ``docs/gui_latency.json`` without measuring again) and writes the raw numbers to
``docs/gui_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## GUI responsiveness"
TICK_MS = 10
IDLE_S = 3.0


def measure(size: int, steps: int, snapshot_every: int) -> dict:
    """One viewer: idle ticks, then ticks during one run (in this process)."""
    import napari
    import numpy as np
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_style_transfer._sample_data import load_sample

    viewer = napari.Viewer(show=True)
    content = viewer.add_image(load_sample("astronaut"), name="astronaut", rgb=True)
    style = viewer.add_image(load_sample("swirl"), name="swirl", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = content, style
    values = {
        "size": size,
        "steps": steps,
        "snapshot_every": snapshot_every,
        "weights": "random",
        "device": "cpu",
    }
    for name, value in values.items():
        widget[name].value = value

    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))

    def gaps_ms() -> list[float]:
        return (np.diff(ticks) * 1000).tolist()

    timer.start()
    idle = QEventLoop()
    QTimer.singleShot(int(IDLE_S * 1000), idle.quit)
    idle.exec()
    idle_gaps = gaps_ms()

    ticks.clear()
    # moments napari's thread does our work: Run pressed, each layer added (snapshot, result)
    layers_added: list[float] = []
    viewer.layers.events.inserted.connect(lambda _: layers_added.append(time.perf_counter()))
    started = time.perf_counter()
    worker = widget.run()
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    loop.exec()
    seconds = time.perf_counter() - started
    timer.stop()
    run_gaps = gaps_ms()
    # Run's own work on napari's thread: from the press to the first tick after it
    at_run = round((ticks[0] - started) * 1000, 1) if ticks else 0.0
    at_layers = [gap_around(ticks, moment) for moment in layers_added]
    status = widget["status"].value
    viewer.close()
    return {
        "size": size,
        "steps": steps,
        "snapshot_every": snapshot_every,
        "run_seconds": round(seconds, 2),
        "status": status,
        "idle": summary(idle_gaps),
        "run": summary(run_gaps),
        "gap_at_run_ms": at_run,
        "gaps_at_layers_added_ms": at_layers,
    }


def gap_around(ticks: list[float], moment: float) -> float:
    """The gap between the ticks either side of ``moment`` (ms): how long napari's thread was
    busy around it. 0 when the moment is outside the ticks."""
    import bisect

    after = bisect.bisect_right(ticks, moment)
    if after == 0 or after == len(ticks):
        return 0.0
    return round((ticks[after] - ticks[after - 1]) * 1000, 1)


def summary(gaps: list[float]) -> dict:
    ordered = sorted(gaps)
    if not ordered:
        return {"ticks": 0}
    return {
        "ticks": len(ordered) + 1,
        "median_ms": round(ordered[len(ordered) // 2], 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        "max_ms": round(ordered[-1], 1),
        "over_50_ms": sum(gap > 50 for gap in ordered),
        "over_100_ms": sum(gap > 100 for gap in ordered),
    }


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def measure_in_a_fresh_process(size: int, steps: int, snapshot_every: int) -> dict:
    command = [sys.executable, __file__, "--measure", str(size), str(steps), str(snapshot_every)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> list[str]:
    lines = [
        "| working size | CPU hogs | run (s) | longest gap, idle | longest gap, run | 99th percentile, run "
        "| gaps > 50 ms | gaps > 100 ms | gap at Run | longest gap at a layer added | load average before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        run, idle = r["run"], r["idle"]
        lines.append(
            f"| {r['size']} px, {r['steps']} steps | {r['hogs']} | {r['run_seconds']:.1f} | {idle['max_ms']:.0f} ms "
            f"| {run['max_ms']:.0f} ms | {run['p99_ms']:.0f} ms | {run['over_50_ms']} of {run['ticks'] - 1} "
            f"| {run['over_100_ms']} | {_ms(r.get('gap_at_run_ms'))} | {_ms(max(r.get('gaps_at_layers_added_ms') or [0]))} "
            f"| {r['load_before']:.1f} |"
        )
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def write_section(path: Path, body: list[str]) -> None:
    """Replace (or append) this script's section; the rest of the file is benchmarks/run.py's."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.rstrip("\n").split("\n")
    if SECTION in lines:
        start = lines.index(SECTION)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = body
    else:
        lines += [""] + body
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small run per load")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="one 32 px run of 4 steps, no hogs, nothing written: proves the script works",
    )
    parser.add_argument("--hogs", type=int, default=2, help="CPU hogs for the loaded measurement")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "gui_latency.json")
    parser.add_argument(
        "--section-only", action="store_true", help="rewrite the section from --json, measure nothing"
    )
    parser.add_argument("--measure", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return
    if args.section_only:
        write_section(args.output, section(json.loads(args.json.read_text())))
        print(f"wrote {args.output}")
        return

    if args.tiny:
        print(json.dumps(measure_in_a_fresh_process(32, 4, 2)))
        return
    runs = [(64, 20, 5)] if args.quick else [(64, 20, 5), (128, 10, 5)]
    results = []
    for size, steps, snapshot_every in runs:
        for hogs in (0, args.hogs):
            load_before = os.getloadavg()[0]
            started = start_hogs(hogs)
            try:
                result = measure_in_a_fresh_process(size, steps, snapshot_every)
            finally:
                stop_hogs(started)
            result.update(hogs=hogs, load_before=load_before, load_after=os.getloadavg()[0])
            print(json.dumps(result), flush=True)
            results.append(result)

    import torch

    saved = {
        "command": "xvfb-run -a python benchmarks/gui_latency.py" + (" --quick" if args.quick else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tick_ms": TICK_MS,
        "idle_s": IDLE_S,
        "results": results,
    }
    args.json.write_text(json.dumps(saved, indent=1) + "\n")
    write_section(args.output, section(saved))
    print(f"wrote {args.output} and {args.json}")


def section(saved: dict) -> list[str]:
    return [
        SECTION,
        "",
        f"Measured by `{saved['command']}` on {saved['date']} ({saved['machine']}; raw numbers in "
        "[gui_latency.json](gui_latency.json)). A 10 ms timer on napari's GUI thread; a *gap* is the time "
        "between two of its ticks, i.e. how long napari could not react or repaint. *Idle* is the same "
        f"viewer during the {saved['idle_s']:.0f} s before Run. The run is the widget's (CPU, untrained weights, "
        "astronaut and swirl, snapshot layers added along the way); *CPU hogs* are busy-loop processes the "
        "script starts, competing with napari and the run. The load average (1 min, before each "
        "measurement) counts everything else the machine was doing: these figures come from a shared "
        "machine, so they vary from run to run.",
        "",
        *table(saved["results"]),
        "",
    ]


if __name__ == "__main__":
    main()
