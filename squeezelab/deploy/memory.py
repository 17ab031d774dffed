"""What a device must have to run a model: weight bytes, peak activation memory, a static arena.

A microcontroller runtime (TensorFlow Lite Micro, ExecuTorch's static planner) gives every
intermediate tensor a fixed place in one preallocated arena before the first inference. Its size is
decided by the execution order: a tensor occupies memory from the op that writes it to the last op
that reads it. This module reads that order from the model itself (``torch.export`` of the model with
BatchNorm folded, as it is deployed), then

* ``peak``: the largest sum of tensors alive at one step: no arena can be smaller;
* ``arena``: the size a greedy-by-size offset planner reaches (the algorithm of TFLite Micro's
  ``GreedyMemoryPlanner``: largest tensors first, each at the lowest offset that does not overlap a
  placed tensor alive at the same time); ``arena >= peak``, usually equal for a chain of layers.

As deployed runtimes do, an activation (ReLU), dropout (identity at inference) or a view writes no new
tensor: it runs in place in its producer's buffer. A concatenation writes a new tensor (TFLite Micro
copies; a runtime that writes the two expand outputs into one buffer needs less: ``peak`` is then an
upper bound). Batch 1; element size 1 byte for int8, 4 for fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# ops that write no new tensor in a deployed graph (fused into their producer, or views)
_IN_PLACE = {"relu", "relu_", "leaky_relu", "leaky_relu_", "hardtanh", "hardtanh_", "dropout", "clone",
             "view", "reshape", "flatten", "squeeze", "unsqueeze", "contiguous", "alias", "detach",
             "_unsafe_view", "identity"}


@dataclass(frozen=True)
class Tensor:
    name: str
    bytes: int
    first: int  # the step that writes it
    last: int   # the last step that reads it


@dataclass(frozen=True)
class Memory:
    input_size: int
    dtype: str
    weights_bytes: int   # parameters as the runtime stores them (see weight_bytes)
    peak_bytes: int      # the most activation bytes alive at one step
    arena_bytes: int     # greedy-by-size offset plan of every intermediate tensor
    largest: str         # the step where the peak happens ("conv1 -> maxpool1"-like op names)

    def fits(self, sram: int, flash: int) -> bool:
        return self.arena_bytes <= sram and self.weights_bytes <= flash


def tensors(model: nn.Module, input_size: int, elem_bytes: int) -> list[Tensor]:
    """Every tensor the deployed model writes, in execution order, with its lifetime (batch 1).

    The order is recorded from one forward pass at the ATen level (every op the model really runs,
    whatever its Python control flow), on the ``meta`` device: shapes only, no memory, no arithmetic."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from squeezelab.deploy.graph import fold_batchnorm

    net = _copy_to_meta(model)
    fold_batchnorm(net)
    x = torch.zeros(1, 3, input_size, input_size, device="meta")
    buffers: dict[int, list] = {id(x): ["input", int(x.numel()) * elem_bytes, 0, 0]}
    owner: dict[int, int] = {id(x): id(x)}
    keep = [x]  # ids stay unique while the tensors live
    where = _module_stack(net)

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            step = len(keep)
            ins = [owner[id(a)] for a in _flat(args) if id(a) in owner]
            for b in ins:
                buffers[b][3] = step
            name = func.__name__.split(".")[0]
            if isinstance(out, torch.Tensor):
                keep.append(out)
                if name in _IN_PLACE and ins:
                    owner[id(out)] = ins[0]
                else:
                    owner[id(out)] = id(out)
                    buffers[id(out)] = [_label(where, name), int(out.numel()) * elem_bytes, step, step]
            return out

    try:
        with torch.no_grad(), Record():
            y = net(x)
    finally:
        for h in where.hooks:
            h.remove()
    buffers[owner[id(y)]][3] = len(keep)  # the output is read after the last step
    return [Tensor(n, b, f, la) for n, b, f, la in buffers.values() if b > 0]


class _Stack(list):
    hooks: list


def _module_stack(net: nn.Module) -> _Stack:
    """The names of the modules running now, innermost last (to name tensors ``fire4.expand3x3``)."""
    stack = _Stack()
    stack.hooks = []
    def enter(name):
        return lambda module, args: stack.append(name)  # list.append returns None: the input is kept

    def leave(module, args, out):
        stack.pop()  # returns None: the output is kept

    for name, m in net.named_modules():
        if name:
            stack.hooks += [m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave)]
    return stack


def _label(where: list, op: str) -> str:
    if not where:
        return op
    return where[-1] if op in ("convolution", "addmm", "mm", "max_pool2d_with_indices", "max_pool2d",
                               "avg_pool2d", "mean", "_adaptive_avg_pool2d") else f"{where[-1]}:{op}"


def _copy_to_meta(model: nn.Module) -> nn.Module:
    import copy

    net = copy.deepcopy(model) if next(model.parameters()).is_meta else copy.deepcopy(model).to("meta")
    return net.eval()


def _flat(args):
    for a in args:
        if isinstance(a, (list, tuple)):
            yield from _flat(a)
        elif isinstance(a, torch.Tensor):
            yield a


def peak(ts: list[Tensor]) -> tuple[int, int]:
    """-> (most bytes alive at one step, that step)."""
    steps = range(max((t.last for t in ts), default=0) + 1)
    alive = [(sum(t.bytes for t in ts if t.first <= s <= t.last), s) for s in steps]
    return max(alive, default=(0, 0))


def greedy_arena(ts: list[Tensor]) -> int:
    """Arena bytes of a greedy-by-size offset plan: largest first, each at the lowest offset clear of
    every placed tensor whose lifetime overlaps its own."""
    placed: list[tuple[int, Tensor]] = []
    end = 0
    for t in sorted(ts, key=lambda t: (-t.bytes, t.first)):
        clash = sorted(((off, p) for off, p in placed if p.first <= t.last and t.first <= p.last), key=lambda c: c[0])
        offset = 0
        for off, p in clash:
            if offset + t.bytes <= off:
                break
            offset = max(offset, off + p.bytes)
        placed.append((offset, t))
        end = max(end, offset + t.bytes)
    return end


def weight_bytes(model: nn.Module, dtype: str) -> int:
    """Parameters with BatchNorm folded. fp32: 4 bytes each. int8 (TFLite's full-integer scheme):
    1 byte per weight; per output channel an int32 bias, an fp32 scale and a zero point (4 + 4 + 4
    bytes). The file of a format adds its graph and names: ``export`` reports those bytes."""
    from squeezelab.deploy.graph import fold_batchnorm

    net = _copy_to_meta(model)
    fold_batchnorm(net)
    if dtype == "fp32":
        return sum(4 * p.numel() for p in net.parameters())
    total = 0
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            total += m.weight.numel() + 12 * m.weight.shape[0]
    return total


def measure(model: nn.Module, input_size: int, dtype: str = "int8") -> Memory:
    if dtype not in ("int8", "fp32"):
        from squeezelab.errors import ConfigError

        raise ConfigError(f"dtype must be int8 or fp32, got {dtype!r}")
    ts = tensors(model, input_size, 1 if dtype == "int8" else 4)
    most, step = peak(ts)
    around = [t.name for t in ts if t.first <= step <= t.last]
    return Memory(input_size, dtype, weight_bytes(model, dtype), most, greedy_arena(ts), " + ".join(around))
