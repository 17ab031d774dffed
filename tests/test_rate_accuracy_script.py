"""scripts/rate_accuracy.py's reading of the curve: the .sqz Pareto front and the bytes / KL it gives at
each NNCodec point (log-KL interpolation), the numbers results/rate_accuracy/README.md reports."""

import importlib.util
import math
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("rate_accuracy", Path(__file__).parents[1] / "scripts" / "rate_accuracy.py")
rate_accuracy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rate_accuracy)


def _row(coder, setting, n_bytes, kl):
    return {"coder": coder, "setting": setting, "bytes": n_bytes, "kl": kl}


ROWS = [_row(".sqz lossless", "source", 540_000, 0.0), _row(".sqz file", "a", 300_000, 0.1),
        _row(".sqz file", "b", 400_000, 0.01), _row(".sqz file", "worse", 410_000, 0.05),
        _row("NNCodec 2.x", "qp -30", 380_000, 0.04), _row("NNCodec 2.x", "qp -38", 470_000, 0.005),
        _row("NNCodec 2.x", "qp -26", 320_000, 0.3)]


def test_the_pareto_front_drops_beaten_and_lossless_points():
    assert [r["setting"] for r in rate_accuracy.pareto(ROWS)] == ["a", "b"]


def test_bytes_at_equal_kl_and_kl_at_equal_size_interpolate_in_log_kl():
    lines = rate_accuracy.interpolated(ROWS)
    qp30 = next(line for line in lines if line.startswith("| qp -30 "))
    cells = [c.strip() for c in qp30.strip("|").split("|")]
    # KL 0.04 between a (300 KB, 0.1) and b (400 KB, 0.01): log(0.1/0.04) / log(10) of the way
    size = 300_000 + 100_000 * math.log(0.1 / 0.04) / math.log(10)
    assert cells[3] == f"{size:,.0f}" and cells[4] == f"{size / 380_000:.2f}"
    kl = math.exp(math.log(0.1) + 0.8 * (math.log(0.01) - math.log(0.1)))  # 380 KB: 80% of the way
    assert float(cells[5]) == pytest.approx(kl, abs=5e-5)
    qp38 = next(line for line in lines if line.startswith("| qp -38 "))
    assert "above the largest" in qp38 and "< 0.0100" not in qp38  # 0.01 > 0.005: not as accurate
    qp26 = next(line for line in lines if line.startswith("| qp -26 "))
    assert "< 300,000" in qp26  # less accurate than the smallest .sqz point: its bytes bound ours


def test_the_paired_bootstrap_interval_covers_the_mean_difference_and_shrinks_with_more_images():
    import torch

    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(300, generator=g, dtype=torch.float64), torch.rand(300, generator=g, dtype=torch.float64)
    m, lo, hi = rate_accuracy.bootstrap_diff(a + 0.1, b, 2000)
    assert m == pytest.approx(float((a + 0.1 - b).mean())) and lo < m < hi and lo > 0  # a shift of 0.1 is resolved
    big = torch.rand(3000, generator=g, dtype=torch.float64)
    _, lo2, hi2 = rate_accuracy.bootstrap_diff(big, torch.rand(3000, generator=g, dtype=torch.float64), 2000)
    assert hi2 - lo2 < (hi - lo) / 2  # ~1/sqrt(10) as wide
    logits = torch.tensor([[3.0, 1.0, 0.0, 0, 0, 0], [0.0, 2.0, 1.0, 0, 0, 0]])
    per = rate_accuracy.per_image(logits, logits, torch.tensor([0, 0]))
    assert per["kl"].abs().max() < 1e-6 and per["top1"].tolist() == [1.0, 0.0] and per["top5"].tolist() == [1.0, 1.0]
