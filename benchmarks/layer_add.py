"""What adding a result layer costs napari's thread, against giving an existing layer new data.

    xvfb-run -a python benchmarks/layer_add.py              # 64 and 512 px, CPU ms per add / per new data
    xvfb-run -a python benchmarks/layer_add.py --profile 64 # cProfile of one add (thread CPU), top functions

A viewer like the widget's (astronaut and swirl, the dock open) gets float32 RGB layers the
way a run adds them (contrast limits, scale, translate, metadata given), then one of them
new data. Times are ``time.thread_time`` of napari's thread: the call itself, then the
events and the paint that follow it (what a user waits for), which the machine's load
changes little. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections.abc import Callable
from functools import partial

import numpy as np

#: Layers added (and data given) per size; the first add of a process also compiles shaders.
REPEATS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--profile", type=int, metavar="SIZE", help="profile one add at SIZE px instead")
    args = parser.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    from napari_style_transfer._sample_data import load_sample

    viewer = napari.Viewer(show=True)
    viewer.add_image(load_sample("astronaut"), name="astronaut", rgb=True)
    viewer.add_image(load_sample("swirl"), name="swirl", rgb=True)
    viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    app = QApplication.instance()
    rng = np.random.default_rng(0)

    def settle(rounds: int = 5) -> None:
        for _ in range(rounds):
            app.processEvents()
            time.sleep(0.01)

    def add(size: int, number: int) -> object:
        image = rng.random((size, size, 3), dtype=np.float32)
        return viewer.add_image(
            image,
            name=f"styled {size} ({number})",
            rgb=True,
            contrast_limits=(0.0, 1.0),
            scale=(512 / size, 512 / size),
            metadata={"style_transfer": {"step": number}},
        )

    def cpu_ms(action: Callable[[], object]) -> tuple[float, float]:
        """CPU ms of napari's thread in ``action()``, then in the events and paint after it."""
        start = time.thread_time()
        action()
        middle = time.thread_time()
        settle()
        return (middle - start) * 1000, (time.thread_time() - middle) * 1000

    def measure(size: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """CPU ms of each add at ``size``, then of each new data for the last layer added."""
        added: list[object] = []
        adds = [cpu_ms(partial(lambda n: added.append(add(size, n)), number)) for number in range(REPEATS)]
        layer = added[-1]
        new_data = [
            cpu_ms(lambda: setattr(layer, "data", rng.random((size, size, 3), dtype=np.float32)))
            for _ in range(REPEATS)
        ]
        return adds, new_data

    settle(50)
    if args.profile:
        add(args.profile, 0)
        settle()
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        add(args.profile, 1)
        settle()
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
        print(text.getvalue())
        viewer.close()
        return

    print("| size | first add (call + paint) | later adds (call + paint) | new data (call + paint) |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        adds, new_data = measure(size)
        first, later = adds[0], adds[1:]
        print(
            f"| {size} px | {first[0]:.0f} + {first[1]:.0f} ms | {_range(later)} | {_range(new_data)} |",
            flush=True,
        )
    viewer.close()


def _range(times: list[tuple[float, float]]) -> str:
    calls, paints = [call for call, _ in times], [paint for _, paint in times]
    return f"{min(calls):.0f}-{max(calls):.0f} + {min(paints):.0f}-{max(paints):.0f} ms"


if __name__ == "__main__":
    main()
