"""Issue 21 §4, a measured negative: BatchNorm (training) + ReLU as one C++ kernel on the CPU.

    python scripts/bench_fused_bn_relu.py [ROUNDS] [STEPS]      # on a quiet machine; ~3 min

Compiles scripts/bn_relu_kernel.cpp (torch.utils.cpp_extension, the system g++ and ninja; ~1 min the first
time), checks it against torch's BatchNorm2d + ReLU in float64, then times (1) forward + backward of each
BatchNorm + ReLU map shape of the cpu scale's model, torch's kernels vs the fused one, and (2) the whole
training step of that model (SqueezeNet v1.0, ImageNet stem, half width, BatchNorm, 64 px, batch 32,
bf16 autocast + channels_last, 1 thread) with torch's layers vs every X_bn / X_act pair switched to the
fused kernel, in alternating rounds in one process. Numbers: results/bench_cpu_step_cpu_scale.md.
"""
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.cpp_extension import load

from bench_step_bound import cpu_scale_step  # (scripts/, beside this one)

torch.set_num_threads(1)
ext = load("squeezelab_bn_relu_bench", [str(Path(__file__).with_name("bn_relu_kernel.cpp"))],
           extra_cflags=["-O3", "-march=native"], verbose=False)


class _BNReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, var = ext.forward(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, var)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _mean, _var):
        x, weight, bias, mean, var = ctx.saved_tensors
        dx, dw, db = ext.backward(dy, x, weight, bias, mean, var, ctx.eps)
        return dx, dw, db, None


class BatchNormReLU(nn.BatchNorm2d):
    def forward(self, x):
        if not (self.training and x.is_contiguous(memory_format=torch.channels_last)):
            return torch.relu(super().forward(x))
        y, mean, var = _BNReLU.apply(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            n = x.numel() // x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
            self.num_batches_tracked += 1
        return y


class PassThrough(nn.ReLU):
    def forward(self, x):
        return x


def fuse(model):
    """Every paper-named X_bn / X_act pair with a plain ReLU -> the fused kernel (same parameters)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            act = getattr(parent, name[:-3] + "_act", None) if name.endswith("_bn") else None
            if type(child) is nn.BatchNorm2d and type(act) is nn.ReLU:
                child.__class__, act.__class__ = BatchNormReLU, PassThrough
    return model


def check():
    for shape in [(8, 24, 9, 9), (32, 96, 29, 29)]:
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(shape[1])
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        ours = fuse(nn.ModuleDict({"a_bn": copy.deepcopy(bn), "a_act": nn.ReLU()}))["a_bn"]
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        g = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        xs = [x.clone().requires_grad_() for _ in range(2)]
        torch.relu(bn(xs[0])).backward(g), ours(xs[1]).backward(g)
        xd = x.double().requires_grad_()
        torch.relu(copy.deepcopy(bn).double()(xd)).backward(g.double())
        rel = [float((a.grad.double() - xd.grad).norm() / xd.grad.norm()) for a in xs[:2]]
        print(f"check {shape}: dx relative error vs float64: torch {rel[0]:.1e}, fused {rel[1]:.1e}")


def timed(f, n=20):
    for _ in range(3):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e3


def blocks():
    for shape in [(32, 96, 29, 29), (32, 16, 14, 14), (32, 64, 14, 14), (32, 128, 7, 7)]:
        torch.manual_seed(0)
        bn = nn.BatchNorm2d(shape[1])
        ours = fuse(nn.ModuleDict({"a_bn": copy.deepcopy(bn), "a_act": nn.ReLU()}))["a_bn"]
        x = torch.randn(shape, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
        g = torch.randn(shape, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        ms = [timed(lambda m=m: m(x).backward(g)) for m in (lambda t: torch.relu(bn(t)), ours) * 2]
        a, b = min(ms[0], ms[2]), min(ms[1], ms[3])
        print(f"block {shape} bf16 fwd+bwd: torch {a:.2f} ms, fused {b:.2f} ms ({a / b:.2f}x)", flush=True)


def step_fn(fused: bool, x, y):
    return cpu_scale_step(x, y, fuse if fused else lambda m: m)


def whole_step(rounds: int, steps: int, bs: int = 32):
    x = torch.randn(bs, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    fns = {"torch": step_fn(False, x, y), "fused": step_fn(True, x, y)}
    for f in fns.values():
        for _ in range(3):
            f()
    ips = {k: [] for k in fns}
    for r in range(rounds):
        for name in (fns if r % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            for _ in range(steps):
                fns[name]()
            ips[name].append(steps * bs / (time.perf_counter() - t))
    ratios = [f / t for f, t in zip(ips["fused"], ips["torch"])]
    print("whole step img/s per round:", {k: [round(v) for v in vs] for k, vs in ips.items()})
    print(f"whole step: torch {statistics.median(ips['torch']):.0f} img/s, fused {statistics.median(ips['fused']):.0f} "
          f"img/s; fused / torch per round: median {statistics.median(ratios):.2f}, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}")


if __name__ == "__main__":
    check()
    blocks()
    whole_step(int(sys.argv[1]) if len(sys.argv) > 1 else 10, int(sys.argv[2]) if len(sys.argv) > 2 else 30)
