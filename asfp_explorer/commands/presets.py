"""`asfp-explorer presets`: the papers' table rows that `train --preset NAME` reproduces."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("presets", help="list the papers' presets (train --preset NAME)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..presets import PAPER_PRESETS

    rows = [{"name": p.name, "reproduces": p.reproduces, "published": p.published,
             "data": p.dataset, "pretrained": p.pretrained} for p in PAPER_PRESETS.values()]
    if args.json:
        print(json.dumps(rows))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['reproduces']}")
        print(f"{'':<{width}}    published: {r['published']}")
    print("\nUse: asfp-explorer train --preset NAME --data-path PATH (CIFAR-10 root, or the "
          "ImageNet folder with train/ and val/); pretrained presets also need --weights FILE.")
    return 0
