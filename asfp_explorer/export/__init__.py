"""The compact model: pruned filters physically removed, exactly equivalent in eval mode (spec §7).

One module per role:
- rewrite.py: `compact(model, masks)`, the fx graph rewrite, one handler per op kind;
- constants.py: the folding of the pruned channels' constants (helper modules);
- fuse.py: `fuse_for_inference`, BN folded into convs and elementwise ops in place;
- masks.py: mask checks and the masked reference model;
- serialise.py / vocabulary.py: `save_compact` / `load_compact` and the closed vocabulary a
  saved model may use (docs/compact_format.md);
- timing.py: `benchmark`, dense against compact (median and spread);
- onnx_export.py: `export_onnx`, the compact model as ONNX, checked with onnxruntime;
- pipeline.py: `export_compact`, all of it in one call for the CLI and the dashboard.
"""

from __future__ import annotations

from .constants import HELPERS, ConstantInputMap, Expand, ScatterAdd
from .fuse import ScatterAddInPlace, fuse_for_inference
from .masks import check_masks, masked_copy
from .onnx_export import OnnxExportError, export_onnx, onnx_available
from .pipeline import export_compact
from .rewrite import HANDLERS, compact
from .serialise import FORMAT, architecture, load_compact, rebuild, save_compact
from .timing import benchmark
from .vocabulary import CompactFormatError

__all__ = [
    "FORMAT", "HANDLERS", "CompactFormatError", "HELPERS", "ConstantInputMap", "Expand", "ScatterAdd", "architecture",
    "benchmark", "check_masks", "compact", "export_compact", "load_compact", "masked_copy",
    "rebuild", "save_compact", "OnnxExportError", "export_onnx", "onnx_available", "ScatterAddInPlace", "fuse_for_inference",
]
