"""The registry of compression methods, and entropy-constrained quantisation (ecq) added through it."""

from __future__ import annotations

import pytest
import torch

from squeezelab.compression import code, ecq, methods, prune, share
from squeezelab.config import ECQConfig, OneShotRecipe, PruneConfig, RunConfig, ShareConfig
from squeezelab.errors import ConfigError
from squeezelab.models import create_model
from tests.helpers import TINY, one_line


def _laplace(n: int, seed: int = 0) -> torch.Tensor:
    """Laplace(0, 0.05) samples, the shape of trained conv weights (inverse CDF of seeded uniforms)."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed)) - 0.5
    return -0.05 * u.sign() * torch.log1p(-2 * u.abs())


def test_registry_lists_each_method_once_pruning_first():
    names = list(methods.methods())
    assert names[0] == "prune" and {"share", "ecq"} <= set(names) and len(names) == len(set(names))
    assert all(m.section == name and m.summary for name, m in methods.methods().items())
    with pytest.raises(ValueError):
        methods.register(share.ShareMethod())  # a section registered twice


def test_enabled_follows_the_config_sections():
    assert methods.enabled(RunConfig()) == []
    cfg = RunConfig(share=ShareConfig(bits=4))
    assert [m.section for m, _ in methods.enabled(cfg)] == ["share"]
    recipe = OneShotRecipe(share=ShareConfig(bits=4), prune=PruneConfig(density=0.5))
    assert [m.section for m, _ in methods.enabled(recipe)] == ["prune", "share"]


@pytest.mark.parametrize("two", [dict(prune=PruneConfig(density=0.5), share=ShareConfig(bits=4)),
                                 dict(share=ShareConfig(bits=4), ecq=ECQConfig(bits=4))])
def test_one_method_per_training_run(two):
    with pytest.raises(ConfigError) as err:
        methods.check_one_per_run(RunConfig(**two))
    one_line(err, "in one run", "prune first")


def test_one_shot_applies_prune_then_quantiser():
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=10, **TINY)
    recipe = OneShotRecipe(prune=PruneConfig(density=0.5), ecq=ECQConfig(bits=3, rate_weight=0.05))
    methods.apply_one_shot(recipe, model)
    w = model.fire2.squeeze.weight
    assert abs(float((w != 0).float().mean()) - 0.5) < 0.02  # pruned first: quantising kept the zeros
    assert torch.unique(w).numel() <= 8


def test_check_model_names_the_bad_pattern():
    model = create_model("squeezenet1_1", num_classes=10, **TINY)
    with pytest.raises(ConfigError) as err:
        methods.check_model(RunConfig(ecq=ECQConfig(bits={"fire99.*": 4})), model)
    one_line(err, "ecq.bits", "fire99")


def test_calibrating_settings_need_data_in_one_shot_use():
    model = create_model("squeezenet1_1", num_classes=10, **TINY)
    with pytest.raises(ConfigError) as err:
        methods.apply_one_shot(OneShotRecipe(share=ShareConfig(bits=4, correct_bias=True)), model)
    one_line(err, "share", "training images")


def test_ecq_at_rate_weight_zero_is_kmeans():
    w = _laplace(5000)
    c0, k0 = share.kmeans_1d(w, 16)
    c1, k1 = ecq.ecq_1d(w, 16, 0.0)
    assert torch.equal(c0, c1) and torch.equal(k0, k1)


def test_ecq_trades_error_for_entropy():
    """As rate_weight grows the codes' entropy falls and the error rises (each step a new point of the
    rate-distortion curve); every code is used and each centroid is the mean of its weights."""
    w = _laplace(20_000)
    points = []
    for lam in (0.0, 0.01, 0.05, 0.2):
        c, k = ecq.ecq_1d(w, 32, lam)
        assert torch.equal(torch.unique(k), torch.arange(c.numel()))
        for j in range(c.numel()):
            assert float(c[j]) == pytest.approx(float(w[k == j].double().mean()), rel=1e-5, abs=1e-7)
        points.append((code.entropy_bits(k.numpy()) / w.numel(), float(((c[k] - w) ** 2).mean())))
    bits, mse = zip(*points)
    assert all(a > b for a, b in zip(bits, bits[1:])), bits
    assert all(a < b for a, b in zip(mse, mse[1:])), mse
    # the Lagrangian each point minimises is no worse there than k-means' point
    lam, var = 0.05, float(w.var())
    assert mse[2] + lam * var * bits[2] <= mse[0] + lam * var * bits[0]


def test_ecq_keeps_pruned_zeros_exact():
    w = _laplace(4096).view(64, 64)
    w[w.abs() < 0.03] = 0
    s = ecq.ecq_tensor(w, 4, 0.05)
    assert s.zero and float(s.codebook[0]) == 0.0
    assert torch.equal(s.dense() == 0, w == 0)
    assert s.codebook.numel() <= 16


def test_ecq_file_is_smaller_than_kmeans_at_the_same_bits(tmp_path):
    """The point of the method: at equal bits the .sqz file of ECQ weights is smaller than k-means'."""
    from squeezelab.weights import convert_weights, load_weights, save_checkpoint

    torch.manual_seed(0)
    model = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32)
    src = save_checkpoint(tmp_path / "dense.safetensors", model,
                          meta={"model": model.model_spec, "preset": "cifar10"})
    sizes = {}
    for name, recipe in {"share": OneShotRecipe(share=ShareConfig(bits=6)),
                         "ecq": OneShotRecipe(ecq=ECQConfig(bits=6, rate_weight=0.02))}.items():
        dst = tmp_path / f"{name}.sqz"
        convert_weights(src, dst, recipe)
        sizes[name] = dst.stat().st_size
        w = load_weights(dst).state_dict["fire2.expand3x3.weight"]
        assert torch.unique(w).numel() <= 64
    assert sizes["ecq"] < 0.95 * sizes["share"], sizes


def test_ecq_rate_weight_must_be_a_number():
    model = create_model("squeezenet1_1", num_classes=10, **TINY)
    with pytest.raises(ConfigError) as err:
        ecq.ECQMethod().check(ECQConfig(bits=4, rate_weight={"default": -1.0}), model)
    one_line(err, "rate_weight")
    assert torch.isfinite(ecq.ecq_1d(_laplace(100), 4, 1e9)[0]).all()  # a huge weight: few codes, finite
