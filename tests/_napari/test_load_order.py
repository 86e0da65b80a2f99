"""The plugin inside a running napari: the viewer (and its OpenGL context) exists first.

Importing torchvision after napari has made its OpenGL context segfaults under Mesa when
triton gets loaded. A fresh process reproduces the order napari uses: window first, plugin
later. A segfault shows as a negative return code.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari
    from qtpy.QtCore import QEventLoop, QTimer

    viewer = napari.Viewer(show=True)
    viewer.add_image(np.random.default_rng(0).random((40, 48, 3)), name="content", rgb=True)
    viewer.add_image(np.random.default_rng(1).random((36, 36, 3)), name="style", rgb=True)
    napari.qt.get_qapp().processEvents()
    assert "torch" not in sys.modules, "torch was imported before the plugin was used"

    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    assert "torch" not in sys.modules, "opening the widget imported torch"
    widget["content"].value = viewer.layers["content"]
    widget["style"].value = viewer.layers["style"]
    widget["size"].value, widget["steps"].value = 32, 3
    widget["weights"].value = "random"

    # L-BFGS first, then Adam: torch.optim's Adam imports torch._dynamo, the path to triton
    for optimizer in ("lbfgs", "adam"):
        widget["optimizer"].value = optimizer
        worker = widget.run()
        loop = QEventLoop()
        worker.finished.connect(loop.quit)
        QTimer.singleShot(900_000, loop.quit)
        loop.exec()
        assert "content styled" in viewer.layers, [layer.name for layer in viewer.layers]
        viewer.layers.remove("content styled")
    assert "torch._dynamo" in sys.modules
    viewer.close()
    print("ok")
    """
)


def test_a_run_in_a_viewer_that_exists_before_the_plugin_loads(tmp_path):
    if sys.platform.startswith("linux"):  # macOS and Windows need no X server
        assert os.environ.get("DISPLAY"), "pytest-xvfb should provide an X display"
    script = tmp_path / "viewer_first.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=1800
    )  # two runs; see RUN_WAIT_MS
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert result.stdout.strip().endswith("ok")
