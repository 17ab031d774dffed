"""ONNX Runtime: ``.onnx`` files, fp32 and int8 (static QDQ, per-channel weights: deploy/quantize.py).

The metadata a runtime needs is stored in the file's own ``metadata_props`` (``squeezelab.<key>``:
JSON), so one file is all a server needs.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from squeezelab.deploy.backends import Backend, Loaded, check_metadata, register
from squeezelab.errors import WeightsError

META_PREFIX = "squeezelab."


def session(path: str | Path, threads: int | None = None):
    """An ONNX Runtime CPU session (all graph optimisations on; ``threads``: intra-op threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - ORT raises its own types for unreadable models
        raise WeightsError(f"{path}: ONNX Runtime cannot load it ({' '.join(str(err).split())[:160]})") from None


def onnx_metadata(path: str | Path, sess=None) -> dict:
    """The squeezelab entries of an ONNX file's metadata, decoded from JSON: a file from elsewhere (or
    edited) whose entries are not JSON is a one-line WeightsError, never a traceback later."""
    meta = (sess or session(path)).get_modelmeta().custom_metadata_map
    out = {}
    for k, v in meta.items():
        if not k.startswith(META_PREFIX):
            continue
        try:
            out[k[len(META_PREFIX):]] = json.loads(v)
        except ValueError:
            raise WeightsError(f"{path}: metadata {k!r} is not JSON (not a file squeezelab exported, or edited)") from None
    return out


def check_onnx_input(sess, path: str | Path, input_size: int, batches: tuple[int, ...] = (1,)) -> None:
    """The model takes what squeezelab feeds it: one float input [N, 3, S, S] with S = ``input_size``
    and N free (or every batch size in ``batches``); else a one-line WeightsError naming the shape."""
    inputs = sess.get_inputs()
    shape = inputs[0].shape if len(inputs) == 1 else None
    want = ["N", 3, input_size, input_size]
    ok = shape is not None and len(shape) == 4 and all(
        not isinstance(d, int) or d == w for d, w in zip(shape[1:], want[1:])) and (
        not isinstance(shape[0], int) or set(batches) == {shape[0]})
    if not ok:
        got = f"{len(inputs)} inputs" if len(inputs) != 1 else f"input shape {shape}"
        raise WeightsError(f"{path}: expects {got}, but squeezelab feeds one image batch of shape "
                           f"[{'/'.join(map(str, sorted(set(batches))))}, 3, {input_size}, {input_size}] (its preset's size)")


def write_fp32_and_int8(net, example, out: Path, precision: str, calibration, metadata: dict) -> Path:
    """The ONNX file of ``precision`` at ``out`` (int8: the fp32 file quantised, in a temp folder)."""
    from squeezelab.deploy.graph import write_onnx

    props = {f"{META_PREFIX}{k}": json.dumps(v) for k, v in metadata.items()}
    if precision == "fp32":
        write_onnx(net, example, out, props)
        return out
    from squeezelab.deploy.quantize import quantize_int8

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        write_onnx(net, example, fp32, props)
        return quantize_int8(fp32, out, calibration)


class OnnxRuntime(Backend):
    name, format, suffixes = "onnxruntime", "onnx", (".onnx",)
    packages = ("onnx", "onnxruntime")
    precisions = ("fp32", "int8")

    def export(self, net, example, out, *, precision, calibration, metadata):
        return write_fp32_and_int8(net, example, out, precision, calibration, metadata)

    def load_here(self, path, *, threads=1, precision=None):
        from squeezelab.data import get_preset

        sess = session(path, threads)
        meta = check_metadata(path, onnx_metadata(path, sess))
        check_onnx_input(sess, path, get_preset(meta["preset"]["name"]).input_size)
        name = sess.get_inputs()[0].name
        quantised = any(n.op_type == "QuantizeLinear" for n in _graph_nodes(path))
        fixed = isinstance(sess.get_inputs()[0].shape[0], int)  # a file with a fixed batch (of 1): per image

        def run(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, np.float32)
            if fixed:
                return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])
            return sess.run(None, {name: x})[0]

        return Loaded(self.name, "int8" if quantised else "fp32", threads, run, meta)


def _graph_nodes(path):
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph.node
    except Exception:  # noqa: BLE001 - ONNX Runtime read it: only the precision label is lost
        return []


register(OnnxRuntime())
