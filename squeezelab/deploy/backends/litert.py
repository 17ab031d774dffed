"""LiteRT (TensorFlow Lite): ``.tflite`` files, written by ``litert-torch`` and run by ``ai-edge-litert``'s
interpreter: what Android phones and TensorFlow Lite Micro run. fp32, and int8 as phones and
microcontrollers want it: PT2E quantisation (per-channel symmetric int8 weights, int8 activations)
with int8 input and output tensors; the runner quantises the preprocessed image with the input's
scale and zero point and dequantises the logits, as an app on the device does. The metadata is written
beside the file (``<file>.json``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from squeezelab.deploy.backends import (
    Backend,
    Loaded,
    convert_or_refuse,
    one_line,
    pt2e_calibrated,
    quiet,
    read_sidecar,
    register,
    write_sidecar,
)
from squeezelab.errors import WeightsError


class LiteRT(Backend):
    name, format, suffixes = "litert", "tflite", (".tflite",)
    packages = ("litert_torch", "ai_edge_litert.interpreter")
    extra = "edge"
    precisions = ("fp32", "int8")

    def export(self, net, example, out, *, precision, calibration, metadata):
        import litert_torch

        from squeezelab.runtime import atomic_write_with

        x = example[:1]
        edge = convert_or_refuse("LiteRT", net, lambda: _int8(net, x, calibration) if precision == "int8"
                                 else litert_torch.convert(net.eval(), (x,)))
        with quiet():
            atomic_write_with(out, lambda tmp: edge.export(tmp))
        write_sidecar(out, metadata | {"precision": precision})
        return out

    def load_here(self, path, *, threads=1, precision=None):
        from ai_edge_litert.interpreter import Interpreter

        try:
            with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                interpreter = Interpreter(model_path=str(path), num_threads=threads)
                interpreter.allocate_tensors()
        except Exception as err:  # noqa: BLE001 - the interpreter raises ValueError / RuntimeError
            raise WeightsError(f"{path}: LiteRT cannot load it ({one_line(err, 160)})") from None
        meta = read_sidecar(Path(path))
        inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        integer = np.issubdtype(inp["dtype"], np.integer)

        def run(x: np.ndarray) -> np.ndarray:
            rows = []
            for i in range(len(x)):  # the file is a batch-1 program, as a device runs it
                interpreter.set_tensor(inp["index"], _to_input(x[i:i + 1], inp))
                interpreter.invoke()
                rows.append(_from_output(interpreter.get_tensor(outp["index"]), outp))
            return np.concatenate(rows)

        return Loaded(self.name, "int8" if integer else meta.get("precision", "fp32"), threads, run, meta)


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return np.ascontiguousarray(x, detail["dtype"])
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def _int8(net, x: torch.Tensor, calibration: np.ndarray):
    """PT2E int8 (litert-torch's quantizer), converted with int8 input and output tensors."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    module = pt2e_calibrated(net, x, quantizer, calibration, fold_quantize=False)
    return litert_torch.convert(module, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


register(LiteRT())
