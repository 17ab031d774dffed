"""``squeezelab export``: any ``--weights`` to any backend's file, checked against torch.

``export(weights, out, fmt, precision)`` reads the weights through the one loader, folds every
BatchNorm into the convolution before it, lets the format's backend write its file (with what a
runtime needs: the preprocessing preset, class names, model spec, source), loads the file back in
that runtime and compares it with torch on the same images: the largest logit difference and how
often the top-1 classes agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from squeezelab.errors import ConfigError


@dataclass(frozen=True)
class Exported:
    path: Path
    format: str
    precision: str
    bytes: int            # the model file(s) as stored (OpenVINO: .xml + .bin)
    max_abs_diff: float   # runtime vs torch logits over the check images
    agreement: float      # share of the check images whose top-1 class is the same in both
    input_size: int
    preset: str


def export(weights: str, out: str | Path, fmt: str = "onnx", precision: str = "fp32", *,
           calibration: np.ndarray | None = None, model: str | None = None, options: dict | None = None,
           check_images: torch.Tensor | None = None) -> Exported:
    """Write ``weights`` as ``fmt`` at ``precision`` (int8 calibrates on ``calibration``: preprocessed
    TRAINING images); ``check_images``: uint8 [N, 3, H, W] to compare on (default: 16 random images)."""
    from squeezelab.data import get_preset
    from squeezelab.deploy import backends
    from squeezelab.deploy.graph import check_out, fold_batchnorm, load_model

    backend = backends.usable(backends.for_format(fmt))
    out = Path(out)
    check_out(out, backend.suffixes[0])
    if precision not in backend.precisions:
        raise ConfigError(f"{fmt} exports {', '.join(backend.precisions)}, not {precision!r}")
    if precision in backend.needs_calibration and calibration is None:
        raise ConfigError(f"{fmt} {precision} needs calibration images (--calib-dataset: training images of the "
                          f"model's own dataset)")
    net, w, preset_name = load_model(weights, model, options)
    preset = get_preset(preset_name)
    images = check_images if check_images is not None else torch.randint(
        0, 256, (16, 3, preset.input_size, preset.input_size), dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0))
    x = preset.eval(images)
    with torch.no_grad():
        want = net(x).numpy()
    fold_batchnorm(net)
    meta = backends.metadata(w, preset, net)
    backend.export(net, x[:2], out, precision=precision, calibration=calibration, metadata=meta)
    loaded = backend.load(out, threads=1, precision=precision)
    got = np.concatenate([loaded.run(x[i:i + 1].numpy()) for i in range(len(x))])
    return Exported(out, fmt, precision, _stored_bytes(out), float(np.abs(got - want).max()),
                    float((got.argmax(1) == want.argmax(1)).mean()), preset.input_size, preset_name)


def _stored_bytes(out: Path) -> int:
    companion = out.with_suffix(".bin") if out.suffix == ".xml" else None
    return out.stat().st_size + (companion.stat().st_size if companion and companion.exists() else 0)
