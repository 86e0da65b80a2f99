"""A full-resolution run filling in, seen in napari: widget_full_resolution_filling.png.

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_filling_screenshot.py [--weights random]

In a 1280 x 800 window: the astronaut (512 x 512) styled with the swirl at full resolution in
tiles of 128 (the composition at 128 px, 4 tiles at 256, 16 at 512: 21 jobs). The run is
stopped after ``--stop-at`` jobs and the window taken, zoomed in to full resolution where
row 1's finished tiles meet unfinished ones (left half of the PNG: finished tiles sharp,
the rest the 256 px level enlarged), then a second run resumes the store to the end and the
same view is taken again (right half). Both side by side, at 3/4 size.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "images" / "widget_full_resolution_filling.png")
    parser.add_argument("--weights", default="random")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--stop-at", type=int, default=12, help="jobs done when the first picture is taken")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        middle, end = screenshots(args, Path(folder) / "astronaut styled.ome.zarr")
    side_by_side(middle, end, args.out)
    print("wrote", args.out)


def screenshots(args: argparse.Namespace, store: Path) -> tuple[np.ndarray, np.ndarray]:
    import napari
    from make_screenshots import demo_viewer  # this folder's sibling script
    from qtpy.QtCore import QEventLoop, Qt, QTimer

    from napari_style_transfer._napari.worker import TileDone

    viewer, widget = demo_viewer(args.steps, 128, args.weights)
    widget["full_resolution"].value = True
    widget["tile_size"].value = 128
    widget["store"].value = store
    viewer.layers["swirl"].visible = False

    def run(stop_at: int | None = None) -> np.ndarray:
        worker = widget.run()
        if stop_at is not None:

            def stop(update) -> None:
                if isinstance(update, TileDone) and update.done == stop_at:
                    worker.cancel_event.set()

            worker.yielded.connect(stop, Qt.ConnectionType.DirectConnection)
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        QTimer.singleShot(900_000, loop.quit)  # never hang the docs build
        loop.exec()
        app = napari.qt.get_qapp()
        app.processEvents()
        # zoomed in (full resolution is shown) where finished tiles of row 1 meet unfinished ones
        viewer.camera.center = (256, 384)
        viewer.camera.zoom = 2.0
        app.processEvents()
        return viewer.screenshot(canvas_only=False)

    middle = run(args.stop_at)
    end = run()
    viewer.close()
    return middle, end


def side_by_side(left: np.ndarray, right: np.ndarray, out: Path) -> None:
    from PIL import Image

    gap = np.full((left.shape[0], 16, left.shape[2]), 255, np.uint8)
    both = Image.fromarray(np.concatenate([left, gap, right], axis=1))
    smaller = both.resize((both.width * 3 // 4, both.height * 3 // 4), Image.Resampling.LANCZOS)
    smaller.quantize(256).save(out, optimize=True)  # a third of the bytes, no visible change


if __name__ == "__main__":
    main()
