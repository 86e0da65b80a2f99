"""The objective of an optimisation: the weighted sum of the loss parts (``losses/``) at the
activations of the network."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from .losses import (  # noqa: E402
    STYLE_LOSS_REGISTRY,
    ContentLoss,
    RegionGuide,
    StyleLoss,
    TemporalLoss,
    TotalVariationLoss,
)
from .options import VGG19_LAYERS, StyleOptions  # noqa: E402
from .speed_probe import memory_format  # noqa: E402
from .vgg import VGGFeatures  # noqa: E402


class StyleObjective(nn.Module):
    """The loss of the paper: content_weight * L_content + style_weight * L_style (+ TV),
    plus temporal_weight * L_temporal for a time series' later frames (:meth:`set_temporal`).

    L_content is :class:`~napari_style_transfer.losses.ContentLoss` over ``content_layers``;
    L_style is the ``style_loss`` option's :class:`~napari_style_transfer.losses.StyleLoss`
    summed over ``style_layers`` (each times its ``style_layer_weights``) and times the loss's
    ``scale``. Several styles compare with their blended statistics; regions
    (:meth:`set_regions`) with their own style's statistics, over their positions. L_temporal
    is :class:`~napari_style_transfer.losses.TemporalLoss`. With ``compute_dtype`` bfloat16
    the convolutions run under autocast; activations are cast to float32 before the losses.
    """

    def __init__(
        self,
        extractor: VGGFeatures,
        content: torch.Tensor | None,
        style: torch.Tensor | Sequence[torch.Tensor],
        options: StyleOptions,
        compute_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        styles = [style] if isinstance(style, torch.Tensor) else list(style)
        self.extractor = extractor
        self.content_layers = options.content_layers
        self.style_layers = options.style_layers
        self.content_weight = options.content_weight
        self.style_weight = options.style_weight
        self.tv_weight = options.tv_weight
        self.temporal_weight = options.temporal_weight
        self.compute_dtype = compute_dtype
        device = styles[0].device if content is None else content.device
        self.memory_format = memory_format(options.channels_last, device, compute_dtype)
        self.layer_weights = dict(zip(self.style_layers, options.layer_weights, strict=True))
        # a style of weight 0 takes no part, so a blend of 1:0 is the first style's run exactly
        self.blend = [(index, weight) for index, weight in enumerate(options.blend(len(styles))) if weight]
        with torch.no_grad():
            deepest_style = _deepest(self.style_layers)
            style_features = (
                [self.features(image, deepest_style) for image in styles] if self.style_layers else []
            )
            self.style_loss: StyleLoss = STYLE_LOSS_REGISTRY[options.style_loss](
                style_features, self.style_layers, options.seed
            )
            # statistics of the blend (for the whole image) and of each style alone (for its region)
            self.style_targets = self.style_loss.targets(self.blend)
        self._targets_from_image = False  # set_style_statistics took them from an image
        self._region_targets: dict[int, dict[str, Any]] = {}
        self.regions: RegionGuide | None = None
        self.temporal: TemporalLoss | None = None
        self.total_variation = TotalVariationLoss()
        self.content_loss = ContentLoss({})
        if content is not None:  # None: the caller sets each job's content (no forward here)
            self.set_content(content)

    def features(self, image: torch.Tensor, deepest: str | None = None) -> dict[str, torch.Tensor]:
        """Activations of the layers in use (up to ``deepest`` if given), as float32."""
        image = image.contiguous(memory_format=self.memory_format)
        with torch.autocast(
            image.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32
        ):
            features = self.extractor(image, deepest)
        return {name: value.float() for name, value in features.items()}

    @torch.no_grad()
    def content_features(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        """The content layers' activations of ``content`` (N, 3, H, W): the network runs only
        down to the deepest content layer (conv4_2 of conv5_1's depth: a quarter of the
        convolutions' work saved, paid once per tile of a full-resolution run)."""
        if not self.content_layers:
            return {}
        features = self.features(content, _deepest(self.content_layers))
        return {name: features[name] for name in self.content_layers}

    def set_content(self, content: torch.Tensor) -> None:
        """Compare with another content image (the next frame of a stack) from now on."""
        self.content_loss = ContentLoss(self.content_features(content))

    @property
    def content_targets(self) -> dict[str, torch.Tensor]:
        """The content's activations by content layer."""
        return self.content_loss.targets

    def set_regions(self, labels: torch.Tensor | None) -> None:
        """Give label k >= 1 the k-th style and label 0 none, from now on; ``labels`` is
        (N, 1, H, W) integers at the image's size (N = 1 for all images alike), or None for
        the whole image in the blend of the styles."""
        self.regions = None if labels is None else RegionGuide(labels)

    def region_targets(self, label: int) -> dict[str, Any]:
        """Per style layer, the statistics of style ``label`` - 1 alone (region ``label``'s)."""
        if label not in self._region_targets:
            with torch.no_grad():
                self._region_targets[label] = self.style_loss.targets([(label - 1, 1.0)])
        return self._region_targets[label]

    def new_directions(self) -> None:
        """Start an optimiser step: the sliced loss draws its random projections afresh (once
        per step: the same directions within a step keep L-BFGS's line search on one function)."""
        self.style_loss.start_step()

    def set_style_statistics(self, image: torch.Tensor | None, held: torch.Tensor | None = None) -> None:
        """Compare with the style statistics of ``image`` (1, 3, H, W) from now on, over the
        pixels where ``held`` (1, 1, H, W, 0 or 1; None: all of them) is 1, or with the styles'
        (``image`` None). A time series' later frame, mostly held to the previous result, takes
        that result's: against the styles', the few free pixels took on all of the frame's
        remaining style error (issue 33). Each layer counts the positions that lie wholly in
        ``held`` downsampled to its size (all of them where fewer than 16 do)."""
        with torch.no_grad():
            if image is None:
                if self._targets_from_image:
                    self.style_targets = self.style_loss.targets(self.blend)
                    self._targets_from_image = False
                return
            self._targets_from_image = True
            features = self.features(image, _deepest(self.style_layers))
            if held is not None:
                features = {name: _positions_within(features[name], held) for name in self.style_layers}
            self.style_targets = self.style_loss.targets_of(features)

    def set_temporal(self, target: torch.Tensor | None, reliable: torch.Tensor | None = None) -> None:
        """Keep the image near ``target`` (N, 3, H, W) where ``reliable`` (N, 1, H, W, 0..1) is
        high, from now on; None turns the temporal term off (a stack's first frame)."""
        if target is None:
            self.temporal = None
            return
        if reliable is None:
            raise ValueError("a temporal target needs its reliable pixels")
        self.temporal = TemporalLoss(target, reliable)

    def temporal_curvature(self, image: torch.Tensor) -> torch.Tensor | None:
        """The temporal term's second derivative per value of ``image`` (its weight times
        2 reliable / the number of values, as the loss is a mean), (N, 1, H, W) to broadcast
        over the channels, or None without one: the optimiser's starting Hessian takes it in
        (lbfgs.BoxLBFGS)."""
        if self.temporal is None or not self.temporal_weight:
            return None
        return self.temporal.curvature(image, self.temporal_weight)

    def _style(self, features: dict[str, torch.Tensor], zero: torch.Tensor) -> torch.Tensor:
        """L_style: the style loss of each style layer times its weight, summed."""
        total = zero
        for name in self.style_layers:
            loss = self._layer_style(name, features[name])
            weight = self.layer_weights[name]
            total = total + (loss if weight == 1.0 else weight * loss)
        return total

    def _layer_style(self, name: str, features: torch.Tensor) -> torch.Tensor:
        if self.regions is None:
            return self.style_loss(name, features, self.style_targets[name])
        return self.regions(
            features,
            lambda label, guide: self.style_loss(name, features, self.region_targets(label)[name], guide),
        )

    def forward(
        self,
        image: torch.Tensor,
        features: dict[str, torch.Tensor] | None = None,
        content_targets: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the total loss (a scalar to differentiate) and the weighted terms
        stacked as [content, style, tv, temporal], for reporting. A frame of a batch that
        went through the network together (:func:`~napari_style_transfer.engine.optimize_frames`)
        brings its slice of the batch's ``features`` and its own ``content_targets``."""
        features = self.features(image) if features is None else features
        targets = self.content_loss.targets if content_targets is None else content_targets
        zero = image.new_zeros((), dtype=torch.float32)
        content = self.content_loss(features, targets) if targets else zero
        style = self._style(features, zero)
        tv = self.total_variation(image) if self.tv_weight else zero
        temporal = self.temporal(image) if self.temporal is not None and self.temporal_weight else zero
        terms = torch.stack(
            [
                self.content_weight * content,
                self.style_weight * self.style_loss.scale * style,
                self.tv_weight * tv,
                self.temporal_weight * temporal,
            ]
        )
        return terms.sum(), terms.detach()


def _deepest(layers: Sequence[str]) -> str | None:
    """The deepest of ``layers`` in VGG19's order (None for none)."""
    return max(layers, key=VGG19_LAYERS.index) if layers else None


#: A layer's statistics over the held pixels need at least this many positions wholly inside
#: them; with fewer, the whole layer counts.
MIN_HELD_POSITIONS = 16


def _positions_within(features: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
    """(1, C, 1, K): the K positions of (1, C, H, W) ``features`` whose share of the (1, 1, H', W')
    mask ``held``, downsampled by area, is whole; ``features`` itself where too few are. Any
    style loss takes its statistics over them as over an image one position high."""
    share = F.interpolate(held.float(), size=features.shape[-2:], mode="area")
    inside = share.flatten() >= 0.999
    if int(inside.sum()) < MIN_HELD_POSITIONS:
        return features
    return features.flatten(2)[:, :, inside].unsqueeze(2)
