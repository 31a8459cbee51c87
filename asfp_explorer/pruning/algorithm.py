"""Soft and hard filter pruning: the only part of the project that changes training.

Soft (SFP/ASFP, spec §4): masks are computed before the first epoch, every `interval` epochs
and after the last; the selected filters are zeroed, then train freely and may revive.
Hard (HFP): filters once selected stay at zero: their gradients are masked before every
optimiser step and their weights after it, so momentum and weight decay cannot revive them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import PruningConfig
from ..schedules import prune_ratio_at, pruned_count
from .batchnorm import zero_pruned_channels
from .criteria import lp_norms
from .masks import apply_masks, select_mask
from .widths import layer_ratio


class FilterPruning:
    """Owns the masks of the prunable convs and applies the configured pruning to them."""

    def __init__(self, convs: dict[str, nn.Conv2d], config: PruningConfig, total_epochs: int,
                 batchnorms: dict[str, nn.Module] | None = None):
        self.convs = convs
        # mask_bn only: the BN that reads each conv (its gamma/beta are zeroed with the filter).
        self.batchnorms = batchnorms or {}
        self.config = config
        self.total_epochs = total_epochs
        device = next(iter(convs.values())).weight.device
        self.masks: dict[str, torch.Tensor] = {
            n: torch.ones(c.out_channels, dtype=torch.bool, device=device) for n, c in convs.items()
        }
        # Host-side pruned counts: known without a device sync, because they follow from
        # the layer widths and the ratio alone.
        self.pruned_counts: dict[str, int] = {n: 0 for n in convs}

    def prune_ratio(self, epochs_completed: int) -> float:
        """Scheduled ratio after `epochs_completed` epochs (never below `ratio_reached`, the
        ratio reached before a change of the epochs during the run)."""
        c = self.config
        return prune_ratio_at(c.schedule, epochs_completed, self.total_epochs, c.prune_ratio, c.d,
                              c.ratio_reached)

    def is_update_epoch(self, epochs_completed: int) -> bool:
        """Masks are recomputed at e = 0, every `interval` epochs, and always after the last."""
        e = epochs_completed
        return e == 0 or e % self.config.interval == 0 or e >= self.total_epochs

    @torch.no_grad()
    def update_masks(self, epochs_completed: int) -> dict[str, torch.Tensor]:
        """Re-rank, recompute masks at P(e), zero the pruned filters; returns the ℓ2 norms
        each layer had just before zeroing (device tensors, for observers)."""
        ratio = self.prune_ratio(epochs_completed)
        hard = self.config.mode == "hard"
        norms = {}
        for name, conv in self.convs.items():
            norms[name] = lp_norms(conv.weight, 2)
            # width_multiple > 1 (beyond the paper): this layer's count rounded, as a ratio
            layer = layer_ratio(conv.out_channels, ratio, self.config.width_multiple)
            mask = select_mask(
                conv.weight,
                layer,
                self.config.criterion,
                self.config.fpgm_norm_share,
                always_pruned=~self.masks[name] if hard else None,
                min_pruned=self.pruned_counts[name] if hard else 0,
            )
            self.masks[name] = mask
            self.pruned_counts[name] = max(
                pruned_count(conv.out_channels, layer), self.pruned_counts[name] if hard else 0
            )
        apply_masks(self.convs, self.masks)
        if self.config.mask_bn:
            zero_pruned_channels(self.batchnorms, self.masks)
        return norms

    @torch.no_grad()
    def before_step(self) -> None:
        """Hard mode: pruned filters get no gradient (so no momentum builds up for them)."""
        if self.config.mode == "hard":
            grads = [c.weight.grad for c in self.convs.values() if c.weight.grad is not None]
            if grads:
                torch._foreach_mul_(grads, [self._shaped(n) for n, c in self.convs.items()
                                            if c.weight.grad is not None])

    @torch.no_grad()
    def after_step(self) -> None:
        """Hard mode: pruned weights back to exactly zero (weight decay, momentum leftovers)."""
        if self.config.mode == "hard":
            apply_masks(self.convs, self.masks)
            if self.config.mask_bn:
                zero_pruned_channels(self.batchnorms, self.masks)

    def _shaped(self, name: str) -> torch.Tensor:
        return self.masks[name].to(self.convs[name].weight.dtype).view(-1, 1, 1, 1)

    def state_dict(self) -> dict:
        return {"masks": {n: m.cpu() for n, m in self.masks.items()},
                "pruned_counts": dict(self.pruned_counts)}

    def load_state_dict(self, state: dict) -> None:
        device = next(iter(self.convs.values())).weight.device
        self.masks = {n: m.to(device) for n, m in state["masks"].items()}
        self.pruned_counts = dict(state["pruned_counts"])

