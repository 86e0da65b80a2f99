"""A time series' backdrop: the styling each pixel had when it was last seen still, taken
back where an object uncovers it (Ruder, Dosovitskiy & Brox's long-term consistency, 2016,
section 3.3, for the background only).

The background a moving object uncovers was seen before it passed, styled and held. Started
from styling copied from nearby (frames.fill_styling) it got a seam at each frame's trailing
edge, and the next frame's copy copied the last one's seams: a comb of arcs along the path
(issue 33). Held to what it was, the background comes back as it was styled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..frames import FrameLink, stays_in_place

#: Uncovered content taken back only where it is within this (values in [0, 1], any channel)
#: of what was there when it was last seen still, as frames.UNCOVERED_CHANGE. Crossing discs at
#: 160 px, worst smeared frame: 22.4% (39.1% without a backdrop); a first version measured
#: 22.5% at 0.05 and 22.6% at 0.1.
SAME_CONTENT = 0.05
#: Which pixels are taken back: "uncovered" (FrameLink.uncovered), "fresh" (any pixel that
#: would start afresh: benchmarks/timelapse_canvas.py's "shippedrecallfresh") or "" (none:
#: the code of session 25, "shippedforget").
RECALL = "uncovered"


@dataclass
class Backdrop:
    """``styled`` (1, C, H, W): each pixel's held target where it was last held while staying
    in place, for ``content`` (1, 3, H, W), the frame's content there then; ``seen`` (1, 1,
    H, W) bool, where either is set. On a later frame's canvas."""

    styled: torch.Tensor
    content: torch.Tensor
    seen: torch.Tensor
    #: (1, 1, H, W), 1 where the last frame's pixels were taken back (see recall): the next
    #: frame follows them as held, owing no steps (TimeChains.keep)
    recalled: torch.Tensor

    @classmethod
    def empty(cls, target: torch.Tensor, content: torch.Tensor) -> Backdrop:
        plane = target[:, :1]
        return cls(
            torch.zeros_like(target),
            torch.zeros_like(content),
            torch.zeros_like(plane, dtype=torch.bool),
            torch.zeros_like(plane),
        )

    def recall(
        self, link: FrameLink, target: torch.Tensor, hold: torch.Tensor
    ) -> tuple[FrameLink, torch.Tensor, torch.Tensor]:
        """A frame's ``link``, temporal ``target`` and ``hold`` with the uncovered pixels whose
        content is as it was when they were last seen still held to their styling then: held,
        reliable, neither fresh nor restyled, and (TimeChains.keep) anchored, owing no steps."""
        same = (link.content - self.content).abs().amax(dim=1, keepdim=True) <= SAME_CONTENT
        back = ((getattr(link, RECALL) > 0) & self.seen & same).to(hold.dtype)
        self.recalled = back
        target = target + back * (self.styled - target)
        kept = 1.0 - back
        link = replace(
            link,
            reliable=torch.maximum(link.reliable, back),
            fresh=link.fresh * kept,
            restyled=link.restyled * kept,
            uncovered=link.uncovered * kept,
        )
        return link, target, torch.maximum(hold, back)

    def remember(self, link: FrameLink, target: torch.Tensor, hold: torch.Tensor) -> None:
        """Keep the held ``target`` of the pixels of a frame that stay in place."""
        kept = (hold > 0) & stays_in_place(link.flow)
        self.styled = torch.where(kept, target, self.styled)
        self.content = torch.where(kept, link.content.to(self.content.dtype), self.content)
        self.seen = self.seen | kept
