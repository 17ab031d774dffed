"""Checkpoints: one safetensors file (tensors + JSON metadata, no pickle); round trip; bad files."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from torch import nn

from squeezelab.engine import AdaBound, read_checkpoint, save_checkpoint
from squeezelab.weights.checkpoint import unwrap_model
from squeezelab.errors import WeightsError


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))


def _trained(opt_cls, **kw):
    net = _net()
    net(torch.randn(2, 3, 6, 6))  # materialise the lazy layer
    opt = opt_cls(net.parameters(), **kw)
    for _ in range(2):
        opt.zero_grad()
        net(torch.randn(4, 3, 6, 6)).square().mean().backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("opt_cls, kw", [(torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
                                         (torch.optim.AdamW, {"lr": 1e-3}), (AdaBound, {"lr": 1e-3})])
def test_round_trip_model_optimizer_meta(tmp_path, opt_cls, kw):
    net, opt = _trained(opt_cls, **kw)
    meta = {"model": {"name": "x", "num_classes": 5, "options": {"sr": 0.25}}, "epoch": 3, "best": {"top1": 0.5}}
    path = save_checkpoint(tmp_path / "c.safetensors", net, meta=meta, optimizer=opt,
                           extra_tensors={"rng.cpu": torch.get_rng_state()})
    c = read_checkpoint(path)
    assert c.meta["model"] == meta["model"] and c.meta["epoch"] == 3 and c.meta["format_version"] == 1
    for k, v in net.state_dict().items():
        assert torch.equal(c.model_state[k], v) and c.model_state[k].dtype == v.dtype
    assert torch.equal(c.extra["rng.cpu"], torch.get_rng_state())
    # the optimizer state loads back and continues identically
    net2, opt2 = _net(), None
    net2(torch.randn(2, 3, 6, 6))
    net2.load_state_dict(c.model_state)
    opt2 = opt_cls(net2.parameters(), **kw)
    opt2.load_state_dict(c.optim_state)
    x = torch.randn(4, 3, 6, 6)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).square().mean().backward()
        o.step()
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)


def test_file_is_plain_safetensors_without_pickle(tmp_path):
    net, opt = _trained(torch.optim.SGD, lr=0.1, momentum=0.9)
    path = save_checkpoint(tmp_path / "c.safetensors", net, meta={"epoch": 1}, optimizer=opt)
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    keys = set(header) - {"__metadata__"}
    assert {k.split(".")[0] for k in keys} == {"model", "optim"}
    assert "model.1.running_mean" in keys and "optim.state.0.momentum_buffer" in keys
    assert json.loads(header["__metadata__"]["squeezelab"])["epoch"] == 1
    assert b"\x80\x04" not in raw[:16] and not list(tmp_path.glob(".*tmp"))  # no pickle, no temp left


def test_wrapper_prefixes_are_stripped(tmp_path):
    net = _net()
    net(torch.randn(1, 3, 6, 6))
    wrapper = nn.Module()
    wrapper.module = net  # what DDP looks like
    assert unwrap_model(wrapper) is net
    path = save_checkpoint(tmp_path / "c.safetensors", wrapper, meta={})
    assert set(read_checkpoint(path).model_state) == set(net.state_dict())


def test_bad_files_raise_one_line_weights_error(tmp_path):
    net, _ = _trained(torch.optim.SGD, lr=0.1)
    good = save_checkpoint(tmp_path / "good.safetensors", net, meta={"epoch": 1})
    cases = {"missing.safetensors": None, "garbage.safetensors": b"this is not a checkpoint at all",
             "truncated.safetensors": good.read_bytes()[: good.stat().st_size // 2], "empty.safetensors": b""}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(WeightsError) as err:
            read_checkpoint(path)
        assert "\n" not in str(err.value) and name in str(err.value)


def test_foreign_safetensors_is_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "f.safetensors")
    with pytest.raises(WeightsError, match="not a squeezelab checkpoint"):
        read_checkpoint(tmp_path / "f.safetensors")
