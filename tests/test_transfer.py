"""Transfer learning from the authors' compressed SqueezeNet onto the real CIFAR-10 subset (tiny slices:
these tests check the mechanics; the measured accuracies are in results/transfer_cifar10_subset.md)."""

from __future__ import annotations

import json

import pytest
import torch

from squeezelab.cli import main
from squeezelab.weights import load_weights
from squeezelab.jobs.transfer import ResizedPreset, TransferConfig, build_backbone, run_transfer


@pytest.fixture(scope="module")
def weights(shared_data):
    return load_weights(shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net")


@pytest.fixture(scope="module")
def cifar(shared_data):
    from squeezelab.data import load_dataset

    root = shared_data / "cifar-10-subset"
    train, test = load_dataset("cifar10", root, "train"), load_dataset("cifar10", root, "test")
    return train.subset(torch.arange(32), "train"), test.subset(torch.arange(16), "test")


def test_resized_preset_is_caffe_bgr_minus_mean(weights):
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    out = ResizedPreset(weights.preset, 8).eval(x)
    expected = x.flip(1).float() - torch.tensor([104.0, 117.0, 123.0])[:, None, None]
    torch.testing.assert_close(out, expected)


@pytest.fixture(scope="module")
def feature_cache():
    return {}


@pytest.mark.parametrize("mode", ["linear", "sq1", "fire_next"])
def test_frozen_modes_extract_features_once_and_train_only_the_head(weights, cifar, feature_cache, mode):
    cfg = TransferConfig(mode=mode, input_size=48, epochs=1, batch_size=8)
    result = run_transfer(weights, *cifar, cfg, feature_cache=feature_cache)
    assert result["n"] == 16 and 0 <= result["top1"] <= 1
    assert list(feature_cache) == [("features", 48)]  # computed by the first mode, reused by the others
    (train_f, _), feature_s = feature_cache[("features", 48)]
    assert train_f.shape[:2] == (32, 512) and result["feature_s"] == feature_s  # fire9's 512 channels


def test_full_fine_tuning_changes_the_pretrained_features(weights, cifar):
    cfg = TransferConfig(mode="full", input_size=48, epochs=1, batch_size=8)
    before = build_backbone(weights).fire2.squeeze.weight.clone()
    result = run_transfer(weights, *cifar, cfg)
    assert result["n"] == 16 and len(result["train_loss"]) == 1
    assert torch.equal(build_backbone(weights).fire2.squeeze.weight, before)  # the loaded weights are not mutated


def test_unknown_mode_is_one_clear_error(weights, cifar):
    from squeezelab.errors import ConfigError

    with pytest.raises(ConfigError, match="linear, sq1, fire_next, full, scratch"):
        run_transfer(weights, *cifar, TransferConfig(mode="frozen"))


def test_cli_transfer_reports_json(shared_data, capsys):
    code = main(["transfer", "--weights", str(shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"),
                 "--dataset", "cifar10", "--data-dir", str(shared_data / "cifar-10-subset"), "--mode", "linear",
                 "--input-size", "32", "--epochs", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "linear" and result["n"] == 1017


def test_transfer_without_cuda_says_so_in_one_line(shared_data, capsys):
    from tests.helpers import cli_one_line_error

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cli_one_line_error(capsys, ["transfer", "--weights", str(shared_data / "squeezenet-deep-compression" /
                                                             "compressed_SqueezeNet.net"),
                                "--dataset", "digits", "--device", "cuda"], "--device", "CUDA is not available")
