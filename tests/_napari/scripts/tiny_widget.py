"""For the scripts beside it (run in a fresh process): a viewer with two small random layers
and the plugin's dock widget set for a tiny run."""

from __future__ import annotations

from typing import Any

import numpy as np


def tiny_widget(**options: Any) -> tuple[Any, Any]:
    """A hidden viewer and its Style Transfer widget, content and style chosen, ``options`` set."""
    import napari

    viewer = napari.Viewer(show=False)
    rng = np.random.default_rng(0)
    content = viewer.add_image(rng.random((40, 48, 3)).astype(np.float32), rgb=True, name="content")
    style = viewer.add_image(rng.random((36, 36, 3)).astype(np.float32), rgb=True, name="style")
    _, widget = viewer.window.add_plugin_dock_widget("napari-style-transfer", "Style Transfer")
    widget["content"].value, widget["style"].value = content, style
    for name, value in {"size": 32, "weights": "random", **options}.items():
        widget[name].value = value
    return viewer, widget
