"""What watching costs: a plain PyTorch loop vs the explorer vs the explorer with a dashboard.

Side by side in one process, whole runs alternating (plain, explorer, explorer without the
unmasked evaluation, explorer on a background thread, explorer + live dashboard), repeated
`--rounds` times. The dashboard trains in a child process by default (its `worker`), or on a
background thread ("thread"); "explorer, child process" and "explorer, background thread"
are those without the figures. For a child process, epoch ends are taken as its events
arrive here. An epoch's cost is
the time between consecutive epoch ends, so everything that runs per epoch counts (the
evaluations, the mask update, the recorder's files, the checkpoint, observers); the first
epoch of every run is dropped (warm-up). Prints seconds per epoch (median and the spread
min-max over all kept epochs), the ratio to the plain loop, and for the explorer where its
per-epoch time goes. Denormals are flushed on CPU.

    python benchmarks/overhead.py [--data digits,cifar] [--epochs 6] [--rounds 3]
                                  [--cifar ../shared/data/cifar10-subset.npz] [--cifar-images 2500]

The plain loop is what a careful user would write: the same model, data on the device,
SGD with Nesterov momentum, one evaluation per epoch, one host sync per epoch.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from asfp_explorer.config import RunConfig
from asfp_explorer.data import DeviceLoader, load_dataset
from asfp_explorer.engine import EventKind, RunHandle
from asfp_explorer.models import build_model

ROOT = Path(__file__).resolve().parents[1]


def plain_loop(config: RunConfig, epochs: int) -> list[float]:
    """Seconds per epoch of a minimal training loop with the same model, data and optimiser."""
    t = config.training
    torch.manual_seed(t.seed)
    device = torch.device(config.training.device)
    data = load_dataset(config.data).to(device)
    model = build_model(config.model.name, data.num_classes, data.input_size[0]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, nesterov=True,
                          weight_decay=t.weight_decay)
    augment = config.data.augment and data.name != "digits"
    train = DeviceLoader(data, "train", config.data.batch_size, True, augment, seed=t.seed)
    test = DeviceLoader(data, "test", max(config.data.batch_size, 256), False, False)
    ends = [time.perf_counter()]
    for _ in range(epochs):
        model.train()
        loss_sum = torch.zeros((), device=device)
        for x, y in train:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=device)
        with torch.no_grad():
            for x, y in test:
                correct += (model(x).argmax(1) == y).sum()
        float(loss_sum), int(correct)  # sync: once per epoch, as the explorer does
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:])]


class EpochClock:
    """Observer: wall time between consecutive epoch ends (epoch 0's end starts the clock)."""

    def __init__(self):
        self.ends: list[float] = []

    def __call__(self, event) -> None:
        if event.kind is EventKind.EPOCH_END:
            self.ends.append(time.perf_counter())

    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.ends, self.ends[1:])]


class Parts:
    """Sums the seconds spent in named callables of one trainer (wrapped on the instance)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0
        timed.__name__ = getattr(fn, "__name__", name)
        return timed


def explorer(config: RunConfig, epochs: int, parts: Parts | None = None) -> list[float]:
    """Seconds per epoch of RunHandle with its recorder and checkpoints (as `train` runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        handle = RunHandle(config.with_changes(training={"epochs": epochs}), Path(tmp) / "run")
        trainer = handle.trainer
        clock = EpochClock()
        if parts is not None:
            trainer._iterations = parts.wrap("train iterations", trainer._iterations)
            trainer._evaluate = parts.wrap("evaluations", trainer._evaluate)
            trainer.save_checkpoint = parts.wrap("checkpoint", trainer.save_checkpoint)
            trainer.observers = [parts.wrap("recorder + observers", o) for o in trainer.observers]
        trainer.add_observer(clock)
        handle.run()
        return clock.epochs()


def explorer_in_thread(config: RunConfig, epochs: int) -> list[float]:
    """As `explorer`, but trained on a background thread (`RunHandle.start()`), as the
    dashboard trains: separates the cost of the thread from the cost of the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        handle = RunHandle(config.with_changes(training={"epochs": epochs}), Path(tmp) / "run")
        clock = EpochClock()
        handle.trainer.add_observer(clock)
        handle.start()
        handle.wait()
        return clock.epochs()


def explorer_in_process(config: RunConfig, epochs: int) -> list[float]:
    """As `explorer`, but trained in a child process (`ProcessRunHandle`), as the dashboard
    trains by default; epoch ends are taken as the events arrive in this process."""
    from asfp_explorer.engine import ProcessRunHandle

    with tempfile.TemporaryDirectory() as tmp:
        clock = EpochClock()
        handle = ProcessRunHandle(config.with_changes(training={"epochs": epochs}),
                                  Path(tmp) / "run", [clock])
        handle.run()
        return clock.epochs()


def with_dashboard(config: RunConfig, epochs: int, worker: str) -> list[float]:
    """Seconds per epoch with a live Dashboard (FigureWidgets without a front end) training
    in `worker` ("process" or "thread")."""
    from asfp_explorer.viz.dashboard import Dashboard

    with tempfile.TemporaryDirectory() as tmp:
        dash = Dashboard(config.with_changes(training={"epochs": epochs}), Path(tmp) / "run",
                         fvcore=False, worker=worker)
        clock = EpochClock()
        handle = dash.start()
        if handle is None:
            raise SystemExit(f"the dashboard refused to start: {dash.controls.message.value}")
        handle.add_observer(clock)  # the first epoch end it sees starts the clock
        handle.wait()
        dash.close() if hasattr(dash, "close") else None
        return clock.epochs()


def describe(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} s [{min(xs):.3f}-{max(xs):.3f}]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits,cifar", help="digits, cifar or both")
    p.add_argument("--epochs", type=int, default=6, help="per run; the first is dropped")
    p.add_argument("--rounds", type=int, default=3, help="alternating repetitions")
    p.add_argument("--cifar", default=str(ROOT.parent / "shared" / "data" / "cifar10-subset.npz"))
    p.add_argument("--cifar-images", type=int, default=2500, help="training images used")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-dashboard", action="store_true")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--configs", default=None,
                   help="semicolon-separated subset of the configurations by name (the plain loop "
                        "always runs: it is the reference)")
    p.add_argument("--load", type=int, default=0,
                   help="run a busy torch loop with this many threads in another process "
                        "throughout (contention, as from other work on the machine); 0: none")
    p.add_argument("--fast", action="store_true",
                   help="also time the explorer with bf16 autocast + channels_last (GPU options)")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device: 'cuda' was asked for but no CUDA device is available")
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    base = RunConfig().with_changes(training={"device": args.device})
    sets = {}
    for name in args.data.split(","):
        if name == "digits":
            sets["digits"] = base
        elif name == "cifar":
            if not Path(args.cifar).is_file():
                print(f"skipping cifar: {args.cifar} not found", file=sys.stderr)
                continue
            sets["cifar subset"] = base.with_changes(
                data={"name": "npz", "path": args.cifar, "train_subset": args.cifar_images})
        else:
            p.error(f"--data: {name!r} is not allowed; expected digits or cifar")
    load = start_load(args.load) if args.load > 0 else None
    try:
        return measure(args, p, sets)
    finally:
        if load is not None:
            load.kill()


def start_load(threads: int) -> subprocess.Popen:
    """Another process that keeps `threads` cores busy with small torch ops until killed."""
    code = (f"import torch\ntorch.set_num_threads({threads})\na = torch.randn(64, 64)\n"
            "while True:\n    a = (a @ a).tanh()\n")
    return subprocess.Popen([sys.executable, "-c", code])


def measure(args, p: argparse.ArgumentParser, sets: dict[str, RunConfig]) -> int:
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{where}, torch {torch.__version__}, {torch.get_num_threads()} threads, denormals flushed; "
          f"{args.rounds} rounds x {args.epochs} epochs per configuration, first epoch dropped"
          + (f"; a {args.load}-thread torch loop runs beside" if args.load else ""))
    for label, cfg in sets.items():
        configs: dict[str, Callable[[], list[float]]] = {
            "plain loop": lambda cfg=cfg: plain_loop(cfg, args.epochs),
            "explorer": lambda cfg=cfg: explorer(cfg, args.epochs),
            "explorer, no unmasked eval": lambda cfg=cfg: explorer(
                cfg.with_changes(training={"eval_unmasked": False}), args.epochs),
        }
        if args.fast:
            configs["explorer, bf16 + channels_last"] = lambda cfg=cfg: explorer(
                cfg.with_changes(training={"precision": "bf16", "channels_last": True}),
                args.epochs)
        if not args.no_dashboard:
            configs["explorer, background thread"] = lambda cfg=cfg: explorer_in_thread(
                cfg, args.epochs)
            configs["explorer, child process"] = lambda cfg=cfg: explorer_in_process(
                cfg, args.epochs)
            configs["explorer + dashboard (process)"] = lambda cfg=cfg: with_dashboard(
                cfg, args.epochs, "process")
            configs["explorer + dashboard (thread)"] = lambda cfg=cfg: with_dashboard(
                cfg, args.epochs, "thread")
            configs["explorer + dashboard (process), no unmasked eval"] = \
                lambda cfg=cfg: with_dashboard(cfg.with_changes(
                    training={"eval_unmasked": False}), args.epochs, "process")
        if args.configs is not None:
            wanted = {c.strip() for c in args.configs.split(";")}
            unknown = wanted - set(configs)
            if unknown:
                p.error(f"--configs: {', '.join(sorted(unknown))} not allowed; expected names "
                        f"from: {', '.join(configs)}")
            configs = {k: v for k, v in configs.items() if k == "plain loop" or k in wanted}
        times: dict[str, list[float]] = {k: [] for k in configs}
        for _ in range(args.rounds):
            for name, fn in configs.items():  # alternate whole runs
                times[name] += fn()[1:]
        parts = Parts()
        breakdown = explorer(cfg, args.epochs, parts)
        ref = statistics.median(times["plain loop"])
        print(f"\n## {label}\n")
        print("| configuration | s / epoch, median [min-max] | vs plain loop |")
        print("|---|---|---|")
        for name, xs in times.items():
            print(f"| {name} | {describe(xs)} | {statistics.median(xs) / ref:.3f}x |")
        total = sum(breakdown)
        print(f"\nwhere an explorer epoch goes ({len(breakdown)} epochs, one run, includes the "
              f"first):")
        for name, s in sorted(parts.seconds.items(), key=lambda kv: -kv[1]):
            print(f"- {name}: {1000 * s / (len(breakdown) + 1):.1f} ms per epoch "
                  f"({100 * s / total:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
