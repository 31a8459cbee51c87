"""The compact model as ONNX, checked with onnxruntime against the masked model.

Needs the optional packages `onnx` and `onnxruntime` (`pip install 'asfp-explorer[onnx]'`);
where either is missing, `OnnxExportError` says so in one line. The file has a dynamic batch
dimension and the fixed image size it was exported at (the folded constant maps of pruned
channels are traced for that size); the check runs onnxruntime (CPU) on two batch sizes and
compares with the masked model in eval mode (the reference the compact model is exact against).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

OPSET = 17
INSTALL_HINT = "pip install 'asfp-explorer[onnx]'"


class OnnxExportError(RuntimeError):
    """The ONNX file cannot be written or checked; the message is one line."""


def onnx_available() -> bool:
    """Whether both onnx and onnxruntime can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


def export_onnx(compact_model: nn.Module, reference: nn.Module, input_size: Sequence[int],
                path: str | os.PathLike, batch_sizes: Sequence[int] = (2, 5)) -> dict[str, Any]:
    """Write `compact_model` to `path` as ONNX (opset OPSET, dynamic batch) and check it.

    Returns {file, opset, onnxruntime, max_abs_error, relative_error}: the largest difference
    between onnxruntime's output and `reference`'s (the masked model) over random batches of
    `batch_sizes`, and that relative to max |reference|. Neither model is changed.
    """
    if not onnx_available():
        raise OnnxExportError(f"--onnx needs the optional packages onnx and onnxruntime; {INSTALL_HINT}")
    import onnx
    import onnxruntime

    path = Path(path)
    small = copy.deepcopy(compact_model).cpu().eval()
    ref = copy.deepcopy(reference).cpu().eval()
    example = torch.randn((batch_sizes[0], *input_size))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # The TorchScript-based exporter (dynamo=False): the dynamo one needs onnxscript too.
        torch.onnx.export(small, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise OnnxExportError(f"ONNX export failed ({type(e).__name__}: {first})") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    error = scale = 0.0
    with torch.no_grad():
        for b in batch_sizes:
            x = torch.randn((b, *input_size))
            got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
            want = ref(x)
            if got.shape != want.shape:
                raise OnnxExportError(f"onnxruntime gave shape {tuple(got.shape)} at batch {b}, "
                                      f"the masked model {tuple(want.shape)}")
            error = max(error, float((got - want).abs().max()))
            scale = max(scale, float(want.abs().max()))
    return {"file": path.name, "opset": OPSET, "onnxruntime": onnxruntime.__version__,
            "batch_sizes": list(batch_sizes), "max_abs_error": error,
            "relative_error": error / scale if scale else error}
