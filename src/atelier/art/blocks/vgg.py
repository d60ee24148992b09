"""The normalised VGG-19 encoder of AdaIN and WCT, with named taps (relu1_1 ... relu5_4).

The layout is exactly the ``vgg`` ``nn.Sequential`` of naoto0804/pytorch-AdaIN ``net.py`` (the
PyTorch conversion of ``vgg_normalised.t7``), so its ``vgg_normalised.pth`` and every prefix of it
(the WCT files ``vgg_normalised_conv{1,2,3}_1.pth``) load with their own keys: Sequential indices
``0.weight``, ``2.weight``, ``5.weight`` ...

* index 0 is a 1x1 conv 3->3 that maps RGB in 0..1 to Caffe's BGR*255 minus the ImageNet mean;
* then blocks of reflection pad 1, 3x3 conv, ReLU, and 2x2 max-pools with ``ceil_mode=True``
  after relu1_2, relu2_2, relu3_4 and relu4_4; 53 modules up to relu5_4.

The module builds only as many layers as its weights cover, and ``forward`` runs only as far as
the deepest layer asked for. It never turns gradients off itself: AdaIN calls it under
``torch.inference_mode``, Gatys backpropagates through it to the image.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from atelier.art.blocks.devices import resolve_device
from atelier.art.errors import ModelError
from atelier.art.blocks.weights import read_state_dict

log = logging.getLogger(__name__)

FULL_VGG_FILE = "vgg_normalised.pth"
DOWNLOAD_HINT = "run `atelier models download adain`"

# The Caffe preprocessing folded into layer 0 (RGB 0..1 -> BGR*255 - mean).
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)

# (block, convs, channels): VGG-19's five blocks; a max-pool follows every block but the last.
_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 4, 256), (4, 4, 512), (5, 4, 512))


@dataclass(frozen=True, slots=True)
class _Layer:
    index: int  # Sequential index in the official layout
    kind: str  # "conv1x1" | "pad" | "conv" | "relu" | "pool"
    name: str | None  # tap name (convs, ReLUs, pools); None for pads
    in_channels: int = 0
    out_channels: int = 0
    pools_before: int = 0  # max-pools between the input and this layer


def _official_layout() -> tuple[_Layer, ...]:
    layers = [_Layer(0, "conv1x1", "preprocess", 3, 3)]
    channels = 3
    pools = 0
    for block, convs, width in _BLOCKS:
        for i in range(1, convs + 1):
            suffix = f"{block}_{i}"
            layers.append(_Layer(len(layers), "pad", None, pools_before=pools))
            layers.append(_Layer(len(layers), "conv", f"conv{suffix}", channels, width, pools))
            layers.append(_Layer(len(layers), "relu", f"relu{suffix}", pools_before=pools))
            channels = width
        if block < len(_BLOCKS):
            layers.append(_Layer(len(layers), "pool", f"pool{block}", pools_before=pools))
            pools += 1
    return tuple(layers)


LAYOUT: tuple[_Layer, ...] = _official_layout()
assert len(LAYOUT) == 53  # the reference Sequential up to relu5_4

_BY_NAME: dict[str, _Layer] = {layer.name: layer for layer in LAYOUT if layer.name}
# Every name a caller may ask ``forward`` for, in network order.
LAYER_NAMES: tuple[str, ...] = tuple(name for name in _BY_NAME if name != "preprocess")
RELU_NAMES: tuple[str, ...] = tuple(name for name in LAYER_NAMES if name.startswith("relu"))
_PARAM_INDICES: tuple[int, ...] = tuple(x.index for x in LAYOUT if x.kind in ("conv1x1", "conv"))


def layer_index(name: str) -> int:
    """The Sequential index of a tap (``relu4_1`` -> 30); unknown names raise ``KeyError``."""
    try:
        return _BY_NAME[name].index
    except KeyError:
        raise KeyError(f"unknown VGG layer {name!r}; known: {', '.join(LAYER_NAMES)}") from None


def layer_channels(name: str) -> int:
    """How many channels the tap has (``relu3_1`` -> 256)."""
    index = layer_index(name)
    for layer in reversed(LAYOUT[: index + 1]):
        if layer.kind in ("conv", "conv1x1"):
            return layer.out_channels
    raise AssertionError("unreachable: layer 0 is a conv")


def layer_downsampling(name: str) -> int:
    """The spatial stride of a tap relative to the input (``relu4_1`` -> 8, ``pool1`` -> 2)."""
    layer = LAYOUT[layer_index(name)]
    return 2 ** (layer.pools_before + (1 if layer.kind == "pool" else 0))


def _make_module(layer: _Layer) -> nn.Module:
    if layer.kind == "conv1x1":
        return nn.Conv2d(3, 3, kernel_size=1)
    if layer.kind == "pad":
        return nn.ReflectionPad2d(1)
    if layer.kind == "conv":
        return nn.Conv2d(layer.in_channels, layer.out_channels, kernel_size=3)
    if layer.kind == "relu":
        return nn.ReLU()
    return nn.MaxPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True)


def _depth_of_state_dict(state_dict: Mapping[str, torch.Tensor]) -> int:
    """How many modules of the layout a state dict covers (index of its last ReLU + 1).

    Refuses anything that is not a contiguous prefix of the official key set.
    """
    indices: set[int] = set()
    for key in state_dict:
        head, _, tail = key.partition(".")
        if not head.isdigit() or tail not in ("weight", "bias"):
            raise ModelError(
                f"the VGG weights have an unexpected key {key!r}; expected the layout of "
                f"AdaIN's {FULL_VGG_FILE} (keys like '0.weight', '2.weight', '5.weight')"
            )
        indices.add(int(head))
    if not indices:
        raise ModelError("the VGG weights file holds no tensors")
    expected = [i for i in _PARAM_INDICES if i <= max(indices)]
    if sorted(indices) != expected:
        raise ModelError(
            f"the VGG weights have layers {sorted(indices)}, which is not a prefix of AdaIN's "
            f"{FULL_VGG_FILE} layout {list(_PARAM_INDICES)}"
        )
    last = max(indices)
    # A conv is followed by its ReLU; layer 0 (the 1x1 preprocessing conv) has none.
    return last + 2 if last > 0 else 1


class VGGEncoder(nn.Module):
    """The normalised VGG-19 of AdaIN, built as far as its weights go.

    Submodules are registered under their Sequential indices, so ``state_dict()`` has the
    official keys and ``load_state_dict`` takes the official files. Parameters do not require
    grad (the network is frozen); gradients still flow to the input.
    """

    def __init__(self, depth: int = len(LAYOUT)) -> None:
        super().__init__()
        if not 1 <= depth <= len(LAYOUT):
            raise ValueError(f"depth must be in 1..{len(LAYOUT)}, got {depth}")
        self.depth = depth
        # Built on the meta device and then given empty storage: the default random init of
        # 20 M parameters costs more than loading them, and weights always come next
        # (from_state_dict or random); an encoder made with the bare constructor holds garbage.
        with torch.device("meta"):
            for layer in LAYOUT[:depth]:
                self.add_module(str(layer.index), _make_module(layer))
        self.to_empty(device="cpu")
        self.requires_grad_(False)
        self.eval()

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, up_to: str | None = None
    ) -> VGGEncoder:
        """Build from the official keys (the full file or any prefix of it).

        ``up_to`` names the deepest layer to keep (weights beyond it are dropped); a layer deeper
        than the weights go is refused with :class:`ModelError`.
        """
        depth = _depth_of_state_dict(state_dict)
        if up_to is not None:
            wanted = layer_index(up_to) + 1
            if wanted > depth:
                raise ModelError(_too_shallow_message(up_to, depth))
            depth = wanted
        encoder = cls(depth)
        kept = {k: v for k, v in state_dict.items() if int(k.partition(".")[0]) < depth}
        try:
            encoder.load_state_dict(kept, strict=True)
        except RuntimeError as exc:  # shape mismatches
            raise ModelError(
                f"the VGG weights do not fit AdaIN's {FULL_VGG_FILE} layout: "
                f"{_first_line(exc)}"
            ) from exc
        return encoder

    @classmethod
    def random(cls, *, seed: int = 0, up_to: str | None = None) -> VGGEncoder:
        """The architecture (full, or up to ``up_to``) with random weights in the official layout.

        Layer 0 gets the real preprocessing (it is a fixed colour mapping, not learnt); the 3x3
        convs get He-normal weights and small biases, so activations keep a sensible scale all
        the way to relu5_4. For tests and benchmarks where the real file is not installed.
        """
        depth = len(LAYOUT) if up_to is None else layer_index(up_to) + 1
        encoder = cls(depth)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in LAYOUT[:depth]:
                module = encoder.get_submodule(str(layer.index))
                if layer.kind == "conv1x1":
                    module.weight.copy_(_preprocess_weight())
                    module.bias.copy_(-torch.tensor(CAFFE_BGR_MEAN))
                elif layer.kind == "conv":
                    fan_in = layer.in_channels * 9
                    module.weight.copy_(
                        torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5
                    )
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.01)
        return encoder

    # -- introspection ------------------------------------------------------------------------

    @property
    def available_layers(self) -> tuple[str, ...]:
        """The taps these weights reach, in network order."""
        return tuple(name for name in LAYER_NAMES if _BY_NAME[name].index < self.depth)

    @property
    def last_layer(self) -> str:
        """The deepest tap available (``relu3_1`` for the WCT conv3_1 file)."""
        layers = self.available_layers
        return layers[-1] if layers else "preprocess"

    # -- running ------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, *, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """The features at ``layers`` for RGB input (N, 3, H, W) in 0..1.

        Runs only as far as the deepest requested layer. Returns a dict in the order asked.
        """
        if isinstance(layers, str):
            layers = (layers,)
        if not layers:
            raise ValueError("ask for at least one layer")
        wanted: dict[int, str] = {}
        for name in layers:
            index = layer_index(name)
            if index >= self.depth:
                raise ModelError(_too_shallow_message(name, self.depth))
            wanted[index] = name
        stop = max(wanted)
        # Channels-last activations: oneDNN's convolutions run 1.3-1.6x faster on them than on
        # NCHW, and the max-pools many times faster (the weights are converted once, see
        # AdaIN; others are reordered per call). Taps come back in this layout too.
        x = x.contiguous(memory_format=torch.channels_last)
        # In-place ReLU saves a copy of every feature map, but only when nothing keeps the conv
        # output (a requested conv tap) and autograd does not need it.
        inplace_ok = not torch.is_grad_enabled() or not x.requires_grad
        found: dict[str, torch.Tensor] = {}
        for layer in LAYOUT[: stop + 1]:
            if layer.kind == "relu":
                x = F.relu(x, inplace=inplace_ok and (layer.index - 1) not in wanted)
            else:
                x = self._modules[str(layer.index)](x)
            if layer.index in wanted:
                found[wanted[layer.index]] = x
        return {name: found[name] for name in layers}

    def encode(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The features at one layer (shorthand for ``forward(x, layers=[layer])[layer]``)."""
        return self.forward(x, layers=(layer,))[layer]


def _preprocess_weight() -> torch.Tensor:
    # RGB -> BGR channel swap, scaled from 0..1 to 0..255.
    swap = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return (swap * 255.0).view(3, 3, 1, 1)


def _too_shallow_message(name: str, depth: int) -> str:
    have = [n for n in RELU_NAMES if _BY_NAME[n].index < depth]
    end = have[-1] if have else "the preprocessing layer"
    return (
        f"{name} needs the full {FULL_VGG_FILE} (the VGG weights installed end at {end}); "
        f"{DOWNLOAD_HINT}"
    )


def _first_line(exc: BaseException) -> str:
    # load_state_dict's message is a header line followed by one tab-indented line per problem.
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return "; ".join(lines[1:3] if len(lines) > 1 else lines)


def load_vgg(
    path: str | Path, *, up_to: str | None = None, device: str | torch.device = "cpu"
) -> VGGEncoder:
    """Load ``vgg_normalised.pth`` (or a prefix of it), keeping layers up to ``up_to``."""
    state = read_state_dict(path, what="VGG encoder", hint=DOWNLOAD_HINT)
    encoder = VGGEncoder.from_state_dict(state, up_to=up_to)
    log.debug("loaded VGG encoder from %s up to %s", path, encoder.last_layer)
    return encoder.to(resolve_device(device))
