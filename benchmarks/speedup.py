"""Measured speed-up of compact models against their theoretical MAC reduction (spec §7).

For CIFAR ResNet-20/56/110 (32 px) and torchvision ResNet-18/50 (224 px) at P = 0.3 and 0.4:
random masks with the spec's counts (floor(N P) filters pruned per prunable layer; which
filters does not change our speed), the exported compact model (`compact`, then
`fuse_for_inference`: BN folded, elementwise ops in place), and the forward latency of dense
and compact at batch 1/64/256 (on CPU the ImageNet nets skip batch 256 unless --full).

`--vs torch-pruning` adds Torch-Pruning's result for the same masks (its `DependencyGraph`
removing, per group of residual-coupled convs, the channels every conv of the group prunes;
benchmarks/torch_pruning_grouped.py). Torch-Pruning is an optional benchmark dependency
(`pip install torch-pruning`); neither the tests nor the tool need it.

    .venv/bin/python benchmarks/speedup.py                      # CPU, 1 thread
    .venv/bin/python benchmarks/speedup.py --vs torch-pruning --markdown
    .venv/bin/python benchmarks/speedup.py --quick              # about a minute
    .venv/bin/python benchmarks/speedup.py --width-multiple 8   # kept widths in multiples of 8
    .venv/bin/python benchmarks/speedup.py --device cuda --markdown

Method: all models of one point alternate within every repeat (order reversed every other
repeat), after warm-up; CPU times are process CPU time at one thread (robust on a shared
machine), CUDA times come from CUDA events; denormals are flushed. Each cell is the median
speed-up dense / model, with the spread (half the inter-quartile range of the per-repeat
ratios). Prints ratios, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch_pruning_grouped  # noqa: E402

from asfp_explorer.export import compact, fuse_for_inference  # noqa: E402
from asfp_explorer.flops import MacCounter, conv_macs  # noqa: E402
from asfp_explorer.models import build_model, prunable_layers  # noqa: E402
from asfp_explorer.pruning.widths import rounded_pruned_count  # noqa: E402

CIFAR = {"resnet20": 32, "resnet56": 32, "resnet110": 32}
IMAGENET = {"resnet18": 224, "resnet50": 224}


def random_masks(model: nn.Module, prune_ratio: float, seed: int = 0, width_multiple: int = 1
                 ) -> dict[str, torch.Tensor]:
    """floor(N P) randomly chosen filters pruned in every prunable layer (rounded so kept
    widths are multiples of `width_multiple`, pruning/widths.py)."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, conv in prunable_layers(model).items():
        n = conv.out_channels
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[: n - rounded_pruned_count(n, prune_ratio, width_multiple)]] = True
        masks[name] = mask
    return masks


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from 0/1, as after training (pruned channels
    then carry constants, which the exact export must fold)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.5
            m.running_mean = torch.randn(n, generator=g) * 0.5
            m.running_var = torch.rand(n, generator=g) * 1.5 + 0.5
    return model.eval()


def timer(device: torch.device) -> Callable[[nn.Module, torch.Tensor], float]:
    """Seconds one forward takes: CUDA events on a GPU, process CPU time on a CPU."""
    if device.type == "cuda":
        def run(model: nn.Module, x: torch.Tensor) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            end.synchronize()  # the measured interval must have finished on the device
            return start.elapsed_time(end) / 1e3
        return run

    def run_cpu(model: nn.Module, x: torch.Tensor) -> float:
        t = time.process_time()
        model(x)
        return time.process_time() - t
    return run_cpu


@torch.inference_mode()
def measure(models: dict[str, nn.Module], x: torch.Tensor, device: torch.device, repeats: int | None,
            budget_s: float, warmup: int) -> dict[str, Any]:
    """Per model: median seconds; per non-dense model: median and spread of dense / model."""
    run = timer(device)
    for _ in range(warmup):
        for m in models.values():
            m(x)
    n = repeats
    if n is None:  # one more (warm) round sizes the repeats
        n = max(3, min(50, int(budget_s / max(sum(run(m, x) for m in models.values()), 1e-6))))
    times: dict[str, list[float]] = {k: [] for k in models}
    for r in range(n):
        for k in (list(models) if r % 2 == 0 else list(models)[::-1]):
            times[k].append(run(models[k], x))
    out: dict[str, Any] = {"repeats": n, "seconds": {k: statistics.median(v) for k, v in times.items()}}
    for k in models:
        if k == "dense":
            continue
        ratios = [d / c for d, c in zip(times["dense"], times[k])]
        q = statistics.quantiles(ratios, n=4) if len(ratios) >= 4 else [min(ratios), 0, max(ratios)]
        out[k] = {"speedup": statistics.median(ratios), "spread": (q[2] - q[0]) / 2}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 1 and 16 (ImageNet) or 64 (CIFAR), shorter")
    p.add_argument("--full", action="store_true", help="batch 256 for ImageNet nets on CPU too (slow)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--models", nargs="*", default=None, help="subset of " + ", ".join({**CIFAR, **IMAGENET}))
    p.add_argument("--ratios", nargs="*", type=float, default=[0.3, 0.4])
    p.add_argument("--batches", nargs="*", type=int, default=None, help="override the batch sizes")
    p.add_argument("--vs", choices=["torch-pruning"], default=None,
                   help="also measure Torch-Pruning's grouped result for the same masks")
    p.add_argument("--unfused", action="store_true", help="also measure compact() before fuse_for_inference")
    p.add_argument("--width-multiple", type=int, default=1,
                   help="round pruned counts so kept widths are multiples of this (pruning/widths.py)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per point (default: as many as fit in about 3 s, 3 to 50)")
    p.add_argument("--budget", type=float, default=None,
                   help="CPU seconds per point that size the repeats (default 3, --quick 1)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device: {args.device!r} was asked for but no CUDA device is available")
    if args.vs == "torch-pruning" and not torch_pruning_grouped.available():
        p.error("--vs torch-pruning: the torch_pruning package is not installed (pip install torch-pruning)")
    sizes = {**CIFAR, **IMAGENET}
    names = args.models or list(sizes)
    unknown = [n for n in names if n not in sizes]
    if unknown:
        p.error(f"--models: unknown {unknown[0]!r}; allowed: {', '.join(sizes)}")
    if args.width_multiple < 1:
        p.error(f"--width-multiple: {args.width_multiple} is not a positive integer")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cuda = device.type == "cuda"
    results = []
    start = time.perf_counter()
    for name in names:
        side = sizes[name]
        imagenet = name in IMAGENET
        if args.batches:
            batches = tuple(args.batches)
        elif cuda or args.full:
            batches = (1, 64, 256)
        elif args.quick:
            batches = (1, 16) if imagenet else (1, 64)
        else:  # a 224-px batch of 256 takes minutes per forward on one CPU thread
            batches = (1, 64) if imagenet else (1, 64, 256)
        torch.manual_seed(0)
        dense = trained_like(build_model(name, 1000 if imagenet else 10))
        size = (3, side, side)
        counter = MacCounter(dense, size)
        for ratio in args.ratios:
            masks = random_masks(dense, ratio, width_multiple=args.width_multiple)
            small = compact(dense, masks, size)
            models: dict[str, nn.Module] = {"dense": dense, "ours": fuse_for_inference(small)}
            if args.unfused:
                models["unfused"] = small
            kept = {n: int(m.sum()) for n, m in masks.items()}
            row: dict[str, Any] = {
                "model": name, "prune_ratio": ratio, "width_multiple": args.width_multiple,
                "ours_mac_reduction_percent": 100.0 * (1.0 - counter.exact_macs(kept) / counter.dense_macs),
                "paper_mac_reduction_percent": 100.0 * (1.0 - counter.paper_macs(ratio) / counter.dense_macs)}
            if args.vs:
                try:
                    tp_model, removed = torch_pruning_grouped.grouped(dense, masks, size)
                    models["tp"] = tp_model
                    row["tp_filters_removed"] = removed
                    row["tp_mac_reduction_percent"] = 100.0 * (1.0 - conv_macs(tp_model, size) / counter.dense_macs)
                except Exception as e:  # say so in the table, go on
                    row["tp_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:100]}"
            models = {k: m.to(device).eval() for k, m in models.items()}
            row["batches"] = []
            for b in batches:
                x = torch.randn((b, *size), device=device)
                budget = args.budget if args.budget is not None else (1.0 if args.quick else 3.0)
                r = measure(models, x, device, args.repeats, budget, 10 if cuda else 1)
                r["batch_size"] = b
                row["batches"].append(r)
                cells = "  ".join(f"{k} {r[k]['speedup']:.2f}x ±{r[k]['spread']:.2f}" for k in models if k != "dense")
                tp_macs = f", TP {row['tp_mac_reduction_percent']:.1f} %" if "tp_mac_reduction_percent" in row else ""
                print(f"# {name} P={ratio} b{b}: {cells}  ({r['repeats']} repeats; MACs removed ours "
                      f"{row['ours_mac_reduction_percent']:.1f} %{tp_macs})", flush=True)
            results.append(row)
            if args.json:  # after every point, so that a run cut short keeps what it measured
                args.json.write_text(json.dumps({"results": results}, indent=1))

    header = (f"device {torch.cuda.get_device_name(device) if cuda else 'cpu'}, {torch.get_num_threads()} "
              f"thread(s), torch {torch.__version__}, {platform.processor() or platform.machine()}, "
              f"width multiple {args.width_multiple}; {time.perf_counter() - start:.0f} s")
    print(header)
    kinds = [k for k in ("ours", "unfused", "tp") if any(k in b for r in results for b in r["batches"])]

    def cell(b: dict, k: str) -> str:
        return f"{b[k]['speedup']:.2f}x ±{b[k]['spread']:.2f}" if k in b else "-"

    def macs(r: dict) -> str:
        tp = f"{r['tp_mac_reduction_percent']:.1f} %" if "tp_mac_reduction_percent" in r else \
            ("fails" if "tp_error" in r else "-")
        return f"{r['ours_mac_reduction_percent']:.1f} %" + (f" / {tp}" if args.vs else "")

    titles = {"ours": "ours vs dense", "unfused": "unfused vs dense", "tp": "Torch-Pruning vs dense"}
    if args.markdown:
        print("| model | P | batch | " + " | ".join(titles[k] for k in kinds) + " | MACs removed ours"
              + (" / TP" if args.vs else "") + " |")
        print("|---|---|---|" + "---|" * len(kinds) + "---|")
        for r in results:
            for b in r["batches"]:
                print(f"| {r['model']} | {r['prune_ratio']} | {b['batch_size']} | "
                      + " | ".join(cell(b, k) for k in kinds) + f" | {macs(r)} |")
    else:
        print(f"{'model':<10} {'P':>4} {'batch':>5} " + " ".join(f"{titles[k]:>24}" for k in kinds) + "  MACs removed")
        for r in results:
            for b in r["batches"]:
                print(f"{r['model']:<10} {r['prune_ratio']:>4} {b['batch_size']:>5} "
                      + " ".join(f"{cell(b, k):>24}" for k in kinds) + f"  {macs(r)}")
    for r in results:
        if "tp_error" in r:
            print(f"# Torch-Pruning on {r['model']} P={r['prune_ratio']}: {r['tp_error']}")
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
