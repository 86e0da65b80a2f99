"""How long napari's event loop stalls while the Style Transfer widget runs, and why.

    xvfb-run -a python benchmarks/gui_latency.py            # 64 and 128 px, each idle and loaded
    xvfb-run -a python benchmarks/gui_latency.py --quick    # 64 px only (13 minutes on a busy 2-core machine)
    xvfb-run -a python benchmarks/gui_latency.py --tiny     # one 32 px run: proves the script works
    xvfb-run -a python benchmarks/gui_latency.py --profile 512 4 2   # what napari's thread did in each gap

A 10 ms QTimer ticks on napari's GUI thread; the longest gap between two ticks is the longest
time napari could not react to the mouse or repaint. Each measurement runs in a fresh process:
first the viewer idles (the baseline), then the widget runs (CPU, untrained weights, the
bundled astronaut and swirl) with snapshot layers being added, then the timer ticks on for
2 s. Every measurement is made with no extra load and with two CPU hogs
(``python -c 'while True: pass'``) started by this script, which compete with both napari and
the run. Whatever else the machine was doing at the time also counts: the load average is
recorded with each table.

Gaps grow with the machine's load; napari's thread's own CPU time (``time.thread_time`` read
at each tick) does not: it is reported at Run, while the run prepares and per layer added
(from the tick before until the loop ticks on time again). A gap with little CPU in it is
napari's thread waiting: for the CPU, or for the GIL (an import, a garbage collection in
another thread). ``--profile`` samples napari's thread's stack whenever the timer is late and
lists, per gap over 50 ms, the functions it was in, how late the sampler itself woke (a
sampler that could not run either points at a thread holding the GIL) and the full garbage
collections that ran in it.

Replaces the ``GUI responsiveness`` section of ``docs/benchmarks.md`` (its other sections come
from ``benchmarks/run.py``, which rewrites the file: ``--section-only`` puts this section back
from ``docs/gui_latency.json`` without measuring again) and writes the raw numbers to
``docs/gui_latency.json``."""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## GUI responsiveness"
TICK_MS = 10
IDLE_S = 3.0


def measure(
    size: int, steps: int, snapshot_every: int, profile: bool = False, keep_snapshots: bool | None = None
) -> dict:
    """One viewer: idle ticks, then ticks during one run and for :data:`AFTER_S` after it (in
    this process). With ``profile``, napari's thread is sampled whenever its timer is late
    (see :class:`StallSampler`). ``keep_snapshots``: the widget's switch (None: its default)."""
    from qtpy.QtCore import QEventLoop, QTimer

    values = {
        "size": size,
        "steps": steps,
        "snapshot_every": snapshot_every,
        "weights": "random",
        "device": "cpu",
    }
    if keep_snapshots is not None:
        values["keep_snapshots"] = keep_snapshots
    viewer, widget = open_widget(values)
    ticks = Ticks()
    timer = QTimer()
    timer.setInterval(TICK_MS)
    timer.timeout.connect(ticks.tick)
    collections = FullCollections()
    sampler = StallSampler(ticks, collections) if profile else None

    timer.start()
    wait(IDLE_S)
    idle_gaps, idle_cpu = ticks.gaps_ms(), ticks.cpu_s()

    ticks.clear()
    # moments napari's thread does our work: Run pressed, each layer added (snapshot, result)
    events: list[tuple[str, float]] = []
    viewer.layers.events.inserted.connect(lambda e: events.append((e.value.name, time.perf_counter())))
    collections.start()
    if sampler is not None:
        sampler.start()
    started, run_cpu = time.perf_counter(), time.thread_time()
    worker = widget.run()
    run_cpu = time.thread_time() - run_cpu
    events.insert(0, ("Run", started))
    first_step: list[float] = []  # the run prepared (torch imported, VGG19 built): its first step

    def note_first_step(update: object) -> None:
        if not first_step and type(update).__name__ == "Started":
            first_step.append(time.perf_counter())

    worker.yielded.connect(note_first_step)
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    loop.exec()
    seconds, ended = time.perf_counter() - started, len(ticks.times)
    wait(AFTER_S)  # what the run left to do later (a garbage collection, say) shows here
    timer.stop()
    collections.stop()
    if sampler is not None:
        sampler.stop()
    status, keep_snapshots = widget["status"].value, widget["keep_snapshots"].value
    viewer.close()
    result = {
        "size": size,
        "steps": steps,
        "snapshot_every": snapshot_every,
        "keep_snapshots": keep_snapshots,
        "run_seconds": round(seconds, 2),
        "status": status,
        "idle": summary(idle_gaps),
        **ticks.run_summary(ended, started, first_step[0] if first_step else None, events[1:]),
        # full garbage collections (any thread) during the run and in the AFTER_S after it
        "full_collections": {
            "run": collections.between(started, started + seconds),
            "after": collections.between(started + seconds, float("inf")),
        },
        "gui_cpu": gui_cpu(ticks, idle_cpu, run_cpu, ended, started, first_step, events[1:]),
    }
    if sampler is not None:
        result["stalls"] = sampler.stalls(events)
    return result


def wait(seconds: float) -> None:
    """Run Qt's event loop for ``seconds``."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def open_widget(values: dict) -> tuple:
    """A viewer with the astronaut and swirl, and the widget docked with ``values`` set."""
    import napari

    from napari_style_transfer._sample_data import load_sample

    viewer = napari.Viewer(show=True)
    content = viewer.add_image(load_sample("astronaut"), name="astronaut", rgb=True)
    style = viewer.add_image(load_sample("swirl"), name="swirl", rgb=True)
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = content, style
    for name, value in values.items():
        widget[name].value = value
    return viewer, widget


def gui_cpu(
    ticks: Ticks,
    idle_cpu: float,
    run_cpu: float,
    ended: int,
    started: float,
    first_step: list[float],
    layers: list[tuple[str, float]],
) -> dict:
    """napari's thread's CPU: idle, over the run, at Run, while the run prepared, per layer added."""
    return {
        "idle_ms_per_s": round(idle_cpu * 1000 / IDLE_S, 2),
        "run_total_s": round(ticks.cpu_s(end=ended) + run_cpu, 3),
        # Run's own work on napari's thread: the press and on to the first tick after it
        "at_run_ms": round((run_cpu + ticks.cpu_to_next_tick(started)) * 1000, 1),
        "preparing_ms": round(ticks.cpu_between(started, first_step[0]) * 1000, 1) if first_step else None,
        "at_layers_ms": [round(ticks.cpu_around(moment) * 1000, 1) for _, moment in layers],
    }


#: Seconds the timer goes on ticking after the run has finished.
AFTER_S = 2.0


class Ticks:
    """The timer's ticks on napari's thread: when each came, and the thread's CPU time then
    (``time.thread_time`` counts only this thread, so it does not grow with the machine's load)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.cpu: list[float] = []

    def tick(self) -> None:
        self.times.append(time.perf_counter())
        self.cpu.append(time.thread_time())

    def clear(self) -> None:
        self.times.clear()
        self.cpu.clear()

    def gaps_ms(self, start: int = 0, end: int | None = None) -> list[float]:
        times = self.times[start:end]
        return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]

    def cpu_s(self, end: int | None = None) -> float:
        cpu = self.cpu[:end]
        return cpu[-1] - cpu[0] if len(cpu) > 1 else 0.0

    def run_summary(
        self, ended: int, started: float, first_step: float | None, layers: list[tuple[str, float]]
    ) -> dict:
        """The gaps of the run (ticks before ``ended``), while it prepared (Run to its first
        step), around each layer added, and after the run."""
        preparing = bisect.bisect_right(self.times, first_step) if first_step is not None else ended
        return {
            "run": summary(self.gaps_ms(end=ended)),
            "preparing": summary(self.gaps_ms(end=preparing + 1)),
            "after": summary(self.gaps_ms(start=max(ended - 1, 0))),
            "gap_at_run_ms": round((self.times[0] - started) * 1000, 1) if self.times else 0.0,
            "gaps_at_layers_added_ms": [gap_around(self.times, moment) for _, moment in layers],
        }

    def cpu_to_next_tick(self, moment: float) -> float:
        """CPU seconds from the tick before ``moment`` to the tick after it (0 if none)."""
        after = bisect.bisect_right(self.times, moment)
        return self.cpu[after] - self.cpu[after - 1] if 0 < after < len(self.times) else 0.0

    def cpu_between(self, start: float, end: float) -> float:
        first = bisect.bisect_left(self.times, start)
        last = min(bisect.bisect_right(self.times, end), len(self.times) - 1)
        return self.cpu[last] - self.cpu[first] if last > first else 0.0

    def cpu_around(self, moment: float) -> float:
        """napari's thread's CPU seconds for an event at ``moment``: from the tick before it
        until the loop ticks on time again (the first gap under twice the interval), at
        most one second on; what the handler, napari's own reactions and the next paint took."""
        after = bisect.bisect_right(self.times, moment)
        if after == 0 or after == len(self.times):
            return 0.0
        end = after
        while (
            end + 1 < len(self.times)
            and self.times[end + 1] - self.times[end] > 2 * TICK_MS / 1000
            and self.times[end] - moment < 1.0
        ):
            end += 1
        return self.cpu[end] - self.cpu[after - 1]


class FullCollections:
    """The garbage collector's full passes (``gc.callbacks``): start, seconds, the thread that
    ran it. Whichever thread runs one holds the GIL throughout, so napari's thread waits."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float, str]] = []
        self._collecting: dict[int, float] = {}

    def start(self) -> None:
        import gc

        gc.callbacks.append(self._collected)

    def stop(self) -> None:
        import gc

        gc.callbacks.remove(self._collected)

    def _collected(self, phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        thread = threading.get_ident()
        if phase == "start":
            self._collecting[thread] = time.perf_counter()
        elif thread in self._collecting:
            began = self._collecting.pop(thread)
            self.seen.append((began, time.perf_counter() - began, threading.current_thread().name))

    def between(self, start: float, end: float) -> dict:
        """How many began between ``start`` and ``end`` (perf_counter s), the longest and all (ms)."""
        ms = [seconds * 1000 for began, seconds, _ in self.seen if start <= began < end]
        return {"count": len(ms), "max_ms": round(max(ms, default=0.0), 1), "total_ms": round(sum(ms), 1)}


#: The sampler looks at napari's thread every this many ms ...
SAMPLE_MS = 5
#: ... and takes its stack when the timer's last tick is older than this.
LATE_MS = 3 * TICK_MS


class StallSampler(threading.Thread):
    """Samples the Python stack of napari's thread (``sys._current_frames``) while its timer
    is late: what napari's thread was doing in each gap. How late the sampler itself woke is
    kept too: a sampler that could not run either points at a thread holding the GIL."""

    def __init__(self, ticks: Ticks, collections: FullCollections):
        super().__init__(daemon=True, name="stall sampler")
        self.ticks = ticks
        self.main = threading.main_thread().ident
        self.samples: list[tuple[float, float, tuple[str, ...]]] = []  # time, own delay ms, stack
        self.done = threading.Event()
        self.collections = collections.seen

    def run(self) -> None:
        expected = time.perf_counter() + SAMPLE_MS / 1000
        while not self.done.wait(SAMPLE_MS / 1000):
            now = time.perf_counter()
            delay_ms = (now - expected) * 1000
            expected = now + SAMPLE_MS / 1000
            last = self.ticks.times[-1] if self.ticks.times else now
            if (now - last) * 1000 < LATE_MS:
                continue
            frame = sys._current_frames().get(self.main)
            stack = []
            while frame is not None:
                code = frame.f_code
                stack.append(f"{_short_path(code.co_filename)}:{frame.f_lineno}:{code.co_name}")
                frame = frame.f_back
            self.samples.append((now, delay_ms, tuple(stack)))

    def stop(self) -> None:
        self.done.set()
        self.join()

    def stalls(self, events: list[tuple[str, float]], longer_than_ms: float = 50.0) -> list[dict]:
        """Each gap longer than ``longer_than_ms``: when (s after Run), how long, the event in
        it (Run, a layer added), napari's thread's CPU in it, and the functions its samples
        were in most (innermost first: *where*; and anywhere on the stack: *within*)."""
        from collections import Counter

        times, cpu = self.ticks.times, self.ticks.cpu
        start = events[0][1] if events else (times[0] if times else 0.0)
        found = []
        for i in range(1, len(times)):
            gap = (times[i] - times[i - 1]) * 1000
            if gap <= longer_than_ms:
                continue
            inside = [s for s in self.samples if times[i - 1] <= s[0] <= times[i]]
            where = Counter(s[2][0] for s in inside if s[2])
            within = Counter(
                name.rsplit(":", 2)[0] + ":" + name.rsplit(":", 1)[1] for s in inside for name in set(s[2])
            )
            found.append(
                {
                    "at_s": round(times[i - 1] - start, 2),
                    "gap_ms": round(gap, 1),
                    "cpu_ms": round((cpu[i] - cpu[i - 1]) * 1000, 1),
                    "events": [name for name, moment in events if times[i - 1] <= moment <= times[i]],
                    "samples": len(inside),
                    "sampler_late_ms": round(max((s[1] for s in inside), default=0.0), 1),
                    "full_collections_ms": [
                        [round(seconds * 1000, 1), thread]
                        for began, seconds, thread in self.collections
                        if times[i - 1] <= began <= times[i]
                    ],
                    "where": where.most_common(6),
                    "within": within.most_common(25),
                }
            )
        return found


def _short_path(path: str) -> str:
    parts = Path(path).parts
    for anchor in ("site-packages", "src", "lib"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return "/".join(parts[-2:])


def gap_around(ticks: list[float], moment: float) -> float:
    """The gap between the ticks either side of ``moment`` (ms): how long napari's thread was
    busy around it. 0 when the moment is outside the ticks."""
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


def measure_in_a_fresh_process(
    size: int, steps: int, snapshot_every: int, keep_snapshots: bool = False
) -> dict:
    command = [sys.executable, __file__, "--measure", str(size), str(steps), str(snapshot_every)]
    command += ["--keep-snapshots"] if keep_snapshots else []
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise SystemExit(f"measurement failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> list[str]:
    lines = [
        "| working size | CPU hogs | run (s) | longest gap, idle | longest gap, run | 99th percentile, run "
        "| gaps > 50 ms | gaps > 100 ms | longest gap, Run to first step | longest gap at a layer added "
        "| longest gap, 2 s after | napari CPU at Run | napari CPU per layer added | layers added "
        "| full GCs in run (longest) | full GCs 2 s after (longest) | load average before |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        run, idle = r["run"], r["idle"]
        cpu = r.get("gui_cpu", {})
        lines.append(
            f"| {r['size']} px, {r['steps']} steps | {r['hogs']} | {r['run_seconds']:.1f} | {idle['max_ms']:.0f} ms "
            f"| {run['max_ms']:.0f} ms | {run['p99_ms']:.0f} ms | {run['over_50_ms']} of {run['ticks'] - 1} "
            f"| {run['over_100_ms']} | {_ms(r.get('preparing', {}).get('max_ms'))} "
            f"| {_ms(max(r.get('gaps_at_layers_added_ms') or [0]))} | {_ms(r.get('after', {}).get('max_ms'))} "
            f"| {_ms(cpu.get('at_run_ms'))} | {_ms_range(cpu.get('at_layers_ms'))} "
            f"| {len(cpu.get('at_layers_ms') or [])} | {_collections(r, 'run')} | {_collections(r, 'after')} "
            f"| {r['load_before']:.1f} |"
        )
    return lines


def _collections(result: dict, when: str) -> str:
    seen = result.get("full_collections", {}).get(when)
    return "-" if seen is None else f"{seen['count']} ({seen['max_ms']:.0f} ms)" if seen["count"] else "0"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _ms_range(values: list[float] | None) -> str:
    if not values:
        return "-"
    return _ms(values[0]) if len(values) == 1 else f"{min(values):.0f}-{max(values):.0f} ms"


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
    parser.add_argument(
        "--profile",
        nargs=3,
        type=int,
        metavar=("SIZE", "STEPS", "SNAPSHOT_EVERY"),
        help="one run, napari's thread sampled in every gap over 50 ms: prints what it was doing",
    )
    parser.add_argument(
        "--keep-snapshots",
        action="store_true",
        help="the widget's 'keep snapshots after the run' on: a layer per snapshot (default: the widget's)",
    )
    parser.add_argument("--measure", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, keep_snapshots=args.keep_snapshots or None)))
        return
    if args.profile:
        print_profile(measure(*args.profile, profile=True, keep_snapshots=args.keep_snapshots or None))
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
                result = measure_in_a_fresh_process(size, steps, snapshot_every, args.keep_snapshots)
            finally:
                stop_hogs(started)
            result.update(hogs=hogs, load_before=load_before, load_after=os.getloadavg()[0])
            print(json.dumps(result), flush=True)
            results.append(result)

    import torch

    saved = {
        "command": "xvfb-run -a python benchmarks/gui_latency.py"
        + (" --quick" if args.quick else "")
        + (" --keep-snapshots" if args.keep_snapshots else ""),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "tick_ms": TICK_MS,
        "idle_s": IDLE_S,
        "results": results,
    }
    args.json.write_text(json.dumps(saved, indent=1) + "\n")
    write_section(args.output, section(saved))
    print(f"wrote {args.output} and {args.json}")


def print_profile(result: dict) -> None:
    """The gaps of a profiled run and what napari's thread was doing in each."""
    print(json.dumps({key: value for key, value in result.items() if key != "stalls"}, indent=1))
    for stall in result["stalls"]:
        events = f" during {', '.join(stall['events'])}" if stall["events"] else ""
        print(
            f"\n{stall['gap_ms']:.0f} ms gap at {stall['at_s']:.2f} s{events}: napari's thread used "
            f"{stall['cpu_ms']:.0f} ms CPU; {stall['samples']} samples (sampler up to {stall['sampler_late_ms']:.0f} ms late)"
        )
        for ms, thread in stall["full_collections_ms"]:
            print(f"   full garbage collection of {ms:.0f} ms in {thread}")
        for name, count in stall["where"]:
            print(f"   where  {count:4d}  {name}")
        for name, count in stall["within"]:
            print(f"   within {count:4d}  {name}")


def section(saved: dict) -> list[str]:
    return [
        SECTION,
        "",
        f"Measured by `{saved['command']}` on {saved['date']} ({saved['machine']}; raw numbers in "
        "[gui_latency.json](gui_latency.json)). A 10 ms timer on napari's GUI thread; a *gap* is the time "
        "between two of its ticks, i.e. how long napari could not react or repaint. *Idle* is the same "
        f"viewer during the {saved['idle_s']:.0f} s before Run. The run is the widget's (CPU, untrained weights, "
        "astronaut and swirl, a snapshot every 5 steps: in the run's one layer, or a layer each with "
        "`--keep-snapshots`); *CPU hogs* are busy-loop processes the "
        "script starts, competing with napari and the run. The load average (1 min, before each "
        "measurement) counts everything else the machine was doing: these figures come from a shared "
        "machine, so they vary from run to run. *Run to first step*: torch imported, weights loaded, VGG19 built "
        "(in the worker). *napari CPU*: the CPU time napari's thread itself spent, from the tick before the "
        "event until the loop ticks on time again; unlike the gaps it does not grow with the machine's load. "
        "*Full GCs*: Python's full garbage collections (any thread; each holds the GIL throughout, so napari "
        "waits for it), counted with `gc.callbacks`.",
        "",
        *table(saved["results"]),
        "",
    ]


if __name__ == "__main__":
    main()
