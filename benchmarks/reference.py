"""The seed report's algorithm, kept as a baseline for benchmarks (not used by the package).

The course report this project grew from reproduces Gatys et al. with the PyTorch tutorial's
approach: loss modules are inserted into a copy of VGG19's ``features`` rebuilt as a new
``nn.Sequential`` (ReLUs replaced by out-of-place ones), layers are numbered sequentially
(``conv_1`` ... ``conv_16``), and ``torch.optim.LBFGS`` runs with its defaults, clamping the
image to [0, 1] inside the closure. Its objective is the same as ours (content MSE, Gram
matrices divided by C*H*W, MSE between them), so losses can be compared directly.

Written here from the report's description; the package itself uses forward hooks instead.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

#: Our paper names -> the report's sequential conv names (conv4_2 is the 10th conv).
PAPER_TO_SEQUENTIAL = {
    f"conv{block}_{i}": f"conv_{n}"
    for n, (block, i) in enumerate(
        [(b, i) for b, count in enumerate((2, 2, 4, 4, 4), start=1) for i in range(1, count + 1)], start=1
    )
}


class Normalize(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(-1, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std


def report_gram(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w)
    return flat @ flat.T / (n * c * h * w)


class ContentTerm(nn.Module):
    """Passes its input through and remembers the content loss of it."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target.detach()
        self.loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


class StyleTerm(nn.Module):
    """Passes its input through and remembers the Gram-matrix style loss of it."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = report_gram(target).detach()
        self.loss = torch.zeros(())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(report_gram(x), self.target)
        return x


def build_model(
    features: nn.Sequential,
    content: torch.Tensor,
    style: torch.Tensor,
    content_layers: list[str],
    style_layers: list[str],
) -> tuple[nn.Sequential, list[ContentTerm], list[StyleTerm]]:
    """Copy ``features`` into a new Sequential with loss modules after the named convs."""
    content_names = {PAPER_TO_SEQUENTIAL[name] for name in content_layers}
    style_names = {PAPER_TO_SEQUENTIAL[name] for name in style_layers}
    model = nn.Sequential(Normalize().to(content.device))
    content_terms, style_terms = [], []
    convs = 0
    for layer in features.children():
        if isinstance(layer, nn.Conv2d):
            convs += 1
            name = f"conv_{convs}"
        elif isinstance(layer, nn.ReLU):
            name, layer = f"relu_{convs}", nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = f"pool_{convs}"
        else:
            raise RuntimeError(f"unexpected layer {type(layer).__name__}")
        model.add_module(name, layer)
        if name in content_names:
            term = ContentTerm(model(content))
            model.add_module(f"content_loss_{convs}", term)
            content_terms.append(term)
        if name in style_names:
            term = StyleTerm(model(style))
            model.add_module(f"style_loss_{convs}", term)
            style_terms.append(term)
        if len(content_terms) + len(style_terms) == len(content_names) + len(style_names):
            break
    model.requires_grad_(False)
    return model.eval(), content_terms, style_terms


class _Done(Exception):
    pass


def run_reference(
    features: nn.Sequential,
    content: torch.Tensor,
    style: torch.Tensor,
    start: torch.Tensor,
    *,
    steps: int,
    content_layers: list[str],
    style_layers: list[str],
    content_weight: float,
    style_weight: float,
) -> tuple[list[tuple[int, float, float]], torch.Tensor]:
    """Run until ``steps`` closure calls (the report counts steps that way).

    Returns ``[(evaluation, total loss, seconds since start), ...]`` and the final image,
    clamped to [0, 1] as the report saves it.
    """
    model, content_terms, style_terms = build_model(features, content, style, content_layers, style_layers)
    image = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image])
    history: list[tuple[int, float, float]] = []
    started = time.perf_counter()

    def closure() -> torch.Tensor:
        if len(history) == steps:
            raise _Done
        with torch.no_grad():
            image.clamp_(0, 1)
        optimizer.zero_grad()
        model(image)
        content_loss = sum(term.loss for term in content_terms)
        style_loss = sum(term.loss for term in style_terms)
        loss = content_weight * content_loss + style_weight * style_loss
        loss.backward()
        history.append((len(history) + 1, loss.item(), time.perf_counter() - started))
        return loss

    while len(history) < steps:
        try:
            optimizer.step(closure)
        except _Done:
            break
    return history, image.detach().clamp(0, 1)
