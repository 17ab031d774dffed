"""Network-alone training step of the cpu-scale candidates (issue 21), side by side in one run:
    python scripts/bench_cpu_scale.py [THREADS]
SGD steps on random data of each model's input size, batch 128, fp32 / bf16 autocast x NCHW / channels_last;
prints images/second. Run it on a quiet machine (results/experiments/README.md has the numbers)."""
import sys, time, torch
from torch import nn
from squeezelab.models import create_model
torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
cands = [
 ("v1.1 small 32", "squeezenet1_1", dict(stem="small", bn_fire=True, bn_conv1=True), 32),
 ("v1.0 imnet 64", "squeezenet1_0", dict(stem="imagenet", bn_fire=True, bn_conv1=True, head_act="none"), 64),
 ("v1.1 imnet 64", "squeezenet1_1", dict(stem="imagenet", bn_fire=True, bn_conv1=True, head_act="none"), 64),
 ("v1.0 half imnet 64", "squeezenet1_0", dict(stem="imagenet", bn_fire=True, bn_conv1=True, head_act="none", base_e=64, incr_e=64), 64),
 ("alexnet 64?", "alexnet", dict(), 64),
]
def bench(name, opts, size, dtype, cl, bs=128, steps=6):
    torch.manual_seed(0)
    m = create_model(name, num_classes=10, **opts).train()
    x = torch.randn(bs, 3, size, size); y = torch.randint(0, 10, (bs,))
    if cl: m = m.to(memory_format=torch.channels_last); x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = nn.functional.cross_entropy(m(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    for _ in range(2): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    return steps * bs / (time.perf_counter() - t)
for label, name, opts, size in cands:
    for dtype in ("fp32", "bf16"):
        for cl in (False, True):
            try:
                ips = bench(name, opts, size, dtype, cl)
                print(f"{label:22s} {dtype} cl={cl}: {ips:7.0f} img/s", flush=True)
            except Exception as e:
                print(label, dtype, cl, "ERR", str(e)[:100], flush=True)
