"""Issue 21 §4: how much faster can the cpu scale's training step get, and what does glibc's allocator cost?

    python scripts/bench_step_bound.py [ROUNDS] [STEPS]      # on a quiet machine; ~4 min at 6 x 20

The cpu scale's model (SqueezeNet v1.0, ImageNet stem, half width, BatchNorm, 64 px, 10 classes), its
step (SGD + Nesterov, weight decay, label smoothing 0.1, bf16 autocast + channels_last, 1 thread: one
sweep worker's share), on random data. Each round runs every variant below in a fresh process of its
own (so the allocator's state is that of a run training only it), once with glibc as it is and once
with glibc told to keep freed memory (``mallopt``: a fixed 32 MB mmap threshold and no heap trimming,
the no-dependency form of the jemalloc / tcmalloc advice in PyTorch's CPU tuning guide: the step's
activation buffers then stop being taken from the kernel page by page every step); the order alternates
between rounds. The variants:

- ``step``: the studies' step at batch 32;
- ``convs only``: the same with every BatchNorm, ReLU and Dropout replaced by identity. It does the
  step's convolutions, pools, loss and optimizer and nothing else, so it bounds what any fusion or
  faster kernel of the memory-bound layers (BatchNorm, ReLU, Dropout) can reach at this batch;
- ``batch 64`` / ``batch 128``: the step at larger batches (img/s; fewer steps an epoch).

Prints img/s per round and the medians; results/bench_cpu_step_cpu_scale.md has the numbers.
"""
import ctypes
import json
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = (("step", 32, False), ("convs only", 32, True), ("batch 64", 64, False), ("batch 128", 128, False))


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h


def keep_freed_memory() -> None:
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if not (mallopt(M_MMAP_THRESHOLD, 32 << 20) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1)):
        raise SystemExit("mallopt refused (not glibc?)")


def cpu_scale_step(x, y, transform=lambda m: m):
    """One SGD step of the cpu scale's model as the studies train it, on fixed data; ``transform`` edits the
    model first (the variants here, the fused kernel of scripts/bench_fused_bn_relu.py)."""
    import torch
    from torch import nn

    from squeezelab.models import create_model

    torch.manual_seed(0)
    m = create_model("squeezenet1_0", num_classes=10, stem="imagenet", bn_fire=True, bn_conv1=True,
                     head_act="none", base_e=64, incr_e=64).train().to(memory_format=torch.channels_last)
    m = transform(m)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = crit(m(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _bare(m):
    """Every BatchNorm, ReLU and Dropout replaced by identity."""
    from torch import nn

    for parent in list(m.modules()):
        for name, c in parent.named_children():
            if isinstance(c, (nn.BatchNorm2d, nn.ReLU, nn.Dropout)):
                setattr(parent, name, nn.Identity())
    return m


def child(variant: str, steps: int, keep: bool) -> dict:
    """One variant in a fresh process: the allocator's state is then that of a run training only it."""
    import torch

    if keep:
        keep_freed_memory()
    torch.set_num_threads(1)
    bs, bare = next((bs, bare) for name, bs, bare in VARIANTS if name == variant)
    x = torch.randn(bs, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))
    step = cpu_scale_step(x, y, _bare if bare else lambda m: m)
    for _ in range(3):
        step()
    n = max(2, steps * 32 // bs)  # the same images per variant
    faults, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(n):
        step()
    return {"ips": n * bs / (time.perf_counter() - t),
            "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / n}


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    ips = {(alloc, v[0]): [] for alloc in ("glibc", "kept") for v in VARIANTS}
    faults = {k: [] for k in ips}
    for r in range(rounds):
        keys = list(ips) if r % 2 == 0 else list(ips)[::-1]
        for alloc, name in keys:
            res = subprocess.run([sys.executable, __file__, "--child", name, str(steps), alloc], capture_output=True,
                                 text=True, check=True)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            ips[(alloc, name)].append(out["ips"])
            faults[(alloc, name)].append(out["faults"])
        print(f"round {r}", {f"{a} {n}": round(v[-1]) for (a, n), v in ips.items()}, flush=True)
    base = statistics.median(ips[("glibc", "step")])
    print("\nmedian img/s (x the studies' step as it is: glibc, batch 32):")
    for (alloc, name), v in ips.items():
        m = statistics.median(v)
        print(f"  {alloc:5s} {name:10s} {m:6.0f} img/s  {m / base:.2f}x  (rounds {min(v):.0f}-{max(v):.0f}), "
              f"{statistics.median(faults[(alloc, name)]):.0f} page faults a step")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), sys.argv[4] == "kept")))
    else:
        main()
