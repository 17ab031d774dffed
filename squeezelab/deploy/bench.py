"""``squeezelab bench infer``: the same weights in every CPU inference engine, side by side.

Engines: torch eager (NCHW and channels_last), torch.compile, ONNX Runtime fp32 and int8; each with
1 and 2 (or the given) threads. Batch-1 latency: median and p90 of single calls after a warm-up;
batch-32 throughput: images/s. This machine's timings swing 2-3x between seconds, so the engines are
measured in alternating rounds (every engine once per round, rounds repeated), each number pooled over
its rounds, and the ratios come from the same rounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from squeezelab.errors import ConfigError

ENGINES = ("torch-nchw", "torch-channels-last", "torch-compile", "ort-fp32", "ort-int8")


@dataclass
class Engine:
    name: str
    threads: int
    run: Callable[[np.ndarray], object]
    setup: Callable[[], None]  # before each of its timed blocks: set torch's thread count


def _torch_engine(net, channels_last: bool, compiled: bool, threads: int) -> Callable:
    model = net.to(memory_format=torch.channels_last) if channels_last else net
    if compiled:
        model = torch.compile(model)

    @torch.inference_mode()
    def run(x: np.ndarray):
        t = torch.from_numpy(x)
        return model(t.contiguous(memory_format=torch.channels_last) if channels_last else t)

    return run


def _ort_engine(path, threads: int) -> Callable:
    from squeezelab.deploy.export import session

    sess = session(path, threads)
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def build_engines(net, onnx_fp32, onnx_int8, threads: list[int], engines: list[str]) -> list[Engine]:
    import copy

    out = []
    for n in threads:
        setup = (lambda n=n: torch.set_num_threads(n))
        for name in engines:
            if name == "ort-fp32" and onnx_fp32 is not None:
                out.append(Engine(name, n, _ort_engine(onnx_fp32, n), setup))
            elif name == "ort-int8" and onnx_int8 is not None:
                out.append(Engine(name, n, _ort_engine(onnx_int8, n), setup))
            elif name.startswith("torch"):
                out.append(Engine(name, n, _torch_engine(copy.deepcopy(net), name != "torch-nchw",
                                                         name == "torch-compile", n), setup))
    return out


def bench_infer(net, input_size: int, *, onnx_fp32=None, onnx_int8=None, threads=(1, 2), engines=ENGINES,
                rounds: int = 5, iters: int = 20, warmup: int = 5, batch: int = 32, throughput_iters: int = 3) -> dict:
    """-> {"engines": [{name, threads, latency_ms: {median, p90}, throughput}], "ratios": ...}."""
    if rounds < 1 or iters < 1 or warmup < 0 or batch < 1 or throughput_iters < 1:
        raise ConfigError("bench infer: rounds, iters, batch and throughput iterations must be >= 1")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ConfigError(f"unknown engine {unknown[0]!r}; valid: {', '.join(ENGINES)}")
    caller_threads = torch.get_num_threads()
    from squeezelab.deploy.export import check_onnx_input, session

    for path in (p for p in (onnx_fp32, onnx_int8) if p is not None):  # one line, before any timing
        check_onnx_input(session(path), path, input_size, (1, batch))
    x1 = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    xb = np.random.default_rng(1).standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
    todo = build_engines(net.eval(), onnx_fp32, onnx_int8, list(threads), list(engines))
    lat = {id(e): [] for e in todo}
    thr = {id(e): [] for e in todo}
    try:
        for e in todo:  # warm-up (compile happens here)
            e.setup()
            for _ in range(max(1, warmup)):
                e.run(x1)
            e.run(xb)
        for _ in range(rounds):
            for e in todo:
                e.setup()
                for _ in range(iters):
                    t = time.perf_counter()
                    e.run(x1)
                    lat[id(e)].append(time.perf_counter() - t)
                t = time.perf_counter()
                for _ in range(throughput_iters):
                    e.run(xb)
                thr[id(e)].append(throughput_iters * batch / (time.perf_counter() - t))
    finally:
        torch.set_num_threads(caller_threads)
    rows = [{"engine": e.name, "threads": e.threads,
             "latency_ms": {"median": 1e3 * float(np.median(lat[id(e)])), "p90": 1e3 * float(np.percentile(lat[id(e)], 90))},
             "throughput": float(np.median(thr[id(e)])), "rounds": rounds, "iters": iters} for e in todo]
    return {"engines": rows, "input_size": input_size, "batch": batch, "ratios": _ratios(rows)}


def _ratios(rows: list[dict]) -> dict:
    """Median batch-1 latency of torch eager NCHW / of each engine, and int8 vs fp32, per thread count."""
    out = {}
    for n in sorted({r["threads"] for r in rows}):
        by = {r["engine"]: r["latency_ms"]["median"] for r in rows if r["threads"] == n}
        base = by.get("torch-nchw")
        out[str(n)] = {f"{k}_vs_torch_nchw": base / v for k, v in by.items() if base and k != "torch-nchw"}
        if "ort-fp32" in by and "ort-int8" in by:
            out[str(n)]["int8_vs_fp32"] = by["ort-fp32"] / by["ort-int8"]
    return out


def format_table(result: dict) -> str:
    lines = [f"{'engine':<22} {'threads':>7} {'batch-1 median':>15} {'p90':>9} {'batch-' + str(result['batch']):>10}",
             f"{'':<22} {'':>7} {'(ms)':>15} {'(ms)':>9} {'(img/s)':>10}"]
    for r in result["engines"]:
        lines.append(f"{r['engine']:<22} {r['threads']:>7} {r['latency_ms']['median']:>15.2f} "
                     f"{r['latency_ms']['p90']:>9.2f} {r['throughput']:>10.0f}")
    for n, ratios in result["ratios"].items():
        parts = ", ".join(f"{k.replace('_vs_torch_nchw', '')} {v:.1f}x" for k, v in ratios.items()
                          if k != "int8_vs_fp32")
        extra = f"; ORT int8 vs fp32 {ratios['int8_vs_fp32']:.2f}x" if "int8_vs_fp32" in ratios else ""
        lines.append(f"{n} thread(s), batch-1 speed-up over torch eager NCHW: {parts}{extra}")
    return "\n".join(lines)
