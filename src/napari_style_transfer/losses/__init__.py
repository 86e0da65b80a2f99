"""The parts of the objective: the style losses (one module each, behind one interface,
:class:`StyleLoss`), the content loss, region guides, total variation and the temporal term.

A new style loss is a :class:`StyleLoss` subclass in its own module and an entry in
:data:`STYLE_LOSS_REGISTRY` (its name also goes into ``options.STYLE_LOSSES``).
"""

from __future__ import annotations

from .content import ContentLoss
from .gram import GramLoss, gram_matrix, gram_mse, weighted_gram_mse
from .mean_cov import (
    GaussianTarget,
    MeanCovarianceLoss,
    gaussian_target,
    mean_covariance,
    wasserstein2_loss,
)
from .regions import RegionGuide
from .sliced import (
    SlicedLoss,
    SlicedTarget,
    quantiles,
    random_directions,
    sliced_target,
    sliced_wasserstein_loss,
    sorted_projections,
)
from .style import Blend, StyleLoss
from .temporal import TemporalLoss, temporal_loss
from .total_variation import TotalVariationLoss, total_variation

#: Each ``style_loss`` option's class.
STYLE_LOSS_REGISTRY: dict[str, type[StyleLoss]] = {
    "gram": GramLoss,
    "mean_cov": MeanCovarianceLoss,
    "sliced": SlicedLoss,
}

__all__ = [
    "STYLE_LOSS_REGISTRY",
    "Blend",
    "ContentLoss",
    "GaussianTarget",
    "GramLoss",
    "MeanCovarianceLoss",
    "RegionGuide",
    "SlicedLoss",
    "SlicedTarget",
    "StyleLoss",
    "TemporalLoss",
    "TotalVariationLoss",
    "gaussian_target",
    "gram_matrix",
    "gram_mse",
    "mean_covariance",
    "quantiles",
    "random_directions",
    "sliced_target",
    "sliced_wasserstein_loss",
    "sorted_projections",
    "temporal_loss",
    "total_variation",
    "wasserstein2_loss",
    "weighted_gram_mse",
]
