"""How a 2D ``stylize`` travels through the package: modules entered and cross-module calls.

Traces one small run (untrained weights) with ``sys.setprofile`` and counts the calls from a
function of one package module into a function of another, in all and per optimiser step,
for the architecture notes (docs/architecture.md). Run it twice with different step counts
and the difference divided by the steps is the per-step figure::

    python benchmarks/crossings.py
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

PACKAGE = "napari_style_transfer"


def trace_run(steps: int, weights: str) -> tuple[set[str], Counter]:
    """The package modules a run of ``steps`` steps enters, and its cross-module calls by pair."""
    from napari_style_transfer import stylize

    content = (np.random.default_rng(0).random((48, 48, 3)) * 255).astype(np.uint8)
    style = np.random.default_rng(1).random((48, 48, 3)).astype(np.float32)
    modules: set[str] = set()
    crossings: Counter = Counter()

    def profile(frame, event, arg):
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back else ""
        if not callee.startswith(PACKAGE):
            return
        modules.add(callee)
        if caller.startswith(PACKAGE) and caller != callee:
            crossings[(caller, callee)] += 1

    sys.setprofile(profile)
    try:
        stylize(content, style, steps=steps, size=48, weights=weights, snapshot_every=0, schedule="none")
    finally:
        sys.setprofile(None)
    return modules, crossings


def main() -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    import torch
    from compare_results import write_weights

    torch.set_num_threads(1)
    weights = write_weights(Path(tempfile.gettempdir()) / "nst_untrained_vgg19.pth")
    trace_run(1, weights)  # imports and first-call work out of the way
    few_modules, few = trace_run(3, weights)
    many_modules, many = trace_run(13, weights)
    print(f"modules entered by one 2D run: {len(many_modules)}")
    for name in sorted(many_modules):
        print(f"  {name}")
    print(f"cross-module calls, 3 steps: {sum(few.values())}; 13 steps: {sum(many.values())}")
    print(f"cross-module calls per step: {(sum(many.values()) - sum(few.values())) / 10:.1f}")
    per_step = many - few
    for (caller, callee), count in per_step.most_common(10):
        print(f"  {count / 10:6.1f}/step  {caller} -> {callee}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
