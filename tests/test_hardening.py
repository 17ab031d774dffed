"""The classes of user mistakes and environment failures that used to end in a traceback or in
silent nonsense: each ends in one line (exit 2 for a mistake, 1 for a refused write) or a warning."""

from __future__ import annotations

import errno
import os

import pytest
import torch
import yaml

from squeezelab.cli import main
from tests.helpers import cli_one_line_error, digits_recipe


@pytest.fixture
def run(tmp_path):
    """A finished 1-epoch digits run."""
    assert main(["train", str(digits_recipe(tmp_path, epochs=1)), "--no-progress", "--run-dir",
                 str(tmp_path / "run")]) == 0
    return tmp_path / "run"


def _refuse_writes(monkeypatch, code=errno.ENOSPC):
    def replace(src, dst):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "replace", replace)


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "free space"), (errno.EROFS, "writable folder")])
def test_a_refused_write_is_one_line_exit_1_and_keeps_the_old_file(tmp_path, run, capsys, monkeypatch, code, words):
    out = tmp_path / "out.sqz"
    assert main(["convert", str(run), str(out)]) == 0
    before = out.read_bytes()
    capsys.readouterr()
    _refuse_writes(monkeypatch, code)
    assert main(["convert", str(run), str(out), "--set", "share.bits=4"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"cannot write {out}" in err and words in err, err
    assert out.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_training_on_a_full_disk_is_one_line_exit_1(tmp_path, capsys, monkeypatch):
    _refuse_writes(monkeypatch)
    assert main(["train", str(digits_recipe(tmp_path, epochs=1)), "--no-progress", "--run-dir",
                 str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left" in err[0] and "config.yaml" in err[0], err


def test_convert_into_an_existing_folder_is_a_usage_error(tmp_path, run, capsys):
    (tmp_path / "dir.sqz").mkdir()
    cli_one_line_error(capsys, ["convert", str(run), str(tmp_path / "dir.sqz")], "is a folder")


def test_a_cache_that_is_a_file_is_a_warning_not_a_traceback(tmp_path, monkeypatch):
    from squeezelab.data import cache

    (tmp_path / "cache").write_text("a file")
    with pytest.warns(UserWarning, match="could not write dataset cache"):
        cache.save(tmp_path / "cache" / "x.safetensors", torch.zeros(1, 3, 2, 2, dtype=torch.uint8),
                   torch.zeros(1, dtype=torch.int64), ["a"], {})


def test_eval_of_weights_with_other_classes_is_refused(tmp_path, capsys):
    from squeezelab.models import create_model
    from squeezelab.weights import checkpoint

    net = create_model("squeezenet1_1", num_classes=1000, base_e=16, incr_e=16, num_fire=2)
    path = tmp_path / "imagenet.safetensors"
    checkpoint.save_checkpoint(path, net, meta={"model": {"name": "squeezenet1_1", "num_classes": 1000,
                                                          "options": {"base_e": 16, "incr_e": 16, "num_fire": 2}}})
    cli_one_line_error(capsys, ["eval", "--weights", str(path), "--dataset", "digits"],
                       "1000 classes and the dataset 10", "--class-map")


def test_nan_weights_are_refused(tmp_path, run, capsys):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    src = run / "best.safetensors"
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    tensors = load_file(src)
    key = next(k for k in tensors if k.endswith("conv10.weight"))
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    save_file(tensors, tmp_path / "nan.safetensors", metadata=meta)
    cli_one_line_error(capsys, ["eval", "--weights", str(tmp_path / "nan.safetensors"), "--dataset", "digits"],
                       "NaN or inf", "conv10.weight")


def test_a_warmup_as_long_as_the_run_is_a_warning(tmp_path, capsys):
    recipe = digits_recipe(tmp_path, epochs=1)  # its schedule warms up for 1 epoch
    assert main(["train", str(recipe), "--no-progress", "--run-dir", str(tmp_path / "r")]) == 0
    assert "warning: the lr warmup" in capsys.readouterr().err


def test_resume_refuses_a_model_change_and_records_a_new_epoch_count(tmp_path, capsys):
    recipe = digits_recipe(tmp_path, epochs=1)
    run = tmp_path / "r"
    assert main(["train", str(recipe), "--no-progress", "--run-dir", str(run)]) == 0
    (run / "summary.json").unlink()  # as if killed before the end
    capsys.readouterr()
    cli_one_line_error(capsys, ["train", "--resume", str(run), "--set", "model.options.bn_fire=true"],
                       "model.options.bn_fire", "start a new run")
    assert main(["train", "--resume", str(run), "--set", "train.epochs=2", "--no-progress"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    (run / "summary.json").unlink()
    capsys.readouterr()
    cli_one_line_error(capsys, ["train", "--resume", str(run), "--set", "train.epochs=1"], "2 epochs are done")


def test_epochs_zero_and_a_missing_data_dir_say_what_to_set(tmp_path, capsys):
    cli_one_line_error(capsys, ["train", str(digits_recipe(tmp_path)), "--set", "train.epochs=0"],
                       "train.epochs: must be >= 1")
    recipe = tmp_path / "cifar.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"dataset": "cifar10"}}))
    os.environ.pop("SQUEEZELAB_DATA", None)
    cli_one_line_error(capsys, ["train", str(recipe)], "--set data.data_dir=DIR")


def test_selection_on_validation_reports_the_kept_weights_test_score(tmp_path, capsys):
    import json

    recipe = digits_recipe(tmp_path, epochs=3)
    run = tmp_path / "val"
    assert main(["train", str(recipe), "--no-progress", "--run-dir", str(run), "--set", "data.val_fraction=0.2"]) == 0
    sel = json.loads((run / "summary.json").read_text())["selection"]
    assert sel["selected_on"].startswith("val") and sel["test"]["split"] == "test" and sel["test"]["n"] == 360
    capsys.readouterr()
    assert main(["eval", "--weights", str(run), "--dataset", "digits", "--json"]) == 0  # scores best.safetensors
    scored = json.loads(capsys.readouterr().out)
    assert scored["top1"] == pytest.approx(sel["test"]["top1"]) and scored["n"] == 360

    assert main(["train", str(recipe), "--no-progress", "--run-dir", str(tmp_path / "test")]) == 0
    assert "best.safetensors was chosen on the test split" in capsys.readouterr().err
    sel = json.loads((tmp_path / "test" / "summary.json").read_text())["selection"]
    assert sel["selected_on"].startswith("test (optimistic") and sel["test"] is None

    assert main(["train", str(recipe), "--no-progress", "--run-dir", str(tmp_path / "last"),
                 "--set", "train.select=last"]) == 0
    summary = json.loads((tmp_path / "last" / "summary.json").read_text())
    assert not (tmp_path / "last" / "best.safetensors").exists()
    assert summary["selection"]["test"]["top1"] == summary["final"]["top1"] and summary["selection"]["epoch"] == 3


def test_transfer_input_too_small_for_the_network_is_one_line(capsys):
    from pathlib import Path

    sqz = Path(__file__).resolve().parents[1] / "results" / "squeezenet1_0_imagenet_6bit.sqz"  # ours, committed
    cli_one_line_error(capsys, ["transfer", "--weights", str(sqz), "--dataset", "digits", "--input-size", "8",
                                "--mode", "linear", "--epochs", "1"], "--input-size 8 is too small")


def test_compile_auto_is_on_for_cuda_only_and_booleans_still_read(tmp_path):
    from squeezelab import runtime
    from squeezelab.config import load_config

    recipe = digits_recipe(tmp_path)
    assert load_config(recipe).train.compile == "auto"
    assert load_config(recipe, ["train.compile=true"]).train.compile == "on"  # older recipes said true/false
    assert load_config(recipe, ["train.compile=false"]).train.compile == "off"
    assert runtime.resolve_compile("auto", torch.device("cuda")) and not runtime.resolve_compile("auto", torch.device("cpu"))
    assert runtime.resolve_compile("on", torch.device("cpu")) and not runtime.resolve_compile("off", torch.device("cuda"))
