"""Neural style transfer (Gatys et al., CVPR 2016) for napari and plain Python.

``stylize`` and ``iter_stylize`` take numpy arrays; torch is imported only when they (or the
other engine names) are first used, so that loading the napari plugin stays fast.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .errors import OutOfMemoryError, StyleTransferError, WeightsError
from .options import StyleOptions

try:  # the installed distribution's version, which hatch-vcs takes from the git tag
    __version__ = version("napari-style-transfer")
except PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

_LAZY = {
    "stylize": "api",
    "iter_stylize": "api",
    "stylize_batch": "batch",
    "StepRecord": "api",
    "StyleResult": "api",
    "Losses": "engine",
    "load_vgg19_features": "weights",
    "VGGFeatures": "vgg",
    "gram_matrix": "losses",
    "run_style_transfer": "_napari.run",
}

__all__ = [
    "OutOfMemoryError",
    "StyleOptions",
    "StyleTransferError",
    "WeightsError",
    "__version__",
    *_LAZY,
]

if TYPE_CHECKING:  # pragma: no cover
    from ._napari.run import run_style_transfer
    from .api import StepRecord, StyleResult, iter_stylize, stylize
    from .batch import stylize_batch
    from .engine import Losses
    from .losses import gram_matrix
    from .vgg import VGGFeatures
    from .weights import load_vgg19_features


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
