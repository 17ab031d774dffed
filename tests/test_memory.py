"""What a device needs: tensor lifetimes from the execution order, peak activations, a greedy arena,
anchored to sizes computed by hand from the paper's layer shapes."""

from __future__ import annotations

import json

import torch

from squeezelab.cli import main
from squeezelab.deploy import memory
from squeezelab.models import create_model


def test_greedy_arena_reuses_memory_of_tensors_that_are_dead():
    t = memory.Tensor
    ts = [t("a", 100, 0, 1), t("b", 50, 1, 2), t("c", 100, 2, 3)]  # a and c never live together
    assert memory.peak(ts)[0] == 150  # steps 1 (a + b) and 2 (b + c)
    assert memory.greedy_arena(ts) == 150  # c reuses a's bytes; b sits above both


def test_greedy_arena_is_never_below_the_peak():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ts = []
        for i in range(12):
            first = int(torch.randint(0, 10, (1,), generator=g))
            ts.append(memory.Tensor(str(i), int(torch.randint(1, 100, (1,), generator=g)), first,
                                    first + int(torch.randint(0, 4, (1,), generator=g))))
        assert memory.greedy_arena(ts) >= memory.peak(ts)[0]


def test_squeezenet_peaks_match_the_layer_shapes():
    with torch.device("meta"):
        v10, v11 = create_model("squeezenet1_0"), create_model("squeezenet1_1")
    # v1.0 at 227 px, int8: fire4's two expand outputs (128 x 55 x 55 each) and their concatenation
    m = memory.measure(v10, 227)
    assert m.peak_bytes == m.arena_bytes == 4 * 128 * 55 * 55 and "fire4" in m.largest
    # v1.1 at 224 px: the input image and conv1's output (64 x 111 x 111: 3x3, stride 2, no padding)
    assert memory.measure(v11, 224).peak_bytes == 3 * 224 * 224 + 64 * 111 * 111
    assert memory.measure(v11, 224, "fp32").peak_bytes == 4 * (3 * 224 * 224 + 64 * 111 * 111)
    assert memory.measure(v10, 227, "fp32").weights_bytes == 4 * 1_248_424  # paper Table 1's parameters


def test_batchnorm_is_folded_before_counting():
    with torch.device("meta"):
        plain = create_model("squeezenet1_1", num_classes=10, stem="small")
        bn = create_model("squeezenet1_1", num_classes=10, stem="small", bn_fire=True, bn_conv1=True)
    a, b = memory.measure(plain, 32), memory.measure(bn, 32)
    assert (a.peak_bytes, a.arena_bytes, a.weights_bytes) == (b.peak_bytes, b.arena_bytes, b.weights_bytes)


def test_info_memory_answers_the_microcontroller_question(capsys):
    assert main(["info", "squeezenet1_1", "--input-size", "96", "--memory", "--json"]) == 0
    rows = {m["dtype"]: m for m in json.loads(capsys.readouterr().out)["memory"]}
    assert rows["int8"]["fits_mcu"] and not rows["fp32"]["fits_mcu"]
    assert rows["int8"]["arena_bytes"] == 3 * 96 * 96 + 64 * 47 * 47
