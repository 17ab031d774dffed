"""``squeezelab models`` and ``squeezelab info``: output and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from squeezelab.cli import main
from squeezelab.models import list_models


def test_models_json_lists_every_model(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    assert by_name["squeezenet1_0"]["params"] == 1_248_424
    assert by_name["squeezenet1_0"]["size_bytes"] == 4 * 1_248_424
    assert by_name["alexnet"]["params"] == 61_100_840
    for r in rows:
        assert {"name", "params", "size_bytes", "flops", "input_size"} <= set(r) and r["flops"] > 0


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "squeezenet1_1" in out and "1,235,496" in out


def test_info_table_with_options(capsys):
    args = ["info", "squeezenet1_0", "--set", "sr=0.5", "--set", "bypass=simple", "--num-classes", "10",
            "--input-size", "227"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "fire9" in out and "13x13x512" in out and "bypass=simple" in out and "total:" in out


def test_info_json(capsys):
    assert main(["info", "squeezenet1_1", "--set", "stem=small", "--input-size", "32", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["options"]["stem"] == "small" and info["input_size"] == 32
    assert info["params"] == 1_235_496 and info["flops"] == 2 * info["macs"]
    assert [r["layer"] for r in info["layers"]][:3] == ["conv1", "fire2", "fire3"]


@pytest.mark.parametrize("args,needle", [
    (["info", "nope"], "unknown model 'nope'; valid: alexnet, fire_next"),
    (["info", "squeezenet1_1", "--set", "foo=1"], "unknown option 'foo' for squeezenet1_1; valid: act, base_e"),
    (["info", "squeezenet1_1", "--set", "bypass=sideways"], "one of none, simple, complex"),
    (["info", "squeezenet1_1", "--set", "sr=2"], "must be a number in [0.01, 1.0]"),
    (["info", "squeezenet1_1", "--set", "sr"], "--set expects key=value"),
    (["info", "squeezenet1_1", "--num-classes", "0"], "--num-classes: must be >= 1"),
    (["info", "squeezenet1_1", "--input-size", "0"], "--input-size: must be >= 1"),
    (["info", "alexnet", "--input-size", "32"], "cannot take 32x32 px input"),
])
def test_info_errors_are_one_line_with_exit_code_2(capsys, args, needle):
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in captured.err
