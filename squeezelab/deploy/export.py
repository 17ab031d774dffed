"""ONNX export (one self-contained file, dynamic batch) and its check against torch.

``export_onnx(weights, out)`` reads any ``--weights`` file through the one loader, folds every
BatchNorm into the convolution before it (``conv``, ``conv_bn`` pairs, the naming all our models use),
exports with torch's ONNX exporter, records in the file's metadata what a runtime needs to use it
(preprocessing preset: input size, channel order, pixel scale, mean/std; class names; model spec;
source), then runs ONNX Runtime on it beside torch and reports the largest difference of the logits.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from squeezelab.errors import ConfigError, WeightsError

OPSET = 18
META_PREFIX = "squeezelab."


@dataclass(frozen=True)
class Exported:
    path: Path
    max_abs_diff: float  # ORT vs torch (BN folded out of neither), over the check batch
    input_size: int
    preset: str
    bytes: int


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each ``<name>_bn`` BatchNorm into the conv ``<name>`` before it (eval mode); -> count."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    folded = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            bn = getattr(module, f"{name}_bn", None)
            if isinstance(child, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(child, bn))
                setattr(module, f"{name}_bn", nn.Identity())
                folded += 1
    return folded


def load_model(weights: str, model: str | None = None, options: dict | None = None):
    """-> (model in eval mode, LoadedWeights, preset name) for any ``--weights``."""
    from squeezelab.weights import load_weights, model_from_weights

    w = load_weights(weights)
    net = model_from_weights(w, name=model, options=options).eval()
    if w.preset is None:
        raise ConfigError("the weights do not name their preprocessing preset (train them with squeezelab)")
    return net, w, w.preset


def export_onnx(weights: str, out: str | Path, *, model: str | None = None, options: dict | None = None,
                check_images: torch.Tensor | None = None) -> Exported:
    """Export ``weights`` to ``out`` (.onnx); ``check_images``: uint8 [N, 3, H, W] to compare the two
    runtimes on (default: 8 random images)."""
    from squeezelab.data import get_preset

    out = Path(out)
    _check_out(out, ".onnx")
    net, w, preset_name = load_model(weights, model, options)
    preset = get_preset(preset_name)
    reference = torch.randint(0, 256, (8, 3, preset.input_size, preset.input_size), dtype=torch.uint8,
                              generator=torch.Generator().manual_seed(0))
    x = preset.eval(check_images if check_images is not None else reference)
    with torch.no_grad():
        want = net(x).numpy()
    fold_batchnorm(net)
    _export(net, x[:2], out, _metadata(w, preset, net))
    got = run_onnx(out, x.numpy())
    return Exported(out, float(np.abs(got - want).max()), preset.input_size, preset_name, out.stat().st_size)


def _check_out(out: Path, suffix: str) -> None:
    if out.suffix.lower() != suffix:
        raise ConfigError(f"output {out} must end with {suffix}")
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; name the file to write")
    if not out.parent.is_dir():
        raise ConfigError(f"output folder does not exist: {out.parent}")


def _metadata(w, preset, net) -> dict[str, str]:
    return {
        f"{META_PREFIX}model": json.dumps(net.model_spec),
        f"{META_PREFIX}preset": json.dumps({"name": preset.name, "input_size": preset.input_size,
                                            "channel_order": preset.channel_order, "pixel_max": preset.pixel_max,
                                            "mean": list(preset.mean), "std": list(preset.std)}),
        f"{META_PREFIX}classes": json.dumps(w.classes),
        f"{META_PREFIX}source": json.dumps({"format": w.source, "file": w.path.name if w.path else None}),
    }


def _export(net: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            proto = _exported_proto(net, example)
        except Exception as err:  # noqa: BLE001 - the exporter raises many types for unsupported graphs
            reason = " ".join(str(err).split())[:200]
            raise ConfigError(f"{net.model_spec['name']} cannot be exported to ONNX: {type(err).__name__}: "
                              f"{reason}") from None
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    _save_atomic(onnx.save_model, proto, out)


def _exported_proto(net: nn.Module, example: torch.Tensor):
    """torch's dynamo-based exporter (needs onnxscript); where onnxscript is missing, the
    TorchScript-based one, which exports these CNNs the same way."""
    import io

    import onnx

    try:
        import onnxscript  # noqa: F401
    except ImportError:
        buf = io.BytesIO()
        torch.onnx.export(net, (example,), buf, dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        return onnx.load_from_string(buf.getvalue())
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(net, (example,), dynamo=True, verbose=False, opset_version=OPSET,
                                input_names=["input"], output_names=["logits"], dynamic_shapes={"x": {0: batch}},
                                external_data=False)
    return program.model_proto


def _save_atomic(save, proto, out: Path) -> None:
    from squeezelab.runtime import atomic_write_with

    atomic_write_with(out, lambda tmp: save(proto, tmp))


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


def run_onnx(path: str | Path, x: np.ndarray, *, batch: int = 64, sess=None) -> np.ndarray:
    """Logits of an ONNX file for a float32 batch (already preprocessed), in chunks of ``batch``."""
    sess = sess or session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: np.ascontiguousarray(x[i:i + batch], np.float32)})[0]
                           for i in range(0, len(x), batch)])


def onnx_metadata(path: str | Path) -> dict:
    """The squeezelab entries of an ONNX file's metadata, decoded from JSON and checked: a file from
    elsewhere (or edited) whose entries are not JSON, or not of the types squeezelab writes, is a
    one-line WeightsError, never a traceback later."""
    meta = session(path).get_modelmeta().custom_metadata_map
    out = {}
    for k, v in meta.items():
        if not k.startswith(META_PREFIX):
            continue
        try:
            out[k[len(META_PREFIX):]] = json.loads(v)
        except ValueError:
            raise WeightsError(f"{path}: metadata {k!r} is not JSON (not a file squeezelab exported, or edited)") from None
    preset, classes = out.get("preset"), out.get("classes")
    if preset is not None and not (isinstance(preset, dict) and isinstance(preset.get("name"), str)):
        raise WeightsError(f"{path}: metadata 'preset' is a {type(preset).__name__}, not the preset squeezelab writes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise WeightsError(f"{path}: metadata 'classes' is not a list of class names")
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
