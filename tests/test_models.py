"""Models: registry, paper anchors (Table 1, Fig. 2, §5.1), options, torchvision parity, compile/AMP.

Input sizes each model supports (and that are tested here): every model runs at 224 px with its
default (ImageNet) stem, and at 32 and 64 px with ``stem="small"``. The SqueezeNets' ImageNet stem
also runs at 32 px (ceil pools leave 1x1 at fire9), AlexNet's needs >= 63 px.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from squeezelab.complexity import count_flops, count_params
from squeezelab.errors import ConfigError
from squeezelab.models import (
    create_model,
    fire_specs,
    from_torchvision_state_dict,
    get_model_entry,
    list_models,
    to_torchvision_state_dict,
)
from squeezelab.models.layers import Fire
from squeezelab.models.squeezenext import SqNxtBlock

GOLDEN = Path(__file__).parent / "golden" / "models.json"
MODELS = list_models()
# Paper Table 1, (s1x1, e1x1, e3x3) of fire2..fire9 (identical in v1.1).
TABLE1_FIRES = [(16, 64, 64), (16, 64, 64), (32, 128, 128), (32, 128, 128),
                (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256)]
# Option sets pinned in the golden file besides each model's defaults.
GOLDEN_VARIANTS = {
    "squeezenet1_0[bypass=simple]": ("squeezenet1_0", {"bypass": "simple"}, None),
    "squeezenet1_0[bypass=complex]": ("squeezenet1_0", {"bypass": "complex"}, None),
    "squeezenet1_0[caffe]@227": ("squeezenet1_0", {"caffe": True}, 227),
    "squeezenet1_0[sr=0.75,pct_3x3=0.25]": ("squeezenet1_0", {"sr": 0.75, "pct_3x3": 0.25}, None),
    "squeezenet1_1[stem=small]@32": ("squeezenet1_1", {"stem": "small"}, 32),
    "squeezenet1_1[bn_fire,bn_conv1,bn_conv10]": ("squeezenet1_1", {"bn_fire": True, "bn_conv1": True,
                                                                   "bn_conv10": True}, None),
    "alexnet[stem=small]@32": ("alexnet", {"stem": "small"}, 32),
    "alexnet[bn]": ("alexnet", {"bn": True}, None),
}


def _meta(name, **options):
    with torch.device("meta"):
        return create_model(name, **options)


def _measure(name, options, size):
    model = _meta(name, **options)
    size = size or get_model_entry(name).default_input_size
    return {"params": count_params(model), "input_size": size, **count_flops(model, size)}


# ---------------------------------------------------------------- registry


def test_registry_lists_the_models_and_entries():
    assert {"squeezenet1_0", "squeezenet1_1", "alexnet", "fire_next", "sq1"} <= set(MODELS)
    for name in MODELS:
        entry = get_model_entry(name)
        assert entry.name == name and entry.description
        assert entry.default_input_size == 224
        json.dumps(dict(entry.options))  # plain JSON values, storable in a checkpoint


@pytest.mark.parametrize("name", MODELS)
def test_model_spec_rebuilds_the_same_model(name):
    model = _meta(name, num_classes=7)
    spec = json.loads(json.dumps(model.model_spec))
    again = _meta(spec["name"], num_classes=spec["num_classes"], **spec["options"])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in again.state_dict().items()}


# ---------------------------------------------------------------- forward / backward, every model


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("size,stem", [(32, "small"), (64, "small"), (224, "imagenet")])
def test_forward_shapes(name, size, stem):
    model = create_model(name, num_classes=10, stem=stem).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)  # ImageNet stem at 64 px: the cheapest size all models take
    model(torch.randn(2, 3, 64, 64)).logsumexp(1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_gradients_with_every_extra_switched_on():
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=10, stem="small", bypass="complex", bn_fire=True,
                         bn_conv1=True, bn_conv10=True, act="prelu", head_act="leaky_relu")
    model(torch.randn(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", MODELS)
def test_features_head_split_and_reset_classifier(name):
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_head(model.forward_features(x)))
        model.reset_classifier(3)
        assert model(x).shape == (1, 3)
    assert model.model_spec["num_classes"] == 3


# ---------------------------------------------------------------- anchors: paper and torchvision


def test_parameter_counts_match_paper_and_torchvision():
    with torch.device("meta"):
        tv = {n: count_params(getattr(torchvision.models, n)()) for n in ("squeezenet1_0", "squeezenet1_1", "alexnet")}
    assert tv == {"squeezenet1_0": 1_248_424, "squeezenet1_1": 1_235_496, "alexnet": 61_100_840}
    for name, expected in tv.items():
        assert count_params(_meta(name)) == expected


def _golden_actual():
    out = {name: _measure(name, {}, None) for name in MODELS}
    out.update({key: _measure(name, opts, size) for key, (name, opts, size) in GOLDEN_VARIANTS.items()})
    return out


def test_params_and_flops_match_golden_file():
    actual = _golden_actual()
    if os.environ.get("SQUEEZELAB_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n")
    assert actual == json.loads(GOLDEN.read_text())


def test_design_space_defaults_give_table1():
    assert [tuple(s) for s in fire_specs()] == TABLE1_FIRES
    assert fire_specs(base_e=128, incr_e=128, pct_3x3=0.5, freq=2, sr=0.125) == fire_specs()
    model = _meta("squeezenet1_0")
    got = [(f.squeeze.out_channels, f.expand1x1.out_channels, f.expand3x3.out_channels)
           for f in (getattr(model, f"fire{k}") for k in range(2, 10))]
    assert got == TABLE1_FIRES


@pytest.mark.parametrize("sr", [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 0.01])
@pytest.mark.parametrize("pct_3x3", [0.01, 0.125, 0.5, 0.75, 0.99])
def test_design_space_sweep_always_gives_valid_models(sr, pct_3x3):
    specs = fire_specs(sr=sr, pct_3x3=pct_3x3, base_e=2, incr_e=3, freq=1)
    assert all(min(s) >= 1 for s in specs)
    assert all(s.e1x1 + s.e3x3 == 2 + 3 * i for i, s in enumerate(specs))
    model = _meta("squeezenet1_0", sr=sr, pct_3x3=pct_3x3)
    assert count_flops(model, 64)["flops"] > 0


def test_design_space_paper_formula_example():
    # Paper §5.1: e_i = base_e + incr_e * floor(i / freq); e3x3 = pct_3x3 * e_i; s1x1 = sr * e_i.
    specs = fire_specs(base_e=64, incr_e=32, pct_3x3=0.25, freq=3, sr=0.5, num_fire=7)
    assert [s.e1x1 + s.e3x3 for s in specs] == [64, 64, 64, 96, 96, 96, 128]
    assert specs[3] == (48, 72, 24)


def test_simple_bypass_adds_no_parameters_complex_adds_1x1_convs():
    vanilla, simple, complex_ = (count_params(_meta("squeezenet1_0", bypass=b)) for b in ("none", "simple", "complex"))
    assert simple == vanilla
    # Paper Fig. 2: 1x1 conv bypasses around fire2 (96->128), fire4 (128->256), fire6 (256->384), fire8 (384->512).
    assert complex_ - vanilla == sum(i * o + o for i, o in ((96, 128), (128, 256), (256, 384), (384, 512)))
    for name in ("simple", "residual"):  # report 000's residual v1.1 is the simple bypass on v1.1
        model = _meta("squeezenet1_1", bypass=name)
        assert [k for k in range(2, 10) if getattr(model, f"fire{k}").bypass is not None] == [3, 5, 7, 9]


def test_simple_bypass_changes_the_function():
    torch.manual_seed(0)
    vanilla, simple = create_model("squeezenet1_1").eval(), create_model("squeezenet1_1", bypass="simple").eval()
    simple.load_state_dict(vanilla.state_dict())  # same keys: the bypass has no parameters
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(vanilla(x), simple(x))


@pytest.mark.parametrize("name", ["squeezenet1_0", "squeezenet1_1"])
def test_torchvision_parity_both_ways(name):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)(weights=None).eval()
    ours = create_model(name).eval()
    ours.load_state_dict(from_torchvision_state_dict(tv.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)
    tv2 = getattr(torchvision.models, name)(weights=None).eval()
    tv2.load_state_dict(to_torchvision_state_dict(ours.state_dict(), name))
    with torch.no_grad():
        torch.testing.assert_close(tv2(x), tv(x), rtol=0, atol=0)


def test_state_dict_keys_use_paper_names():
    keys = set(_meta("squeezenet1_0", caffe=True).state_dict())
    expected = {"conv1.weight", "conv1.bias", "conv10.weight", "conv10.bias"}
    for k in range(2, 10):
        expected |= {f"fire{k}.{m}.{p}" for m in ("squeeze", "expand1x1", "expand3x3") for p in ("weight", "bias")}
    assert keys == expected


# ---------------------------------------------------------------- options


def test_caffe_option():
    model = _meta("squeezenet1_0", caffe=True, pool_ceil=False)
    assert model.conv10.padding == (1, 1)
    assert all(getattr(model, f"maxpool{k}").ceil_mode for k in (1, 4, 8))
    assert not _meta("squeezenet1_0", pool_ceil=False).maxpool1.ceil_mode


def test_small_stem_definition():
    model = _meta("squeezenet1_0", stem="small")
    assert (model.conv1.kernel_size, model.conv1.stride, model.conv1.padding) == ((3, 3), (1, 1), (1, 1))
    assert model.conv1.out_channels == 96
    assert [n for n in model.feature_names if n.startswith("maxpool")] == ["maxpool4", "maxpool8"]
    assert model.forward_features(torch.zeros(1, 3, 32, 32, device="meta")).shape == (1, 512, 8, 8)
    v11 = _meta("squeezenet1_1", stem="small", conv1_kernel=5, conv1_stride=2)
    assert (v11.conv1.kernel_size, v11.conv1.stride, v11.conv1.padding) == ((5, 5), (2, 2), (2, 2))


@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
def test_conv1_kernel_and_stride(kernel):
    model = _meta("squeezenet1_1", conv1_kernel=kernel, conv1_stride=1)
    assert model.conv1.kernel_size == (kernel, kernel) and model.conv1.stride == (1, 1)


def test_batchnorm_switches():
    model = _meta("squeezenet1_1", bn_fire=True, bn_conv1=True, bn_conv10=True)
    assert isinstance(model.conv1_bn, nn.BatchNorm2d) and isinstance(model.conv10_bn, nn.BatchNorm2d)
    assert isinstance(model.fire5.expand3x3_bn, nn.BatchNorm2d) and model.fire5.squeeze.bias is None
    assert not any(isinstance(m, nn.BatchNorm2d) for m in _meta("squeezenet1_1").modules())


def test_activation_regions_and_head_act():
    model = _meta("squeezenet1_1", act="leaky_relu", leaky_slope=0.2, head_act="softplus")
    assert isinstance(model.fire2.squeeze_act, nn.LeakyReLU) and model.fire2.squeeze_act.negative_slope == 0.2
    assert isinstance(model.conv10_act, nn.Softplus)
    assert isinstance(_meta("squeezenet1_1", act="prelu").conv1_act, nn.PReLU)
    torch.manual_seed(0)
    no_relu = create_model("squeezenet1_1", head_act="none", num_classes=50).eval()
    with torch.no_grad():
        assert (no_relu(torch.randn(2, 3, 64, 64)) < 0).any()  # no ReLU after conv10: logits can be negative


def test_removing_and_adding_fire_modules():
    short = _meta("squeezenet1_0", num_fire=6)
    assert not hasattr(short, "fire8") and "maxpool8" not in short.feature_names
    assert short.conv10.in_channels == 384
    longer = _meta("squeezenet1_0", num_fire=10)
    # fire10, fire11 continue the formula: e = 128 + 128 * floor(8 / 2) = 640, s1x1 = 0.125 * 640.
    assert (longer.fire10.squeeze.out_channels, longer.fire11.out_channels) == (80, 640)


def test_extra_pool_between_fires():
    model = _meta("squeezenet1_1", extra_pool_after=[7])
    names = model.feature_names
    assert names.index("fire7") < names.index("maxpool7") < names.index("fire8")
    with pytest.raises(ConfigError, match="fire12"):
        _meta("squeezenet1_1", extra_pool_after=[12])


def test_dropout_option():
    assert _meta("squeezenet1_0", dropout=0.2).dropout.p == 0.2


def test_fire_next_and_sq1():
    fn = _meta("fire_next", sqnxt_out=96)
    assert isinstance(fn.fire9, SqNxtBlock) and fn.fire9.out_channels == 96 and fn.conv10.in_channels == 96
    assert isinstance(fn.fire8, Fire) and _meta("fire_next").fire9.out_channels == 128
    assert (fn.fire9.squeeze1.out_channels, fn.fire9.squeeze2.out_channels) == (256, 128)  # halving 512
    sq1 = _meta("sq1", num_classes=200)
    assert (sq1.fc1.in_features, sq1.fc1.out_features, sq1.fc2.out_features) == (200, 32, 200)
    assert (sq1.fc1_dropout.p, sq1.fc2_dropout.p) == (0.1, 0.1)
    assert _meta("sq1", mlp_width=64).fc1.out_features == 64
    assert count_params(sq1) - count_params(_meta("squeezenet1_1", num_classes=200)) == 200 * 32 + 32 + 32 * 200 + 200


def test_alexnet_options():
    bn = _meta("alexnet", bn=True)
    assert isinstance(bn.conv3_bn, nn.BatchNorm2d) and bn.conv3.bias is None
    small = _meta("alexnet", stem="small")
    assert small.conv1.kernel_size == (3, 3) and small.fc6.in_features == 1024


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("name,options,match", [
    ("nope", {}, "unknown model 'nope'; valid: alexnet, "),
    ("squeezenet1_1", {"foo": 1}, "unknown option 'foo' for squeezenet1_1; valid: act, base_e, "),
    ("squeezenet1_1", {"sqnxt_out": 5}, "unknown option 'sqnxt_out'"),
    ("squeezenet1_0", {"sr": 0.0}, r"'sr' for squeezenet1_0 must be a number in \[0.01, 1.0\]"),
    ("squeezenet1_0", {"sr": "big"}, "must be a number"),
    ("squeezenet1_0", {"pct_3x3": 1.0}, "pct_3x3"),
    ("squeezenet1_0", {"base_e": 64.5}, "must be an integer"),
    ("squeezenet1_0", {"freq": True}, "must be an integer"),
    ("squeezenet1_0", {"bn_fire": "yes"}, "must be a bool"),
    ("squeezenet1_0", {"bypass": "bogus"}, "one of none, simple, complex, residual"),
    ("squeezenet1_0", {"act": "gelu"}, "one of relu, leaky_relu, softplus, prelu"),
    ("squeezenet1_0", {"conv1_kernel": 4}, "one of 1, 3, 5, 7"),
    ("squeezenet1_0", {"bypass": "simple", "freq": 1}, "use bypass=complex"),
    ("squeezenet1_0", {"num_classes": 0}, "num_classes"),
    ("alexnet", {"stem": "tiny"}, "one of imagenet, small"),
])
def test_bad_names_options_and_values_raise_config_error(name, options, match):
    with pytest.raises(ConfigError, match=match):
        _meta(name, **options)


# ---------------------------------------------------------------- compile, channels_last, bf16


def test_torch_compile_fullgraph():
    model = create_model("squeezenet1_1", num_classes=10, stem="small", bypass="complex", bn_fire=True).eval()
    x = torch.randn(1, 3, 16, 16)
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # traces with dynamo: no graph breaks
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    model = create_model("squeezenet1_1", num_classes=10, stem="small", bypass="simple").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        cl = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.05)
