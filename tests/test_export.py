"""The compact model (spec §7) against the masked model, fvcore and a reload from disk."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from torch import fx, nn

from asfp_explorer.export import (ConstantInputMap, ScatterAdd, benchmark, compact, export_compact,
                                  load_compact, save_compact)
from asfp_explorer.flops import MacCounter, fvcore_conv_macs
from asfp_explorer.models import build_model, prunable_layers
from asfp_explorer.models.cifar_resnet import BasicBlock, CifarResNet

CIFAR = ["resnet20", "resnet32", "resnet56", "resnet110"]
IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101"]
SIDE = {**{n: 32 for n in CIFAR}, **{n: 64 for n in IMAGENET}}  # small inputs: 2 CPU cores


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """BN statistics and affine parameters away from 0/1, so pruned filters output constants."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.5
            m.running_mean = torch.randn(n, generator=g) * 0.5
            m.running_var = torch.rand(n, generator=g) * 1.5 + 0.5
    return model


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


def masked_reference(model: nn.Module, masks) -> nn.Module:
    """The masked model, written out plainly: zero the pruned filters' weights and biases."""
    ref = copy.deepcopy(model).eval()
    modules = dict(ref.named_modules())
    with torch.no_grad():
        for name, mask in masks.items():
            modules[name].weight[~mask] = 0
            if modules[name].bias is not None:
                modules[name].bias[~mask] = 0
    return ref


def assert_equivalent(model, small, masks, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = masked_reference(model, masks)(x)
        got = small(x)
    assert got.shape == want.shape
    err = (got - want).abs().max().item()
    assert err <= 1e-4 * want.abs().max().item(), err


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
    result = benchmark(model, small, (3, 32, 32), batch_sizes=(1, 2), repeats=1, warmup=0)
    assert [r["batch_size"] for r in result["batches"]] == [1, 2]
    assert all(r["dense_ms"] > 0 and r["compact_ms"] > 0 for r in result["batches"])
    counter = MacCounter(model, (3, 32, 32))
    kept = {n: int(m.sum()) for n, m in masks.items()}
    assert result["compact_macs"] == counter.exact_macs(kept)
    summary = export_compact(model, masks, (3, 32, 32), tmp_path / "export")
    json.dumps(summary)
    assert summary["relative_error"] <= 1e-4
    assert summary["compact_macs"] == counter.exact_macs(kept)
    assert (tmp_path / "export" / "compact.pt").exists()
    assert json.loads((tmp_path / "export" / "export.json").read_text())["kept"] == kept


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
