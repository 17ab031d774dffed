"""The README's main job: `squeezelab demo` trains both models on the embedded digits, offline."""

from __future__ import annotations

import json

from squeezelab.cli import main
from squeezelab.jobs.demo import DEMO_MODELS


def test_demo_trains_both_models_and_reports_the_parameter_gap(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SQUEEZELAB_CACHE", str(tmp_path / "cache"))  # nothing from a user's cache
    assert main(["demo", "--epochs", "1", "--runs-dir", str(tmp_path / "runs"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["squeezenet1_1", "squeezenet1_1", "alexnet"]
    assert [m for _, m, _, _ in DEMO_MODELS] == ["squeezenet1_1", "alexnet"]
    squeeze, small, alex = rows
    # the paper's claim in miniature is about size: the small-input AlexNet has ~32x the parameters
    assert alex["params"] / squeeze["params"] > 25
    assert squeeze["size_bytes"] >= 4 * squeeze["params"] and alex["size_bytes"] >= 4 * alex["params"]
    for r in (squeeze, alex):
        assert r["epochs"] == 1 and 0.0 <= r["top1"] <= 1.0
        summary = json.loads((tmp_path / "runs" / r["run_dir"].rsplit("/", 1)[-1] / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["final"]["top1"] == r["top1"]
    # the paper's second claim: the SqueezeNet as a .sqz file, read back and scored
    assert small["compressed"] and small["epochs"] == 2  # one epoch per stage (--epochs 1)
    report = json.loads((tmp_path / "runs" / small["run_dir"].rsplit("/", 1)[-1] / "report.json").read_text())
    assert small["size_bytes"] == report["file_bytes"] < squeeze["size_bytes"] / 8
    assert small["top1"] == report["accuracy"]["after"]["top1"]
    # one epoch already learns digits well above chance (10%): measured 53.6% for AlexNet + BatchNorm
    assert alex["top1"] > 0.3
    # what a demo leaves stays small: no optimizer state, no AlexNet weights (--keep-checkpoints keeps them)
    total = sum(f.stat().st_size for f in (tmp_path / "runs").rglob("*") if f.is_file())
    assert total < 50e6, total
    assert (tmp_path / "runs" / squeeze["run_dir"].rsplit("/", 1)[-1] / "last.safetensors").is_file()
    assert not list((tmp_path / "runs" / alex["run_dir"].rsplit("/", 1)[-1]).glob("*.safetensors"))
