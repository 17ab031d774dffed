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
    scan = _scan()
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
    section = allocate_rates.section(frontier[-1]["picks"], 8, 7)
    ECQConfig(**section)  # a section the config accepts as it is
    assert set(section["bits"]) == set(layers) and section["reconstruct"] == "gptq"


def test_scans_merge_layer_by_layer_and_refuse_different_grids():
    a, b = _scan(), _scan()
    b["layers"] = {"conv10": dict(b["layers"]["conv10"], base_bytes=1)}
    b["zeros"] = "free"
    m = allocate_rates.merged([a, b])
    assert m["layers"]["conv10"]["base_bytes"] == 1 and m["layers"]["conv1"] == a["layers"]["conv1"]
    assert m["zeros"] == "free" and a["layers"]["conv10"]["base_bytes"] == 9000  # (the inputs are not changed)
    assert allocate_rates.section({"conv10": 0.01}, 8, 7, m["zeros"])["zeros"] == "free"
    with pytest.raises(SystemExit, match="cannot be merged"):
        allocate_rates.merged([a, dict(b, images=a["images"] + 1)])
