"""The memory table of results/edge/: does SqueezeNet fit a microcontroller (512 KB SRAM, 2 MB flash)?

    python scripts/edge_memory.py [--sizes 227 128 96 64] > results/edge/memory.md

For SqueezeNet v1.0 and v1.1 (1000 classes) at each input size, batch 1: weight bytes (int8 as TFLite
stores them: int8 weights, int32 bias, per-channel scale and zero point; fp32), peak activation bytes
and the greedy arena of a static planner (squeezelab.deploy.memory; `squeezelab info MODEL --memory`
prints one row of it)."""

from __future__ import annotations

import argparse

import torch

from squeezelab.deploy import memory
from squeezelab.models import create_model

SRAM, FLASH = 512 * 1024, 2 * 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[227, 128, 96, 64])
    args = ap.parse_args()
    print("| model | input px | int8 weights (B) | int8 peak activations (B) | int8 arena (B) | where the peak is "
          "| fits 512 KB SRAM + 2 MB flash (int8) | fp32 weights (B) | fp32 arena (B) |")
    print("|---|---:|---:|---:|---:|---|---|---:|---:|")
    for name in ("squeezenet1_0", "squeezenet1_1"):
        with torch.device("meta"):
            model = create_model(name, num_classes=1000)
        for size in args.sizes:
            q, f = memory.measure(model, size, "int8"), memory.measure(model, size, "fp32")
            fits = "yes" if q.fits(SRAM, FLASH) else "no (" + ", ".join(
                w for w, bad in (("SRAM", q.arena_bytes > SRAM), ("flash", q.weights_bytes > FLASH)) if bad) + ")"
            print(f"| {name} | {size} | {q.weights_bytes:,} | {q.peak_bytes:,} | {q.arena_bytes:,} | {q.largest} "
                  f"| {fits} | {f.weights_bytes:,} | {f.arena_bytes:,} |")


if __name__ == "__main__":
    main()
