"""OpenVINO: its IR (``.xml`` + ``.bin``) converted from squeezelab's ONNX file, or an ``.onnx`` file read
as it is. fp32; ``bf16``: the same file with OpenVINO's bf16 inference hint (where the CPU has bf16,
else refused in one line); int8: the QDQ file, which OpenVINO runs as integer convolutions.

The metadata travels in the IR's ``rt_info`` (``squeezelab/<key>``: JSON), read back on load.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from squeezelab.deploy.backends import (
    Backend,
    Loaded,
    check_metadata,
    one_line,
    register,
)
from squeezelab.errors import ConfigError, WeightsError


class OpenVINO(Backend):
    name, format, suffixes = "openvino", "openvino", (".xml", ".onnx")
    packages = ("openvino",)
    extra = "edge"
    precisions = ("fp32", "bf16", "int8")

    def export(self, net, example, out, *, precision, calibration, metadata):
        import openvino as ov

        from squeezelab.deploy.backends.ort import write_fp32_and_int8
        from squeezelab.runtime import atomic_write_with

        with tempfile.TemporaryDirectory() as tmp:
            onnx = write_fp32_and_int8(net, example, Path(tmp) / "m.onnx", "int8" if precision == "int8" else "fp32",
                                       calibration, metadata)
            model = ov.convert_model(str(onnx))
        for key, value in metadata.items():
            model.set_rt_info(json.dumps(value), ["squeezelab", key])
        model.set_rt_info(precision, ["squeezelab", "precision"])
        bin_path = out.with_suffix(".bin")
        # the .bin first, the .xml (the file users name) last: a half-written pair is never a complete one
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            ov.save_model(model, str(Path(tmp) / "m.xml"), compress_to_fp16=False)
            atomic_write_with(bin_path, lambda t: Path(tmp, "m.bin").replace(t))
            atomic_write_with(out, lambda t: Path(tmp, "m.xml").replace(t))
        return out

    def load_here(self, path, *, threads=1, precision=None):
        import openvino as ov

        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as err:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise WeightsError(f"{path}: OpenVINO cannot read it ({one_line(err, 160)})") from None
        meta, stored = _metadata(path, model)
        int8 = stored == "int8" or any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        precision = precision or ("int8" if int8 else stored if stored in ("fp32", "bf16") else "fp32")
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("openvino bf16: this CPU has no bf16 instructions (OpenVINO would emulate it)")
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                  "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
        compiled = core.compile_model(model, "CPU", config)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            return np.asarray(request.infer([np.ascontiguousarray(x, np.float32)])[0], np.float32).copy()

        return Loaded(self.name, precision, threads, run, check_metadata(path, meta))


def _metadata(path: Path, model) -> tuple[dict, str | None]:
    """(squeezelab metadata, the precision it was exported at) from rt_info, or from an ONNX file's own."""
    if Path(path).suffix.lower() == ".onnx":
        from squeezelab.deploy.backends.ort import onnx_metadata

        return onnx_metadata(path), None
    meta = {}
    for key in ("model", "preset", "classes", "source"):
        if model.has_rt_info(["squeezelab", key]):
            try:
                meta[key] = json.loads(model.get_rt_info(["squeezelab", key]).astype(str))
            except ValueError:
                raise WeightsError(f"{path}: rt_info squeezelab/{key} is not JSON (edited?)") from None
    stored = model.get_rt_info(["squeezelab", "precision"]).astype(str) if model.has_rt_info(
        ["squeezelab", "precision"]) else None
    return meta, stored


register(OpenVINO())
