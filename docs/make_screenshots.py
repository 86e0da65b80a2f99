"""Screenshots of napari with the Style Transfer widget, before and after a run.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_screenshots.py [--weights random] [--out docs/images] [--only styles]

In a 1280 x 800 window (the X screen must be larger: -screen above). Opens the astronaut +
swirl demo pair, docks the widget, takes a screenshot (controls that do nothing for a 2D RGB
content are disabled), three more with every group open (widget_groups_1..3.png, scrolled
from top to bottom, and their docks side by side in widget_groups.png), runs a short transfer (its snapshots shown in the run's one layer),
then a second, shorter run with a stronger style weight and its snapshots folded away, and
takes the last screenshot when it has finished: the second result is named for what
changed, and the status line names it. Then (or with ``--only styles``, alone) the widget
with three styles, one row each (widget_styles.png).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument(
        "--only", choices=("runs", "styles"), help="only the run screenshots, or only the styles one"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only != "styles":
        runs(args)
    if args.only != "runs":
        styles(args.out)


def styles(out: Path) -> None:
    """The widget with three styles: each row's layer, blend weight and style scale."""
    import napari

    from napari_style_transfer._sample_data import layer_data

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    for key in ("he_stain", "mosaic", "swirl", "chelsea"):
        data, kwargs, _ = layer_data(key)
        viewer.add_image(data, **kwargs, visible=key == "chelsea")
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value = viewer.layers["chelsea"]
    widget["style"].value = viewer.layers["swirl"]
    widget.add_style(viewer.layers["mosaic"], weight=2.0)
    widget.add_style(viewer.layers["he_stain"], weight=0.5, scale=0.5)
    widget["style_loss"].value = "mean_cov"
    from qtpy.QtTest import QTest

    QTest.qWait(300)  # the dock's layout settles over several events after rows are added
    viewer.screenshot(str(out / "widget_styles.png"), canvas_only=False)
    viewer.close()


def demo_viewer(steps: int, size: int, weights: str) -> tuple:
    """A 1280 x 800 viewer with the astronaut + swirl pair and the dock set for a run:
    (viewer, widget)."""
    import napari

    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1280, 800)
    viewer.open_sample("napari-style-transfer", "astronaut_swirl")
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value = viewer.layers["astronaut"]
    widget["style"].value = viewer.layers["swirl"]
    widget["steps"].value = steps
    widget["size"].value = size
    widget["weights"].value = weights
    return viewer, widget


def runs(args: argparse.Namespace) -> None:
    """The widget before, during and after two runs of the astronaut + swirl pair."""
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    viewer, widget = demo_viewer(args.steps, args.size, args.weights)
    widget["snapshot_every"].value = args.steps // 3
    viewer.layers["swirl"].visible = False

    napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(args.out / "widget_before.png"), canvas_only=False)
    groups(viewer, widget, args.out)
    worker = widget.run()
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    QTimer.singleShot(600_000, loop.quit)  # never hang the docs build
    mid = []

    def grab_midway(update) -> None:
        if not mid and getattr(update, "step", 0) >= args.steps // 2 and hasattr(update, "total_loss"):
            viewer.reset_view()
            mid.append(viewer.screenshot(str(args.out / "widget_running.png"), canvas_only=False))

    worker.yielded.connect(grab_midway)
    loop.exec()

    # a second run with other settings: its name says what changed
    widget["steps"].value = max(1, args.steps // 2)
    widget["style_weight"].value = 1e7
    widget["keep_snapshots"].value = False
    worker = widget.run()
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    QTimer.singleShot(600_000, loop.quit)
    loop.exec()
    napari.qt.get_qapp().processEvents()
    second = viewer.layers[-1]  # the second run's result (its snapshots were folded away)
    for layer in viewer.layers:
        layer.visible = layer is second
    viewer.layers.selection.active = second
    viewer.reset_view()
    napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(args.out / "widget_after.png"), canvas_only=False)
    print("wrote", *sorted(p.name for p in args.out.glob("widget_*.png")))
    viewer.close()


def groups(viewer, widget, out: Path) -> None:
    """The widget with every group open, scrolled from top to bottom (widget_groups_N.png)."""
    import napari
    from qtpy.QtWidgets import QScrollArea

    for group in widget.groups.values():
        group.expand(animate=False)
    area = widget.native.findChild(QScrollArea)
    napari.qt.get_qapp().processEvents()
    bar = area.verticalScrollBar()
    for number, position in enumerate((0, bar.maximum() // 2, bar.maximum()), start=1):
        bar.setValue(position)
        napari.qt.get_qapp().processEvents()
        viewer.screenshot(str(out / f"widget_groups_{number}.png"), canvas_only=False)
    for group in widget.groups.values():
        group.collapse(animate=False)
    bar.setValue(0)
    dock_strips(out)


def dock_strips(out: Path, dock_left: int = 985) -> None:
    """The three screenshots' docks side by side (widget_groups.png): the whole widget in one
    picture, without the canvas repeated three times."""
    from PIL import Image

    shots = [Image.open(out / f"widget_groups_{number}.png") for number in (1, 2, 3)]
    strips = [shot.crop((dock_left, 0, shot.width, shot.height)) for shot in shots]
    sheet = Image.new("RGB", (sum(strip.width for strip in strips), strips[0].height), "white")
    for number, strip in enumerate(strips):
        sheet.paste(strip, (number * strip.width, 0))
    sheet.save(out / "widget_groups.png", optimize=True)


if __name__ == "__main__":
    main()
