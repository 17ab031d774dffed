"""`squeezelab compress` end to end on the embedded digits: stages, a .sqz that loads everywhere,
the report, continuing a stopped compression, sensitivity, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from squeezelab.cli import main
from squeezelab.config import load_config
from squeezelab.engine import fit
from squeezelab.weights import load_weights
from tests.helpers import cli_one_line_error, digits_recipe


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A tiny digits SqueezeNet trained for 2 epochs (the model to compress)."""
    tmp = tmp_path_factory.mktemp("dense")
    return fit(load_config(digits_recipe(tmp, epochs=2)), progress=False) / "last.safetensors"


def _recipe(tmp_path: Path, dense: Path, **extra) -> Path:
    base = yaml.safe_load(digits_recipe(tmp_path, epochs=1).read_text())
    base.pop("output")
    raw = {**base, "weights": str(dense),
           "stages": [{"name": "prune", "prune": {"density": {"conv1": 1.0, "default": 0.3}}},
                      {"name": "share", "share": {"bits": 4}, "optim": {"name": "adam", "lr": 1e-3},
                       "distill": {"teacher": "source", "alpha": 0.5}}],
           **extra}
    path = tmp_path / "compress.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_compress_writes_a_small_sqz_that_every_command_reads(tmp_path, dense, capsys):
    out = tmp_path / "out"
    assert main(["compress", str(_recipe(tmp_path, dense)), "-o", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| conv1 |" in text and "smaller than fp32" in text and "Accuracy on digits/test" in text
    report = json.loads((out / "report.json").read_text())
    assert report["file_bytes"] == (out / "model.sqz").stat().st_size
    assert report["fp32_bytes"] / report["payload_bytes"] > 5  # (the 2.5k-parameter model: the header weighs)
    assert {r["layer"]: r["density"] for r in report["layers"]}["fire2.squeeze"] == pytest.approx(0.3, abs=0.02)
    assert {r["layer"]: r["bits"] for r in report["layers"]}["fire2.squeeze"] <= 4
    w = load_weights(out / "model.sqz")
    assert w.model_name == "squeezenet1_1" and w.header["provenance"]["compress_recipe"]["stages"][0]["name"] == "prune"
    assert torch.unique(w.state_dict["fire3.expand3x3.weight"]).numel() <= 16
    # eval, convert, and the report command read it
    assert main(["eval", "--weights", str(out / "model.sqz"), "--dataset", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(report["accuracy"]["after"]["top1"])
    assert main(["convert", str(out / "model.sqz"), str(tmp_path / "back.safetensors")]) == 0
    assert main(["compress", "report", str(out / "model.sqz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["file_bytes"] == report["file_bytes"]


def test_running_it_again_continues_and_another_recipe_is_refused(tmp_path, dense, capsys):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, dense)
    assert main(["compress", str(recipe), "-o", str(out), "--no-progress"]) == 0
    first = (out / "2-share" / "last.safetensors").stat().st_mtime_ns
    assert main(["compress", "run", str(recipe), "-o", str(out), "--no-progress"]) == 0
    assert (out / "2-share" / "last.safetensors").stat().st_mtime_ns == first  # finished stages are kept
    capsys.readouterr()
    cli_one_line_error(capsys, ["compress", str(recipe), "-o", str(out), "--set", "stages.share.share.bits=3"],
                       "another recipe")


def test_one_shot_stage_and_one_shot_convert(tmp_path, dense, capsys):
    out = tmp_path / "out"
    recipe = _recipe(tmp_path, dense)
    assert main(["compress", str(recipe), "-o", str(out), "--no-progress", "--set", "stages.prune.train.epochs=0",
                 "--set", "stages.share.train.epochs=0"]) == 0
    assert not (out / "1-prune" / "metrics.jsonl").exists()  # applied, not trained
    sqz = tmp_path / "oneshot.sqz"
    assert main(["convert", str(dense), str(sqz), "--set", "prune.density=0.25", "--set", "share.bits=3"]) == 0
    w = load_weights(sqz)
    weight = w.state_dict["fire2.expand3x3.weight"]
    assert (weight != 0).float().mean() == pytest.approx(0.25, abs=0.01) and torch.unique(weight).numel() <= 8


def test_sensitivity_table_and_plot(tmp_path, dense, capsys):
    out = tmp_path / "sens"
    assert main(["compress", "sensitivity", "--weights", str(dense), "--dataset", "digits", "--densities", "0.1,0.5",
                 "--layers", "fire2.*", "conv10", "--limit", "100", "-o", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["layers"] == ["fire2.squeeze", "fire2.expand1x1", "fire2.expand3x3", "conv10"]
    assert len(result["rows"]) == 8 and result["n"] == 100
    png = (out / "sensitivity.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("argv, words", [
    (["compress", "missing.yaml"], ["config file not found"]),
    (["compress", "RECIPE", "--set", "stages.nope.train.epochs=1"], ["no stage 'nope'"]),
    (["compress", "RECIPE", "--set", "stages.prune.prune.layers=[fire99.*]"], ["matches no layer"]),
    (["compress", "RECIPE", "--set", "stages.prune.prune.density=2"], ["density: must be >= 0 and <= 1"]),
    (["compress", "RECIPE", "--set", "stages.share.share.bits=0"], ["share.bits"]),
    (["compress", "RECIPE", "--set", "code.coder=zip"], ["code.coder"]),
    (["compress", "sensitivity", "--weights", "W", "--dataset", "digits", "--densities", "0.5,x"], ["--densities"]),
    (["convert", "W", "out.sqz", "--set", "share.nope=1"], ["unknown key share.nope"]),
])
def test_mistakes_end_in_one_line(tmp_path, dense, capsys, argv, words):
    recipe = str(_recipe(tmp_path, dense))
    argv = [a.replace("RECIPE", recipe).replace("W", str(dense)) if a in ("RECIPE", "W") else a for a in argv]
    argv = [str(tmp_path / a) if a == "out.sqz" else a for a in argv]
    if "--no-progress" not in argv and argv[1] not in ("sensitivity",) and argv[0] == "compress":
        argv += ["-o", str(tmp_path / "o"), "--no-progress"]
    cli_one_line_error(capsys, argv, *words)
