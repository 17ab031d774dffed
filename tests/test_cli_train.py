"""`squeezelab train / eval / bench` end to end on real (tiny) data: run folder contents, exact resume,
NaN stop, never overwriting a finished run, and one-line errors with exit code 2."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from squeezelab.data import load_dataset
from squeezelab.cli import main
from squeezelab.config import load_config
from squeezelab.engine import fit, read_checkpoint
from tests.helpers import TINY, cli_one_line_error, crash_then_resume, digits_recipe

def test_train_writes_a_complete_run_folder_and_eval_reads_it(tmp_path, capsys):
    assert main(["train", str(digits_recipe(tmp_path)), "--set", "train.epochs=2", "--no-progress"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run.parent == tmp_path / "runs" and "-squeezenet1_1-digits-" in run.name
    events = {"tensorboard"} if importlib.util.find_spec("tensorboard") else set()  # the experiments extra
    assert {p.name for p in run.iterdir()} == {"config.yaml", "environment.json", "metrics.jsonl", "summary.json",
                                               "best.safetensors", "last.safetensors"} | events
    cfg = load_config(run / "config.yaml")
    assert cfg.model.num_classes == 10 and cfg.data.preset == "digits"  # resolved
    env = json.loads((run / "environment.json").read_text())
    assert {"git_commit", "versions", "device", "torch_threads", "resolved"} <= set(env)
    expected = "cuda" if torch.cuda.is_available() else "cpu"  # train.device auto: the suite runs on GPUs too
    assert env["device"]["type"] == expected and env["device"]["name"] and isinstance(env["device"]["native_bf16"], bool)
    assert env["resolved"]["amp"] == "off"  # the tiny recipe's train.amp
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"epoch", "train_loss", "val_loss", "top1", "top5", "lr", "epoch_seconds", "images_per_second"} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_completed"] == 2
    best = read_checkpoint(run / "best.safetensors")
    assert best.meta["model"] == {"name": "squeezenet1_1", "num_classes": 10, "options": {**TINY, "dropout": 0.2}}
    assert best.meta["preset"] == "digits" and best.meta["dataset"] == "digits"
    # eval from the run folder: model, options and preset come from the checkpoint's metadata
    assert main(["eval", "--weights", str(run / "last.safetensors"), "--dataset", "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 360 and 0 <= result["top1"] <= result["top5"] <= 1
    full = rows[-1]  # training validated on a 384-image subset of the same split: same model, close numbers
    assert abs(result["top5"] - full["top5"]) < 0.2
    # a finished run is never overwritten
    cli_one_line_error(capsys, ["train", str(digits_recipe(tmp_path)), "--run-dir", str(run)], "already holds files")
    cli_one_line_error(capsys, ["train", "--resume", str(run)], "finished run")


@pytest.mark.parametrize("amp", ["off", "bf16"])  # bf16: what amp auto trains in on CPUs with AMX
def test_resume_gives_bit_identical_weights(tmp_path, monkeypatch, amp):
    recipe = digits_recipe(tmp_path, epochs=4, amp=amp)
    straight = fit(load_config(recipe, ["output.run_dir=" + str(tmp_path / "a")]), progress=False)

    resumed = crash_then_resume(monkeypatch, recipe, [], tmp_path / "b", after_epoch=2)

    a, b = read_checkpoint(straight / "last.safetensors"), read_checkpoint(resumed / "last.safetensors")
    assert a.meta["epoch"] == b.meta["epoch"] == 4 and a.meta["step"] == b.meta["step"]
    for key, value in a.model_state.items():
        assert torch.equal(value, b.model_state[key]), key
    for key, value in a.optim_state["state"][0].items():
        assert torch.equal(value, b.optim_state["state"][0][key])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_seconds", "images_per_second")}  # noqa
                          for r in rows]
    rows = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert strip(rows(straight)) == strip(rows(resumed))


def test_nan_loss_stops_with_one_line_and_keeps_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    err = cli_one_line_error(capsys, ["train", str(digits_recipe(tmp_path)), "--set", "optim.lr=1e9", "--run-dir", str(run),
                                   "--set", "schedule.warmup_epochs=0", "--no-progress"],
                          "loss became", "last good checkpoint", "last.safetensors")
    assert "nan" in err or "inf" in err
    last = read_checkpoint(run / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in last.model_state.values() if t.is_floating_point())
    assert json.loads((run / "summary.json").read_text())["status"] == "failed"


def test_max_steps_and_early_stopping_end_the_run(tmp_path):
    run = fit(load_config(digits_recipe(tmp_path, epochs=50, max_steps=6)), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["epochs_completed"] == 2  # 4 steps/epoch: stops inside epoch 2
    stop = fit(load_config(digits_recipe(tmp_path, epochs=50, early_stopping={"patience": 1, "top5_threshold": 0.0}),
                           ["optim.lr=1e-6"]), progress=False)
    summary = json.loads((stop / "summary.json").read_text())
    assert summary["stopped_early"] and summary["epochs_completed"] < 50


def test_bad_inputs_end_with_one_line_and_exit_2(tmp_path, capsys):
    recipe = str(digits_recipe(tmp_path))
    cli_one_line_error(capsys, ["train", str(tmp_path / "missing.yaml")], "config file not found")
    cli_one_line_error(capsys, ["train", recipe, "--set", "optim.lrr=0.1"], "unknown key optim.lrr", "momentum")
    cli_one_line_error(capsys, ["train", recipe, "--set", "train.epochs=many"], "train.epochs", "int", "str")
    cli_one_line_error(capsys, ["train", recipe, "--set", "data.dataset=cifar10",
                             "--set", f"data.data_dir={tmp_path / 'nowhere'}"], "not found")
    (tmp_path / "empty").mkdir()
    cli_one_line_error(capsys, ["train", recipe, "--set", "data.dataset=cifar10",
                             "--set", f"data.data_dir={tmp_path / 'empty'}"], "cifar")
    cli_one_line_error(capsys, ["train", recipe, "--set", "model.name=squeezenet9"], "squeezenet9")
    cli_one_line_error(capsys, ["train", "--resume", str(tmp_path)], "not a run folder")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    cli_one_line_error(capsys, ["eval", "--weights", str(bad), "--dataset", "digits"], "bad.safetensors")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_bench_reports_both_pipelines(capsys):
    argv = (["bench", "train", "--model", "squeezenet1_1", "--dataset", "digits", "--steps", "4", "--rounds", "2",
             "--batch-size", "32", "--workers", "0", "--threads", "1", "--json"]
            + [f"--set={k}={v}" for k, v in TINY.items()])
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["steps"] == 4 and all(len(r[k]["rounds"]) == 2 for k in ("ours", "naive", "network"))
    lo, hi = r["ratio_range"]
    assert lo == pytest.approx(min(o / n for o, n in zip(r["ours"]["rounds"], r["naive"]["rounds"]))) and lo <= hi
    assert r["ours"]["images_per_second"] > 0 and r["naive"]["images_per_second"] > 0
    assert r["ratio"] == pytest.approx(r["ours"]["images_per_second"] / r["naive"]["images_per_second"])
    assert r["network"]["images_per_second"] > 0
    assert r["ours_of_network"] == pytest.approx(r["ours"]["images_per_second"] / r["network"]["images_per_second"])


def test_bench_refuses_more_rounds_than_steps(capsys):
    cli_one_line_error(capsys, ["bench", "train", "--steps", "2", "--rounds", "3"], "--rounds")


def test_eval_of_the_authors_compressed_squeezenet_matches_its_published_numbers(shared_data, capsys):
    """The Deep Compression .net file on the 300 ImageNet val images: 71.7% / 92.3% (data README).
    Model, options and the Caffe preset come from the weights; the user names none of them."""
    argv = ["eval", "--weights", str(shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"),
            "--dataset", "image-list", "--data-dir", str(shared_data / "imagenet-val-300"), "--json",
            "--batch-size", "50"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 300 and r["preset"] == "caffe"
    assert round(100 * r["top1"], 1) == 71.7 and round(100 * r["top5"], 1) == 92.3


def _image_list_subset(tmp_path, shared_data, keep, synsets: int | None = None):
    """A labelled subset of imagenet-val-300 as users make one: images/ + labels.txt with ImageNet's
    0-999 indices, and (optionally) a class list of ``synsets`` lines beside it."""
    import shutil

    src = shared_data / "imagenet-val-300"
    root = tmp_path / "subset"
    (root / "images").mkdir(parents=True)
    lines = [line for line in (src / "labels.txt").read_text().splitlines() if line.strip()]
    picked = [line for line in lines if keep(int(line.split()[1]))]
    for line in picked:
        shutil.copy(src / "images" / line.split()[0], root / "images")
    (root / "labels.txt").write_text("\n".join(picked) + "\n")
    if synsets is not None:
        words = (src / "synset_words.txt").read_text().splitlines()[:synsets]
        (root / "synset_words.txt").write_text("\n".join(words) + "\n")
    return root, picked


@pytest.mark.parametrize("top", [999, 500])
def test_a_labelled_imagenet_subset_without_a_class_list_is_scored_with_the_weights_classes(
        tmp_path, shared_data, capsys, top):
    """Issue 20: labels 0..998 (or 0..499) and no class list: the largest label is not the class count;
    the weights' 1000 classes score it, and the score is the one of those images within the 300."""
    root, picked = _image_list_subset(tmp_path, shared_data, lambda c: c < top)
    net = shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
    argv = ["eval", "--weights", str(net), "--dataset", "image-list", "--data-dir", str(root), "--json"]
    assert main(argv) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == len(picked) and 0.5 < r["top1"] < 0.9  # ImageNet weights on ImageNet images


def test_a_declared_class_list_that_does_not_match_the_weights_is_refused(tmp_path, shared_data, capsys):
    root, _ = _image_list_subset(tmp_path, shared_data, lambda c: c < 999, synsets=999)
    net = shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"
    cli_one_line_error(capsys, ["eval", "--weights", str(net), "--dataset", "image-list", "--data-dir", str(root)],
                       "1000 classes and the dataset 999")
    cli_one_line_error(capsys, ["eval", "--weights", str(net), "--dataset", "digits"], "1000 classes and the dataset 10")


def test_images_decoded_per_item_train_through_a_dataloader(tmp_path, shared_data):
    """in_memory: false -> LazyImageSet + DataLoader (DistributedSampler) instead of TensorLoader."""
    import shutil

    images = sorted((shared_data / "imagenet-val-300" / "images").glob("*.JPEG"))[:48]
    for i, src in enumerate(images):
        split, cls = ("train" if i < 32 else "val"), ("a" if i % 2 else "b")
        (tmp_path / "folder" / split / cls).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, tmp_path / "folder" / split / cls / src.name)
    overrides = ["data.dataset=imagefolder", f"data.data_dir={tmp_path / 'folder'}", "data.preset=small",
                 "data.in_memory=false", "data.workers=0", "data.batch_size=8", "data.limit=null"]
    run = fit(load_config(digits_recipe(tmp_path), overrides), progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8]  # 32 images / batch 8
    assert read_checkpoint(run / "last.safetensors").meta["model"]["num_classes"] == 2


@pytest.mark.slow
def test_torch_compile_opt_in_trains_and_saves_plain_keys(tmp_path):
    """train.compile: true wraps the model in torch.compile (~1 min of inductor compile on CPU)."""
    run = fit(load_config(digits_recipe(tmp_path), ["train.compile=true", "train.epochs=1"]), progress=False)
    state = read_checkpoint(run / "last.safetensors").model_state
    assert state and not any(k.startswith("_orig_mod.") for k in state)


def test_eval_scores_a_pooled_split_run_on_its_own_test_part(tmp_path, capsys):
    """Report 003's pooled 80/10/10 split: eval must default to the run's held-out part, not to the
    official test split (most of which the pooled run trained on)."""
    overrides = ["--set", "train.epochs=1", "--set", "data.split_scheme=pooled", "--set", "data.val_fraction=0.1",
                 "--set", "data.limit=null"]
    assert main(["train", str(digits_recipe(tmp_path)), *overrides, "--no-progress"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["eval", "--weights", str(run), "--dataset", "digits", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    pooled_test = load_dataset("digits", None, "test", split_scheme="pooled", val_fraction=0.1, seed=3, cache_dir=False)
    assert result["split"] == "test" and result["n"] == len(pooled_test) != 360  # 10% of 1,797 by class
    # explicit options win: the official test split of 360 images
    assert main(["eval", "--weights", str(run), "--dataset", "digits", "--split-scheme", "official", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 360
