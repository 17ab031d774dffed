"""Pruning and weight sharing: the pure functions by hand and against scikit-learn, and the training
hooks (zeros held through SGD with momentum and weight decay, codebooks trained by summed gradients,
masks and codebooks in checkpoints, exact resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from squeezelab.compression import prune, share
from squeezelab.compression.distill import distillation_loss
from squeezelab.compression.layers import per_layer, weight_layers
from squeezelab.config import load_config
from squeezelab.engine import fit, read_checkpoint
from squeezelab.errors import ConfigError
from squeezelab.models import create_model
from tests.helpers import TINY, crash_then_resume, digits_recipe, one_line


# ------------------------------------------------------------------------------------ layers


def test_layers_are_chosen_by_glob_over_paper_names():
    net = create_model("squeezenet1_0", num_classes=10)
    assert list(weight_layers(net, ["fire*.expand3x3"])) == [f"fire{i}.expand3x3" for i in range(2, 10)]
    assert "conv1" not in weight_layers(net, ["*"], exclude=["conv1"])
    assert list(weight_layers(net, lambda name, m: m.out_channels == 1000 if isinstance(m, nn.Conv2d) else False)) == []
    with pytest.raises(ConfigError) as err:
        weight_layers(net, ["fire10.*"])
    one_line(err, "fire10.*", "matches no layer")


def test_per_layer_values_first_match_then_default():
    values = {"conv1": 1.0, "fire*.squeeze": 0.5, "default": 0.3}
    assert per_layer(values, "conv1", "d") == 1.0
    assert per_layer(values, "fire2.squeeze", "d") == 0.5
    assert per_layer(values, "conv10", "d") == 0.3
    assert per_layer({"conv1": 1.0}, "conv10", "d") is None
    assert per_layer(0.25, "anything", "d") == 0.25


# ------------------------------------------------------------------------------------ pruning


def test_magnitude_mask_keeps_exactly_the_largest():
    w = torch.tensor([[0.1, -0.9, 0.3], [0.0, 0.5, -0.2]])
    assert prune.magnitude_mask(w, 0.5).tolist() == [[False, True, True], [False, True, False]]
    assert prune.magnitude_mask(w, 0.0).sum() == 0 and prune.magnitude_mask(w, 1.0).all()


def test_threshold_mask_is_quality_times_std():
    torch.manual_seed(0)
    w = torch.randn(1000)
    mask = prune.threshold_mask(w, 0.7)
    assert torch.equal(mask, w.abs() > 0.7 * w.std())


def test_zhu_gupta_gradual_and_iterative_progress():
    # gradual: n=4 updates over steps [100, 500): k-th update at 1 - (1 - k/4)^3
    assert prune.progress(99, "gradual", 100, 500, 4) == 0.0
    assert prune.progress(100, "gradual", 100, 500, 4) == 0.0
    assert prune.progress(200, "gradual", 100, 500, 4) == pytest.approx(1 - 0.75**3)
    assert prune.progress(350, "gradual", 100, 500, 4) == pytest.approx(1 - 0.5**3)
    assert prune.progress(500, "gradual", 100, 500, 4) == 1.0
    # iterative: 3 rounds, linear in sparsity, the first at the start
    assert [prune.progress(s, "iterative", 0, 300, 3) for s in (0, 99, 100, 250, 300)] == \
        pytest.approx([1 / 3, 1 / 3, 2 / 3, 1.0, 1.0])
    assert prune.progress(5, "oneshot", 5, 0, 1) == 1.0


def test_prune_in_place_to_per_layer_densities():
    torch.manual_seed(0)
    net = create_model("squeezenet1_1", num_classes=10, **TINY)
    masks = prune.prune_(net, prune.PruneSpec(density={"conv1": 1.0, "default": 0.25}))
    d = prune.density_of(net)
    assert d["conv1"] == 1.0
    assert all(abs(v - 0.25) < 0.01 for k, v in d.items() if k != "conv1")
    assert set(masks) == set(d)


def test_prune_spec_needs_one_rule():
    with pytest.raises(ConfigError, match="exactly one"):
        prune.PruneSpec()


# ------------------------------------------------------------------------------------ k-means


def test_kmeans_by_hand_and_lossless_for_few_values():
    c, codes = share.kmeans_1d(torch.tensor([0.1, 0.2, 0.9, 1.0]), 2)
    assert c.tolist() == pytest.approx([0.15, 0.95]) and codes.tolist() == [0, 0, 1, 1]
    values = torch.tensor([3.0, -1.0, 3.0, 0.5])
    c, codes = share.kmeans_1d(values, 8)  # fewer distinct values than codes: exact
    assert torch.equal(c[codes], values)


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_kmeans_is_at_least_as_good_as_scikit_learn(init):
    from sklearn.cluster import KMeans

    torch.manual_seed(1)
    x = torch.cat([torch.randn(3000) * 0.02, torch.randn(300) * 0.2])  # a weight-like, heavy-tailed mix
    c, codes = share.kmeans_1d(x, 16, init, generator=torch.Generator().manual_seed(0))
    ours = float(((c[codes] - x) ** 2).sum())
    # scikit-learn's Lloyd from the same starting centroids (Lloyd finds a local optimum of its start)
    start = share._init_centroids(torch.sort(x).values, torch.unique(x), 16, init, torch.Generator().manual_seed(0))
    ref = KMeans(16, init=start.double().numpy()[:, None], n_init=1, max_iter=1000, tol=0,
                 algorithm="lloyd").fit(x.double().numpy()[:, None]).inertia_
    assert ours <= ref * 1.02, (ours, ref)
    assert torch.equal(c, torch.sort(c).values) and codes.max() < c.numel()


def test_importance_weighted_kmeans_moves_centroids_to_important_weights():
    values = torch.tensor([0.0, 1.0, 10.0, 11.0])
    c, codes = share.kmeans_1d(values, 2)
    assert c.tolist() == pytest.approx([0.5, 10.5])
    c, codes = share.kmeans_1d(values, 2, importance=torch.tensor([1.0, 3.0, 1.0, 1.0]))
    assert c.tolist() == pytest.approx([0.75, 10.5]) and codes.tolist() == [0, 0, 1, 1]


def test_fisher_weighted_sharing_in_a_run(tmp_path):
    recipe = digits_recipe(tmp_path, epochs=1)
    dense = fit(load_config(recipe), progress=False)
    cfg = load_config(recipe, [f"model.weights={dense}/last.safetensors", "share.bits=3", "share.importance=fisher",
                               "share.calibration_images=16", "train.epochs=0"])
    run = fit(cfg, progress=False)
    w = read_checkpoint(run / "last.safetensors").model_state["fire3.expand3x3.weight"]
    assert 1 < torch.unique(w).numel() <= 8


def test_bias_correction_restores_each_layers_output_mean():
    from squeezelab.data import load_dataset, get_preset
    from squeezelab.compression.calibrate import correct_bias_

    torch.manual_seed(0)
    net = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    digits = load_dataset("digits", None, "train")
    data = (digits.subset(torch.arange(64), "train"), get_preset("digits"))  # all 64 are the calibration set
    x = get_preset("digits").eval(data[0].images)
    with torch.no_grad():
        want = net.conv1(x).mean(dim=(0, 2, 3))
    reference = {"conv1": net.conv1.weight.detach().clone()}
    share.share_(net, share.ShareSpec(bits={"conv1": 1}))
    with torch.no_grad():
        before = (net.conv1(x).mean(dim=(0, 2, 3)) - want).abs().max()
    correct_bias_(net, reference, data, 64, seed=0)
    with torch.no_grad():
        after = (net.conv1(x).mean(dim=(0, 2, 3)) - want).abs().max()
    assert before > 0.05 and after < 1e-5  # the first layer sees the same images, so its mean is exact


def test_sharing_keeps_pruned_zeros_exact_and_uses_2_to_the_bits_codes():
    torch.manual_seed(0)
    w = torch.randn(64, 32, 3, 3)
    w[w.abs() < 0.5] = 0
    s = share.share_tensor(w, bits=4)
    assert s.zero and s.codebook[0] == 0 and s.codebook.numel() <= 16
    dense = s.dense()
    assert torch.equal(dense == 0, w == 0)
    assert torch.unique(dense).numel() <= 16


def test_centroid_gradient_is_the_sum_over_its_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, bias=False)
    with torch.no_grad():
        conv.weight[conv.weight.abs() < 0.1] = 0
    net = nn.Sequential(conv)
    shared = share.share_(net, share.ShareSpec(bits=3), trainable=True)["0"]
    g = torch.randn_like(conv.weight)
    (conv.weight * g).sum().backward()
    free = conv.parametrizations.weight.original
    want = torch.zeros(shared.codebook.numel()).index_add_(0, shared.codes.flatten(), g.flatten())
    torch.testing.assert_close(free.grad, want[1:])  # code 0 is the fixed zero
    torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1).step()
    assert torch.unique(conv.weight.detach()).numel() <= shared.codebook.numel()
    assert torch.equal(conv.weight.detach() == 0, shared.codes == 0)


# ------------------------------------------------------------------------------------ distillation


def test_distillation_loss_without_and_with_labels():
    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5), torch.randn(8, 5), torch.randint(0, 5, (8,))
    soft = distillation_loss(s, t, None, temperature=2.0)
    kl = (t.div(2).softmax(1) * (t.div(2).log_softmax(1) - s.div(2).log_softmax(1))).sum(1).mean() * 4
    torch.testing.assert_close(soft, kl)
    mixed = distillation_loss(s, t, y, temperature=2.0, alpha=0.25)
    torch.testing.assert_close(mixed, 0.25 * kl + 0.75 * nn.functional.cross_entropy(s, y))
    assert distillation_loss(t, t, None).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------ training


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("optim", ["optim.name=sgd", "optim.name=adam"])
def test_pruned_weights_stay_zero_through_training(tmp_path, optim):
    recipe = digits_recipe(tmp_path, epochs=2)
    cfg = load_config(recipe, [optim, "optim.weight_decay=0.01", "prune.density={default: 0.3, conv1: 1.0}",
                               "prune.schedule=gradual", "prune.rounds=3", "prune.end_epoch=1"])
    run = fit(cfg, progress=False)
    c = read_checkpoint(run / "last.safetensors")
    for name in ("fire2.squeeze", "fire3.expand3x3", "conv10"):
        mask = c.extra[f"prune.mask.{name}"].bool()
        weight = c.model_state[f"{name}.weight"]
        assert weight[~mask].abs().max() == 0  # exactly zero, momentum and weight decay notwithstanding
        assert abs(mask.float().mean().item() - 0.3) < 0.02
    assert c.extra["prune.mask.conv1"].bool().all()
    assert c.meta["compression"]["prune"]["applied"] == 1.0


def test_best_checkpoint_is_never_a_not_yet_pruned_epoch(tmp_path):
    recipe = digits_recipe(tmp_path, epochs=3)
    run = fit(load_config(recipe, ["prune.density=0.2", "prune.schedule=iterative", "prune.rounds=2",
                                   "prune.end_epoch=2"]), progress=False)
    best = read_checkpoint(run / "best.safetensors")
    assert best.meta["epoch"] >= 2
    assert (best.model_state["fire2.squeeze.weight"] != 0).float().mean() < 0.25


@pytest.mark.parametrize("section", [["prune.density=0.3", "prune.schedule=gradual", "prune.rounds=4"],
                                     ["share.bits=3", "optim.name=adam", "optim.lr=0.001"],
                                     ["ecq.bits=3", "ecq.rate_weight=0.05", "optim.name=adam", "optim.lr=0.001"]])
def test_resume_with_masks_or_codebooks_is_bit_identical(tmp_path, monkeypatch, section):
    recipe = digits_recipe(tmp_path, epochs=4)
    straight = fit(load_config(recipe, [*section, f"output.run_dir={tmp_path / 'a'}"]), progress=False)
    resumed = crash_then_resume(monkeypatch, recipe, section, tmp_path / "b", after_epoch=2)
    a, b = read_checkpoint(straight / "last.safetensors"), read_checkpoint(resumed / "last.safetensors")
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key
    for key, value in a.extra.items():
        assert torch.equal(value, b.extra[key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}  # noqa
                          for r in rows]
    assert strip(_rows(straight)) == strip(_rows(resumed))


def test_shared_run_keeps_its_codebook_and_distills_without_labels(tmp_path):
    recipe = digits_recipe(tmp_path, epochs=1)
    dense = fit(load_config(recipe), progress=False)
    cfg = load_config(recipe, [f"model.weights={dense}/last.safetensors", "share.bits={default: 2, conv1: 4}",
                               "distill.teacher=init", "distill.labels=false", "optim.name=adam", "optim.lr=0.001"])
    run = fit(cfg, progress=False)
    c = read_checkpoint(run / "last.safetensors")
    assert torch.unique(c.model_state["fire2.squeeze.weight"]).numel() <= 4
    assert torch.unique(c.model_state["conv1.weight"]).numel() <= 16
    row = _rows(run)[-1]
    assert 0.0 <= row["agreement"] <= 1.0 and row["kl"] >= 0.0
    # plain keys: the checkpoint loads into a plain model (eval reads it like any other)
    net = create_model("squeezenet1_1", num_classes=10, **{**TINY, "dropout": 0.2})
    net.load_state_dict(c.model_state)


def test_prune_and_share_in_one_run_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        fit(load_config(digits_recipe(tmp_path), ["prune.density=0.5", "share.bits=4"]), progress=False)
    one_line(err, "prune first")


def test_dsd_releases_the_masks_and_lowers_the_lr(tmp_path):
    recipe = digits_recipe(tmp_path, epochs=3)
    cfg = load_config(recipe, ["schedule.name=fixed", "schedule.warmup_epochs=0", "prune.density=0.3",
                               "prune.start_epoch=1", "prune.release_epoch=2", "prune.release_lr_factor=0.1"])
    run = fit(cfg, progress=False)
    rows = _rows(run)
    assert rows[2]["lr"] == pytest.approx(0.1 * rows[0]["lr"])
    c = read_checkpoint(run / "last.safetensors")
    assert not any(k.startswith("prune.mask") for k in c.extra)  # released
    assert (c.model_state["fire2.squeeze.weight"] != 0).float().mean() > 0.9  # dense again
