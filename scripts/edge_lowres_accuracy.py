"""The authors' SqueezeNet v1.0 at the input sizes a microcontroller can hold (issue 18 §3), no fine-tuning:

    python scripts/edge_lowres_accuracy.py DATA [SIZES]      # DATA: ../shared/data here; SIZES: 227,128,96,64

Each of the 300 ImageNet validation images (DATA/imagenet-val-300) preprocessed as the authors' model
expects at 227 px (the `caffe` preset), then resized (bilinear, antialiased) to S x S, as a camera
delivering S px would; the network is fully convolutional (global average pool), so it runs at any size.
Top-1 / top-5 of 300 with Wilson 95% intervals. Reporting only: nothing is chosen on these images.
"""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from scipy.stats import binomtest

from squeezelab.data import get_preset, load_dataset
from squeezelab.weights import load_weights, model_from_weights

torch.set_num_threads(2)
data = Path(sys.argv[1])
sizes = [int(s) for s in (sys.argv[2] if len(sys.argv) > 2 else "227,128,96,64").split(",")]
w = load_weights(str(data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net"))
net = model_from_weights(w).eval()
ds = load_dataset("image-list", str(data / "imagenet-val-300"), "val", preset=w.preset)
preset = get_preset(w.preset)
x = torch.cat([preset.eval(torch.stack([ds[j][0] for j in range(i, min(i + 50, len(ds)))]))
               for i in range(0, len(ds), 50)])
y = torch.tensor([int(ds[j][1]) for j in range(len(ds))])
print("| input px | top-1 of 300 | top-5 of 300 | top-1 (95% CI) |")
print("|---:|---:|---:|---:|")
for s in sizes:
    xs = x if s == x.shape[-1] else F.interpolate(x, size=(s, s), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        top5 = torch.cat([net(xs[i:i + 50]).topk(5, 1).indices for i in range(0, len(xs), 50)])
    c1, c5 = int((top5[:, 0] == y).sum()), int((top5 == y[:, None]).any(1).sum())
    ci = binomtest(c1, len(y)).proportion_ci(method="wilson")
    print(f"| {s} | {c1} | {c5} | {100 * c1 / len(y):.1f}% ({100 * ci.low:.1f}-{100 * ci.high:.1f}) |", flush=True)
