"""VGG19 feature extraction: the loaded network's weights in the extractor's own modules."""

from __future__ import annotations

from collections.abc import Iterable

from ._torch_compat import hide_triton

hide_triton()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from .options import VGG19_LAYERS  # noqa: E402

#: ImageNet statistics that torchvision's VGG19 was trained with (RGB, [0, 1] input).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: How the extractor's convolutions pad: "zeros" as VGG19 was trained. "reflect" and
#: "replicate" give a flat image flat features (zeros make its border an edge) but cost memory
#: (an explicit padded copy per convolution, +290 MB at 512 px) and left a rim; the image's
#: margin (pipeline/canvas.py) removes it instead: docs/border_rim.md. Reflect cannot pad the
#: 1-pixel activations of the smallest images.
PADDING_MODE = "zeros"


class VGGFeatures(nn.Module):
    """Activations of named VGG19 layers for images in [0, 1].

    ``features`` is torchvision's ``vgg19().features`` (37 modules). Only the modules up to
    the deepest requested layer run. Every module is the extractor's own: the convolutions pad
    with ``padding`` (a ``padding_mode`` of ``nn.Conv2d``) and share ``features``' Parameters
    (no copy of the weights); with ``pooling="avg"`` average pooling replaces max pooling.
    Activations are captured by forward hooks on these modules, addressed by the
    paper's names (``conv1_1``, ``relu1_1``, ``pool1``, ...). A conv layer's activation is the
    pre-ReLU output even though torchvision's ReLUs work in place. ``features``' modules are
    never modified, but its Parameters follow the extractor's ``.to()`` (device, dtype, layout). The parameters are frozen and the module stays in eval mode.
    """

    mean: torch.Tensor  # ImageNet's, (1, 3, 1, 1) buffers
    std: torch.Tensor

    def __init__(
        self,
        features: nn.Sequential,
        layers: Iterable[str],
        pooling: str = "max",
        padding: str = PADDING_MODE,
    ):
        super().__init__()
        self.layers = tuple(dict.fromkeys(layers))
        if not self.layers:
            raise ValueError("VGGFeatures needs at least one layer name")
        if len(features) != len(VGG19_LAYERS):
            raise ValueError(f"expected VGG19 features with {len(VGG19_LAYERS)} modules, got {len(features)}")
        cut = max(VGG19_LAYERS.index(name) for name in self.layers) + 1
        # Every module is the extractor's own, so its hooks never touch the shared network.
        modules: list[nn.Module] = []
        for name, module in zip(VGG19_LAYERS[:cut], list(features)[:cut], strict=True):
            if isinstance(module, nn.Conv2d):
                modules.append(_sharing_conv(module, padding))
            else:
                modules.append(nn.ReLU(inplace=True) if name.startswith("relu") else _pool(pooling))
        self.body = nn.Sequential(*modules)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

        self._captured: dict[str, torch.Tensor] = {}
        self._hooks = []
        for name in self.layers:
            index = VGG19_LAYERS.index(name)
            module = self.body[index]
            next_module = self.body[index + 1] if index + 1 < cut else None
            copy = isinstance(next_module, nn.ReLU) and next_module.inplace
            self._hooks.append(module.register_forward_hook(self._capture(name, copy)))

    def _capture(self, name: str, copy: bool):
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            # The in-place ReLU that follows a conv would overwrite its output. The copy keeps
            # the network's layout: an NCHW copy from a channels-last network saved about
            # 50 MB at 512 px but cost 6% a step (docs/benchmarks.md, "Engine notes").
            self._captured[name] = output.clone() if copy else output

        return hook

    def train(self, mode: bool = True) -> VGGFeatures:
        # Dropout-free, but keep eval semantics regardless of what a caller asks for.
        return super().train(False)

    @property
    def depth(self) -> int:
        """Number of VGG19 modules that run."""
        return len(self.body)

    def forward(self, image: torch.Tensor, deepest: str | None = None) -> dict[str, torch.Tensor]:
        """``image``: (N, 3, H, W) in [0, 1]. Returns ``{layer name: activation}``; with
        ``deepest``, only the modules up to that layer run (the content's targets need no
        deeper style layer) and only the layers up to it are returned."""
        self._captured = {}
        body = self.body if deepest is None else self.body[: VGG19_LAYERS.index(deepest) + 1]
        body((image - self.mean) / self.std)
        captured, self._captured = self._captured, {}
        return captured

    def remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def _pool(pooling: str) -> nn.Module:
    return nn.AvgPool2d(kernel_size=2, stride=2) if pooling == "avg" else MaxPool2x2()


class MaxPool2x2(nn.Module):
    """VGG19's max pooling (2x2, stride 2) with the same values and gradients as
    ``nn.MaxPool2d``, but keeping no int64 indices of the maxima for the backward pass (60 MB
    at 512 px): the backward finds them again from the pooled input, which the ReLU before
    keeps anyway."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaxPoolRecomputed.apply(x)


class _MaxPoolRecomputed(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return F.max_pool2d(x, 2, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        _, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad, x, [2, 2], [2, 2], [0, 0], [1, 1], False, indices
        )


def _sharing_conv(conv: nn.Conv2d, padding_mode: str) -> nn.Conv2d:
    """A convolution like ``conv`` padding with ``padding_mode``, holding ``conv``'s own
    weight and bias Parameters: built on the meta device, so nothing is allocated or copied."""
    # VGG19's convolutions are all 3x3, stride 1, padded by 1 (see vgg19_features_module).
    own = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        3,
        padding=1,
        bias=conv.bias is not None,
        padding_mode=padding_mode,  # type: ignore[arg-type]
        device="meta",
    )
    own.weight = conv.weight
    own.bias = conv.bias
    return own


#: Output channels of VGG19's convolutions block by block ("E" in Simonyan & Zisserman).
VGG19_CHANNELS = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def vgg19_features_module(
    device: torch.device | str | None = None, init: bool = True, generator: torch.Generator | None = None
) -> nn.Sequential:
    """torchvision's VGG19 ``features`` (37 modules, the same classes, order and state-dict
    keys), built here so that torchvision need not be imported: that import alone takes over
    a second, and the run's first step should come fast.

    With ``init`` the convolutions get torchvision's initialisation of an untrained VGG (He
    normal weights, zero biases), drawn from ``generator`` (a CPU generator when ``device``
    is the CPU) or, without one, from torch's global RNG; without ``init``, on
    ``device="meta"``, no memory is touched, for weights that are loaded next with
    ``load_state_dict(..., assign=True)``.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    # Built on the meta device when initialised here: nn.Conv2d's own initialisation would
    # draw from the global RNG, whose stream other threads share.
    build_on = "meta" if init else device
    for block in VGG19_CHANNELS:
        for out_channels in block:
            layers += [
                nn.Conv2d(in_channels, out_channels, 3, padding=1, device=build_on),
                nn.ReLU(inplace=True),
            ]
            in_channels = out_channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    features = nn.Sequential(*layers)
    if init:
        features.to_empty(device=device or "cpu")
        for module in features:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(
                    module.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
    return features
