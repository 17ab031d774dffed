"""The deployed graph of any ``--weights``: loaded through the one loader, BatchNorm folded into the
convolutions, written as ONNX (the file OpenVINO and ONNX Runtime read). Every backend starts here."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from squeezelab.errors import ConfigError

OPSET = 18


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


def check_out(out: Path, suffix: str) -> None:
    if out.suffix.lower() != suffix:
        raise ConfigError(f"output {out} must end with {suffix}")
    if out.is_dir():
        raise ConfigError(f"output {out} is a folder; name the file to write")
    if not out.parent.is_dir():
        raise ConfigError(f"output folder does not exist: {out.parent}")


def write_onnx(net: nn.Module, example: torch.Tensor, out: Path, metadata: dict[str, str]) -> None:
    """``net`` (BN folded) as one ONNX file with a dynamic batch; ``metadata``: key -> string."""
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
    save_atomic(onnx.save_model, proto, out)


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


def save_atomic(save, proto, out: Path) -> None:
    from squeezelab.runtime import atomic_write_with

    atomic_write_with(out, lambda tmp: save(proto, tmp))


