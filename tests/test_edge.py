"""The deploy backends: every registered format exported, loaded back in its own runtime and checked
against torch (fp32: logits; int8: top-1 agreement), predict and bench infer through each, and the
mistakes a user makes with them ending in one line. Runtimes that are not installed skip, each alone."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from squeezelab.cli import main
from squeezelab.deploy import backends
from squeezelab.deploy.export import export
from squeezelab.models import create_model
from squeezelab.weights import save_checkpoint
from tests.helpers import cli_one_line_error

pytest.importorskip("onnxruntime")

FORMATS = {"onnx": ".onnx", "openvino": ".xml", "tflite": ".tflite", "pte": ".pte"}


def _installed(fmt: str):
    reason = backends.for_format(fmt).available()
    return pytest.mark.skipif(reason is not None, reason=reason or "")


# ExecuTorch's runtime runs in a worker process (deploy/backends/isolated.py): its XNNPACK backend
# segfaulted a pytest process that had also loaded the other runtimes (results/edge/README.md).
# Tests that load OpenVINO and LiteRT in the pytest process: `-m slow`, for their time.
IN_PROCESS = pytest.mark.slow
PARAMS = [pytest.param(f, marks=_installed(f)) for f in FORMATS]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """SqueezeNet 1.1 (small stem, BN) with non-trivial BatchNorm statistics, as a checkpoint."""
    torch.manual_seed(0)
    net = create_model("squeezenet1_1", num_classes=10, stem="small", bn_fire=True, bn_conv1=True).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.uniform_(-0.1, 0.1)
    path = tmp_path_factory.mktemp("w") / "d.safetensors"
    save_checkpoint(path, net, meta={"model": net.model_spec, "preset": "digits", "classes": [str(i) for i in range(10)]})
    return str(path)


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32)


@IN_PROCESS
@pytest.mark.parametrize("fmt", PARAMS)
def test_every_format_matches_torch_and_carries_its_metadata(tmp_path, weights, calibration, fmt):
    e = export(weights, tmp_path / f"m{FORMATS[fmt]}", fmt)
    assert e.max_abs_diff < 1e-3 and e.agreement == 1.0 and e.bytes > 4 * 700_000  # fp32 weights are in it
    q = export(weights, tmp_path / f"m.int8{FORMATS[fmt]}", fmt, "int8", calibration=calibration)
    assert q.precision == "int8" and e.bytes / q.bytes > 2.5  # int8 weights (OpenVINO IR: 2.97x here)
    assert q.agreement >= 0.75  # random weights and random images: a loose check; real data is below
    for path in (e.path, q.path):
        loaded = backends.load_file(path)
        assert loaded.meta["preset"]["name"] == "digits" and loaded.meta["classes"][0] == "0"
        assert loaded.run(np.zeros((3, 3, 32, 32), np.float32)).shape == (3, 10)  # any batch size
    assert backends.load_file(q.path).precision == "int8"


@IN_PROCESS
def test_litert_int8_is_full_integer(tmp_path, weights, calibration):
    if backends.get("litert").available():
        pytest.skip(backends.get("litert").available())
    from ai_edge_litert.interpreter import Interpreter

    q = export(weights, tmp_path / "m.int8.tflite", "tflite", "int8", calibration=calibration)
    interpreter = Interpreter(model_path=str(q.path))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8  # what TFLite Micro and phones' NPUs take
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    assert {d["dtype"] for d in interpreter.get_tensor_details()} <= {np.int8, np.int32}


@IN_PROCESS
@pytest.mark.parametrize("fmt", PARAMS)
def test_predict_runs_every_format_like_torch(tmp_path, weights, fmt, capsys):
    from PIL import Image

    path = export(weights, tmp_path / f"m{FORMATS[fmt]}", fmt).path
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).convert("RGB").save(img)
    assert main(["predict", "--weights", weights, str(img), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["predict", "--file", str(path), str(img), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)  # one JSON object: converters' chatter never reaches stdout
    assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]


@IN_PROCESS
def test_bench_infer_lists_every_engine_it_measures_or_why_not(weights, capsys):
    assert main(["bench", "infer", "--weights", weights, "--threads", "1", "--rounds", "1", "--iters", "1",
                 "--batch", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    measured = {e["engine"] for e in r["engines"]}
    assert {"torch-nchw", "onnxruntime-fp32"} <= measured
    assert "onnxruntime-int8" in r["skipped"] and "--calib-dataset" in r["skipped"]["onnxruntime-int8"]
    assert measured | set(r["skipped"]) >= {f"{b}-fp32" for b in ("onnxruntime", "openvino", "litert", "executorch")}


@IN_PROCESS
def test_edge_mistakes_are_one_line(tmp_path, weights, capsys):
    cli_one_line_error(capsys, ["export", "--weights", weights, "--format", "tflite", "-o", str(tmp_path / "m.onnx")],
                       "must end with .tflite")
    cli_one_line_error(capsys, ["export", "--weights", weights, "--format", "pte", "-o", str(tmp_path / "m.pte"),
                                "--int8"], "--calib-dataset")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer")
    (tmp_path / "junk.xml").write_text("<net>")
    for junk in ("junk.tflite", "junk.xml"):  # (a .pte: in test_executorch_runs_in_a_worker_and_matches_torch)
        if backends.for_file(junk).available() is None:
            cli_one_line_error(capsys, ["predict", "--file", str(tmp_path / junk), str(tmp_path)], "cannot")
    cli_one_line_error(capsys, ["predict", "--file", str(tmp_path / "m.tfl"), str(tmp_path)], "no backend runs .tfl")
    cli_one_line_error(capsys, ["bench", "infer", "--weights", weights, "--engines", "tpu-int4"], "unknown engine")
    cli_one_line_error(capsys, ["bench", "infer", "--weights", weights, "--file", "nonsense"], "ENGINE=PATH")


def test_a_missing_runtime_is_named_with_its_extra(monkeypatch):
    b = backends.get("litert")
    monkeypatch.setattr(type(b), "packages", ("squeezelab_no_such_module",))
    assert "squeezelab[edge]" in b.available()
    with pytest.raises(Exception, match=r"squeezelab\[edge\]"):
        backends.usable(b)


def test_the_cli_offers_exactly_the_registered_formats():
    from squeezelab.cli.deploy_cmd import FORMATS

    assert set(FORMATS) == set(backends.formats())  # argparse's choices, kept without importing every runtime


def _mapped_libraries() -> str:
    try:
        with open("/proc/self/maps") as f:
            return f.read()
    except OSError:
        pytest.skip("no /proc/self/maps here")


def test_executorch_runs_in_a_worker_and_matches_torch(tmp_path, weights, calibration, capsys):
    """Exported here, run in a worker process (isolated.py): ExecuTorch's runtime library never enters this
    process, where its XNNPACK backend segfaulted beside the other runtimes (results/edge/README.md)."""
    from PIL import Image

    if backends.get("executorch").available():
        pytest.skip(backends.get("executorch").available())
    e = export(weights, tmp_path / "m.pte", "pte")
    q = export(weights, tmp_path / "m.int8.pte", "pte", "int8", calibration=calibration)
    assert e.max_abs_diff < 1e-3 and e.agreement == 1.0 and e.bytes / q.bytes > 3 and q.agreement >= 0.75
    assert json.loads((tmp_path / "m.pte.json").read_text())["preset"]["name"] == "digits"
    loaded = backends.load_file(q.path, threads=2)
    assert loaded.precision == "int8" and loaded.worker.proc.pid != os.getpid()
    assert loaded.run(np.zeros((3, 3, 32, 32), np.float32)).shape == (3, 10)  # any batch size
    assert len(loaded.time_calls(np.zeros((1, 3, 32, 32), np.float32), 2)) == 2
    assert "libexecutorch" not in _mapped_libraries() and "portable_lib" not in _mapped_libraries()
    img = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).convert("RGB").save(img)
    assert main(["predict", "--weights", weights, str(img), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["predict", "--file", str(e.path), str(img), "--json"]) == 0
    b = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
    (tmp_path / "junk.pte").write_bytes(b"not a program")
    cli_one_line_error(capsys, ["predict", "--file", str(tmp_path / "junk.pte"), str(img)], "ExecuTorch cannot load")
