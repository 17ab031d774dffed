"""Issue 21 §4, a measured negative: bf16 autocast for the large maps, fp32 for the small ones (the cpu scale's
model, batch 32, 1 thread), whole training step in alternating rounds in one process:

    python scripts/bench_mixed_precision_step.py ROUNDS STEPS      # 8 20 in results/bench_cpu_step_cpu_scale.md
"""
import os, sys, time, statistics, torch
from torch import nn
from squeezelab.models import create_model
torch.set_num_threads(1)
class FP32(nn.Module):
    def __init__(self, m): super().__init__(); self.m = m
    def forward(self, x):
        with torch.autocast("cpu", enabled=False):
            return self.m(x.float())
def make(fp32_from):
    torch.manual_seed(0)
    m = create_model("squeezenet1_0", num_classes=10, stem="imagenet", bn_fire=True, bn_conv1=True, head_act="none", base_e=64, incr_e=64)
    if fp32_from:
        names = [n for n, _ in m.named_children()]
        for n in names[names.index(fp32_from):]:
            setattr(m, n, FP32(getattr(m, n)))
    m = m.train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    crit = nn.CrossEntropyLoss(label_smoothing=0.1)
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = crit(m(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step
bs = 32
x = torch.randn(bs, 3, 64, 64).contiguous(memory_format=torch.channels_last); y = torch.randint(0, 10, (bs,))
fns = {"bf16": make(None), "fp32 from fire5": make("fire5"), "fp32 from fire9": make("fire9")}
for f in fns.values():
    for _ in range(3): f()
ips = {k: [] for k in fns}
R, S = int(sys.argv[1]), int(sys.argv[2])
for r in range(R):
    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
        t = time.perf_counter()
        for _ in range(S): fns[k]()
        ips[k].append(S * bs / (time.perf_counter() - t))
base = ips["bf16"]
for k, v in ips.items():
    print(k, round(statistics.median(v)), "ratio per round median", round(statistics.median([a / b for a, b in zip(v, base)]), 3))
