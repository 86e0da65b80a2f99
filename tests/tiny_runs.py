"""Settings of the tiny runs the tests make: 32 px, a few steps, untrained weights.

Untrained weights exercise the mechanics (shapes, losses falling, files, threads) and say
nothing about the quality of a result.
"""

from __future__ import annotations

from typing import Any


def tiny_options(steps: int = 3, size: int = 32, **more: Any) -> dict[str, Any]:
    """Keyword options of a tiny ``stylize`` run without snapshots; ``more`` adds or overrides."""
    return {"size": size, "steps": steps, "weights": "random", "snapshot_every": 0, **more}


def tiny_args(steps: int = 2, size: int = 32) -> list[str]:
    """Command-line flags of a tiny, quiet run."""
    return ["--size", str(size), "--steps", str(steps), "--weights", "random", "--quiet"]


def objective_for(content: Any, style: Any, **options: Any) -> Any:
    """A StyleObjective on untrained weights for ``content`` (a (1, 3, H, W) tensor or None) and
    ``style`` (a tensor, array or list of them); ``options`` are StyleOptions fields."""
    from napari_style_transfer.engine import StyleObjective
    from napari_style_transfer.options import StyleOptions
    from napari_style_transfer.vgg import VGGFeatures
    from napari_style_transfer.weights import load_vgg19_features

    opts = StyleOptions(**{"weights": "random", **options}).validated()
    extractor = VGGFeatures(load_vgg19_features("random").features, opts.layers, opts.pooling)
    return StyleObjective(extractor, content, style, opts)
