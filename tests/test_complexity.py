"""Complexity measured from the live model, anchored to paper Table 1 and torchvision's metadata."""

from __future__ import annotations

import pytest
import torch
import torchvision

from squeezelab.complexity import count_flops, count_params, layer_table, size_bytes
from squeezelab.models import create_model

# Paper Table 1 (SqueezeNet v1.0, 227x227 input): layer, output size, filter/stride, s1x1, e1x1, e3x3,
# "# parameter before pruning". The paper lists conv10's output as 13x13 (no padding, as in our
# default; the Caffe prototxt pads conv10 by 1, which changes only its output size).
TABLE1 = [
    ("conv1", "111x111x96", "7x7/2", None, None, None, 14_208),
    ("maxpool1", "55x55x96", "3x3/2", None, None, None, 0),
    ("fire2", "55x55x128", None, 16, 64, 64, 11_920),
    ("fire3", "55x55x128", None, 16, 64, 64, 12_432),
    ("fire4", "55x55x256", None, 32, 128, 128, 45_344),
    ("maxpool4", "27x27x256", "3x3/2", None, None, None, 0),
    ("fire5", "27x27x256", None, 32, 128, 128, 49_440),
    ("fire6", "27x27x384", None, 48, 192, 192, 104_880),
    ("fire7", "27x27x384", None, 48, 192, 192, 111_024),
    ("fire8", "27x27x512", None, 64, 256, 256, 188_992),
    ("maxpool8", "13x13x512", "3x3/2", None, None, None, 0),
    ("fire9", "13x13x512", None, 64, 256, 256, 197_184),
    ("conv10", "13x13x1000", "1x1/1", None, None, None, 513_000),
    ("avgpool10", "1x1x1000", "global", None, None, None, 0),
]
KEYS = ("layer", "output_size", "filter", "s1x1", "e1x1", "e3x3", "params")


def _meta(name, **options):
    with torch.device("meta"):
        return create_model(name, **options)


def test_layer_table_reproduces_paper_table1():
    rows = layer_table(_meta("squeezenet1_0"), 227)
    assert [tuple(r[k] for k in KEYS) for r in rows] == TABLE1
    assert sum(r["params"] for r in rows) == 1_248_424


def test_layer_table_caffe_conv10_padding_shows_in_output_size():
    rows = {r["layer"]: r for r in layer_table(_meta("squeezenet1_0", caffe=True), 227)}
    assert rows["conv10"]["output_size"] == "15x15x1000" and rows["fire9"]["output_size"] == "13x13x512"


@pytest.mark.parametrize("name", ["squeezenet1_1", "alexnet", "fire_next", "sq1"])
def test_layer_table_params_and_flops_sum_to_totals(name):
    model = _meta(name, bn_fire=True) if name.startswith("squeeze") else _meta(name)
    rows = layer_table(model, 224)
    assert sum(r["params"] for r in rows) == count_params(model)
    assert sum(r["flops"] for r in rows) == count_flops(model, 224)["flops"]


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1", "alexnet"])
def test_params_and_macs_match_torchvision_metadata(name):
    meta = torchvision.models.get_model_weights(name).IMAGENET1K_V1.meta
    model = _meta(name)
    assert count_params(model) == meta["num_params"]
    got = count_flops(model, 224)
    assert got["flops"] == 2 * got["macs"]
    # torchvision's "_ops" are GMACs at 224 px, rounded to 3 decimals.
    assert round(got["macs"] / 1e9, 3) == meta["_ops"]


def test_flops_scale_with_batch_and_match_torchvision_model():
    with torch.device("meta"):
        tv = torchvision.models.squeezenet1_1()
    ours = _meta("squeezenet1_1")
    assert count_flops(ours, 64, batch=3)["flops"] == 3 * count_flops(ours, 64)["flops"]
    assert count_flops(ours, 64) == count_flops(tv, 64)


def test_size_bytes_is_fp32_params_plus_float_buffers():
    assert size_bytes(_meta("squeezenet1_0")) == 4 * 1_248_424
    bn = create_model("squeezenet1_1", bn_conv1=True)  # BN: 64 weight + 64 bias params, 128 float buffers
    assert size_bytes(bn) == 4 * (count_params(bn) + 128)


def test_measuring_leaves_model_mode_and_works_on_cpu():
    model = create_model("squeezenet1_1", stem="small", num_classes=10).train()
    assert count_flops(model, 16)["macs"] > 0
    assert model.training
    assert layer_table(model, (16, 24))[-1]["output_shape"] == [10, 1, 1]
