"""Mixed precision: which dtype ``amp`` resolves to per device, and fp16 training through a GradScaler
(overflowing steps skipped, clipping on unscaled gradients, the loss scale surviving a resume)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from squeezelab import runtime
from squeezelab.config import load_config
from squeezelab.engine import fit, read_checkpoint
from squeezelab.engine.loop import StepOptions, backward_and_step
from tests.helpers import crash_then_resume, digits_recipe


@pytest.mark.parametrize("capability, expected", [((9, 0), torch.bfloat16), ((8, 0), torch.bfloat16),
                                                  ((7, 5), torch.float16), ((7, 0), torch.float16)])
def test_auto_amp_on_cuda_picks_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    # T4 / V100 (7.x) only emulate bf16, so they get fp16 and its tensor cores instead.
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.resolve_amp("auto", torch.device("cuda", 0)) == expected
    assert runtime.needs_grad_scaler(expected) == (expected == torch.float16)


def test_amp_choices_on_cpu():
    cpu = torch.device("cpu")
    assert runtime.resolve_amp("off", cpu) is None
    assert runtime.resolve_amp("bf16", cpu) == torch.bfloat16
    assert runtime.resolve_amp("fp16", cpu) == torch.float16
    assert runtime.resolve_amp("auto", cpu) in (None, torch.bfloat16)  # bf16 only with native support
    with pytest.raises(ValueError, match="amp must be one of"):
        runtime.resolve_amp("fp8", cpu)


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))


def _fp16_loss(model: nn.Module) -> torch.Tensor:
    x, y = torch.randn(8, 3, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    with torch.autocast("cpu", dtype=torch.float16):
        return nn.functional.cross_entropy(model(x), y)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_backs_off():
    model = _tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**120)  # scaled gradients overflow
    opts = StepOptions(amp_dtype=torch.float16, scaler=scaler)
    backward_and_step(model, torch.optim.SGD(model.parameters(), lr=0.1), _fp16_loss(model), opts)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # step skipped
    assert scaler.get_scale() == 2.0**119


def test_fp16_clipping_sees_unscaled_gradients():
    model = _tiny_model()
    opts = StepOptions(amp_dtype=torch.float16, grad_clip=1e-3, scaler=torch.amp.GradScaler("cpu"))
    backward_and_step(model, torch.optim.SGD(model.parameters(), lr=0.1), _fp16_loss(model), opts)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert 0 < norm <= 1e-3 * 1.0001  # scaled gradients (x65536) would be far above the clip


def test_fp16_run_trains_saves_the_loss_scale_and_resumes_bit_identically(tmp_path, monkeypatch):
    recipe = digits_recipe(tmp_path, epochs=3, amp="fp16")
    bn = ["model.options.bn_fire=true", "model.options.bn_conv1=true"]  # learns within 3 short epochs
    straight = fit(load_config(recipe, bn + ["output.run_dir=" + str(tmp_path / "a")]), progress=False)
    fp32 = fit(load_config(recipe, bn + ["train.amp=off", "output.run_dir=" + str(tmp_path / "c")]), progress=False)
    last, ref = read_checkpoint(straight / "last.safetensors"), read_checkpoint(fp32 / "last.safetensors")
    assert last.meta["grad_scaler"]["scale"] > 0 and ref.meta["grad_scaler"] is None
    losses = [json.loads(line)["train_loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    ref_losses = [json.loads(line)["train_loss"] for line in (fp32 / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.02  # it learns ...
    assert max(abs(a - b) for a, b in zip(losses, ref_losses)) < 0.01  # ... as fp32 does

    resumed = crash_then_resume(monkeypatch, recipe, bn, tmp_path / "b", after_epoch=1)
    again = read_checkpoint(resumed / "last.safetensors")
    assert again.meta["grad_scaler"] == last.meta["grad_scaler"]
    for key, value in last.model_state.items():
        assert torch.equal(value, again.model_state[key]), key
