"""Inference backends: one registry, one file per runtime.

A backend writes its file format from a torch model (``export``) and runs such a file (``load`` ->
``Loaded.run(float32 NCHW batch) -> logits``; ExecuTorch's runtime in a worker process, isolated.py).
``squeezelab export --format``, ``predict``, ``bench infer`` and the accuracy checks all go through here,
so adding a runtime is adding one file that calls ``register``:

    onnxruntime  .onnx               fp32, int8 (static QDQ, per-channel)      servers, x86 / ARM CPUs
    openvino     .xml (+ .bin), .onnx fp32, bf16 hint, int8 (from the QDQ file)  Intel / AMD CPUs
    litert       .tflite             fp32, int8 (full integer, int8 in / out)   phones, TFLite Micro
    executorch   .pte                fp32, int8 (PT2E, XNNPACK delegate)       PyTorch on device
    torch        any --weights       fp32 (NCHW, channels_last, torch.compile)  the reference

What a runtime needs to use a file (the preprocessing preset, class names, the model spec) travels
inside it where the format has room (ONNX metadata, OpenVINO's rt_info) and otherwise in a sidecar
``<file>.json`` written beside it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from squeezelab.errors import ConfigError, WeightsError


@dataclass
class Loaded:
    """A file loaded in a runtime. ``run``: preprocessed float32 [N, 3, S, S] -> float32 logits [N, K], any
    N (a runtime whose file has a fixed batch is called image by image)."""
    backend: str
    precision: str
    threads: int
    run: Callable[[np.ndarray], np.ndarray]
    meta: dict = field(default_factory=dict)  # squeezelab metadata: preset, classes, model, source
    # (x, n) -> the seconds of n calls of run(x), timed where the runtime runs (a worker process: isolated.py)
    timer: Callable[[np.ndarray, int], list[float]] | None = None

    def describe(self) -> str:
        return f"{self.backend} {self.precision}, {self.threads} thread(s)"

    def time_calls(self, x: np.ndarray, n: int) -> list[float]:
        return self.timer(x, n) if self.timer else time_calls(self.run, x, n)


def time_calls(run: Callable[[np.ndarray], object], x: np.ndarray, n: int) -> list[float]:
    """The wall seconds of each of n calls of ``run(x)``."""
    import time

    out = []
    for _ in range(n):
        t = time.perf_counter()
        run(x)
        out.append(time.perf_counter() - t)
    return out


class Backend:
    """One runtime. Subclasses set the class attributes and implement ``export`` and ``load_here``."""
    name: str = ""            # registry key and engine prefix ("onnxruntime")
    format: str = ""          # the export format it writes ("onnx"); "" for torch
    suffixes: tuple = ()      # file suffixes it loads (".onnx",)
    packages: tuple = ()      # modules it needs, for available()
    extra: str = "deploy"     # the pip extra that installs them
    precisions: tuple = ("fp32",)
    needs_calibration: tuple = ("int8",)  # precisions that calibrate on training images
    # export: ``example`` is a preprocessed torch batch (its shape is the exported one)

    def available(self) -> str | None:
        """None if it can run here, else why not (one line)."""
        for module in self.packages:
            try:
                with quiet():  # some print warnings on import (torchao through executorch)
                    importlib.import_module(module)
            except Exception as err:  # noqa: BLE001 - a broken install raises more than ImportError
                return f"{self.name} needs the {module!r} package (pip install 'squeezelab[{self.extra}]'): " \
                       f"{type(err).__name__}"
        return None

    def export(self, net, example, out: Path, *, precision: str, calibration: np.ndarray | None,
               metadata: dict) -> Path:
        raise NotImplementedError

    def load(self, path: Path, *, threads: int = 1, precision: str | None = None) -> Loaded:
        """The file ready to run: here, or in a worker process for a runtime that can crash its host
        (ExecuTorch overrides this with ``isolated.load``)."""
        return self.load_here(path, threads=threads, precision=precision)

    def load_here(self, path: Path, *, threads: int = 1, precision: str | None = None) -> Loaded:
        """The file loaded in this process."""
        raise NotImplementedError


_BACKENDS: dict[str, Backend] = {}
_MODULES = ("torch_eager", "ort", "ov", "litert", "pte")  # the files of this folder that register one


def register(backend: Backend) -> Backend:
    _BACKENDS[backend.name] = backend
    return backend


def backends() -> dict[str, Backend]:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return dict(_BACKENDS)


def get(name: str) -> Backend:
    found = backends()
    if name not in found:
        raise ConfigError(f"unknown backend {name!r}; known: {', '.join(found)}")
    return found[name]


def formats() -> dict[str, Backend]:
    """Export format -> the backend that writes it."""
    return {b.format: b for b in backends().values() if b.format}


def for_format(fmt: str) -> Backend:
    found = formats()
    if fmt not in found:
        raise ConfigError(f"unknown format {fmt!r}; known: {', '.join(found)}")
    return found[fmt]


def for_file(path: str | Path) -> Backend:
    """The backend that runs a file, by its suffix."""
    suffix = Path(path).suffix.lower()
    for b in backends().values():
        if suffix in b.suffixes:
            return b
    known = sorted({s for b in backends().values() for s in b.suffixes})
    raise ConfigError(f"{path}: no backend runs {suffix or 'files without a suffix'}; known: {', '.join(known)}")


def usable(backend: Backend) -> Backend:
    reason = backend.available()
    if reason:
        raise ConfigError(reason)
    return backend


def load_file(path: str | Path, *, threads: int = 1, backend: str | None = None,
              precision: str | None = None) -> Loaded:
    """Any exported file in the runtime that runs it (or the one named), its metadata checked."""
    from squeezelab.runtime import check_regular

    b = usable(get(backend) if backend else for_file(path))
    if b.format:  # an exported file (torch's --weights may also be a run folder: its loader checks)
        check_regular(path, "model file")
        if Path(path).suffix.lower() not in b.suffixes:
            raise ConfigError(f"{path}: {b.name} runs {', '.join(b.suffixes)} files")
    return b.load(Path(path), threads=threads, precision=precision)


# ------------------------------------------------------------------ metadata a runtime needs


def metadata(w, preset, net) -> dict:
    """What travels with every exported file (JSON values)."""
    return {"model": net.model_spec,
            "preset": {"name": preset.name, "input_size": preset.input_size, "channel_order": preset.channel_order,
                       "pixel_max": preset.pixel_max, "mean": list(preset.mean), "std": list(preset.std)},
            "classes": w.classes,
            "source": {"format": w.source, "file": w.path.name if w.path else None}}


def check_metadata(path, meta: dict) -> dict:
    """The entries squeezelab reads, of the types it writes; else a one-line WeightsError."""
    preset, classes = meta.get("preset"), meta.get("classes")
    if preset is None:
        raise WeightsError(f"{path} was not exported by squeezelab (no preset in its metadata)")
    if not (isinstance(preset, dict) and isinstance(preset.get("name"), str)):
        raise WeightsError(f"{path}: metadata 'preset' is a {type(preset).__name__}, not the preset squeezelab writes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise WeightsError(f"{path}: metadata 'classes' is not a list of class names")
    return meta


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write_sidecar(path: Path, meta: dict) -> None:
    from squeezelab.runtime import atomic_write_text

    atomic_write_text(sidecar(path), json.dumps(meta, indent=1))


def read_sidecar(path: Path) -> dict:
    """The metadata written beside a .tflite / .pte file; {} when there is none (the file still runs)."""
    from squeezelab.runtime import read_regular

    side = sidecar(path)
    if not side.exists():
        return {}
    try:
        meta = json.loads(read_regular(side, "metadata", max_bytes=64 << 20))
    except (ValueError, UnicodeDecodeError):
        raise WeightsError(f"{side}: not JSON (not the metadata squeezelab writes)") from None
    if not isinstance(meta, dict):
        raise WeightsError(f"{side}: not the metadata squeezelab writes (a JSON object)")
    return meta


@contextlib.contextmanager
def quiet():
    """Converters that print progress bars and C++ logs (litert-torch, ExecuTorch's lowering) write to
    file descriptors 1 and 2 directly; while they run, both go to /dev/null, so that ``--json`` output
    stays one JSON object and errors stay one line."""
    import os
    import sys

    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1), os.dup2(null, 2)
        with contextlib.redirect_stdout(open(os.devnull, "w")) as out, contextlib.redirect_stderr(out):
            yield
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def convert_or_refuse(runtime: str, net, build: Callable[[], object]):
    """``build()`` (a converter: export, lowering, quantisation) run quietly; whatever it raises for a graph
    it cannot take becomes one ConfigError line naming the model and the runtime."""
    try:
        with quiet():
            return build()
    except Exception as err:  # noqa: BLE001 - converters raise many types for unsupported graphs
        raise ConfigError(f"{net.model_spec['name']} cannot be exported to {runtime}: {one_line(err)}") from None


def pt2e_calibrated(net, x, quantizer, calibration: np.ndarray, **convert_kwargs):
    """PT2E post-training quantisation: ``net`` exported at ``x``'s shape, observed on each calibration
    image (batch 1, the exported shape), converted to quantize / dequantize pairs for a lowering pass."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    module = prepare_pt2e(torch.export.export(net.eval(), (x,)).module(), quantizer)
    with torch.no_grad():
        for i in range(len(calibration)):
            module(torch.from_numpy(calibration[i:i + 1]))
    return convert_pt2e(module, **convert_kwargs)


def one_line(err: BaseException, limit: int = 200) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:limit]}"
