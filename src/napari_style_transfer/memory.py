"""How much memory a run needs, and whether the device has it (checked before starting).

The model is linear in the working image's pixels; its constants were measured on the CPU in
float32 (``benchmarks/`` reports the measurements): about 3.6 kB a pixel for VGG19's
activations, gradients and the loss terms up to conv5_1, plus 24 bytes a pixel for each
L-BFGS curvature pair, plus a fixed part for the network's weights and buffers.
"""

from __future__ import annotations

import math

#: Bytes a working pixel for forward + backward through VGG19 (measured, rounded up).
ACTIVATION_BYTES_PER_PIXEL = 4_000
#: Bytes a pixel for one L-BFGS curvature pair (two float32 RGB images).
LBFGS_PAIR_BYTES_PER_PIXEL = 24
#: Weights (80 MB up to conv5_4), workspace and the images themselves.
FIXED_BYTES = 300 * 2**20
#: Keep this share of the free memory in reserve.
HEADROOM = 0.9


def bytes_per_pixel(optimizer: str, history: int) -> int:
    pairs = history if optimizer == "lbfgs" else 2  # Adam keeps two moment images
    return ACTIVATION_BYTES_PER_PIXEL + LBFGS_PAIR_BYTES_PER_PIXEL * pairs


def estimate_bytes(shape: tuple[int, int], optimizer: str, history: int) -> int:
    """Peak bytes for a run whose working image is ``shape`` (H, W)."""
    return FIXED_BYTES + shape[0] * shape[1] * bytes_per_pixel(optimizer, history)


def largest_pixels(free_bytes: float, optimizer: str, history: int) -> float:
    """The most working pixels a run can have in ``free_bytes`` (0 or less: none fit)."""
    return (free_bytes * HEADROOM - FIXED_BYTES) / bytes_per_pixel(optimizer, history)


def largest_size(free_bytes: float, aspect: float, optimizer: str, history: int) -> int:
    """The largest ``size`` (longest side, a multiple of 16) that fits in ``free_bytes``.

    ``aspect`` is the shorter side over the longer one."""
    pixels = largest_pixels(free_bytes, optimizer, history)
    if pixels <= 0:
        return 0
    return int(math.sqrt(pixels / aspect)) // 16 * 16


def format_bytes(count: float) -> str:
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"
