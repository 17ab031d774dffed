#!/usr/bin/env python3
"""Fuzz the .sqz reader: N mutated files (default 1,000,000), none may crash, hang or over-allocate.

    python scripts/fuzz_sqz.py [--n 1000000] [--seed 0] [--workers 2]

Seeds are small real .sqz files (sparse and dense layers, codebooks of every codec, raw float32 /
float16 / int64 / bool tensors, a zlib header). Each input applies 1-4 random edits (bit flips, byte
sets, cuts, inserts, copies of another region, a varint in the tensor table set to a huge value) and,
for half of them, recomputes the CRC so that the parser behind the checksum is reached. An input
passes when ``read_sqz`` returns (then its tensors must fit ``MAX_EXPANSION`` x the file size) or raises
``WeightsError`` with a one-line message; anything else, or one that takes over a second, fails and
is written to ``fuzz-failures/``. The quick version of this runs in the test suite
(tests/test_sqz.py::test_fuzz_mutated_files_never_crash).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import struct
import sys
import time
import zlib
from pathlib import Path

import numpy as np


def seeds() -> list[bytes]:
    import torch

    from squeezelab.weights import sqz

    torch.manual_seed(0)
    sparse = torch.randn(8, 4, 3, 3)
    sparse[sparse.abs() < 1.2] = 0
    shared = torch.tensor([-0.5, 0.25, 1.5, 0.0])[torch.randint(0, 4, (16, 8, 1, 1))]
    state = {"conv1.weight": sparse, "conv1.bias": torch.randn(8), "fire2.squeeze.weight": shared,
             "bn.num_batches_tracked": torch.tensor(3), "mask": torch.rand(6) > 0.5}
    out = []
    for coder in ("auto", "huffman", "ans", "raw"):
        out.append(sqz.write_sqz(state, {"model": None, "provenance": {"x": "y" * 40}}, coder=coder))
    out.append(sqz.write_sqz(state, {"model": None}, raw_float16=True, index_bits=2))
    out.append(sqz.write_sqz(state, {"model": None}, codebook_float16=True))  # a version 2.0 file
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    body = bytearray(data[:-4])
    for _ in range(int(rng.integers(1, 5))):
        kind = int(rng.integers(0, 6))
        pos = int(rng.integers(0, max(1, len(body))))
        if kind == 0 and body:
            body[pos % len(body)] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1 and body:
            body[pos % len(body)] = int(rng.integers(0, 256))
        elif kind == 2:
            del body[pos:pos + int(rng.integers(1, 16))]
        elif kind == 3:
            body[pos:pos] = rng.bytes(int(rng.integers(1, 16)))
        elif kind == 4 and len(body) > 8:
            a = int(rng.integers(0, len(body) - 4))
            body[pos:pos] = body[a:a + int(rng.integers(1, 32))]
        else:  # a varint-looking huge value: the "claims 10^12 entries" case
            body[pos:pos + 1] = b"\xff\xff\xff\xff\x0f"
    if rng.random() < 0.5:
        return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    return bytes(body) + data[-4:]


def check(blob: bytes) -> str | None:
    """None when the reader behaved; else a description of the failure."""
    from squeezelab.errors import WeightsError
    from squeezelab.weights import sqz

    t = time.perf_counter()
    try:
        f = sqz.read_sqz(blob)
        decoded = sum(t.numel * 8 for t in f.tensors)
        if decoded > sqz.MAX_EXPANSION * len(blob):
            return f"decoded {decoded} bytes from {len(blob)}"
    except WeightsError as err:
        if "\n" in str(err):
            return f"multi-line error: {err!r}"
    except Exception as err:  # noqa: BLE001 - a crash is what we look for
        return f"{type(err).__name__}: {err}"
    if time.perf_counter() - t > 1.0:
        return f"took {time.perf_counter() - t:.2f} s"
    return None


def worker(args: tuple[int, int, int]) -> tuple[int, int, list]:
    n, seed, index = args
    rng = np.random.default_rng([seed, index])
    base = seeds()
    ok = errors = 0
    failures = []
    from squeezelab.errors import WeightsError  # noqa: F401 - warm the import

    for _ in range(n):
        blob = mutate(base[int(rng.integers(0, len(base)))], rng)
        problem = check(blob)
        if problem is None:
            ok += 1
        else:
            errors += 1
            failures.append((problem, blob))
    return ok, errors, failures[:20]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    t0 = time.perf_counter()
    chunks = 200
    jobs = [(args.n // chunks + (1 if i < args.n % chunks else 0), args.seed, i) for i in range(chunks)]
    done = failed = 0
    out = Path("fuzz-failures")
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for ok, bad, failures in pool.imap_unordered(worker, jobs):
            done += ok + bad
            failed += bad
            for k, (problem, blob) in enumerate(failures):
                out.mkdir(exist_ok=True)
                (out / f"{failed}-{k}.sqz").write_bytes(blob)
                print(f"FAIL: {problem}", file=sys.stderr)
            print(f"{done:,} inputs, {failed} failures, {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"fuzz_sqz: {done:,} mutated inputs, {failed} failures, {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
