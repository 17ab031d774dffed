"""Whole classes of hostile or broken input (issue 20), with generated values: YAML that is valid but not
a config (deep nesting, alias bombs, duplicate keys, dates) in every command that reads YAML, and run /
study folders whose files are not what they claim (corrupt, binary, non-object, FIFOs) in every command
that reads them. Each ends in success or one line with exit 2, never a traceback, and within a
deadline (SIGALRM: a FIFO opened for reading would block forever)."""

from __future__ import annotations

import json
import os
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from squeezelab.cli import main
from tests.conftest import REPO_ROOT
from tests.helpers import cli_one_line_error

DEADLINE_S = 20


@contextmanager
def deadline(seconds: int = DEADLINE_S):
    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------------ YAML


def nested(kind: str, depth: int) -> str:
    return ("[" * depth + "1" + "]" * depth) if kind == "list" else ("{a: " * depth + "1" + "}" * depth)


def alias_bomb(levels: int, fanout: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * fanout)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fanout)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE = st.one_of(
    st.builds(nested, st.sampled_from(["list", "map"]), st.integers(65, 5000)).map(lambda t: ("deeper than", t)),
    st.builds(alias_bomb, st.integers(6, 12), st.integers(8, 16)).map(lambda t: ("alias bomb", t)),
    st.sampled_from(["optim", "train", "data", "model"]).map(
        lambda k: ("duplicate key", f"{k}: {{}}\n{k}: {{}}\n")),
)


def _commands(path: Path) -> list[list[str]]:
    """Every command that reads a YAML file a user hands it."""
    return [["train", str(path)], ["sweep", str(path), "--dry-run"], ["compress", str(path)],
            ["train", str(REPO_ROOT / "configs" / "digits_smoke.yaml"), "--set", f"optim.lr={path.read_text()[:200]}"]]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=HOSTILE)
def test_yaml_that_is_not_a_config_is_one_line_in_every_command(tmp_path, capsys, case):
    words, text = case
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    for argv in _commands(path)[:3]:
        with deadline():
            err = cli_one_line_error(capsys, argv)
        if "duplicate" in words:
            assert "duplicate key" in err
        elif "deeper" in words:
            assert "levels deep" in err
        else:
            assert "alias bomb" in err


@pytest.mark.parametrize("value", ["2024-01-01", "2024-01-01 10:00:00", "2001-12-14t21:59:43.10-05:00"])
def test_a_date_where_a_number_belongs_is_named_as_such(tmp_path, capsys, value):
    recipe = REPO_ROOT / "configs" / "digits_smoke.yaml"
    err = cli_one_line_error(capsys, ["train", str(recipe), "--set", f"optim.lr={value}"], "optim.lr")
    assert value[:4] in err
    bad = yaml.safe_load(recipe.read_text())
    bad["optim"]["lr"] = "PLACEHOLDER"
    path = tmp_path / "dated.yaml"
    path.write_text(yaml.safe_dump(bad).replace("PLACEHOLDER", value))
    cli_one_line_error(capsys, ["train", str(path)], "optim.lr")


def test_merge_keys_and_a_few_aliases_still_load():
    from squeezelab.config import load_yaml

    assert load_yaml("x: &x {k: 1, m: 1}\ny: *x\nz: {<<: *x, m: 2}\n") == {
        "x": {"k": 1, "m": 1}, "y": {"k": 1, "m": 1}, "z": {"k": 1, "m": 2}}


# ------------------------------------------------------------------------------------ run and study folders


def _run_folder(root: Path, name: str = "r1") -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "squeezenet1_1"}, "train": {"seed": 0}}))
    (run / "environment.json").write_text("{}")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "top1": 0.5, "top5": 0.9}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "finished", "best": {"value": 0.5, "top5": 0.9}}))
    return run


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


BROKEN = [  # (file, how it is broken)
    ("metrics.jsonl", lambda p: p.write_text("{not json\n")),
    ("metrics.jsonl", lambda p: p.write_text("[1, 2]\n")),
    ("metrics.jsonl", lambda p: p.write_text('{"epoch": "one", "top1": "high"}\n')),
    ("metrics.jsonl", lambda p: p.write_bytes(b"\xff\xfe\x00binary")),
    ("metrics.jsonl", _fifo),
    ("summary.json", lambda p: p.write_text("[]")),
    ("summary.json", lambda p: p.write_text('"finished"')),
    ("summary.json", lambda p: p.write_text('{"status": "finished", "best": [1]}')),
    ("summary.json", lambda p: p.write_text("{")),
    ("summary.json", _fifo),
    ("config.yaml", lambda p: p.write_bytes(bytes(range(256)))),
    ("config.yaml", lambda p: p.write_text("- a\n- b\n")),
    ("config.yaml", lambda p: p.write_text(alias_bomb(10, 12))),
    ("config.yaml", lambda p: p.write_text("a: [1\n")),
]


@pytest.mark.parametrize("name, breaker", BROKEN, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BROKEN)])
def test_runs_commands_list_a_broken_run_as_corrupt(tmp_path, capsys, name, breaker):
    _run_folder(tmp_path / "runs", "good")
    bad = _run_folder(tmp_path / "runs", "bad")
    breaker(bad / name)
    with deadline():
        assert main(["runs", "ls", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "corrupt" in out and "good" in out
    with deadline():
        code = main(["runs", "show", str(tmp_path / "runs" / "bad")])
    captured = capsys.readouterr()
    assert code in (0, 2) and "Traceback" not in captured.err
    with deadline():
        code = main(["runs", "compare", str(tmp_path / "runs" / "good"), str(tmp_path / "runs" / "bad")])
    assert code in (0, 2) and "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("where", ["best.top1>>0.5", "best.top1>abc", "best.top1<=[1, 2]", "best.top1>="])
def test_a_where_that_is_not_a_comparison_is_one_line(tmp_path, capsys, where):
    _run_folder(tmp_path / "runs")
    cli_one_line_error(capsys, ["runs", "ls", str(tmp_path / "runs"), "--where", where], "--where")


@pytest.mark.parametrize("content", ["[]", "{", '{"name": "x"}', "\x00\x01\x02", '{"name": 1, "space": [], "seeds": 3}'])
def test_report_on_a_folder_whose_study_json_is_not_one(tmp_path, capsys, content):
    (tmp_path / "st").mkdir()
    (tmp_path / "st" / "study.json").write_text(content)
    cli_one_line_error(capsys, ["report", str(tmp_path / "st")], "study.json")


def test_report_on_an_empty_study_and_a_fifo_study_json(tmp_path, capsys):
    (tmp_path / "st").mkdir()
    cli_one_line_error(capsys, ["report", str(tmp_path / "st")], "study")
    _fifo(tmp_path / "st" / "study.json")
    with deadline():
        cli_one_line_error(capsys, ["report", str(tmp_path / "st")], "study.json")


# ------------------------------------------------------------------------------------ images and class lists


def _images(tmp_path: Path) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    frames = [Image.new("RGB", (40, 30), (i * 50, 0, 0)) for i in range(5)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    Image.new("RGB", (48, 48), (0, 128, 0)).save(d / "ok.png")
    os.mkfifo(d / "pipe.jpg")
    return {"anim": d / "anim.gif", "ok": d / "ok.png", "fifo": d / "pipe.jpg"}


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A 10-class checkpoint with the report003 (short side) preset and a hostile class list."""
    import torch

    from squeezelab.models import create_model
    from squeezelab.weights import checkpoint as ckpt

    d = tmp_path_factory.mktemp("w")
    net = create_model("squeezenet1_1", num_classes=10, base_e=16, incr_e=16, num_fire=2, stem="small")
    classes = [f"c{i}" for i in range(9)] + ["tench\x1b[2K\rforged: 100.0%"]
    meta = {"model": {"name": "squeezenet1_1", "num_classes": 10, "options": net.model_spec["options"]},
            "preset": "report004", "dataset": "imagefolder", "classes": classes}
    torch.manual_seed(0)
    ckpt.save_checkpoint(d / "w.safetensors", net, meta=meta)
    return d / "w.safetensors"


@pytest.mark.parametrize("n", [1, 3])
def test_predict_goes_on_past_images_it_cannot_read(tmp_path, capsys, tiny_weights, n):
    """An animated GIF is predicted on its first frame; a FIFO and /dev/zero are one line each and do
    not stop the later images; exit 2 says some failed."""
    imgs = _images(tmp_path)
    argv = ["predict", "--weights", str(tiny_weights), str(imgs["fifo"]), "/dev/zero", str(imgs["anim"])] + \
        [str(imgs["ok"])] * n
    with deadline():
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in err
    assert err.count("not a regular file") == 2 and len(err.strip().splitlines()) == 2
    assert out.count("ok.png:") == n and "anim.gif:" in out


def test_predict_never_prints_escape_sequences_from_class_names(tmp_path, capsys, tiny_weights):
    imgs = _images(tmp_path)
    assert main(["predict", "--weights", str(tiny_weights), str(imgs["ok"]), "--top", "10"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\\x1b[2K\\r" in out


@pytest.mark.parametrize("w, h", [(4_000_000, 1), (1, 70_000), (20_000, 100)])
def test_an_elongated_image_is_refused_before_resizing(w, h):
    import torch

    from squeezelab.data.decode import DecodePolicy
    from squeezelab.errors import DataError

    img = torch.zeros(3, h, w, dtype=torch.uint8)
    with pytest.raises(DataError, match="too elongated"):
        DecodePolicy(size=256, square=False, crop=224).apply(img)


def test_a_fifo_as_class_list_or_class_map_is_one_line(tmp_path, capsys, tiny_weights):
    imgs = _images(tmp_path)
    os.mkfifo(tmp_path / "classes.txt")
    with deadline():
        cli_one_line_error(capsys, ["predict", "--weights", str(tiny_weights), "--classes", str(tmp_path / "classes.txt"),
                                    str(imgs["ok"])], "not a regular file")
    with deadline():
        cli_one_line_error(capsys, ["train", str(REPO_ROOT / "configs" / "digits_smoke.yaml"), "--set",
                                    f"data.class_map={tmp_path / 'classes.txt'}"], "not a regular file")


def test_imagenet_models_print_imagenet_names():
    from squeezelab.deploy.predict import imagenet_names

    names = imagenet_names(None, 1000)
    assert names[0] == "tench" and names[281] == "tabby" and len(names) == 1000
    assert imagenet_names([f"n{i:08d}" for i in range(200)], 1000)[0] == "tench"  # not one name per output
    assert imagenet_names(["a", "b"], 2) == ["a", "b"] and imagenet_names(["a"], 2) is None
    own = [f"class{i}" for i in range(1000)]
    assert imagenet_names(own, 1000) == own


# ------------------------------------------------------------------------------------ ONNX files from elsewhere


def _foreign_onnx(tmp_path: Path, shape=(1, 3, 32, 32), meta: dict | None = None, name="m.onnx") -> Path:
    """An ONNX file squeezelab did not write: a fixed input shape, and metadata as given."""
    import onnx
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / name
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(*shape), str(path), dynamo=False)
    model = onnx.load(str(path))
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("meta, words", [
    ({"squeezelab.preset": "{not json"}, "not JSON"),
    ({"squeezelab.preset": "[1, 2]"}, "'preset' is a list"),
    ({"squeezelab.preset": '{"name": "small"}', "squeezelab.classes": '"abc"'}, "'classes' is not a list"),
    ({"squeezelab.preset": '{"name": "report004"}'}, "expects input shape [1, 3, 32, 32]"),  # 224 px preset
    ({}, "not exported by squeezelab"),
])
def test_onnx_files_from_elsewhere_are_one_line(tmp_path, capsys, meta, words):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    onnx_path = _foreign_onnx(tmp_path, meta=meta)
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    with deadline(60):
        cli_one_line_error(capsys, ["predict", "--onnx", str(onnx_path), str(tmp_path / "x.png")], words)


def test_bench_infer_refuses_an_onnx_file_of_another_shape(tmp_path, capsys, tiny_weights):
    pytest.importorskip("onnxruntime")
    onnx_path = _foreign_onnx(tmp_path, meta={"squeezelab.preset": '{"name": "report004"}'})
    with deadline(60):
        cli_one_line_error(capsys, ["bench", "infer", "--weights", str(tiny_weights), "--onnx", str(onnx_path)],
                           "expects input shape")


# ------------------------------------------------------------------------------------ weights headers


@pytest.mark.parametrize("field, value, words", [
    ("preset", ["caffe"], "preset is a list"),
    ("preset", 3, "preset is a int"),
    ("classes", "abc", "classes is a str"),
    ("classes", [1, 2], "classes are not a list of names"),
    ("model", [1], "model is a list"),
    ("model.num_classes", "10", "num_classes is '10'"),
    ("model.options", "x", "model.options is a str"),
    ("config", {"data": {"val_fraction": "abc"}, "train": {}}, "data_split"),
])
def test_a_checkpoint_whose_metadata_has_the_wrong_types_is_one_line(tmp_path, capsys, tiny_weights, field, value, words):
    """eval and export read the model, preset and classes from the file: each of the wrong type is one line."""
    from safetensors.torch import load_file, save_file

    meta = json.loads(__import__("safetensors").safe_open(str(tiny_weights), "pt").metadata()["squeezelab"])
    head, _, sub = field.partition(".")
    if sub:
        meta[head][sub] = value
    else:
        meta[head] = value
    bad = tmp_path / "bad.safetensors"
    save_file(load_file(str(tiny_weights)), str(bad), metadata={"squeezelab": json.dumps(meta)})
    for argv in (["eval", "--weights", str(bad), "--dataset", "digits"],
                 ["export", "--weights", str(bad), "-o", str(tmp_path / "m.onnx")]):
        cli_one_line_error(capsys, argv, words)


@pytest.mark.parametrize("content, words", [(bytes(range(256)), "not UTF-8"), (b"", "one unique wnid"),
                                            (b"n01\nn01\n", "one unique wnid")])
def test_a_tiny_imagenet_zip_with_a_bad_wnids_txt_is_one_line(tmp_path, capsys, content, words):
    import zipfile

    with zipfile.ZipFile(tmp_path / "tiny-imagenet-200.zip", "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", content)
        z.writestr("tiny-imagenet-200/train/n01/images/n01_0.JPEG", b"x")
    cli_one_line_error(capsys, ["bench", "train", "--dataset", "tiny-imagenet", "--data-dir", str(tmp_path),
                                "--steps", "1", "--rounds", "1"], words)


# ------------------------------------------------------------------------------------ .sqz that claims too much


@pytest.mark.parametrize("numel, bits", [(1 << 24, 1), (1 << 25, 2), (3 << 23, 1)])
def test_a_sqz_whose_decoding_needs_far_more_memory_is_refused_before_decoding(tmp_path, capsys, numel, bits):
    """A megabyte of incompressible weights beside a sparse tensor of fillers: the tensors themselves fit
    the 256x-the-file budget, but decoding them takes hundreds of MB of int64 codes, gaps and positions.
    Refused by the table alone, in one line, in every reader, before any of it is allocated."""
    import resource

    import torch

    from squeezelab.weights import sqz

    t = torch.zeros(numel)
    t[-1] = 1.0
    pad = torch.randn(1 << 18)  # 1 MB that no coder shrinks: the file's size sets the budget
    data = sqz.write_sqz({"pad": pad, "w": t}, {"preset": "small"}, index_bits=bits)
    assert 4 * (numel + pad.numel()) < sqz.MAX_EXPANSION * len(data)  # the old tensor-only bound let it through
    path = tmp_path / "bomb.sqz"
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for argv in (["compress", "report", str(path)], ["eval", "--weights", str(path), "--dataset", "digits"],
                 ["convert", str(path), str(tmp_path / "out.safetensors")]):
        with deadline(30):
            cli_one_line_error(capsys, argv, "decoding would take")
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB
    assert grew < 100 * 1024, f"peak memory grew by {grew / 1024:.0f} MiB"


def test_sqz_tensor_counts_are_exact_where_int64_would_wrap():
    from squeezelab.weights.sqz import TensorRecord

    import torch

    assert TensorRecord("w", torch.float32, (2**32, 2**32)).numel == 2**64


def test_an_output_folder_the_environment_refuses_is_exit_1_and_a_bad_path_exit_2(tmp_path, monkeypatch):
    import errno

    from squeezelab.errors import ConfigError, WriteError
    from squeezelab.jobs import compress

    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError):  # a parent that is a file: the user's path
        compress._claim(tmp_path / "file" / "out", None)
    with pytest.raises(ConfigError):
        compress._claim(tmp_path / ("x" * 300), None)

    def read_only(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(WriteError) as err:
        compress._claim(tmp_path / "ro" / "out", None)
    assert getattr(err.value, "exit_code", 2) == 1 and "Read-only" in str(err.value)


def test_a_fifo_inside_an_image_folder_is_one_line(tmp_path, capsys):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "f" / split / "a").mkdir(parents=True)
        Image.new("RGB", (40, 40)).save(tmp_path / "f" / split / "a" / "ok.jpg")
    os.mkfifo(tmp_path / "f" / "train" / "a" / "pipe.jpg")
    with deadline():
        cli_one_line_error(capsys, ["bench", "train", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "f"),
                                    "--steps", "1", "--rounds", "1", "--batch-size", "1"], "not a regular file")
