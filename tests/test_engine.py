"""Engine: AdaBound vs a hand computation of the paper's update, schedules, early stopping, metrics,
evaluate, and a few real training steps on the CIFAR subset reducing the loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from squeezelab.config import OptimConfig, ScheduleConfig
from squeezelab.engine import AdaBound, Plateau, build_optimizer, evaluate, lr_factor
from squeezelab.engine.loop import StepOptions, early_stopping, train_one_epoch
from squeezelab.engine.metrics import topk_correct
from tests.helpers import TINY



# ------------------------------------------------------------------------------------ AdaBound


def _adabound_by_hand(p, grads, lr, betas, final_lr, gamma, eps, weight_decay):
    """Luo et al. 2019, Algorithm 2 (AdaBound) with Adam's bias correction, element by element."""
    b1, b2 = betas
    m = [0.0] * len(p)
    v = [0.0] * len(p)
    p = list(p)
    for t, g in enumerate(grads, start=1):
        lower = final_lr * (1 - 1 / (gamma * t + 1))
        upper = final_lr * (1 + 1 / (gamma * t))
        for i in range(len(p)):
            gi = g[i] + weight_decay * p[i]
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            eta = lr * math.sqrt(1 - b2**t) / (1 - b1**t) / (math.sqrt(v[i]) + eps)
            p[i] -= min(max(eta, lower), upper) * m[i]
    return p


def test_adabound_matches_hand_computed_steps():
    # gradient 0.5: inside the bounds; 500: step clipped to the lower bound; 1e-5: to the upper bound
    p0 = [1.0, -2.0, 3.0]
    grads = [[0.5, 500.0, -1e-5], [0.25, 400.0, 2e-5], [-0.5, 300.0, -1e-5]]
    kw = dict(lr=0.01, betas=(0.9, 0.999), final_lr=0.1, gamma=1e-3, eps=1e-8, weight_decay=0.0)
    param = nn.Parameter(torch.tensor(p0, dtype=torch.float64))
    opt = AdaBound([param], **kw)
    for g in grads:
        param.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
    expected = _adabound_by_hand(p0, grads, **kw)
    assert param.detach().tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    # the clipping really happened: Adam moves each coordinate by ~lr = 0.01 per step (<= 0.03 here);
    # the lower bound makes the large-gradient one move further, the upper bound the tiny one less
    assert abs(param[1].item() - p0[1]) > 0.04 and abs(param[2].item() - p0[2]) < 1e-3


def test_adabound_weight_decay_and_first_step_value():
    param = nn.Parameter(torch.tensor([2.0], dtype=torch.float64))
    opt = AdaBound([param], lr=0.01, final_lr=0.1, gamma=1e-3, weight_decay=0.1)
    param.grad = torch.tensor([0.3], dtype=torch.float64)
    opt.step()
    # by hand: g = 0.3 + 0.1 * 2 = 0.5; m = 0.05; v = 2.5e-4; eta = 0.01*sqrt(1e-3)/0.1/(0.0158114+1e-8) = 0.2
    # bounds [9.99e-5, 100.1] -> step = 0.2 * 0.05 = 0.01
    assert param.item() == pytest.approx(2.0 - 0.01, rel=1e-6)


def test_build_optimizer_names():
    net = nn.Linear(3, 2)
    for name, cls in [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                      ("adabound", AdaBound)]:
        assert isinstance(build_optimizer(net, OptimConfig(name=name, lr=0.1)), cls)
    sgd = build_optimizer(net, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4))
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["weight_decay"] == 1e-4


# ------------------------------------------------------------------------------------ schedules


def _f(name, step, spe=10, total=100, **kw):
    return lr_factor(ScheduleConfig(name=name, **kw), step, spe, total)


def test_schedules_are_pure_functions_of_the_step():
    assert _f("fixed", 0) == _f("fixed", 99) == 1.0
    assert [_f("poly", s) for s in (0, 50, 99)] == pytest.approx([1.0, 0.5, 0.01])  # the paper: linear to 0
    assert [_f("step", s, step_size=3) for s in (0, 29, 30, 60, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])
    assert _f("cosine", 50) == pytest.approx(0.5) and _f("cosine", 0) == 1.0
    assert _f("cosine", 100, min_factor=0.1) == pytest.approx(0.1)
    # warmup: linear ramp over 2 epochs (20 steps), then the decay over the remaining 80
    assert [_f("onecycle", s, warmup_epochs=2) for s in (0, 9, 19)] == pytest.approx([0.05, 0.5, 1.0])
    assert _f("onecycle", 60, warmup_epochs=2) == pytest.approx(0.5)
    assert _f("fixed", 4, warmup_epochs=1) == pytest.approx(0.5)


def test_plateau_halves_after_three_bad_epochs():
    p = Plateau(factor=0.5, patience=3)
    scales = [p.update(x) for x in [1.0, 0.9, 0.95, 0.92, 0.91, 0.95, 0.96, 0.97, 0.8]]
    assert scales == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    q = Plateau()
    q.load_state_dict(p.state_dict())
    assert q.state_dict() == p.state_dict()


def test_early_stopping_rule_of_report_000():
    best, bad, stop, history = -1.0, 0, False, []
    for top5 in [0.3, 0.5, 0.45, 0.48, 0.72, 0.71, 0.70, 0.73, 0.72, 0.72]:
        best, bad, stop = early_stopping(best, bad, top5, patience=2, threshold=0.6)
        history.append(stop)
    # 0.45/0.48: the best (0.5) is below the threshold (not counted); after 0.72, 0.71 and 0.70 -> stop at epoch 7
    assert history.index(True) == 6
    assert early_stopping(0.9, 5, 0.1, None, 0.0) == (0.9, 5, False)  # patience None: off
    # once the best has reached the threshold, epochs below it count too (report 000's SN_lr1: best top-5
    # 79.41%, later epochs under 79%, stopped 50 epochs after the best)
    best, bad = 0.7941, 0
    for epoch in range(50):
        best, bad, stop = early_stopping(best, bad, 0.78, patience=50, threshold=0.79)
        assert stop == (epoch == 49)


# ------------------------------------------------------------------------------------ metrics


def test_topk_and_evaluate_against_torch():
    torch.manual_seed(0)
    logits = torch.randn(37, 7)
    labels = torch.randint(0, 7, (37,))
    top1, top5 = topk_correct(logits, labels)
    assert top1.item() == (logits.argmax(1) == labels).sum().item()
    ranks = (logits > logits.gather(1, labels[:, None])).sum(1)
    assert top5.item() == (ranks < 5).sum().item()

    class Lookup(nn.Module):  # returns the stored logits of the images' index (stored in pixel 0)
        def forward(self, x):
            return logits[x[:, 0, 0, 0].long()]

    class Identity:
        def eval(self, x):
            return x.float()

    from squeezelab.data import TensorLoader

    images = torch.zeros(37, 3, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.arange(37, dtype=torch.uint8)
    r = evaluate(Lookup(), TensorLoader(images, labels, 8, shuffle=False, drop_last=False), Identity(), "cpu", amp="off")
    assert r["n"] == 37 and r["top1"] == pytest.approx(top1.item() / 37) and r["top5"] == pytest.approx(top5.item() / 37)
    assert r["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-6)


# ------------------------------------------------------------------------------------ real steps


@pytest.fixture
def one_thread():
    """One torch thread: on a busy 2-core machine two spinning OpenMP threads ran tiny models ~20x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_few_steps_on_the_cifar_subset_reduce_the_loss(shared_data, one_thread):
    from squeezelab.data import TensorLoader, get_preset, load_dataset
    from squeezelab.models import create_model

    data = load_dataset("cifar10", shared_data / "cifar-10-subset", "train", cache_dir=False)
    assert len(data) == 5085 and data.num_classes == 10
    preset = get_preset("small")
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=10, bn_fire=True, dropout=0.0, **TINY)
    probe = TensorLoader(data.images[:512], data.labels[:512], 256, shuffle=False, drop_last=False)
    before = evaluate(model, probe, preset, "cpu", amp="off")["loss"]
    opt = build_optimizer(model, OptimConfig(name="adam", lr=0.01, weight_decay=0.0))
    loader = TensorLoader(data.images, data.labels, 64, shuffle=True, drop_last=True, seed=0)
    stats = train_one_epoch(model, loader, preset, opt, nn.CrossEntropyLoss(), device=torch.device("cpu"),
                            lr_at=lambda s: 0.01, start_step=0, opts=StepOptions(max_steps=30),
                            generator=torch.Generator().manual_seed(0))
    after = evaluate(model, probe, preset, "cpu", amp="off")["loss"]
    assert stats["steps"] == 30 and math.isfinite(stats["train_loss"])
    assert after < before - 0.05, (before, after)


def test_val_split_is_the_carved_val_for_pooled_and_val_fraction():
    from squeezelab.config import config_from_dict
    from squeezelab.engine.run import _val_split

    def split(**data):
        return _val_split(config_from_dict({"data": {"dataset": "cifar10", **data}}))

    assert split() == "test" and split(val_fraction=0.1) == "val"
    assert split(val_fraction=0.1, split_scheme="pooled") == "val"
    assert split(val_fraction=0.1, split_scheme="pooled", val_split="train") == "train"


def test_checkpoints_name_the_outputs_or_nothing():
    # a 200-class dataset trained with 1000 outputs (Tiny ImageNet calibrating the authors' SqueezeNet)
    # must not store the 200 names as if they were the 1000 outputs' (the 6-bit .sqz once did)
    from squeezelab.engine.run import output_classes

    tiny, imagenet = [f"n{i:08d}" for i in range(200)], [f"n{i:08d}" for i in range(1000)]
    assert output_classes(tiny, 200) == tiny
    assert output_classes(tiny, 1000) is None
    assert output_classes(tiny, 1000, imagenet) == imagenet
    assert output_classes(tiny, 1000, tiny) is None
