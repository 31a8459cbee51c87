"""`export_compact`: the whole export in one call (CLI and dashboard)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .fuse import fuse_for_inference
from .masks import masked_copy
from .onnx_export import export_onnx
from .rewrite import compact
from .serialise import FORMAT, architecture, load_compact, save_compact
from .timing import benchmark


def export_compact(model: nn.Module, masks: Mapping[str, torch.Tensor], input_size: Sequence[int],
                   out_dir: str | os.PathLike, run_benchmark: bool = False,
                   device: str | torch.device = "cpu", batch_sizes: Sequence[int] = (1, 64, 256),
                   onnx: bool = False) -> dict[str, Any]:
    """Compact `model`, save it, check the saved file against the masked model, optionally
    write and check an ONNX copy (`onnx`) and benchmark dense against compact.

    Writes `out_dir/compact.pt` (see `save_compact`), `out_dir/compact.onnx` (with `onnx`) and
    `out_dir/export.json` (the returned summary: kept filters, MACs, parameters, equivalence
    error of the reloaded file, ONNX check, benchmark). JSON-able.
    """
    from ..flops import conv_macs

    out = Path(out_dir)
    small = compact(model, masks, input_size)
    reference = masked_copy(model, masks)
    # The saved model is fused for inference (BN folded into convs, elementwise ops in place:
    # fuse.py); `small`, with its BN, gives the parameter count and the ONNX copy.
    fused = fuse_for_inference(small)
    save_compact(fused, out / "compact.pt")
    param = next(reference.parameters())
    loaded = load_compact(out / "compact.pt", map_location=param.device)  # what users get
    x = torch.randn((2, *input_size), device=param.device, dtype=param.dtype)
    with torch.no_grad():
        want, got = reference(x), loaded(x)
    error = float((want - got).abs().max())
    scale = float(want.abs().max())
    dense_macs, compact_macs = conv_macs(model, input_size), conv_macs(small, input_size)
    summary: dict[str, Any] = {
        "format": FORMAT, "file": "compact.pt", "input_size": list(input_size),
        "kept": {n: int(torch.as_tensor(m).sum()) for n, m in masks.items()},
        "filters": {n: int(torch.as_tensor(m).numel()) for n, m in masks.items()},
        "unit": "MACs (conv multiply-accumulates, batch 1)",
        "dense_macs": dense_macs, "compact_macs": compact_macs,
        "mac_reduction_percent": 100.0 * (1.0 - compact_macs / dense_macs),
        "dense_params": int(sum(p.numel() for p in model.parameters())),
        "compact_params": int(sum(p.numel() for p in small.parameters())),
        "max_abs_error": error, "relative_error": error / scale if scale else error,
        "widths": architecture(small)["widths"],
    }
    if onnx:
        summary["onnx"] = export_onnx(small, reference, input_size, out / "compact.onnx")
    if run_benchmark:
        summary["benchmark"] = benchmark(model, fused, input_size, batch_sizes, device)
    fd, tmp = tempfile.mkstemp(dir=out, prefix="export.json", suffix=".tmp")
    from ..store.files import user_file_mode

    os.fchmod(fd, user_file_mode())  # mkstemp's files are owner-only; follow the umask
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(tmp, out / "export.json")
    return summary
