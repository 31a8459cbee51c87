"""Where the compact model's time goes: per-op cost of dense, compact and Torch-Pruning models.

For each model and batch size, every node of the model's fx graph is timed on its own (an
fx.Interpreter that times each node, median over repeats, nodes grouped by what they do: conv,
BN, ReLU, residual add, scatter, folded-constant maps, ...), side by side for

- dense: the unpruned model;
- compact: `export.compact` for the masks (exact against the masked model);
- fused: the same after `export.fuse_for_inference` (BN folded into convs, elementwise ops in
  place), the model `export_compact` saves;
- tp: Torch-Pruning's grouped result for the same masks (benchmarks/torch_pruning_grouped.py;
  skipped when the optional `torch-pruning` package is not installed).

Masks: lowest l2 norm, the spec's counts (floor(N P) per prunable conv), BN statistics and
affine parameters randomised as in a trained model (so pruned channels carry constants).
One thread, denormals flushed, models alternate within every repeat; times are the thread's CPU
time (robust on a shared machine). Prints ms per forward per
op group and the plain (uninstrumented) forward time; asserts nothing.

    .venv/bin/python benchmarks/profile_compact.py                       # ResNet-20/56, b 1/64/256
    .venv/bin/python benchmarks/profile_compact.py --models resnet56 --batches 64 --ratio 0.3
    .venv/bin/python benchmarks/profile_compact.py --aten                 # also torch.profiler's top ops
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import torch
from torch import fx, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_pruning_grouped  # noqa: E402
from speedup import trained_like  # noqa: E402  (one definition, in speedup.py)

from asfp_explorer.export import compact, fuse_for_inference  # noqa: E402
from asfp_explorer.models import build_model, prunable_layers  # noqa: E402
from asfp_explorer.models.tracing import trace  # noqa: E402
from asfp_explorer.schedules import pruned_count  # noqa: E402

SIDES = {"resnet20": 32, "resnet56": 32, "resnet110": 32, "resnet18": 224, "resnet50": 224}


def lowest_l2_masks(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """floor(N P) filters of lowest l2 norm pruned in every prunable conv (True = kept)."""
    masks = {}
    for name, conv in prunable_layers(model).items():
        norms = conv.weight.detach().flatten(1).norm(dim=1)
        mask = torch.ones(conv.out_channels, dtype=torch.bool)
        mask[norms.argsort()[: pruned_count(conv.out_channels, ratio)]] = False
        masks[name] = mask
    return masks


def category(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    """What a node does, in a few words (the profile's row)."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.Conv2d):
            return "conv" + (" 1x1" if m.kernel_size == (1, 1) else "") + (" +bias" if m.bias is not None else "")
        return type(m).__name__
    if node.op in ("call_function", "call_method"):
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        return f"{name}()"
    return node.op


class NodeTimer(fx.Interpreter):
    """Runs a GraphModule node by node, adding each node's CPU time (s) to `times[category]`."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.modules_by_name = dict(gm.named_modules())
        self.times: dict[str, float] = defaultdict(float)

    def run_node(self, n: fx.Node) -> Any:
        t = time.thread_time()
        out = super().run_node(n)
        self.times[category(n, self.modules_by_name)] += time.thread_time() - t
        return out


def median_ms(samples: list[float]) -> tuple[float, float]:
    """Median and half the inter-quartile range, in ms, of samples in seconds."""
    if len(samples) < 4:
        return statistics.median(samples) * 1e3, 0.0
    q = statistics.quantiles(samples, n=4)
    return statistics.median(samples) * 1e3, (q[2] - q[0]) / 2 * 1e3


@torch.inference_mode()
def profile(models: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, Any]:
    """Per-category node times and plain forward times of every model, alternating."""
    graphs = {k: m if isinstance(m, fx.GraphModule) else trace(m) for k, m in models.items()}
    per_node: dict[str, dict[str, list[float]]] = {k: defaultdict(list) for k in models}
    plain: dict[str, list[float]] = {k: [] for k in models}
    for k in models:  # warm-up
        models[k](x)
        NodeTimer(graphs[k]).run(x)
    for r in range(repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]
        for k in order:
            t = time.thread_time()
            models[k](x)
            plain[k].append(time.thread_time() - t)
            timer = NodeTimer(graphs[k])
            timer.run(x)
            for c, s in timer.times.items():
                per_node[k][c].append(s)
    return {"plain": plain, "per_node": per_node}


def aten_table(model: nn.Module, x: torch.Tensor, repeats: int, rows: int = 12) -> str:
    """torch.profiler's self-CPU-time table of aten ops, per forward."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch.inference_mode():
        model(x)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(x)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def report(name: str, batch: int, result: dict[str, Any]) -> None:
    kinds = list(result["plain"])
    print(f"\n## {name}, batch {batch}: ms per forward, median (number of nodes)")
    cats = sorted({c for k in kinds for c in result["per_node"][k]},
                  key=lambda c: -max(statistics.median(result["per_node"][k].get(c, [0.0])) for k in kinds))
    print(f"{'op group':<28}" + "".join(f"{k:>18}" for k in kinds))
    for c in cats:
        cells = []
        for k in kinds:
            s = result["per_node"][k].get(c)
            cells.append(f"{median_ms(s)[0]:>11.3f} ({NODE_COUNTS.get((k, c), 0):>3})" if s else f"{'-':>17}")
        print(f"{c:<28}" + "".join(f"{cell:>18}" for cell in cells))
    sums = [sum(median_ms(s)[0] for s in result["per_node"][k].values()) for k in kinds]
    print(f"{'sum of nodes':<28}" + "".join(f"{s:>17.3f} " for s in sums))
    plain = [median_ms(result["plain"][k]) for k in kinds]
    print(f"{'plain forward':<28}" + "".join(f"{m:>10.3f} +-{s:<5.3f}" for m, s in plain))
    dense = plain[0][0]
    print(f"{'speed-up vs ' + kinds[0]:<28}" + "".join(f"{dense / m:>17.2f}x" for m, _ in plain))


# (model kind, op group) -> number of graph nodes in that group, shown beside its time
NODE_COUNTS: dict[tuple[str, str], int] = {}


def count_nodes(kind: str, gm: fx.GraphModule) -> None:
    modules = dict(gm.named_modules())
    for n in gm.graph.nodes:
        c = category(n, modules)
        NODE_COUNTS[(kind, c)] = NODE_COUNTS.get((kind, c), 0) + 1


def build(name: str, ratio: float, with_tp: bool,
          exporter: Callable[..., nn.Module] = compact) -> dict[str, nn.Module]:
    """dense, compact, fused and (if available) Torch-Pruning's model for the same masks."""
    torch.manual_seed(0)
    imagenet = name in ("resnet18", "resnet50")
    dense = trained_like(build_model(name, 1000 if imagenet else 10))
    side = SIDES[name]
    masks = lowest_l2_masks(dense, ratio)
    small = exporter(dense, masks, (3, side, side))
    models: dict[str, nn.Module] = {"dense": dense, "compact": small, "fused": fuse_for_inference(small)}
    if with_tp:
        try:
            models["tp"] = torch_pruning_grouped.grouped(dense, masks, (3, side, side))[0]
        except Exception as e:  # Torch-Pruning cannot prune every model; say so, go on
            print(f"# Torch-Pruning failed on {name}: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
    return models


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=["resnet20", "resnet56"], help=", ".join(SIDES))
    p.add_argument("--batches", nargs="*", type=int, default=[1, 64, 256])
    p.add_argument("--ratio", type=float, default=0.4)
    p.add_argument("--repeats", type=int, default=None, help="default: 30 at batch 1, 7 above")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--aten", action="store_true", help="also print torch.profiler's aten-op table")
    args = p.parse_args(argv)
    unknown = [m for m in args.models if m not in SIDES]
    if unknown:
        p.error(f"--models: unknown {unknown[0]!r}; allowed: {', '.join(SIDES)}")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    with_tp = torch_pruning_grouped.available()
    print(f"# torch {torch.__version__}, {torch.get_num_threads()} thread(s), P = {args.ratio}, "
          f"Torch-Pruning {'installed' if with_tp else 'not installed'}")
    for name in args.models:
        models = build(name, args.ratio, with_tp)
        NODE_COUNTS.clear()
        for k, m in models.items():
            count_nodes(k, m if isinstance(m, fx.GraphModule) else trace(m))
        side = SIDES[name]
        for b in args.batches:
            x = torch.randn(b, 3, side, side)
            repeats = args.repeats or (30 if b == 1 else 7)
            report(name, b, profile(models, x, repeats))
            if args.aten:
                for k, m in models.items():
                    print(f"\n### aten ops, {k}, {name}, batch {b} (totals over {repeats} forwards)")
                    print(aten_table(m, x, repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
