"""Post-training static int8 quantisation with ONNX Runtime (QDQ, per-channel weights).

Activations are calibrated on a few hundred TRAINING images of the model's own dataset, preprocessed
as the weights expect; the images a model is scored on are never used (for the authors' ImageNet
SqueezeNet: Tiny ImageNet's training images, which are ImageNet training images). Weights are
int8 per output channel, activations uint8 per tensor (the x86 U8S8 path of ORT's QLinearConv).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from squeezelab.errors import ConfigError


def calibration_batch(dataset: str, data_dir: str | None, preset: str, n: int = 300, seed: int = 0,
                      split: str | None = None) -> np.ndarray:
    """``n`` training images (a seeded choice), preprocessed by ``preset``'s eval transform: float32
    [n, 3, S, S]. Only the chosen images are decoded (the split is listed, not loaded)."""
    from squeezelab.data import get_preset, get_spec, load_dataset

    if n < 1:
        raise ConfigError(f"--calib-n must be >= 1, got {n}")
    split = split or get_spec(dataset).splits[0]
    data = load_dataset(dataset, data_dir, split, preset=preset, in_memory=False, cache_dir=False)
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    p = get_preset(preset)
    images = torch.stack([data[int(i)][0] for i in pick]) if not hasattr(data, "images") else data.images[pick]
    return np.concatenate([p.eval(images[i:i + 64]).numpy() for i in range(0, len(images), 64)])


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over one array, in batches of 32."""

    def __init__(self, name: str, x: np.ndarray):
        self.batches = iter([{name: np.ascontiguousarray(x[i:i + 32])} for i in range(0, len(x), 32)])

    def get_next(self):
        return next(self.batches, None)


def quantize_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray) -> Path:
    """fp32 ONNX file -> int8 QDQ ONNX file calibrated (min/max) on ``calibration``."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from squeezelab.deploy.graph import save_atomic

    out = Path(out)
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre, q = Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), _Reader(name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
        model = onnx.load(str(q))
        source = onnx.load(str(fp32), load_external_data=False)
        del model.metadata_props[:]
        model.metadata_props.extend(source.metadata_props)  # preset, classes, ... travel along
        entry = model.metadata_props.add()
        entry.key, entry.value = "squeezelab.quantization", '"int8 QDQ, per-channel weights, min/max calibration"'
        save_atomic(onnx.save_model, model, out)
    return out
