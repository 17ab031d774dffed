"""scripts/allocate_rates.py (per-layer rate weights from a sensitivity scan): the scan quantises a layer
exactly as the ``ecq`` + ``reconstruct: gptq`` pipeline does, and the allocation is the Lagrangian optimum
of the scanned options, written as a config section the pipeline accepts."""

import copy
import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

from squeezelab.compression import calibrate, methods
from squeezelab.config import ECQConfig, OneShotRecipe
from squeezelab.data import get_preset, load_dataset
from squeezelab.models import create_model

_spec = importlib.util.spec_from_file_location("allocate_rates",
                                               Path(__file__).parents[1] / "scripts" / "allocate_rates.py")
allocate_rates = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(allocate_rates)


@pytest.fixture(scope="module")
def digits():
    data = load_dataset("digits", None, "train")
    return data.subset(torch.arange(64), "train"), get_preset("digits")


@pytest.mark.parametrize("layer,zeros", [("fire3.expand3x3", "fixed"), ("conv10", "fixed"), ("conv10", "free")])
def test_the_scan_quantises_a_layer_as_the_pipeline_does(digits, layer, zeros):
    from squeezelab.config import PruneConfig

    torch.manual_seed(0)
    original = create_model("squeezenet1_0", num_classes=10, base_e=32, incr_e=32).eval()
    if zeros == "free":  # (free zeros only change a pruned layer)
        original = methods.apply_one_shot(OneShotRecipe(prune=PruneConfig(density={layer: 0.3})), original)
    ctx = methods.Context(seed=0, data=digits)
    recipe = OneShotRecipe(ecq=ECQConfig(bits=4, rate_weight=0.02, layers=(layer,), reconstruct="gptq",
                                         calibration_images=64, zeros=zeros))
    piped = dict(methods.apply_one_shot(recipe, copy.deepcopy(original), ctx).named_modules())[layer]
    modules = dict(original.named_modules())
    moments = allocate_rates._moments(original, {layer: modules[layer]},
                                      calibrate._calibration(digits, 64, 0, torch.device("cpu"), "test"))
    w, b = allocate_rates.quantised(modules[layer].weight.detach(), 4, 0.02, moments[layer], zeros)
    if zeros == "free":
        assert float((w != 0).float().mean()) < 0.3
    assert torch.unique(w).numel() <= 16
    torch.testing.assert_close(w, piped.weight.detach(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(b, piped.bias.detach(), rtol=1e-4, atol=1e-5)


def _scan():
    """Three layers with made-up (bytes, KL) options at three rates."""
    def rows(points):
        return [{"rate": r, "bytes": n, "kl": kl} for r, (n, kl) in zip((0.0, 0.01, 0.04), points)]
    return {"bits": 7, "conv1_bits": 8, "images": 300, "rates": [0.0, 0.01, 0.04], "layers": {
        "conv1": {"base_bytes": 1000, "rows": rows([(900, 0.001), (600, 0.002), (400, 0.05)])},
        "fire2.squeeze": {"base_bytes": 3000, "rows": rows([(2500, 0.0), (1500, 0.03), (1000, 0.2)])},
        "conv10": {"base_bytes": 9000, "rows": rows([(8000, 0.001), (5000, 0.004), (3000, 0.01)])}}}


def test_every_allocation_on_the_frontier_is_the_best_of_all_combinations_at_its_size():
    scan = allocate_rates.merged([_scan()])
    layers = list(scan["layers"])
    combos = [dict(zip(layers, c)) for c in itertools.product(*(allocate_rates.options(scan["layers"][n]) for n in layers))]
    frontier = allocate_rates.frontier(scan, overhead=100)
    assert len(frontier) >= 4
    for point in frontier:  # a Lagrangian point is optimal for its own size (no combination no larger is closer)
        assert point["bytes"] == 100 + sum(
            next(o for o in allocate_rates.options(scan["layers"][n]) if o[2] == r)[0] for n, r in point["picks"].items()
            if r is not None) + sum(scan["layers"][n]["base_bytes"] for n, r in point["picks"].items() if r is None)
        best = min(sum(o[1] for o in c.values()) for c in combos if 100 + sum(o[0] for o in c.values()) <= point["bytes"])
        assert point["kl_sum"] == pytest.approx(best)
    section = allocate_rates.section(frontier[-1]["picks"])
    ECQConfig(**section)  # a section the config accepts as it is
    assert set(section["bits"]) == set(layers) and section["reconstruct"] == "gptq"
    assert section["bits"]["conv1"] == 8 and {section["bits"][n] for n in layers[1:]} <= {7, 8}


def test_scans_merge_layer_by_layer_and_refuse_different_images():
    a, b = _scan(), _scan()
    b["layers"] = {"conv10": dict(b["layers"]["conv10"], base_bytes=1)}
    b["zeros"] = "free"
    m = allocate_rates.merged([a, b])
    assert m["layers"]["conv10"]["base_bytes"] == 1 and len(m["layers"]["conv10"]["rows"]) == 3  # same bits: replaced
    assert [r["rate"] for r in m["layers"]["conv1"]["rows"]] == [0.0, 0.01, 0.04]
    assert m["zeros"] == "free" and a["layers"]["conv10"]["base_bytes"] == 9000  # (the inputs are not changed)
    assert allocate_rates.section({"conv10": (7, 0.01)}, m["zeros"])["zeros"] == "free"
    with pytest.raises(SystemExit, match="cannot be merged"):
        allocate_rates.merged([a, dict(b, images=a["images"] + 1)])


def test_a_scan_at_other_bits_adds_options_and_the_section_carries_each_layers_bits():
    a, b = _scan(), dict(_scan(), bits=8)
    b["layers"] = {"conv10": {"base_bytes": 9000, "rows": [{"rate": 0.0, "bytes": 8500, "kl": 0.0002}]}}
    m = allocate_rates.merged([a, b])
    assert sorted((r["bits"], r["rate"]) for r in m["layers"]["conv10"]["rows"]) == [
        (7, 0.0), (7, 0.01), (7, 0.04), (8, 0.0)]
    picks = allocate_rates.allocation(m, 1e-9)  # bytes almost free: each layer's smallest KL
    assert picks["conv10"][2] is None or picks["conv10"][2] == (8, 0.0)
    section = allocate_rates.section({"conv10": (8, 0.0), "fire2.squeeze": (7, 0.01), "conv1": None})
    assert section["bits"] == {"conv10": 8, "fire2.squeeze": 7, "conv1": 8}
    assert section["rate_weight"] == {"conv10": 0.0, "fire2.squeeze": 0.01, "conv1": 0.0}


def test_filling_between_frontier_points_spends_the_budget_on_the_best_upgrades():
    scan = allocate_rates.merged([_scan()])
    points = allocate_rates.frontier(scan, overhead=100)
    for target in range(points[0]["bytes"], points[-1]["bytes"] + 1, 250):
        start = min((p for p in points if p["bytes"] <= target), key=lambda p: p["kl_sum"])
        grown = allocate_rates.filled(scan, start, target)
        assert start["bytes"] <= grown["bytes"] <= target and grown["kl_sum"] <= start["kl_sum"] + 1e-12
        size = 100 + sum(next(o for o in allocate_rates.options(scan["layers"][n]) if o[2] == p)[0]
                         for n, p in grown["picks"].items())
        assert size == grown["bytes"]  # (the picks are options of their layers and add up to the bytes)
    # a floor on the scanned KL: the source's codes (KL 0) become the closest option of every layer
    top = allocate_rates.allocation(scan, 1e-12, kl_floor=1e-5)
    assert all(p[2] is None for p in top.values())
