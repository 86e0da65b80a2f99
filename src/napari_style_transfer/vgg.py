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
                modules.append(ReLUKeepingMask() if name.startswith("relu") else _pool(pooling))
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
            copy = isinstance(next_module, ReLUKeepingMask)  # in place
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
    ``nn.MaxPool2d``, keeping for the backward pass where each maximum was as int32 (one byte
    per input value) rather than torch's int64 indices (two) or the input (four in fp32: the
    ReLU before no longer keeps it, see :class:`ReLUKeepingMask`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxPoolInt32Indices.apply(x)
        return F.max_pool2d(x, 2, 2)


class _MaxPoolInt32Indices(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        pooled, indices = F.max_pool2d(x, 2, 2, return_indices=True)
        ctx.save_for_backward(indices.to(torch.int32))  # positions within an H x W plane
        ctx.input_like = _shape_and_layout(x)
        return pooled

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (indices,) = ctx.saved_tensors
        return torch.ops.aten.max_pool2d_with_indices_backward(
            grad,
            _stand_in(ctx.input_like, grad.device),
            [2, 2],
            [2, 2],
            [0, 0],
            [1, 1],
            False,
            indices.long(),
        )


class ReLUKeepingMask(nn.Module):
    """VGG19's in-place ReLU, keeping for the backward pass only where its input was positive
    (one byte a value) instead of its output (four in fp32): with :class:`FrozenConv2d` after
    it, nothing else keeps that output, which is most of a step's peak (docs/benchmarks.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _ReLUMasked.apply(x)
        return F.relu_(x)


class _ReLUMasked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = F.relu_(x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x.bool())  # non-zero after the ReLU: positive (3x faster than x > 0)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (positive,) = ctx.saved_tensors
        # grad times the mask as uint8: torch's ReLU gradient (but for the sign of zeros), 4x
        # faster than torch.where; over one flat run of memory, as a channels-last product of
        # mixed dtypes takes a slow path
        flat_grad, flat_mask = _flat(grad), _flat(positive)
        if flat_grad is None or flat_mask is None or grad.stride() != positive.stride():
            return grad * positive
        product = flat_grad.mul(flat_mask.view(torch.uint8))
        if grad.is_contiguous():
            return product.view(grad.shape)
        n, c, h, w = grad.shape
        return product.view(n, h, w, c).permute(0, 3, 1, 2)


def _flat(x: torch.Tensor) -> torch.Tensor | None:
    """A 4-D tensor's values in memory order as a 1-D view, or None where it has gaps."""
    if x.is_contiguous():
        return x.view(-1)
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)
    return None


class FrozenConv2d(nn.Conv2d):
    """A 3x3 convolution padded by zeros whose weights take no gradient: its backward keeps
    only the weights, not the input that torch's own convolution keeps for the weights'
    gradient (a 64-channel map of 64 MB at 512 px in block 1). Other padding modes, weights
    that do take a gradient, or no gradient at all: ``nn.Conv2d``'s own forward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros" or self.weight.requires_grad or not torch.is_grad_enabled():
            return super().forward(x)
        return _ConvKeepingWeights.apply(x, self.weight, self.bias)


class _ConvKeepingWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        device = x.device.type
        if torch.is_autocast_enabled(device):  # as autocast would: its dtype's copies, kept
            dtype = torch.get_autocast_dtype(device)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        with torch.autocast(device, enabled=False):
            out = F.conv2d(x, weight, bias, padding=1)
        ctx.save_for_backward(weight)
        ctx.input_like = _shape_and_layout(x)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (weight,) = ctx.saved_tensors
        grad_input = torch.ops.aten.convolution_backward(
            grad,
            _stand_in(ctx.input_like, grad.device),
            weight,
            None,
            [1, 1],
            [1, 1],
            [1, 1],
            False,
            [0, 0],
            1,
            [True, False, False],
        )[0]
        return grad_input, None, None


def _shape_and_layout(x: torch.Tensor) -> tuple[torch.Size, torch.dtype, torch.memory_format]:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return x.shape, x.dtype, torch.channels_last if channels_last else torch.contiguous_format


def _stand_in(shape_and_layout: tuple, device: torch.device) -> torch.Tensor:
    """An input that a backward reads the shape and layout of, never its values: never
    written, so its pages are never touched and not resident."""
    shape, dtype, layout = shape_and_layout
    return torch.empty(shape, dtype=dtype, device=device, memory_format=layout)


def _sharing_conv(conv: nn.Conv2d, padding_mode: str) -> nn.Conv2d:
    """A convolution like ``conv`` padding with ``padding_mode``, holding ``conv``'s own
    weight and bias Parameters: built on the meta device, so nothing is allocated or copied."""
    # VGG19's convolutions are all 3x3, stride 1, padded by 1 (see vgg19_features_module).
    own = FrozenConv2d(
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
