"""Import torchvision without triton.

Importing torchvision pulls in ``torch._dynamo``, which imports triton when it is installed.
Triton bundles its own LLVM, which clashes with Mesa's software OpenGL: inside a running
napari (whose OpenGL context already exists) that import segfaults. Eager PyTorch never needs
triton, so unless triton is already loaded we mark it as absent before torchvision is
imported. Set ``NAPARI_STYLE_TRANSFER_ALLOW_TRITON=1`` to keep triton importable (for
``torch.compile`` in the same process, on machines without Mesa).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType


def hide_triton() -> bool:
    """Make ``import triton`` fail and ``find_spec('triton')`` return None; True if hidden."""
    if os.environ.get("NAPARI_STYLE_TRANSFER_ALLOW_TRITON") == "1" or "triton" in sys.modules:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    return True


def import_torchvision() -> ModuleType:
    hide_triton()
    import torchvision

    return torchvision
