"""Measured speed-up of compact models against their theoretical MAC reduction (spec §7).

For CIFAR ResNet-20/56/110 (32 px) and torchvision ResNet-18/50 (224 px) at P = 0.3 and 0.4:
random masks with the spec's counts (floor(N P) filters pruned per prunable layer; which
filters does not change the speed), the compact model, then forward latency of dense and
compact at batch 1/64/256 (median of repeats after warm-up, alternating dense and compact;
on CPU the ImageNet nets skip batch 256 unless --full).

    .venv/bin/python benchmarks/speedup.py            # CPU: ImageNet nets at batch 1 and 64 only
    .venv/bin/python benchmarks/speedup.py --quick    # about a minute
    .venv/bin/python benchmarks/speedup.py --full     # batch 256 at 224 px on CPU too (long)
    .venv/bin/python benchmarks/speedup.py --device cuda --markdown

Speed-up = dense latency / compact latency; "saved" = 1 - compact / dense, the number the papers
report as measured acceleration. Prints ratios, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asfp_explorer.export import benchmark, compact  # noqa: E402
from asfp_explorer.flops import MacCounter  # noqa: E402
from asfp_explorer.models import build_model, prunable_layers  # noqa: E402
from asfp_explorer.schedules import pruned_count  # noqa: E402

CIFAR = {"resnet20": 32, "resnet56": 32, "resnet110": 32}
IMAGENET = {"resnet18": 224, "resnet50": 224}


def random_masks(model: torch.nn.Module, prune_ratio: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """floor(N P) randomly chosen filters pruned in every prunable layer."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, conv in prunable_layers(model).items():
        n = conv.out_channels
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[: n - pruned_count(n, prune_ratio)]] = True
        masks[name] = mask
    return masks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="batch 1 and 16 (ImageNet) or 64 (CIFAR), shorter")
    p.add_argument("--full", action="store_true", help="batch 256 for ImageNet nets on CPU too (slow)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="*", default=None, help="subset of " + ", ".join({**CIFAR, **IMAGENET}))
    p.add_argument("--ratios", nargs="*", type=float, default=[0.3, 0.4])
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per point (default: as many as fit in about 3 s, 3 to 50)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, default=None, help="also write all measurements here")
    args = p.parse_args(argv)

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        p.error(f"--device: {args.device!r} was asked for but no CUDA device is available")
    sizes = {**CIFAR, **IMAGENET}
    names = args.models or list(sizes)
    unknown = [n for n in names if n not in sizes]
    if unknown:
        p.error(f"--models: unknown {unknown[0]!r}; allowed: {', '.join(sizes)}")
    results = []
    start = time.perf_counter()
    for name in names:
        side = sizes[name]
        imagenet = name in IMAGENET
        if cuda or args.full:
            batches = (1, 64, 256)
        elif args.quick:
            batches = (1, 16) if imagenet else (1, 64)
        else:  # a 224-px batch of 256 takes about a minute per forward on 2 CPU cores
            batches = (1, 64) if imagenet else (1, 64, 256)
        torch.manual_seed(0)
        model = build_model(name, 1000 if imagenet else 10).eval()
        counter = MacCounter(model, (3, side, side))
        for ratio in args.ratios:
            masks = random_masks(model, ratio)
            small = compact(model, masks, (3, side, side))
            kept = {n: int(m.sum()) for n, m in masks.items()}
            exact = 100.0 * (1.0 - counter.exact_macs(kept) / counter.dense_macs)
            paper = 100.0 * (1.0 - counter.paper_macs(ratio) / counter.dense_macs)
            r = benchmark(model, small, (3, side, side), batches, args.device, repeats=args.repeats,
                          budget_s=1.0 if args.quick else 3.0)
            r.update(model=name, prune_ratio=ratio, exact_reduction_percent=exact,
                     paper_reduction_percent=paper)
            results.append(r)
            cells = "  ".join(f"b{b['batch_size']}: {b['speedup']:.2f}x ({b['time_reduction_percent']:.0f} %)"
                              for b in r["batches"])
            print(f"# {name} P={ratio}: MACs -{exact:.1f} % (paper {paper:.1f} %)  {cells}", flush=True)

    device_name = results[0]["device_name"] if results else args.device
    header = (f"device {device_name}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}; {time.perf_counter() - start:.0f} s")
    print(header)
    rows = [(r["model"], r["prune_ratio"], r["exact_reduction_percent"],
             {b["batch_size"]: b for b in r["batches"]}) for r in results]
    batch_sizes = sorted({b for *_, bs in rows for b in bs})
    if args.markdown:
        print("| model | P | MACs removed (exact) | " + " | ".join(f"batch {b}" for b in batch_sizes) + " |")
        print("|---|---|---|" + "---|" * len(batch_sizes))
        for name, ratio, exact, bs in rows:
            cells = [f"{bs[b]['speedup']:.2f}x ({bs[b]['time_reduction_percent']:.0f} %)" if b in bs else "-"
                     for b in batch_sizes]
            print(f"| {name} | {ratio} | {exact:.1f} % | " + " | ".join(cells) + " |")
    else:
        print(f"{'model':<10} {'P':>4} {'MACs-':>7} " + " ".join(f"{'b' + str(b):>14}" for b in batch_sizes))
        for name, ratio, exact, bs in rows:
            cells = [f"{bs[b]['speedup']:.2f}x ({bs[b]['time_reduction_percent']:3.0f}%)" if b in bs else "-"
                     for b in batch_sizes]
            print(f"{name:<10} {ratio:>4} {exact:6.1f}% " + " ".join(f"{c:>14}" for c in cells))
    if args.json:
        args.json.write_text(json.dumps({"header": header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
