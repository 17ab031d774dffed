"""ExecuTorch: ``.pte`` programs with the XNNPACK delegate (PyTorch's own on-device runtime), fp32 and
int8 (PT2E quantisation with XNNPACK's quantizer: per-channel symmetric int8 weights, int8
activations), run through ExecuTorch's Python bindings. The file holds a batch-1 program (what a device
runs): larger batches are run image by image. The metadata is written beside it (``<file>.json``)."""

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


class ExecuTorch(Backend):
    name, format, suffixes = "executorch", "pte", (".pte",)
    packages = ("executorch.exir", "executorch.runtime", "executorch.backends.xnnpack.partition.xnnpack_partitioner")
    extra = "edge"
    precisions = ("fp32", "int8")

    def export(self, net, example, out, *, precision, calibration, metadata):
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
            XnnpackPartitioner,
        )
        from executorch.exir import to_edge_transform_and_lower

        from squeezelab.runtime import atomic_write_bytes

        x = example[:1]

        def lower():
            module = _quantised(net, x, calibration) if precision == "int8" else net
            return to_edge_transform_and_lower(torch.export.export(module, (x,)),
                                               partitioner=[XnnpackPartitioner()]).to_executorch()

        program = convert_or_refuse("ExecuTorch", net, lower)
        atomic_write_bytes(out, program.buffer)
        write_sidecar(out, metadata | {"precision": precision})
        return out

    def load(self, path, *, threads=1, precision=None):
        try:
            with quiet():  # the runtime logs its CPU probing on stderr
                from executorch.runtime import Runtime

                _set_threads(threads)
                method = Runtime.get().load_program(Path(path)).load_method("forward")
        except Exception as err:  # noqa: BLE001 - the runtime raises RuntimeError / ValueError for bad files
            raise WeightsError(f"{path}: ExecuTorch cannot load it ({one_line(err, 160)})") from None
        meta = read_sidecar(Path(path))

        def run(x: np.ndarray) -> np.ndarray:
            _set_threads(threads)
            x = np.ascontiguousarray(x, np.float32)
            return np.concatenate([method.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])

        return Loaded(self.name, meta.get("precision", precision or "fp32"), threads, run, meta)


def _quantised(net, x: torch.Tensor, calibration: np.ndarray):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    return pt2e_calibrated(net, x, quantizer, calibration)


_POOL = {"threads": None}


def _set_threads(threads: int) -> None:
    """XNNPACK's thread pool is one per process: resized when a program of another thread count runs."""
    if _POOL["threads"] == threads:
        return
    try:
        from executorch.extension.pybindings.portable_lib import (
            _unsafe_reset_threadpool,
        )

        with quiet():  # "Resetting threadpool to N threads."
            _unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError, RuntimeError):
        pass  # older bindings: the pool keeps its size (the bench records the threads asked for)
    _POOL["threads"] = threads


register(ExecuTorch())
