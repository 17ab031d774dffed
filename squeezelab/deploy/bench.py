"""``squeezelab bench infer``: the same weights in every installed inference engine, side by side.

Engines: torch eager (NCHW, channels_last) and torch.compile, then ``<backend>-<precision>`` for every
registered backend (ONNX Runtime, OpenVINO, LiteRT, ExecuTorch: fp32, int8, OpenVINO's bf16 hint),
each file exported from the weights into a temp folder (or given with ``--file``); each engine with 1
and 2 (or the given) threads. Batch-1 latency: median and p90 of single calls after a warm-up;
batch-32 throughput: images/s. This machine's timings swing 2-3x between seconds, so the engines are
measured in alternating rounds (every engine once per round, rounds repeated), each number pooled over
its rounds, and the ratios come from the same rounds. An engine that cannot run here (package missing,
no calibration images for int8, a format that cannot take the model) is listed with its reason.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from squeezelab.errors import ConfigError, SqueezelabError

TORCH_ENGINES = ("torch-nchw", "torch-channels-last", "torch-compile")
ALIASES = {"ort-fp32": "onnxruntime-fp32", "ort-int8": "onnxruntime-int8"}  # the names of earlier releases


@dataclass
class Engine:
    name: str
    threads: int
    run: Callable[[np.ndarray], object]
    # (x, n) -> seconds of each of n calls, timed where the runtime runs (a worker process for ExecuTorch)
    time_calls: Callable[[np.ndarray, int], list[float]]


def engine_names() -> list[str]:
    from squeezelab.deploy import backends

    return list(TORCH_ENGINES) + [f"{b.name}-{p}" for b in backends.backends().values() if b.format
                                  for p in b.precisions]


def _split(name: str):
    from squeezelab.deploy import backends

    backend, _, precision = name.rpartition("-")
    return backends.get(backend), precision


class Files:
    """The exported file of each (format, precision), made once per bench in ``tmp``."""

    def __init__(self, weights: str, tmp: Path, calibration, given: dict[str, str]):
        self.weights, self.tmp, self.calibration, self.given, self.made = weights, tmp, calibration, given, {}

    def path(self, backend, precision: str) -> Path:
        from squeezelab.deploy.export import export

        name = f"{backend.name}-{precision}"
        if name in self.given:
            return Path(self.given[name])
        stored = "fp32" if precision == "bf16" else precision  # bf16 is a runtime hint on the fp32 file
        if precision in backend.needs_calibration and self.calibration is None:
            raise ConfigError(f"{precision} needs calibration images (--calib-dataset) or --file")
        key = (backend.format, stored)
        if key not in self.made:
            out = self.tmp / f"{backend.format}-{stored}{backend.suffixes[0]}"
            self.made[key] = export(self.weights, out, backend.format, stored, calibration=self.calibration).path
        return self.made[key]


def build_engines(weights: str, names: list[str], threads: list[int], files: Files) -> tuple[list[Engine], dict]:
    """-> (engines ready to time, {engine: why it cannot run here})."""
    from squeezelab.deploy.backends import time_calls
    from squeezelab.deploy.backends.torch_eager import runner
    from squeezelab.deploy.graph import load_model

    net = load_model(weights)[0]
    out, skipped = [], {}
    for name in names:
        for n in threads:
            if name in TORCH_ENGINES:
                run = runner(copy.deepcopy(net), name.removeprefix("torch-"))
                out.append(Engine(name, n, run, functools.partial(time_calls, run)))
                continue
            backend, precision = _split(name)
            reason = backend.available()
            try:
                if reason is None:
                    loaded = backend.load(files.path(backend, precision), threads=n, precision=precision)
                    out.append(Engine(name, n, loaded.run, loaded.time_calls))
            except SqueezelabError as err:  # this engine only: the others are still measured
                if name in files.given:  # ... unless the user named the file: theirs to fix
                    raise
                reason = str(err)
            if reason:
                skipped[name] = reason
                break
    return out, skipped


def bench_infer(weights: str, input_size: int, *, engines=None, threads=(1, 2), files: dict[str, str] | None = None,
                calibration: np.ndarray | None = None, rounds: int = 5, iters: int = 20, warmup: int = 5,
                batch: int = 32, throughput_iters: int = 3) -> dict:
    """-> {"engines": [{engine, threads, latency_ms: {median, p90}, throughput}], "ratios", "skipped"}."""
    import tempfile

    if rounds < 1 or iters < 1 or warmup < 0 or batch < 1 or throughput_iters < 1:
        raise ConfigError("bench infer: rounds, iters, batch and throughput iterations must be >= 1")
    known = engine_names()
    names = [ALIASES.get(e, e) for e in (engines or known)]
    unknown = [e for e in names if e not in known]
    if unknown:
        raise ConfigError(f"unknown engine {unknown[0]!r}; valid: {', '.join(known)}")
    x1 = np.random.default_rng(0).standard_normal((1, 3, input_size, input_size)).astype(np.float32)
    xb = np.random.default_rng(1).standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
    caller_threads = torch.get_num_threads()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            todo, skipped = build_engines(weights, names, list(threads), Files(weights, Path(tmp), calibration,
                                                                                files or {}))
            lat, thr = _time(todo, x1, xb, rounds, iters, warmup, throughput_iters)
    finally:
        torch.set_num_threads(caller_threads)
    rows = [{"engine": e.name, "threads": e.threads,
             "latency_ms": {"median": 1e3 * float(np.median(lat[i])), "p90": 1e3 * float(np.percentile(lat[i], 90))},
             "throughput": float(np.median(thr[i])), "rounds": rounds, "iters": iters} for i, e in enumerate(todo)]
    return {"engines": rows, "input_size": input_size, "batch": batch, "ratios": _ratios(rows), "skipped": skipped}


def _time(todo: list[Engine], x1, xb, rounds: int, iters: int, warmup: int, throughput_iters: int):
    lat = [[] for _ in todo]
    thr = [[] for _ in todo]
    for e in todo:  # warm-up (compilation happens here)
        torch.set_num_threads(e.threads)
        for _ in range(max(1, warmup)):
            e.run(x1)
        e.run(xb)
    for _ in range(rounds):
        for i, e in enumerate(todo):
            torch.set_num_threads(e.threads)  # torch's own engines; the others were given theirs at load
            lat[i] += e.time_calls(x1, iters)
            thr[i].append(throughput_iters * len(xb) / sum(e.time_calls(xb, throughput_iters)))
    return lat, thr


def _ratios(rows: list[dict]) -> dict:
    """Median batch-1 latency of torch eager NCHW / of each engine, and int8 vs fp32 of each backend, per
    thread count."""
    out = {}
    for n in sorted({r["threads"] for r in rows}):
        by = {r["engine"]: r["latency_ms"]["median"] for r in rows if r["threads"] == n}
        base = by.get("torch-nchw")
        out[str(n)] = {f"{k}_vs_torch_nchw": base / v for k, v in by.items() if base and k != "torch-nchw"}
        for k, v in by.items():
            if k.endswith("-int8") and k.replace("-int8", "-fp32") in by:
                out[str(n)][f"{k.removesuffix('-int8')}_int8_vs_fp32"] = by[k.replace("-int8", "-fp32")] / v
    return out


def fastest(result: dict) -> dict | None:
    """The engine with the lowest batch-1 median latency (any thread count)."""
    return min(result["engines"], key=lambda r: r["latency_ms"]["median"], default=None)


def format_table(result: dict) -> str:
    lines = [f"{'engine':<22} {'threads':>7} {'batch-1 median':>15} {'p90':>9} {'batch-' + str(result['batch']):>10}",
             f"{'':<22} {'':>7} {'(ms)':>15} {'(ms)':>9} {'(img/s)':>10}"]
    for r in result["engines"]:
        lines.append(f"{r['engine']:<22} {r['threads']:>7} {r['latency_ms']['median']:>15.2f} "
                     f"{r['latency_ms']['p90']:>9.2f} {r['throughput']:>10.0f}")
    for n, ratios in result["ratios"].items():
        parts = ", ".join(f"{k.replace('_vs_torch_nchw', '')} {v:.1f}x" for k, v in ratios.items()
                          if k.endswith("_vs_torch_nchw"))
        int8 = "; ".join(f"{k.removesuffix('_int8_vs_fp32')} int8 vs fp32 {v:.2f}x" for k, v in ratios.items()
                         if k.endswith("_int8_vs_fp32"))
        lines.append(f"{n} thread(s), batch-1 speed-up over torch eager NCHW: {parts}" + (f"; {int8}" if int8 else ""))
    best = fastest(result)
    if best:
        lines.append(f"fastest here: {best['engine']} with {best['threads']} thread(s), "
                     f"{best['latency_ms']['median']:.2f} ms per image")
    for name, why in result.get("skipped", {}).items():
        lines.append(f"not measured: {name}: {why}")
    return "\n".join(lines)
