"""Conv MACs of a pruned model: exact and paper convention (spec §6), and fvcore's count.

Unit: MACs, multiply-accumulates of conv layers (1 MAC = one fused multiply-add; fvcore's
"flop"; PyTorch's FlopCounterMode counts 2 per MAC). Batch size 1.

`MacCounter` traces the model once (models/tracing.py: torch.fx plus one shape probe on a
meta-device copy, so the model is neither run nor changed) and keeps, per conv call, where its
output and input channels come from. Afterwards every count is integer arithmetic over the
kept-filter counts, fast enough to run at every epoch.

- exact: integer channel counts on the real architecture. A conv's input channels shrink only
  where its input is (through BN, activations, pooling, concatenation) the output of a pruned
  conv; the residual stream after an addition stays full width. It is what `export.compact`
  builds, so it equals fvcore's conv count of the exported model.
- paper: the same structure with fractional channels N (1 - P) (spec §6.1), which reproduces
  the published FLOPs tables.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .models import prunable_layers
from .models.tracing import AFFINE, Layout, TraceError, analyse, meta_copy


@dataclass(frozen=True)
class _Conv:
    """One conv call: MACs = out x in / groups x per_channel_pair."""

    name: str
    out_source: str | None  # prunable layer whose kept count is this conv's output width
    out_channels: int
    in_layout: Layout | None  # None: reads its full input width
    in_channels: int
    groups: int
    per_pair: int  # kernel taps x output positions: MACs per (output, input) channel pair
    weight_per_pair: int  # kernel taps (parameters per (output, input) channel pair)
    has_bias: bool


def _width(layout: Layout, kept: Mapping[str, int]) -> int:
    return sum(kept.get(s.source, s.width) if s.source is not None else s.width for s in layout)


def _kept_widths(c: "_Conv", kept: Mapping[str, int]) -> tuple[int, int]:
    """(output, input) channels of conv `c` in the compact model."""
    out = kept.get(c.out_source, c.out_channels) if c.out_source else c.out_channels
    return out, (_width(c.in_layout, kept) if c.in_layout else c.in_channels)


def _fraction(layout: Layout, keep_ratio: float) -> float:
    total = sum(s.width for s in layout)
    return sum(s.width * (keep_ratio if s.source is not None else 1.0) for s in layout) / total


class MacCounter:
    """Built once per model by one shape probe (torch.fx on a meta-device copy); afterwards
    counts are pure integer arithmetic (microseconds).

    `input_size`: (C, H, W). `dense_macs`: conv MACs of the dense model; `dense_params`: its
    parameter count. Kept counts are keyed by prunable-layer name; a layer left out is dense.
    """

    def __init__(self, model: nn.Module, input_size: tuple[int, int, int]):
        self.input_size = tuple(int(s) for s in input_size)
        self.layer_sizes = {n: c.out_channels for n, c in prunable_layers(model, self.input_size).items()}
        self.dense_params = int(sum(p.numel() for p in model.parameters()))
        self.traced = True
        try:
            self._convs, self._norms = self._from_flow(model)
        except TraceError:
            # Not traceable: count output-channel savings only; inputs stay at full width.
            self.traced = False
            self._convs, self._norms = self._from_hooks(model), []
        self.dense_macs = self.exact_macs({})

    # ------------------------------------------------------------------ construction

    def _from_flow(self, model: nn.Module) -> tuple[list[_Conv], list[tuple[Layout, int]]]:
        flow = analyse(model, self.input_size, self.layer_sizes)
        modules = flow.modules
        convs: list[_Conv] = []
        norms: list[tuple[Layout, int]] = []  # (channel layout, parameters per channel)
        for node in flow.gm.graph.nodes:
            if node.op != "call_module":
                continue
            m = modules[node.target]
            if isinstance(m, nn.Conv2d):
                out_layout = flow.layouts.get(node.name)
                taps = m.kernel_size[0] * m.kernel_size[1]
                out_hw = flow.shapes[node.name][2] * flow.shapes[node.name][3]
                convs.append(_Conv(node.target, out_layout[0].source if out_layout else None,
                                   m.out_channels, flow.conv_inputs.get(node.name), m.in_channels,
                                   m.groups, taps * out_hw, taps, m.bias is not None))
            elif flow.ops[node.name].kind == AFFINE and node.name in flow.layouts:
                norms.append((flow.layouts[node.name], 2 if m.affine else 0))
        return convs, norms

    def _from_hooks(self, model: nn.Module) -> list[_Conv]:
        convs: list[_Conv] = []

        def record(name: str, m: nn.Conv2d, out: torch.Tensor) -> None:
            taps = m.kernel_size[0] * m.kernel_size[1]
            convs.append(_Conv(name, name if name in self.layer_sizes else None, m.out_channels,
                               None, m.in_channels, m.groups, taps * out.shape[2] * out.shape[3],
                               taps, m.bias is not None))

        _probe_convs(model, self.input_size, record, lambda: convs.clear())
        return convs

    # ------------------------------------------------------------------ counts

    def _check(self, kept: Mapping[str, int]) -> None:
        unknown = [n for n in kept if n not in self.layer_sizes]
        if unknown:
            raise ValueError(f"kept: unknown layer {unknown[0]!r}; prunable layers: "
                             f"{', '.join(self.layer_sizes)}")

    def exact_macs(self, kept: Mapping[str, int]) -> int:
        """Conv MACs of the compact model with `kept[name]` filters left in each prunable layer."""
        self._check(kept)
        total = 0
        for c in self._convs:
            out, inp = _kept_widths(c, kept)
            total += out * (inp // c.groups) * c.per_pair
        return total

    def exact_params(self, kept: Mapping[str, int]) -> int:
        """Parameter count of the compact model (conv and BN entries of pruned filters removed)."""
        self._check(kept)
        removed = 0
        for c in self._convs:
            out, inp = _kept_widths(c, kept)
            removed += (c.out_channels * (c.in_channels // c.groups) - out * (inp // c.groups)) * c.weight_per_pair
            if c.has_bias:
                removed += c.out_channels - out
        for layout, per_channel in self._norms:
            removed += (sum(s.width for s in layout) - _width(layout, kept)) * per_channel
        return self.dense_params - removed

    def paper_macs(self, prune_ratio: float) -> float:
        """Conv MACs in the paper convention (spec §6.1): every prunable layer keeps N (1 - P)
        fractional filters; input widths follow the same channel flow as `exact_macs`."""
        if not 0.0 <= prune_ratio < 1.0:
            raise ValueError(f"prune_ratio: {prune_ratio!r} is outside [0, 1)")
        keep = 1.0 - prune_ratio
        total = 0.0
        for c in self._convs:
            out = c.out_channels * (keep if c.out_source else 1.0)
            inp = c.in_channels * (_fraction(c.in_layout, keep) if c.in_layout else 1.0)
            total += out * inp / c.groups * c.per_pair
        return total

    def kept_at(self, prune_ratio: float) -> dict[str, int]:
        """Kept-filter counts when every prunable layer is pruned at `prune_ratio` (spec §2)."""
        from .schedules import pruned_count

        return {n: size - pruned_count(size, prune_ratio) for n, size in self.layer_sizes.items()}


def _probe_convs(model: nn.Module, input_size: Sequence[int], record, reset) -> None:
    """Call `record(name, conv, output)` for every nn.Conv2d call of one batch-1 forward.

    Runs on a meta-device copy (no arithmetic); a model whose forward needs real values
    (data-dependent control flow) is run instead as a deep copy in eval mode on zeros.
    """
    for shadow, device in ((meta_copy(model), "meta"), (None, None)):
        if shadow is None:
            shadow = copy.deepcopy(model).eval()
            param = next(shadow.parameters(), None)
            device = param.device if param is not None else "cpu"
        reset()
        for name, m in shadow.named_modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(lambda m, _i, out, name=name: record(name, m, out))
        try:
            with torch.no_grad():
                shadow(torch.zeros((1, *input_size), device=device))
            return
        except Exception:
            if device != "meta":
                raise


def conv_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Conv MACs of one batch-1 forward, counted by forward hooks on every nn.Conv2d call.

    Works on any module (compact models included) and does not change it.
    """
    counts: list[int] = []

    def record(_name: str, m: nn.Conv2d, out: torch.Tensor) -> None:
        counts.append(out.shape[1] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
                      * out.shape[2] * out.shape[3])

    _probe_convs(model, input_size, record, counts.clear)
    return sum(counts)


def fvcore_conv_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """fvcore's conv count (MACs) of one batch-1 forward of `deepcopy(model).eval()`.

    fvcore traces the model (train mode would change BN running statistics, hence the copy in
    eval mode) and counts BN, pooling and linear layers too: only its "conv" entry is returned.
    It does not see convs with `padding="same"` (aten::_convolution_mode); `conv_macs` does.

    Safe on any thread beside training: fvcore's torch.jit trace keeps its state per thread,
    and `_quiet_fvcore` stops it from swapping the process-wide warning filters.
    """
    FlopCountAnalysis = _quiet_fvcore().FlopCountAnalysis
    shadow = copy.deepcopy(model).eval()
    param = next(shadow.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros((1, *input_size), device=device)
    analysis = FlopCountAnalysis(shadow, x)
    # "all": fvcore adds no filter of its own (the models counted here raise no tracer
    # warnings); its unsupported-op and uncalled-module reports go to logging, switched off.
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("all")
    with torch.no_grad():
        return int(analysis.by_operator().get("conv", 0))


class _WarningsWithoutSwaps:
    """The `warnings` module as fvcore's jit_analysis sees it, minus `catch_warnings`.

    `FlopCountAnalysis` wraps its trace in `warnings.catch_warnings()`, which replaces the
    interpreter's filter list and `showwarning` and puts back what it saved on exit: on a
    thread, that loses or leaks other threads' filters (e.g. a test's recorder). With tracer
    warnings "all" fvcore sets no filter inside the block, so the block can be a no-op.
    """

    @staticmethod
    def catch_warnings(*args: Any, **kwargs: Any) -> contextlib.nullcontext:
        return contextlib.nullcontext()

    def __getattr__(self, name: str) -> Any:
        return getattr(warnings, name)


_FVCORE_LOCK = threading.Lock()

# Warnings that say nothing to a user here, ignored by entries appended behind the user's own
# filters (never by swapping the filter list): fvcore's import runs `torch.jit.script`,
# deprecated in this torch; the compact models' shape checks (export) under fvcore's trace.
_QUIET = (
    ("ignore", r"`torch\.jit\.script` is deprecated", FutureWarning, ""),
    ("ignore", "", torch.jit.TracerWarning, r"asfp_explorer\."),
)


def _quiet_fvcore() -> ModuleType:
    """`fvcore.nn`, imported once, with its analysis module bound to `_WarningsWithoutSwaps`,
    and the `_QUIET` filters in place."""
    with _FVCORE_LOCK:
        present = {(f[0], getattr(f[1], "pattern", f[1]) or "", f[2],
                    getattr(f[3], "pattern", f[3]) or "") for f in warnings.filters}
        for action, message, category, module in _QUIET:
            if (action, message, category, module) not in present:
                warnings.filterwarnings(action, message, category, module, append=True)
        import fvcore.nn
        import fvcore.nn.jit_analysis as jit_analysis

        if not isinstance(jit_analysis.warnings, _WarningsWithoutSwaps):
            jit_analysis.warnings = _WarningsWithoutSwaps()
        return fvcore.nn
