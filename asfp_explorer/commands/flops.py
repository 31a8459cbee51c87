"""`asfp-explorer flops`: dense and pruned conv MACs of a model at a uniform prune ratio."""

from __future__ import annotations

import json

from ..config import MODELS, PruningConfig

IMAGENET = {"resnet18", "resnet34", "resnet50", "resnet101"}
MAX_INPUT_SIZE = 4096  # pixels per side; 8x the ImageNet crop


def add_parser(sub) -> None:
    p = sub.add_parser("flops", help="conv MACs of a model, dense and pruned")
    p.add_argument("--model", metavar="NAME", default="resnet56",
                   help=f"{', '.join(MODELS)}, or package.module:factory (default resnet56)")
    p.add_argument("--ratio", type=float, default=0.4, help="prune ratio in [0, 1)")
    p.add_argument("--convention", choices=["paper", "exact"], default="paper",
                   help="paper: fractional channels (spec §6.1); exact: integer channels")
    p.add_argument("--input-size", type=int, default=None,
                   help="image side in pixels (default 32 for CIFAR nets, 224 for ImageNet)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import warnings

    from ..flops import MacCounter
    from ..models import build_model, prunable_layers
    from ..schedules import pruned_count

    PruningConfig(prune_ratio=args.ratio)  # validates the ratio
    imagenet = args.model in IMAGENET
    side = args.input_size or (224 if imagenet else 32)
    if not 8 <= side <= MAX_INPUT_SIZE:  # the count traces a real input of this size
        from ..config import ConfigError

        raise ConfigError(f"input-size: {side} is not allowed; expected 8 to "
                          f"{MAX_INPUT_SIZE} pixels")
    model = build_model(args.model, 1000 if imagenet else 10, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        counter = MacCounter(model, (3, side, side))
    if args.convention == "paper":
        pruned = counter.paper_macs(args.ratio)
    else:
        kept = {n: c.out_channels - pruned_count(c.out_channels, args.ratio)
                for n, c in prunable_layers(model, (3, side, side)).items()}
        pruned = counter.exact_macs(kept)
    dense = counter.dense_macs
    out = {"model": args.model, "input_size": [3, side, side], "prune_ratio": args.ratio,
           "convention": args.convention, "unit": "MACs (conv multiply-accumulates)",
           "dense_macs": dense, "pruned_macs": pruned,
           "reduction_percent": 100.0 * (1 - pruned / dense)}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"model          {args.model} ({side}x{side} input)")
        print("unit           MACs (multiply-accumulates of conv layers)")
        print(f"dense          {dense:,}")
        print(f"pruned ({args.convention}) {pruned:,.0f}  at prune ratio {args.ratio}")
        print(f"reduction      {out['reduction_percent']:.1f} %")
    return 0
