"""Deployment: ONNX export checked against ONNX Runtime, BatchNorm folding, int8, bench infer, predict."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch

from squeezelab.cli import main
from squeezelab.config import load_config
from squeezelab.deploy import export
from squeezelab.deploy.backends import ort
from squeezelab.deploy.graph import fold_batchnorm
from squeezelab.engine import fit
from squeezelab.models import create_model
from squeezelab.weights import save_checkpoint
from tests.helpers import cli_one_line_error

pytest.importorskip("onnxruntime")

VARIANTS = [  # (model, options, input size): every family member that exports
    ("squeezenet1_0", {"caffe": True}, 64),
    ("squeezenet1_1", {"stem": "small", "bn_fire": True, "bn_conv1": True, "bypass": "complex"}, 32),
    ("squeezenet1_1", {"bypass": "simple", "act": "leaky_relu", "head_act": "none"}, 64),
    ("fire_next", {}, 64),
    ("sq1", {}, 64),
    ("alexnet", {"stem": "small", "bn": True}, 32),
]


def _checkpoint(tmp_path, name, options, preset="digits") -> str:
    torch.manual_seed(0)
    net = create_model(name, num_classes=10, **options)
    for m in net.modules():  # non-trivial BatchNorm statistics, so that folding is really tested
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    path = tmp_path / f"{name}.safetensors"
    save_checkpoint(path, net, meta={"model": net.model_spec, "preset": preset, "classes": [str(i) for i in range(10)]})
    return str(path)


@pytest.mark.parametrize("name, options, size", VARIANTS, ids=[f"{v[0]}-{i}" for i, v in enumerate(VARIANTS)])
def test_export_matches_torch_for_every_model(tmp_path, name, options, size):
    from squeezelab.data import get_preset

    preset = "digits" if size == 32 else "tinyimagenet64"
    weights = _checkpoint(tmp_path, name, options, preset)
    e = export.export(weights, tmp_path / "m.onnx")
    assert e.max_abs_diff < 1e-3 and e.agreement == 1.0 and e.input_size == get_preset(preset).input_size
    meta = ort.onnx_metadata(e.path)
    assert meta["model"]["name"] == name and meta["preset"]["name"] == preset and len(meta["classes"]) == 10
    sess = ort.session(e.path)
    assert sess.get_inputs()[0].shape[0] == "batch"  # dynamic batch
    for n in (1, 5):
        x = np.random.default_rng(n).standard_normal((n, 3, size, size)).astype(np.float32)
        assert sess.run(None, {sess.get_inputs()[0].name: x})[0].shape == (n, 10)


def test_batchnorm_folding_keeps_the_outputs():
    torch.manual_seed(0)
    net = create_model("squeezenet1_1", num_classes=10, stem="small", bn_fire=True, bn_conv1=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm(net) == 25  # conv1 + 8 Fires x 3 (conv10 has no BN here)
        torch.testing.assert_close(net(x), before, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """The demo's SqueezeNet on digits, 4 epochs (about 99% test top-1)."""
    from squeezelab.jobs.demo import DEMO_MODELS, demo_config
    from squeezelab.config import config_from_dict

    tmp = tmp_path_factory.mktemp("digits")
    _, model, options, _ = DEMO_MODELS[0]
    cfg = demo_config(model, options, epochs=4, seed=0, runs_dir=str(tmp))
    cfg["train"]["threads"] = 2
    return fit(config_from_dict(cfg), progress=False)


def test_int8_on_digits_is_within_half_a_point_and_about_4x_smaller(tmp_path, digits_run, capsys):
    out = tmp_path / "d.onnx"
    assert main(["export", "--weights", str(digits_run), "-o", str(out), "--int8", "--calib-dataset", "digits",
                 "--calib-n", "200", "--check-dataset", "digits", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    check = r["check"]
    assert check["onnx-fp32"]["top1"] == pytest.approx(check["torch"]["top1"], abs=1 / 360)
    assert abs(check["onnx-int8"]["top1"] - check["onnx-fp32"]["top1"]) <= 0.005 + 1e-9
    fp32, int8 = r["files"]
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8") and int8["path"].endswith(".int8.onnx")
    assert 3.0 < fp32["bytes"] / int8["bytes"] < 4.5
    assert ort.onnx_metadata(out.with_suffix(".int8.onnx"))["preset"]["name"] == "digits"


def test_bench_infer_measures_every_engine(digits_run, tmp_path, capsys):
    assert main(["bench", "infer", "--weights", str(digits_run), "--threads", "1", "--rounds", "1", "--iters", "2",
                 "--batch", "4", "--engines", "torch-nchw", "torch-channels-last", "ort-fp32", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [e["engine"] for e in r["engines"]] == ["torch-nchw", "torch-channels-last", "onnxruntime-fp32"]
    assert all(e["latency_ms"]["median"] > 0 and e["throughput"] > 0 for e in r["engines"])
    assert r["ratios"]["1"]["onnxruntime-fp32_vs_torch_nchw"] > 0


def _bad_images(folder):
    from PIL import Image

    folder.mkdir()
    (folder / "corrupt.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(np.zeros((40, 40, 4), np.uint8), "CMYK").save(folder / "cmyk.jpg")
    Image.fromarray((np.random.rand(30, 20) * 65535).astype(np.uint16)).save(folder / "grey16.png")

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    (folder / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10**5, 10**5, 8, 2, 0,
                                                                                       0, 0)) + chunk(b"IEND", b""))


def test_predict_real_images_and_broken_ones_one_line_each(tmp_path, capsys, shared_data):
    net = shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
    val = shared_data / "imagenet-val-300"
    labels = dict(line.split() for line in (val / "labels.txt").read_text().splitlines()[:3])
    folder = tmp_path / "imgs"
    _bad_images(folder)
    images = [str(val / "images" / f) for f in labels]
    code = main(["predict", "--weights", str(net), *images, str(folder), "--classes", str(val / "synset_words.txt"),
                 "--json"])
    out, err = capsys.readouterr()
    assert code == 2  # some inputs were bad
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 3 + 2  # three real images, plus the CMYK and 16-bit PNG ones (odd, but images)
    by_name = {r["image"].rsplit("/", 1)[-1]: r for r in rows}
    hits = sum(by_name[f]["top"][0]["class"] == int(c) for f, c in labels.items())
    assert hits >= 2 and all(len(r["top"]) == 5 for r in rows)
    assert abs(sum(t["p"] for t in rows[0]["top"]) - 1) < 0.5
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "corrupt.jpg" in err and "huge.png" in err and "Traceback" not in err
    assert by_name[next(iter(labels))]["top"][0]["name"]  # names from synset_words.txt


def test_predict_through_onnx_matches_torch(tmp_path, digits_run, capsys):
    from PIL import Image

    onnx = tmp_path / "d.onnx"
    export.export(str(digits_run), onnx)
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).convert("RGB").save(img)
    assert main(["predict", "--weights", str(digits_run), str(img), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["predict", "--onnx", str(onnx), str(img), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]


def test_deploy_mistakes_are_one_line(tmp_path, digits_run, capsys):
    cli_one_line_error(capsys, ["export", "--weights", str(digits_run), "-o", str(tmp_path / "x.txt")], "must end with .onnx")
    cli_one_line_error(capsys, ["export", "--weights", str(digits_run), "-o", str(tmp_path / "x.onnx"), "--int8"],
                       "--calib-dataset")
    cli_one_line_error(capsys, ["predict", str(tmp_path / "nope.png"), "--weights", str(digits_run)], "not found")
    cli_one_line_error(capsys, ["predict", str(tmp_path)], "--weights or --file")
    cli_one_line_error(capsys, ["bench", "infer", "--weights", str(digits_run), "--threads", "0"], "--threads")


@pytest.mark.slow
def test_int8_authors_squeezenet_within_two_images_of_fp32(tmp_path, capsys, shared_data):
    net = shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
    out = tmp_path / "sn.onnx"
    assert main(["export", "--weights", str(net), "-o", str(out), "--int8", "--calib-dataset", "tiny-imagenet",
                 "--calib-data-dir", str(shared_data / "tiny-imagenet-200"), "--check-dataset", "image-list",
                 "--check-data-dir", str(shared_data / "imagenet-val-300"), "--json"]) == 0
    check = json.loads(capsys.readouterr().out)["check"]
    assert check["onnx-fp32"]["correct"] == check["torch"]["correct"] == 215
    assert check["onnx-fp32"]["agreement"] == 1.0  # the same top-1 as torch on every image
    assert abs(check["onnx-int8"]["correct"] - 215) <= 2
