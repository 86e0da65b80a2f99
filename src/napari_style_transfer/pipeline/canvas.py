"""The canvas an image is optimised on: the image with a free margin around it (issue 32).

VGG19 sees an image's border as an edge (its convolutions pad with zeros), and the style loss
paints a stroke along it: a 1-2 px rim (docs/border_rim.md). On the canvas the image's border
lines are interior, and the rim forms in the margin, which is cut off. The margin starts as the
image mirrored (its content target too) and is then as free as any other pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Pixels of margin on each side. A multiple of 8, the stride of conv4_2 (the content layer),
#: so the content's features keep their grid. With untrained weights 8 brought the rim down as
#: far as 16 did, and 4 left part of it (docs/border_rim.md). Costs (1 + 16/size)^2 in pixels:
#: +6% at 512 px, +13% at 256.
MARGIN = 8

#: The margin of a time series' later frames: None carries the previous frame's whole canvas,
#: margin included, along the flow (issue 33); a number gives them a canvas of their own with
#: that margin (0: none), mirrored afresh from their start.
LATER_FRAME_MARGIN: int | None = None

#: Whether a later frame's temporal term holds its margin too. Free, the static pixels of a
#: small frame drift (a margin of a quarter of the canvas or more shifts the whole canvas's
#: style statistics), and at 160 px the smeared windows fell on four sequences but rose on the
#: crossing discs (34% to 47%): held (docs/timelapse.md).
HOLD_MARGIN = True


@dataclass(frozen=True)
class Canvas:
    """The margin around images of one shape; reflection needs a margin under the image's side."""

    margin: int

    @classmethod
    def around(cls, shape: tuple[int, int], later_frame: bool = False) -> Canvas:
        """The canvas of (H, W) images: :data:`MARGIN`, less for images of 8 px or fewer (a
        time series' ``later_frame``: :data:`LATER_FRAME_MARGIN` where set)."""
        margin = MARGIN if not later_frame or LATER_FRAME_MARGIN is None else LATER_FRAME_MARGIN
        return cls(min(margin, min(shape) - 1))

    def shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(H, W) of the canvas of an (H, W) image."""
        return shape[0] + 2 * self.margin, shape[1] + 2 * self.margin

    def pad(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images mirrored into the margin (the edge line not repeated)."""
        if not self.margin:
            return images
        return F.pad(images, (self.margin,) * 4, mode="reflect")

    def pad_labels(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) region labels mirrored as :meth:`pad` mirrors the image."""
        return np.pad(labels, self.margin, mode="reflect") if self.margin else labels

    def fit(self, canvases: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """(N, C, H', W') canvases of (H, W) images with another margin, on this canvas instead
        (their own inside, mirrored into this margin)."""
        top, left = (canvases.shape[-2] - shape[0]) // 2, (canvases.shape[-1] - shape[1]) // 2
        return self.pad(canvases[..., top : top + shape[0], left : left + shape[1]])

    def image_mask(self, canvases: torch.Tensor) -> torch.Tensor:
        """(N, 1, H', W') float: 1 on the image, 0 in the margin of ``canvases``."""
        mask = torch.zeros_like(canvases[:, :1])
        self.crop(mask).fill_(1.0)
        return mask

    def crop(self, images: torch.Tensor) -> torch.Tensor:
        """The images on (N, C, H', W') canvases without the margin (a view)."""
        m = self.margin
        return images[..., m : images.shape[-2] - m, m : images.shape[-1] - m]
