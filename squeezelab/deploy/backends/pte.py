"""ExecuTorch: ``.pte`` programs with the XNNPACK delegate (PyTorch's own on-device runtime), fp32 and
int8 (PT2E quantisation with XNNPACK's quantizer: per-channel symmetric int8 weights, int8
activations; conv1 kept in fp32, see FLOAT_LAYERS), run through ExecuTorch's Python bindings in a
worker process of their own (``load``: its XNNPACK runtime can segfault beside torch, see
isolated.py). The file holds a batch-1 program (what a device
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
from squeezelab.deploy.backends import isolated
from squeezelab.errors import WeightsError


class ExecuTorch(Backend):
    name, format, suffixes = "executorch", "pte", (".pte",)
    # what export imports here; the runtime (executorch.runtime) is only looked up, never imported in this
    # process: importing it loads the XNNPACK runtime library this backend keeps in a worker
    packages = ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner")
    extra = "edge"
    precisions = ("fp32", "int8")

    def available(self):
        import importlib.util

        reason = super().available()
        if reason is None and importlib.util.find_spec("executorch.runtime") is None:
            return f"{self.name} needs the 'executorch.runtime' package (pip install 'squeezelab[{self.extra}]')"
        return reason

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
        kept = {"float_layers": list(FLOAT_LAYERS)} if precision == "int8" else {}
        write_sidecar(out, metadata | {"precision": precision} | kept)
        return out

    def load(self, path, *, threads=1, precision=None):
        return isolated.load(self.name, path, threads=threads, precision=precision)

    def load_here(self, path, *, threads=1, precision=None):
        try:
            with quiet():  # the runtime logs its CPU probing on stderr
                from executorch.runtime import Runtime

                _set_threads(threads)
                method = Runtime.get().load_program(Path(path)).load_method("forward")
        except Exception as err:  # noqa: BLE001 - the runtime raises RuntimeError / ValueError for bad files
            raise WeightsError(f"{path}: ExecuTorch cannot load it ({one_line(err, 160)})") from None
        meta = read_sidecar(Path(path))

        def run(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, np.float32)
            return np.concatenate([method.execute([torch.from_numpy(x[i:i + 1])])[0].numpy() for i in range(len(x))])

        return Loaded(self.name, meta.get("precision", precision or "fp32"), threads, run, meta)


# Layers PT2E leaves in fp32 (with their BatchNorm and ReLU: conv1_bn, conv1_act). conv1 sees the raw image
# and its output has the widest range of the network; quantised, it cost the authors' SqueezeNet v1.0 most
# of the int8 loss. Measured on 500 held-out Tiny ImageNet TRAINING images (calibration on 300 others;
# agreement / KL with torch fp32): all int8 79.2% / 0.049; conv1 fp32 82.2% / 0.042 (+41 KB); conv10 fp32
# 79.6% / 0.048 (+1.5 MB). results/edge/README.md. LiteRT keeps conv1 int8: a microcontroller needs int8 in.
FLOAT_LAYERS = ("conv1",)


def _quantised(net, x: torch.Tensor, calibration: np.ndarray):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    quantizer.set_filter_function(_outside(FLOAT_LAYERS))  # set_module_name(name, None) is refused
    return pt2e_calibrated(net, x, quantizer, calibration)


def _outside(layers: tuple[str, ...]):
    """A PT2E node filter: True for nodes of no module named in ``layers`` (nor its ``<name>_bn`` / ``_act``)."""
    def keep(node) -> bool:
        paths = [v[0] for v in (node.meta.get("nn_module_stack") or {}).values()]
        return not any(p == name or p.startswith((name + ".", name + "_")) for p in paths for name in layers)
    return keep


def _set_threads(threads: int) -> None:
    """XNNPACK's thread pool is one per process (a worker serves one file: set once, at load)."""
    try:
        from executorch.extension.pybindings.portable_lib import (
            _unsafe_reset_threadpool,
        )

        with quiet():  # "Resetting threadpool to N threads."
            _unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError, RuntimeError):
        pass  # older bindings: the pool keeps its size (the bench records the threads asked for)


register(ExecuTorch())
