"""Config: YAML -> dotted overrides -> validation -> frozen dataclasses -> YAML round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from squeezelab.config import (RunConfig, config_from_dict, config_hash, dump_config, load_config,
                               parse_set_args)
from squeezelab.errors import ConfigError

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


def test_parse_set_args_yaml_scalars():
    assert parse_set_args(["a=0.5", "b=true", "c=simple", "d=[1, 2]"]) == {"a": 0.5, "b": True, "c": "simple",
                                                                             "d": [1, 2]}
    with pytest.raises(ConfigError):
        parse_set_args(["novalue"])


def test_overrides_nested_and_frozen(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim: {name: adabound, lr: 1e-3}\nmodel: {options: {stem: small}}\n")
    cfg = load_config(path, ["optim.lr=0.1", "model.options.sr=0.25", "train.amp=off", "optim.betas=[0.8, 0.9]"])
    assert cfg.optim.name == "adabound" and cfg.optim.lr == 0.1 and cfg.optim.betas == (0.8, 0.9)
    assert dict(cfg.model.options) == {"stem": "small", "sr": 0.25}
    assert cfg.train.amp == "off"  # YAML 1.1 reads `off` as False: mapped back for choice fields
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.optim.lr = 1.0
    with pytest.raises(TypeError):
        cfg.model.options["sr"] = 1.0  # read-only mapping


def test_dump_round_trip_and_hash():
    cfg = load_config(None, ["optim.lr=0.2", "model.options.sr=0.5"])
    back = config_from_dict(yaml.safe_load(dump_config(cfg)))
    assert back == cfg
    assert config_hash(cfg) == config_hash(back) != config_hash(RunConfig())
    moved = load_config(None, ["optim.lr=0.2", "model.options.sr=0.5", "output.runs_dir=/elsewhere"])
    assert config_hash(moved) == config_hash(cfg)  # where the output goes is not part of the identity


@pytest.mark.parametrize("override, words", [
    ("optim.foo=1", ["unknown key optim.foo", "lr", "momentum", "weight_decay"]),
    ("bogus=1", ["unknown key bogus", "model", "optim", "train"]),
    ("train.early_stopping.patiense=3", ["train.early_stopping.patiense", "patience", "top5_threshold"]),
    ("optim.lr=fast", ["optim.lr", "float", "str"]),
    ("train.epochs=2.5", ["train.epochs", "int", "float"]),
    ("data.in_memory=3", ["data.in_memory", "bool", "int"]),
    ("optim.name=rmsprop", ["optim.name", "sgd", "adabound", "rmsprop"]),
    ("optim.betas=0.9", ["optim.betas", "list of 2"]),
    ("model.options=3", ["model.options", "mapping"]),
])
def test_bad_keys_and_types(override, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_missing_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_recipes_validate(path):
    cfg = load_config(path)
    assert cfg.train.epochs > 0 and cfg.data.batch_size > 0


def test_seed_recipes_match_the_reports():
    names = {p.name for p in CONFIGS}
    assert {"seed000_tinyimagenet_sn_lr1.yaml", "seed001_cifar10_best.yaml", "seed003_cifar10_adabound.yaml"} <= names
    r0 = load_config(CONFIGS[0].parent / "seed000_tinyimagenet_sn_lr1.yaml")
    assert (r0.model.name, r0.optim.lr, r0.optim.momentum, r0.optim.weight_decay, r0.data.batch_size) == (
        "squeezenet1_1", 0.04, 0.9, 2e-4, 512)
    assert r0.model.options["dropout"] == 0.5 and r0.data.preset == "report000"
    r1 = load_config(CONFIGS[0].parent / "seed001_cifar10_best.yaml")
    assert (r1.data.batch_size, r1.optim.lr, r1.optim.weight_decay, r1.schedule.name) == (64, 0.001, 2e-4, "step")
    r3 = load_config(CONFIGS[0].parent / "seed003_cifar10_adabound.yaml")
    assert (r3.data.batch_size, r3.optim.name) == (50, "adabound")
    # report 003 split all 60k images 80/10/10; report 001 carved 45k/5k from the official train split
    assert (r3.data.split_scheme, r3.data.val_fraction) == ("pooled", 0.1)
    assert (r1.data.split_scheme, r0.data.split_scheme) == ("official", "official")


def test_split_scheme_is_validated():
    assert config_from_dict({"data": {"split_scheme": "pooled", "val_fraction": 0.1}}).data.split_scheme == "pooled"
    with pytest.raises(ConfigError, match="split_scheme"):
        config_from_dict({"data": {"split_scheme": "mixed"}})
