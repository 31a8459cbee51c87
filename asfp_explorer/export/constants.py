"""The folding of constants: what the masked model's pruned channels still carry, put back.

In eval mode a zeroed filter is not a zero channel: after BN it is the constant
beta - gamma mu / sqrt(var + eps) (then ReLU...). The rewrite (rewrite.py) tracks that constant
per channel and hands it to the helper modules here, which add it back where it matters:

- `Expand`: a packed tensor back to full width, pruned channels filled with their constants;
- `ScatterAdd`: a residual addition that adds kept channels at their places plus the constants;
- `ConstantInputMap`: what a zero-padded conv reads from dropped constant channels (a
  position-dependent map, since border taps fall on padding), exact for any input size.

These three classes are the only non-torch.nn module types a saved compact model may contain
(see vocabulary.py and docs/compact_format.md).
"""

from __future__ import annotations

from typing import Any, List, Mapping, Sequence

import torch
from torch import fx, nn


class Expand(nn.Module):
    """A packed tensor back to full width: kept channels at their places, every pruned channel
    filled with its constant."""

    def __init__(self, channels: int, kept_count: int):
        super().__init__()
        self.channels = channels
        self.kept_count = kept_count
        self.register_buffer("kept", torch.zeros(kept_count, dtype=torch.long))
        self.register_buffer("values", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w = x.shape[0], x.shape[2], x.shape[3]
        # clone: a fresh tensor even when the expand is a no-op view of the buffer
        full = self.values.view(1, -1, 1, 1).expand(n, self.channels, h, w).clone(
            memory_format=torch.contiguous_format)
        return full.index_copy_(1, self.kept, x)


class ScatterAdd(nn.Module):
    """stream + (packed tensor at full width): the kept channels are added at their places and
    the pruned channels' constants everywhere else. The stream stays full width."""

    def __init__(self, channels: int, kept_count: int, has_values: bool):
        super().__init__()
        self.channels = channels
        self.kept_count = kept_count
        self.has_values = has_values
        self.register_buffer("kept", torch.zeros(kept_count, dtype=torch.long))
        self.register_buffer("values", torch.zeros(channels))  # 0 at kept channels

    def forward(self, stream: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.has_values:
            out = stream + self.values.view(1, -1, 1, 1)
        else:
            out = stream.clone()
        return out.index_add_(1, self.kept, x)


class ConstantInputMap(nn.Module):
    """What a zero-padded conv reads from input channels that were dropped as constants.

    `tap_sums[o, i, j]` = sum over the dropped channels c of value_c W[o, c, i, j]. At output
    position (y, x) only the taps that fall inside the image count, and the kernel window is
    separable, so the map is rows(H) @ tap_sums @ cols(W)^T with 0/1 "tap inside" matrices:
    exact for every input size, and out x H x W x k cheap (no conv, so no conv MACs).
    """

    def __init__(self, out_channels: int, kernel_size: Sequence[int], stride: Sequence[int],
                 padding: Sequence[int], dilation: Sequence[int], cached_size: Sequence[int] = (0, 0)):
        super().__init__()
        self.out_channels = out_channels
        self.kernel_size: List[int] = [int(k) for k in kernel_size]
        self.stride: List[int] = [int(s) for s in stride]
        self.padding: List[int] = [int(p) for p in padding]
        self.dilation: List[int] = [int(d) for d in dilation]
        self.register_buffer("tap_sums", torch.zeros(out_channels, self.kernel_size[0], self.kernel_size[1]))
        # The map for one input size (H, W), kept: recomputing it costs ~10 small ops per conv
        # per forward, which on small inputs is a sizeable share of the compact model's time.
        self.cached_size: List[int] = [int(s) for s in cached_size]
        h, w = self.cached_size
        shape = (1, out_channels, self._out(h, 0), self._out(w, 1)) if h and w else (0,)
        self.register_buffer("cached_map", torch.zeros(shape))

    def _out(self, size: int, dim: int) -> int:
        k, s, p, d = self.kernel_size[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    def _inside(self, size: int, dim: int) -> torch.Tensor:
        k, s, p, d = self.kernel_size[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        device = self.tap_sums.device
        pos = (torch.arange(self._out(size, dim), device=device) * s - p).unsqueeze(1) + (torch.arange(k, device=device) * d).unsqueeze(0)
        return ((pos >= 0) & (pos < size)).to(self.tap_sums.dtype)

    def _map(self, h: int, w: int) -> torch.Tensor:
        rows = self._inside(h, 0)  # (H_out, k_h)
        cols = self._inside(w, 1)  # (W_out, k_w)
        return torch.matmul(torch.matmul(rows, self.tap_sums), cols.t()).unsqueeze(0)

    def cache(self, h: int, w: int) -> None:
        """Keep the map for inputs of height `h` and width `w` (call once `tap_sums` is set)."""
        self.cached_size = [int(h), int(w)]
        self.cached_map = self._map(int(h), int(w))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] == self.cached_size[0] and x.shape[3] == self.cached_size[1]:
            return self.cached_map
        return self._map(x.shape[2], x.shape[3])


HELPERS: dict[str, type[nn.Module]] = {c.__name__: c for c in (Expand, ScatterAdd, ConstantInputMap)}


# ----------------------------------------------------------------------------- constants


def _substitute(args: Any, node: fx.Node, value: torch.Tensor) -> Any:
    return fx.node.map_arg(args, lambda n: value if n is node else n)


def through_pointwise(node: fx.Node, op_input: fx.Node, values: torch.Tensor,
                      modules: Mapping[str, nn.Module]) -> torch.Tensor:
    """The constants (C,) after a pointwise node: run the node's own op on them as (1, C, 1, 1)."""
    v = values.view(1, -1, 1, 1).clone()
    if node.op == "call_module":
        out = modules[node.target](v)
    elif node.op == "call_function":
        out = node.target(*_substitute(node.args, op_input, v), **_substitute(node.kwargs, op_input, v))
    else:  # call_method: args[0] is the tensor itself
        args = _substitute(node.args, op_input, v)
        out = getattr(args[0], node.target)(*args[1:], **_substitute(node.kwargs, op_input, v))
    return out.reshape(-1).to(values.dtype)


def through_batchnorm(bn: nn.Module, values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """What the masked model's BN (eval mode) makes of each channel's constant, by that BN."""
    return bn(values.view(1, -1, 1, 1).to(device)).reshape(-1).cpu()


def input_fold(conv: nn.Conv2d, out_idx: torch.Tensor | None, consts: torch.Tensor,
               input_hw: Sequence[int]) -> ConstantInputMap | None:
    """The map that `conv` (its kept filters `out_idx`, None = all) reads from dropped input
    channels of constants `consts` (0 at kept channels), cached for inputs `input_hw` (H, W).
    None where every dropped constant is 0 (nothing to add)."""
    if not bool((consts != 0).any()):
        return None
    w = conv.weight.detach()
    if out_idx is not None:
        w = w.index_select(0, out_idx.to(w.device))
    taps = torch.einsum("ocij,c->oij", w, consts.to(w))
    padding = (0, 0) if isinstance(conv.padding, str) else conv.padding  # "valid"
    fold = ConstantInputMap(w.shape[0], conv.kernel_size, conv.stride, padding, conv.dilation)
    fold.tap_sums = taps.clone()
    fold.cache(*input_hw)
    return fold
