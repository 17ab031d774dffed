"""Which layers cost PT2E int8 its accuracy (issue 18; results/edge/README.md)?

    python scripts/pt2e_float_layers.py DATA none,conv1,conv10,conv1+conv10

DATA: the folder with tiny-imagenet-200/, imagenet-val-300/synset_words.txt and
squeezenet-deep-compression/compressed_SqueezeNet.net (../shared/data here). The authors' SqueezeNet
v1.0 is exported to ExecuTorch int8 with the named layers (and their BatchNorm / ReLU) left in fp32,
calibrated on 300 Tiny ImageNet TRAINING images and judged on 500 held-out training images: top-1
agreement and KL divergence with torch fp32. No validation or test image is used: this chooses.
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from squeezelab.data import get_preset, load_dataset
from squeezelab.deploy import backends
from squeezelab.deploy.backends import pte
from squeezelab.deploy.export import export
from squeezelab.weights import load_weights, model_from_weights

torch.set_num_threads(2)
data, variants = Path(sys.argv[1]), sys.argv[2].split(",")
weights = str(data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net")
w = load_weights(weights)
preset = get_preset(w.preset)
common = dict(preset=preset.name, val_fraction=0.02, seed=0, in_memory=False,
              class_map=str(data / "imagenet-val-300" / "synset_words.txt"))
train = load_dataset("tiny-imagenet", str(data / "tiny-imagenet-200"), "train", **common)
held = load_dataset("tiny-imagenet", str(data / "tiny-imagenet-200"), "val", **common)  # held-out TRAINING images
pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:300]


def batch(ds, idx):
    return preset.eval(torch.stack([ds[int(i)][0] for i in idx])).numpy()


cal = np.concatenate([batch(train, pick[j:j + 50]) for j in range(0, 300, 50)])
x = np.concatenate([batch(held, range(j, j + 50)) for j in range(0, 500, 50)])
with torch.no_grad():
    ref = model_from_weights(w).eval()(torch.from_numpy(x)).float()
for variant in variants:
    pte.FLOAT_LAYERS = tuple(v for v in variant.split("+") if v != "none")
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        e = export(weights, Path(d) / "sn.pte", "pte", "int8", calibration=cal)
        run = backends.load_file(e.path).run
        out = torch.from_numpy(np.concatenate([run(x[j:j + 50]) for j in range(0, 500, 50)])).float()
    kl = torch.nn.functional.kl_div(out.log_softmax(1), ref.log_softmax(1), log_target=True, reduction="batchmean")
    agree = (out.argmax(1) == ref.argmax(1)).float().mean()
    print(f"fp32 layers {variant:14s}: {e.bytes:,} B, agreement with fp32 {100 * agree:.1f}%, KL {kl:.4f} "
          f"on {len(x)} held-out Tiny ImageNet training images ({time.perf_counter() - t:.0f} s)", flush=True)
