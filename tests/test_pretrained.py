"""load_weights / load_into / convert: every accepted format, checked against reference implementations
(torchvision's SqueezeNet) and the authors' published file; the 300-image ImageNet check is @slow."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch

from squeezelab import runtime
from squeezelab.cli import main
from squeezelab.errors import WeightsError
from squeezelab.models import create_model
from squeezelab.weights import convert_weights, deep_compression, load_into, load_weights

NET = ("squeezenet-deep-compression", "compressed_SqueezeNet.net")


@pytest.fixture(scope="module")
def net_path(shared_data):
    return shared_data.joinpath(*NET)


@pytest.fixture(scope="module")
def tv_pth(tmp_path_factory):
    """A torchvision squeezenet1_0 state dict saved as users get it, plus the torchvision model."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.squeezenet1_0(weights=None, num_classes=1000).eval()
    path = tmp_path_factory.mktemp("tv") / "squeezenet1_0.pth"
    torch.save(tv.state_dict(), path)
    return path, tv


def _build(weights):
    model = create_model(weights.model_name, num_classes=weights.num_classes, **weights.model_options)
    return load_into(model, weights).eval()


def test_net_file_loads_with_its_model_and_preprocessing(net_path):
    w = load_weights(net_path)
    assert (w.source, w.model_name, w.model_options, w.num_classes, w.preset) == (
        "deep-compression", "squeezenet1_0", {"caffe": True}, 1000, "caffe")
    model = _build(w)
    assert sum(p.numel() for p in model.parameters()) == 1_248_424


def test_net_file_is_recognised_by_content_not_name(net_path, tmp_path):
    renamed = tmp_path / "weights.bin"
    shutil.copy(net_path, renamed)
    assert load_weights(renamed).source == "deep-compression"


def test_torchvision_pth_loads_through_the_key_map_and_matches_torchvision(tv_pth):
    path, tv = tv_pth
    w = load_weights(path)
    assert (w.source, w.model_name, w.num_classes, w.preset) == ("torchvision", "squeezenet1_0", 1000, "report004")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(_build(w)(x), tv(x), rtol=0, atol=0)


def test_checkpoint_and_run_folder_round_trip(tv_pth, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    convert_weights(tv_pth[0], run / "last.safetensors")
    for where in (run / "last.safetensors", run):
        w = load_weights(where)
        assert (w.source, w.model_name, w.preset) == ("squeezelab", "squeezenet1_0", "report004")
        assert torch.equal(w.state_dict["fire9.expand3x3.weight"], tv_pth[1].features[12].expand3x3.weight)


def test_net_to_checkpoint_and_back(net_path, tmp_path):
    ckpt, net = tmp_path / "sn.safetensors", tmp_path / "back.net"
    assert main(["convert", str(net_path), str(ckpt)]) == 0
    w = load_weights(ckpt)
    assert (w.model_name, w.model_options["caffe"], w.num_classes, w.preset) == ("squeezenet1_0", True, 1000, "caffe")
    assert main(["convert", str(ckpt), str(net)]) == 0
    original = deep_compression.read_layers(net_path.read_bytes())
    back = deep_compression.read_layers(net.read_bytes())
    assert net.stat().st_size == net_path.stat().st_size  # same entries and fillers
    assert all(np.array_equal(a.dense(), b.dense()) and np.array_equal(a.bias, b.bias) for a, b in zip(original, back))


def test_dense_checkpoint_to_net_asks_to_compress_first(tv_pth, tmp_path, capsys):
    assert main(["convert", str(tv_pth[0]), str(tmp_path / "x.net")]) == 2
    err = capsys.readouterr().err.strip()
    assert "compress/quantise" in err and len(err.splitlines()) == 1


def test_run_folder_without_checkpoint_names_what_is_accepted(tmp_path):
    with pytest.raises(WeightsError, match="no best.safetensors or last.safetensors.*torchvision"):
        load_weights(tmp_path)


def test_wrong_num_classes_suggests_the_fix(net_path):
    with pytest.raises(WeightsError, match="--num-classes 1000.*reset_classifier"):
        load_into(create_model("squeezenet1_0", num_classes=10, caffe=True), load_weights(net_path))


@pytest.mark.parametrize("make, message", [
    (None, "weights not found"),
    (lambda d: b"", "empty file"),
    (lambda d: np.random.default_rng(1).bytes(4096), "unrecognised file"),
    (lambda d: d[:-10], "truncated"),
    (lambda d: d + b"\x00\x01", "trailing bytes"),
])
@pytest.mark.parametrize("suffix", [".net", ".bin"])
def test_bad_files_end_with_one_line_and_exit_2(net_path, tmp_path, capsys, make, message, suffix):
    bad = tmp_path / f"bad{suffix}"
    if make is not None:
        bad.write_bytes(make(net_path.read_bytes()))
    if suffix == ".net" and message == "unrecognised file":
        message = "claims"  # named .net: decoded, and the header is found corrupt
    if suffix == ".net" and message == "empty file":
        message = "too short"
    with pytest.raises(WeightsError, match=message):
        load_weights(bad)
    assert main(["convert", str(bad), str(tmp_path / "out.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(bad) in err


# ---- the published model on 300 real ImageNet validation images: decoder + Caffe architecture + preprocessing

EXPECTED_TOP1, EXPECTED_TOP5 = 215, 277


def test_compressed_squeezenet_scores_215_277_on_imagenet_val_300(shared_data, net_path):
    from torch.utils.data import DataLoader

    from squeezelab.data import load_dataset
    from squeezelab.data.transforms import get_preset
    from squeezelab.engine.loop import evaluate

    w = load_weights(net_path)
    data = load_dataset("image-list", shared_data / "imagenet-val-300", "val", preset=w.preset, cache_dir=False)
    start = time.perf_counter()
    metrics = evaluate(_build(w), DataLoader(data, batch_size=50), get_preset(w.preset), "cpu", amp="off")
    print(f"\neval of 300 images: {time.perf_counter() - start:.1f} s")
    assert metrics["n"] == 300
    assert round(metrics["top1"] * 300) == EXPECTED_TOP1 and round(metrics["top5"] * 300) == EXPECTED_TOP5


def test_cli_eval_applies_the_caffe_preprocessing_by_itself(shared_data, net_path, capsys, monkeypatch):
    # As if this CPU had native bf16 (AMX): eval must still score in fp32 by default, or the count
    # depends on the machine (bf16 autocast gave 214/300 on such a CPU).
    monkeypatch.setattr(runtime, "_cpu_has_native_bf16", lambda: True)
    code = main(["eval", "--model", "squeezenet1_0", "--weights", str(net_path), "--dataset", "image-list",
                 "--data-dir", str(shared_data / "imagenet-val-300"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 300
    # top1/top5 are fractions: exactly 215 and 277 of the 300 images
    assert round(result["top1"] * 300) == EXPECTED_TOP1 and round(result["top5"] * 300) == EXPECTED_TOP5
