"""A user's own CNN: which convs torch.fx tracing finds prunable, and why others are not;
and tracing never reaches forward passes on other threads (training, a user's cell)."""

from __future__ import annotations

import copy
import threading
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asfp_explorer.engine import RunHandle
from asfp_explorer.export import compact
from asfp_explorer.flops import MacCounter, conv_macs, fvcore_conv_macs
from asfp_explorer.models import build_model, prunable_layers
from asfp_explorer.models.tracing import TraceError, find_prunable_layers, trace
from asfp_explorer.store import load_run
from support import tiny_config


class ResCat(nn.Module):
    """Residual addition, concatenation, scalar arithmetic, pooling; then a depthwise conv fed
    by `mix`, and a `head` conv whose output is flattened into a linear classifier."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=True)
        self.bn0 = nn.BatchNorm2d(16)
        self.a = nn.Conv2d(16, 16, 3, padding=1)
        self.bna = nn.BatchNorm2d(16)
        self.b = nn.Conv2d(16, 8, 1)
        self.c = nn.Conv2d(16, 8, 3, padding=1, bias=False)
        self.bnc = nn.BatchNorm2d(16)
        self.mix = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(24, 24, 3, padding=1, groups=24)
        self.head = nn.Conv2d(24, 4, 1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))
        x = x + self.bna(self.a(x))  # residual
        y = torch.cat([self.b(x), self.c(x)], 1)  # concatenation
        y = F.relu6(self.bnc(y)) * 0.5
        y = F.max_pool2d(y, 3, 1, 1)
        z = self.dw(F.silu(self.mix(y)))
        return self.fc(self.head(z).flatten(1))


def randomise_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.bias.data = torch.randn(m.num_features, generator=g)
            m.running_mean = torch.randn(m.num_features, generator=g)
            m.running_var = torch.rand(m.num_features, generator=g) + 0.5
    return model


def test_residual_and_concat_are_found():
    prunable, skipped = find_prunable_layers(ResCat(), torch.randn(2, 3, 16, 16))
    assert prunable == ["stem", "a", "b", "c"]
    reasons = dict(skipped)
    assert set(reasons) == {"mix", "dw", "head"}
    assert "dw" in reasons["mix"] and "groups=24" in reasons["mix"]
    assert reasons["dw"].startswith("depthwise conv (groups=24)")
    assert "flatten" in reasons["head"] and "mixes channels" in reasons["head"]


@pytest.mark.parametrize("keep_one", [False, True])
def test_custom_model_compacts_exactly(keep_one):
    model = randomise_bn(ResCat())
    g = torch.Generator().manual_seed(4)
    masks = {}
    for name, conv in prunable_layers(model, (3, 16, 16)).items():
        n = conv.out_channels
        mask = torch.zeros(n, dtype=torch.bool)
        mask[torch.randperm(n, generator=g)[:1 if keep_one else n // 2]] = True
        masks[name] = mask
    small = compact(model, masks, (3, 16, 16))
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, mask in masks.items():
            conv = ref.get_submodule(name)
            conv.weight[~mask] = 0
            if conv.bias is not None:
                conv.bias[~mask] = 0
        x = torch.randn(3, 3, 16, 16)
        want, got = ref(x), small(x)
    assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    kept = {n: int(m.sum()) for n, m in masks.items()}
    counter = MacCounter(model, (3, 16, 16))
    assert counter.exact_macs(kept) == fvcore_conv_macs(small, (3, 16, 16)) < counter.dense_macs
    assert counter.exact_params(kept) == sum(p.numel() for p in small.parameters())


class Patterns(nn.Module):
    """One conv per pattern the tool must refuse."""

    def __init__(self):
        super().__init__()
        self.viewed = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.broadcast = nn.Conv2d(3, 4, 1)
        self.softmaxed = nn.Conv2d(3, 4, 1)
        self.out = nn.Conv2d(3, 4, 1)
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))

    def forward(self, x):
        v = self.viewed(x).view(x.shape[0], 4, -1).mean(-1)
        s = self.shared(self.shared(v.view(-1, 4, 1, 1).expand(-1, 4, 4, 4)))
        b = self.broadcast(x) + self.scale
        m = torch.softmax(self.softmaxed(x), dim=1)
        return s.mean() + b.mean() + m.mean(), self.out(x)


def test_unsupported_patterns_give_reasons():
    prunable, skipped = find_prunable_layers(Patterns(), (3, 8, 8))
    reasons = dict(skipped)
    assert prunable == []
    assert "`.view()`" in reasons["viewed"] and "mixes channels" in reasons["viewed"]
    assert reasons["shared"].startswith("called at 2 places")
    assert "broadcasting" in reasons["broadcast"]
    assert "`softmax`" in reasons["softmaxed"]
    assert reasons["out"] == "its output is a model output"


def test_untraceable_model_says_so():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.c(x) if x.sum() > 0 else x

    with pytest.raises(TraceError, match="Branchy is not traceable by torch.fx .*prunable_conv_names"):
        find_prunable_layers(Branchy(), (3, 8, 8))


def test_bad_example_input():
    with pytest.raises(ValueError, match="example_input"):
        find_prunable_layers(ResCat(), (16, 16))


class Zoo(nn.Module):
    """Folding through strided, dilated, rectangular kernels, and every fallback path."""

    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.Hardswish())
        self.b = nn.Conv2d(12, 10, (3, 5), stride=(2, 1), padding=(2, 1), dilation=(2, 1))
        self.bnb = nn.BatchNorm2d(10)
        self.c = nn.Conv2d(10, 8, 4, stride=3, padding=2)
        self.bnc = nn.BatchNorm2d(8)
        self.reflect = nn.Conv2d(8, 6, 3, padding=1, padding_mode="reflect")
        self.same = nn.Conv2d(6, 6, 3, padding="same")
        self.d = nn.Conv2d(6, 6, 1)
        self.bnd = nn.BatchNorm2d(6)
        self.e = nn.Conv2d(9, 5, 3, padding=1)

    def forward(self, x):
        x = self.bnb(self.b(self.a(x))).clamp(min=-0.5) - 0.25
        x = F.avg_pool2d(F.interpolate(x, scale_factor=2.0, mode="bilinear"), 3, 1, 1)  # padded avg pool
        y = torch.sigmoid(self.bnc(self.c(x)))
        y = self.same(F.leaky_relu(self.reflect(y), 0.1))
        z = F.elu(self.bnd(self.d(y)))
        z = torch.cat([z[:, :3], y[:, 3:]], dim=1)  # channel indexing
        return self.e(torch.cat([z, z[:, :3]], 1))


def test_every_conv_masked_still_compacts_exactly():
    model = randomise_bn(Zoo())
    g = torch.Generator().manual_seed(1)
    masks = {}
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            mask = torch.rand(conv.out_channels, generator=g) < 0.5
            mask[0] = True
            masks[name] = mask
    for size in [(17, 23), (30, 30)]:
        small = compact(model, masks, (3, 24, 24))
        ref = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, mask in masks.items():
                ref.get_submodule(name).weight[~mask] = 0
                ref.get_submodule(name).bias[~mask] = 0
            x = torch.randn(2, 3, *size)
            want, got = ref(x), small(x)
        assert (got - want).abs().max().item() <= 1e-4 * want.abs().max().item()
    prunable, skipped = find_prunable_layers(model, (3, 24, 24))
    assert prunable == ["a.0"]
    reasons = dict(skipped)
    assert "`avg_pool2d` with zero padding" in reasons["b"]
    assert "mode 'reflect'" in reasons["c"]
    assert "padding 'same'" in reasons["reflect"]
    assert "indexing of channels" in reasons["d"]


def test_hand_listed_convs_count_what_compact_builds():
    """Convs listed by hand that reach unsupported ops: MACs still equal the compact model's."""
    model = Zoo()
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    model.prunable_conv_names = lambda: names
    masks = {n: torch.arange(model.get_submodule(n).out_channels) % 2 == 0 for n in names}
    small = compact(model, masks, (3, 24, 24))
    counter = MacCounter(model, (3, 24, 24))
    kept = {n: int(m.sum()) for n, m in masks.items()}
    # fvcore misses convs with padding="same" (aten::_convolution_mode): count by hooks here
    assert counter.exact_macs(kept) == conv_macs(small, (3, 24, 24)) < conv_macs(model, (3, 24, 24))
    assert counter.exact_params(kept) == sum(p.numel() for p in small.parameters())


# ----------------------------------------------------------------------------- other threads


class Gate(nn.Module):
    """Holds its own trace open (fx's process-wide patches in place) until `release` is set."""

    def __init__(self, tracing: threading.Event, release: threading.Event):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.tracing, self.release = tracing, release

    def forward(self, x):
        self.tracing.set()
        assert self.release.wait(60), "the other thread never finished"
        return self.conv(x)


def test_a_users_forward_during_a_trace_is_bit_identical():
    """A cell's forward pass runs, start to end, while a trace holds fx's patches in place.

    Plain `fx.symbolic_trace` sends that forward into the trace (NameError: module is not
    installed as a submodule); the project's tracer hands it back to the untraced code.
    """
    user = build_model("resnet20", 10, 1)
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(user)
    want_eval = reference.eval()(x).detach()
    want_train = reference.train()(x)
    want_train.sum().backward()
    tracing, release = threading.Event(), threading.Event()
    got: dict = {}

    def cell():
        try:
            assert tracing.wait(60)
            got["eval"] = user.eval()(x).detach()
            out = user.train()(x)  # train mode: BN statistics move, gradients flow
            out.sum().backward()
            got["train"] = out.detach()
        except BaseException as e:
            got["error"] = e
        finally:
            release.set()

    t = threading.Thread(target=cell)
    t.start()
    gm = trace(Gate(tracing, release))
    t.join()
    assert "error" not in got, got.get("error")
    assert torch.equal(got["eval"], want_eval) and torch.equal(got["train"], want_train.detach())
    for (name, p), q in zip(user.named_parameters(), reference.parameters()):
        assert torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(user.named_buffers(), reference.buffers()):
        assert torch.equal(b, c), name
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_module", "output"]


def comparable(run):
    return [{k: v for k, v in m.items() if "seconds" not in k} for m in run.metrics]


def test_tracing_while_another_run_trains_changes_neither(tmp_path):
    """fx traces (MAC counter, compact export) and fvcore's jit trace on this thread, beside a
    training run on another: the run is bit-identical to one alone, and every count exact."""
    from asfp_explorer.viz.compact_macs import compact_conv_macs

    cfg = tiny_config(training={"seed": 5, "epochs": 4})
    RunHandle(cfg, tmp_path / "alone").run()
    model = build_model("resnet20", 10, 1)
    counter = MacCounter(model, (1, 8, 8))
    names = list(counter.layer_sizes)
    masks = [np.arange(counter.layer_sizes[n]) % 3 != 0 for n in names]
    info = {"input_size": (1, 8, 8), "num_classes": 10, "layer_names": names}
    want = counter.exact_macs({n: int(m.sum()) for n, m in zip(names, masks)})
    handle = RunHandle(cfg, tmp_path / "beside_traces").start()
    dense, compact_counts = set(), set()
    while handle.status in ("created", "running"):
        dense.add(MacCounter(model, (1, 8, 8)).dense_macs)
        compact_counts.add(compact_conv_macs(cfg.to_dict(), info, masks))
    assert handle.wait(300) == "finished"
    assert dense == {counter.dense_macs} and compact_counts == {want}
    assert comparable(load_run(tmp_path / "alone")) == comparable(load_run(tmp_path / "beside_traces"))


def test_fvcore_leaves_the_warning_filters_alone():
    """fvcore's count runs its trace inside `warnings.catch_warnings()`, which swaps the
    process-wide filter list; here the list in force during its trace is the caller's own."""
    filters = warnings.filters
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            seen.append(warnings.filters is filters)
            return self.conv(x)

    assert fvcore_conv_macs(Probe(), (1, 5, 5)) == 2 * 1 * 9 * 3 * 3
    assert seen and all(seen)


def test_the_shape_probe_tells_architectures_apart():
    """The probe's answers are kept per architecture: same code, other arguments or widths
    must still get their own shapes (checked against a real forward pass)."""
    from asfp_explorer.models.tracing import PROBE_BATCH, analyse

    class Net(nn.Module):
        def __init__(self, stride, width):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, stride=stride)
            self.bn = nn.BatchNorm2d(width)

        def forward(self, x):
            return self.bn(self.conv(x))

    for stride, width, side in [(1, 4, 9), (2, 4, 9), (1, 6, 9), (1, 4, 12), (1, 4, 9)]:
        net = Net(stride, width)
        flow = analyse(net, (3, side, side))
        want = tuple(net.eval()(torch.zeros(PROBE_BATCH, 3, side, side)).shape)
        assert flow.shapes[next(n.name for n in flow.gm.graph.nodes if n.target == "bn")] == want
