"""The compact model (spec §7) against the masked model, fvcore and a reload from disk."""

from __future__ import annotations

import json
import statistics
import threading
import warnings

import numpy as np
import pytest
import torch
from torch import fx, nn

from asfp_explorer.export import (
    ConstantInputMap,
    OnnxExportError,
    ScatterAdd,
    benchmark,
    compact,
    export_compact,
    load_compact,
    onnx_available,
    save_compact,
)
from asfp_explorer.export.timing import spread
from asfp_explorer.flops import MacCounter, fvcore_conv_macs
from asfp_explorer.models import build_model, prunable_layers
from asfp_explorer.models.cifar_resnet import BasicBlock, CifarResNet
from support import assert_equivalent, masked_reference, randomise_bn

CIFAR = ["resnet20", "resnet32", "resnet56", "resnet110"]
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101"]
SIDE = {**{n: 32 for n in CIFAR}, **{n: 64 for n in IMAGENET}}  # small inputs: 2 CPU cores


def random_masks(model: nn.Module, ratio: float | None, seed: int, input_size=None) -> dict[str, torch.Tensor]:
    """Random masks pruning floor(N ratio) filters per layer; ratio None keeps one filter."""
    g = torch.Generator().manual_seed(seed)
    masks = {}
    for name, conv in prunable_layers(model, input_size).items():
        n = conv.out_channels
        keep = 1 if ratio is None else n - min(int(n * ratio), n - 1)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[:keep]] = True
        masks[name] = mask
    return masks


SLOW = {"resnet110", "resnet101"}  # a few seconds each on 2 CPU cores


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in CIFAR + IMAGENET])
@pytest.mark.parametrize("ratio", [0.3, 0.6, None])
def test_equivalence(name, ratio):
    model = randomise_bn(build_model(name, 10), seed=len(name))
    masks = random_masks(model, ratio, seed=7)
    side = SIDE[name]
    small = compact(model, masks, (3, side, side))
    assert_equivalent(model, small, masks, (2, 3, side, side))
    if ratio is None:  # every prunable conv really lost all but one filter
        modules = dict(small.named_modules())
        assert all(modules[n].out_channels == 1 for n in masks)


@pytest.mark.parametrize("name,shape", [("resnet20", (2, 3, 29, 37)), ("resnet18", (1, 3, 70, 45))])
def test_equivalence_at_another_input_size(name, shape):
    """Folded constant maps depend on the image size: built at one, used at another."""
    model = randomise_bn(build_model(name, 10))
    masks = random_masks(model, 0.4, seed=3)
    small = compact(model, masks, (3, 32, 32))
    assert_equivalent(model, small, masks, shape)


def test_bn_constants_matter():
    """Dropping the folded constants must break equivalence: the test above has teeth."""
    model = randomise_bn(build_model("resnet20"))
    masks = random_masks(model, 0.4, seed=0)
    small = compact(model, masks, (3, 32, 32))
    for m in small.modules():
        if isinstance(m, ScatterAdd):
            m.values.zero_()
        if isinstance(m, ConstantInputMap):
            m.tap_sums.zero_()
    with pytest.raises(AssertionError):
        assert_equivalent(model, small, masks, (2, 3, 32, 32))


@pytest.mark.parametrize("name,ratio", [("resnet20", 0.4), ("resnet56", None),
                                        pytest.param("resnet110", 0.3, marks=pytest.mark.slow),
                                        ("resnet18", 0.3), ("resnet50", 0.4), ("resnet34", None)])
def test_fvcore_and_params_agree_with_exact(name, ratio):
    model = build_model(name, 10)
    side = SIDE[name]
    masks = random_masks(model, ratio, seed=2)
    small = compact(model, masks, (3, side, side))
    counter = MacCounter(model, (3, side, side))
    kept = {n: int(m.sum()) for n, m in masks.items()}
    assert fvcore_conv_macs(small, (3, side, side)) == counter.exact_macs(kept)
    assert sum(p.numel() for p in small.parameters()) == counter.exact_params(kept)
    assert fvcore_conv_macs(small, (3, side, side)) < fvcore_conv_macs(model, (3, side, side))


def test_compact_leaves_the_model_alone():
    model = randomise_bn(build_model("resnet20")).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compact(model, random_masks(model, 0.4, seed=0), (3, 32, 32))
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", ["resnet20", "resnet50"])
def test_save_and_load_without_the_original(name, tmp_path):
    model = randomise_bn(build_model(name, 10))
    side = SIDE[name]
    masks = random_masks(model, 0.4, seed=5)
    save_compact(compact(model, masks, (3, side, side)), tmp_path / "c.pt")
    payload = torch.load(tmp_path / "c.pt", weights_only=True)  # plain data and tensors only
    json.dumps(payload["architecture"])  # the description is JSON-able
    assert payload["architecture"]["widths"]["conv1"][1] == int(masks["conv1"].sum())
    loaded = load_compact(tmp_path / "c.pt")
    assert isinstance(loaded, fx.GraphModule)
    assert not any(isinstance(m, (CifarResNet, BasicBlock)) for m in loaded.modules())
    assert not loaded.training
    assert_equivalent(model, loaded, masks, (2, 3, side, side))


def test_load_refuses_foreign_functions(tmp_path):
    model = build_model("resnet20")
    save_compact(compact(model, random_masks(model, 0.3, seed=0), (3, 32, 32)), tmp_path / "c.pt")
    payload = torch.load(tmp_path / "c.pt", weights_only=True)
    node = next(n for n in payload["architecture"]["graph"] if n["op"] == "call_function")
    node["target"] = "torch.save"
    torch.save(payload, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="function 'torch.save' is not allowed"):
        load_compact(tmp_path / "evil.pt")


@pytest.mark.slow  # TorchScript and torch.export compile for several seconds
@pytest.mark.parametrize("name", ["resnet20", "resnet18"])
def test_torchscript_and_export(name):
    model = randomise_bn(build_model(name, 10))
    side = SIDE[name]
    masks = random_masks(model, 0.4, seed=9)
    small = compact(model, masks, (3, side, side))
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        want = small(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scripted = torch.jit.script(small)
            traced = torch.jit.trace(small, x)
            exported = torch.export.export(small, (x,)).module()
        for f in (scripted, traced, exported):
            assert torch.allclose(f(x), want, rtol=0, atol=1e-5 * want.abs().max().item())
        # scripting keeps the size-dependent folds general: another size still matches
        y = torch.randn(1, 3, side + 5, side + 3)
        assert torch.allclose(scripted(y), small(y), rtol=0, atol=1e-5 * small(y).abs().max().item())


def test_mask_errors():
    model = build_model("resnet20")
    good = random_masks(model, 0.3, seed=0)
    with pytest.raises(ValueError, match="masks: 'fc' is not a single-use"):
        compact(model, {**good, "fc": torch.ones(10, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape \\(15,\\); expected a bool vector of its 16 filters"):
        compact(model, {"conv1": torch.ones(15, dtype=torch.bool)})
    with pytest.raises(ValueError, match="keeps no filter"):
        compact(model, {"conv1": torch.zeros(16, dtype=torch.bool)})


def test_benchmark_and_export_compact(tmp_path):
    model = build_model("resnet20")
    masks = random_masks(model, 0.4, seed=0)
    small = compact(model, masks, (3, 32, 32))
    result = benchmark(model, small, (3, 32, 32), batch_sizes=(1, 2), repeats=3, warmup=0)
    assert [r["batch_size"] for r in result["batches"]] == [1, 2]
    for r in result["batches"]:
        assert r["repeats"] == 3 and r["warmup_rounds"] == 0
        for key in ("dense_ms", "compact_ms", "speedup"):
            assert 0 < r[f"{key}_min"] <= r[f"{key}_q1"] <= r[key] <= r[f"{key}_q3"] <= r[f"{key}_max"]
    assert result["flush_denormal"] is torch.set_flush_denormal(False)  # True where the CPU can
    counter = MacCounter(model, (3, 32, 32))
    kept = {n: int(m.sum()) for n, m in masks.items()}
    assert result["compact_macs"] == counter.exact_macs(kept)
    summary = export_compact(model, masks, (3, 32, 32), tmp_path / "export")
    json.dumps(summary)
    assert summary["relative_error"] <= 1e-4
    assert summary["compact_macs"] == counter.exact_macs(kept)
    assert (tmp_path / "export" / "compact.pt").exists()
    assert json.loads((tmp_path / "export" / "export.json").read_text())["kept"] == kept


def test_spread_matches_numpy_percentiles():
    values = [5.0, 1.0, 4.0, 2.0, 8.0, 3.0, 13.0]
    got = spread(values)
    q1, median, q3 = np.percentile(values, [25, 50, 75])  # numpy's default: linear, inclusive
    assert got == pytest.approx({"median": median, "q1": q1, "q3": q3, "min": 1.0, "max": 13.0})
    assert spread([2.5]) == {"median": 2.5, "q1": 2.5, "q3": 2.5, "min": 2.5, "max": 2.5}


class ScriptedClock:
    """Stands in for timing.py's `_time_ms`: returns scripted times and records the order."""

    def __init__(self, slow_rounds: int):
        self.slow_rounds = slow_rounds
        self.calls: list[str] = []

    def __call__(self, model, x, cuda):
        self.calls.append(model.role)
        r = sum(1 for c in self.calls if c == model.role) - 1  # this model's round
        # slow (cold) first rounds, then steady times with a little jitter
        return 1000.0 if r < self.slow_rounds else (10.0 if model.role == "dense" else 5.0) + (r % 3) * 0.1


def tagged(role: str) -> nn.Module:
    m = nn.Sequential(nn.Conv2d(1, 2, 3))
    m.role = role
    return m


def test_benchmark_warms_up_until_settled_and_alternates(monkeypatch):
    from asfp_explorer.export import timing

    clock = ScriptedClock(slow_rounds=4)
    monkeypatch.setattr(timing, "_time_ms", clock)
    result = benchmark(tagged("dense"), tagged("compact"), (1, 8, 8), batch_sizes=(1,), repeats=6)
    row = result["batches"][0]
    # settled once the last SETTLE_WINDOW rounds are all past the slow ones
    assert row["settled"] and row["warmup_rounds"] == 4 + timing.SETTLE_WINDOW
    assert row["repeats"] == 6 and row["dense_ms_max"] < 1000.0  # no cold round was timed
    assert row["speedup"] == pytest.approx(statistics.median(
        [(10 + (r % 3) * 0.1) / (5 + (r % 3) * 0.1) for r in range(9, 15)]))
    pairs = [clock.calls[i:i + 2] for i in range(0, len(clock.calls), 2)]
    assert all(p == (["dense", "compact"] if i % 2 == 0 else ["compact", "dense"])
               for i, p in enumerate(pairs))  # ABBA, warm-up and timed rounds alike


def test_benchmark_reports_unsettled_timings(monkeypatch):
    from asfp_explorer.export import timing

    monkeypatch.setattr(timing, "_time_ms", ScriptedClock(slow_rounds=10 ** 9))
    row = benchmark(tagged("dense"), tagged("compact"), (1, 8, 8), batch_sizes=(1,), repeats=2,
                    warmup_budget_s=0.0)["batches"][0]
    assert not row["settled"] and row["warmup_rounds"] == 1


DENORMALS_FLUSHED: list[tuple[str, bool]] = []  # module level: the benchmark times deep copies


class DenormalProbe(nn.Module):
    """Records, at every forward, whether denormal floats are flushed to zero on all intra-op
    threads (the multiplication is large enough to be split across them)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)

    def forward(self, x):
        tiny = torch.full((1 << 20,), 1e-39)  # below float32's normal range
        DENORMALS_FLUSHED.append((threading.current_thread().name, bool(((tiny * 1.0) == 0).all())))
        return self.conv(x)


def test_benchmark_flushes_denormals_while_timing_only():
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    DENORMALS_FLUSHED.clear()
    DenormalProbe()(torch.zeros(1, 1, 4, 4))  # the reference: this thread does not flush
    result = benchmark(DenormalProbe(), DenormalProbe(), (1, 4, 4), batch_sizes=(1,), repeats=2, warmup=1)
    assert result["flush_denormal"] is True
    DenormalProbe()(torch.zeros(1, 1, 4, 4))
    timed = [flushed for thread, flushed in DENORMALS_FLUSHED if thread == "asfp-benchmark"]
    others = [flushed for thread, flushed in DENORMALS_FLUSHED if thread != "asfp-benchmark"]
    assert timed == [True] * 6  # 2 warm-up + 4 timed forwards, all flushed
    assert others and not any(others)  # before, meanwhile (MAC counts) and after: not flushed


def test_tables_show_median_and_spread():
    from asfp_explorer.commands.export import benchmark_table
    from asfp_explorer.viz.speedup import speedup_html

    row = {"batch_size": 64, "repeats": 12, "warmup_rounds": 7, "settled": False,
           "dense_ms": 30.0, "dense_ms_q1": 28.0, "dense_ms_q3": 33.0, "dense_ms_min": 25.0, "dense_ms_max": 40.0,
           "compact_ms": 20.0, "compact_ms_q1": 19.0, "compact_ms_q3": 22.0, "compact_ms_min": 18.0,
           "compact_ms_max": 30.0, "speedup": 1.5, "speedup_q1": 1.25, "speedup_q3": 1.75, "speedup_min": 1.0,
           "speedup_max": 2.0, "dense_images_per_s": 2133.0, "compact_images_per_s": 3200.0,
           "time_reduction_percent": 33.3}
    bench = {"device": "cpu", "device_name": "cpu", "threads": 2, "torch": "x", "flush_denormal": True,
             "batches": [row]}
    text = "\n".join(benchmark_table(bench))
    assert "denormals flushed to zero" in text and "median [q1-q3]" in text
    assert "30 [28-33]" in text and "1.50 [1.25-1.75]x" in text and "1.00-2.00x" in text
    assert "had not settled" in text  # settled False is flagged
    page = speedup_html({"mac_reduction_percent": 40.0, "dense_macs": 10, "compact_macs": 6, "dense_params": 5,
                         "compact_params": 3, "relative_error": 1e-7, "benchmark": bench})
    assert "1.25–1.75×" in page and "28.00–33.00" in page and "denormals flushed to zero" in page


@pytest.mark.filterwarnings("ignore::UserWarning")  # the ONNX exporter's notes
@pytest.mark.skipif(not onnx_available(), reason="needs onnx and onnxruntime (pip install '.[onnx]')")
def test_onnx_export_matches_the_masked_model(tmp_path):
    model = randomise_bn(build_model("resnet20"))
    masks = random_masks(model, 0.4, seed=3)
    summary = export_compact(model, masks, (3, 32, 32), tmp_path, onnx=True)
    assert summary["onnx"]["relative_error"] <= 1e-4
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "compact.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)  # a batch size the check did not use: the batch is dynamic
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        want = masked_reference(model, masks)(x)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()


def test_onnx_without_onnxruntime_says_so(tmp_path, monkeypatch):
    from asfp_explorer.export import onnx_export

    monkeypatch.setattr(onnx_export, "onnx_available", lambda: False)
    model = build_model("resnet20")
    with pytest.raises(OnnxExportError, match="needs the optional packages onnx and onnxruntime"):
        onnx_export.export_onnx(model, model, (3, 32, 32), tmp_path / "m.onnx")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_compact_on_gpu():
    model = randomise_bn(build_model("resnet18", 10)).cuda()
    masks = {n: m.cuda() for n, m in random_masks(model, 0.4, seed=1).items()}
    small = compact(model, masks, (3, 64, 64))
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        want, got = masked_reference(model, masks)(x), small(x)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    assert benchmark(model, small, (3, 64, 64), (1, 8), "cuda", repeats=3, warmup=1)["batches"]
