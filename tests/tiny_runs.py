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
