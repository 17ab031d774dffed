"""Model complexity measured from the live model, never from hand formulas.

* ``count_params``: number of parameters (what the paper's "# parameters" counts).
* ``size_bytes``: bytes to store the model in fp32: 4 bytes per parameter and per floating-point
  buffer (BatchNorm running mean/var; integer buffers such as ``num_batches_tracked`` are left out).
  For the plain SqueezeNet v1.0 that is 4 * 1,248,424 = 4,993,696 bytes (the paper's "4.8MB" is MiB).
* ``count_flops``: ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass. It counts the
  multiply-adds of convolutions and matrix multiplies only (pools, activations, additions and biases
  are not counted; they are well under 1% here) and reports FLOPs = 2 x MACs. Both are returned:
  ``flops`` (2 per multiply-add) and ``macs`` (multiply-adds, what torchvision's "GFLOPS" and most
  papers' "FLOPs" tables actually list).
* ``layer_table``: one row per top-level layer in the shape of paper Table 1 (layer, output size,
  filter size/stride, s1x1/e1x1/e3x3, parameters, plus FLOPs), from forward hooks.

Every function runs the model in eval mode under ``torch.no_grad`` (restoring its mode after) on
the device of its parameters; build the model under ``torch.device("meta")`` to measure it with no
memory and almost no time.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once)."""
    return sum(p.numel() for p in model.parameters())


def size_bytes(model: nn.Module) -> int:
    """fp32 bytes of the parameters and floating-point buffers."""
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return 4 * (count_params(model) + buffers)


def _example_input(model: nn.Module, input_size, batch: int) -> torch.Tensor:
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    ref = next(model.parameters())
    return torch.zeros(batch, 3, h, w, device=ref.device, dtype=ref.dtype)


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def count_flops(model: nn.Module, input_size, batch: int = 1) -> dict[str, int]:
    """``{"flops": ..., "macs": ...}`` of one forward pass at ``input_size`` (int or (H, W)) px."""
    x = _example_input(model, input_size, batch)
    with _eval_no_grad(model), FlopCounterMode(display=False) as counter:
        model(x)
    flops = int(counter.get_total_flops())
    return {"flops": flops, "macs": flops // 2}


def _filter(module: nn.Module) -> str | None:
    """``"7x7/2"`` for convs and pools (kernel/stride), ``"global"`` for adaptive pools."""
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return "global" if module.output_size in (1, (1, 1)) else f"adaptive->{module.output_size}"
    kernel, stride = getattr(module, "kernel_size", None), getattr(module, "stride", None)
    if kernel is None:
        return None
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    s = stride[0] if isinstance(stride, tuple) else stride
    return f"{k[0]}x{k[1]}/{s}"


def _output_size(shape: tuple[int, ...]) -> str:
    """Paper Table 1 style: width x height x channels (``111x111x96``); features for vectors."""
    return f"{shape[2]}x{shape[1]}x{shape[0]}" if len(shape) == 3 else "x".join(map(str, shape))


def _row(name: str, module: nn.Module, out: torch.Tensor, flops: int) -> dict:
    shape = tuple(out.shape[1:])
    fire = {k: getattr(module, n).out_channels if hasattr(module, n) else None
            for k, n in (("s1x1", "squeeze"), ("e1x1", "expand1x1"), ("e3x3", "expand3x3"))}
    return {"layer": name, "type": type(module).__name__, "output_size": _output_size(shape),
            "output_shape": list(shape), "filter": _filter(module), **fire,
            "params": count_params(module), "flops": flops}


def layer_table(model: nn.Module, input_size) -> list[dict]:
    """Rows (in call order) for every top-level layer that has parameters or pools.

    Keys: layer, type, output_size (``WxHxC``), output_shape ([C, H, W]), filter (``"3x3/2"``),
    s1x1/e1x1/e3x3 (Fire modules, else None), params, flops (2 x MACs, as in ``count_flops``).
    Activations, dropout and parameter-free layers are left out; the params column sums to
    ``count_params(model)`` for models whose parameters all live in top-level layers.
    """
    outputs: list[tuple[str, nn.Module, torch.Tensor]] = []
    handles = []
    for name, module in model.named_children():
        if isinstance(module, _POOLS) or any(True for _ in module.parameters()):
            hook = (lambda n, m: lambda _m, _inp, out: outputs.append((n, m, out)))(name, module)
            handles.append(module.register_forward_hook(hook))
    x = _example_input(model, input_size, 1)
    try:
        with _eval_no_grad(model), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    per_module = counter.get_flop_counts()
    prefix = type(model).__name__
    return [_row(n, m, out, int(sum(per_module.get(f"{prefix}.{n}", {}).values()))) for n, m, out in outputs]
