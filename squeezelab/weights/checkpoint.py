"""Checkpoints: ONE ``.safetensors`` file per checkpoint, tensors + JSON, no pickle anywhere.

Layout of the file:

- ``model.<state-dict key>``: the model's tensors (``module.`` / ``_orig_mod.`` prefixes of DDP and
  torch.compile are stripped, so a checkpoint loads into a plain model).
- ``optim.state.<param index>.<name>``: the optimizer's per-parameter tensors (momentum buffers,
  Adam moments, step counters); everything else of ``optimizer.state_dict()`` (param groups, non-tensor
  state) goes to the JSON metadata under ``optim``.
- ``extra.<name>``: any other tensors (e.g. ``extra.rng.cpu``, the CPU generator state as uint8).
- ``__metadata__ = {"squeezelab": <JSON>}`` with ``format_version``, ``model`` {name, num_classes,
  options}, ``preset``, ``dataset``, ``epoch``, ``step``, ``best`` and whatever else the caller puts
  in ``meta``.

Files are written atomically (temp file + ``os.replace``), so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from squeezelab.errors import WeightsError

FORMAT_VERSION = 1
META_KEY = "squeezelab"
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class Checkpoint:
    model_state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    optim_state: dict | None = None  # ready for optimizer.load_state_dict
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes from keys (``module.conv1.weight`` -> ``conv1.weight``)."""
    out = {}
    for key, value in state.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every parametrized tensor (e.g. a weight-shared layer's
    ``codebook[codes]``) as the plain tensor it computes, under its plain key, in the plain order."""
    from torch.nn.utils import parametrize

    state = model.state_dict()
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return state
    modules = dict(model.named_modules())
    out = {}
    for key, value in state.items():
        head, sep, rest = key.partition(".parametrizations.")
        if not sep:
            out[key] = value
        elif rest.endswith(".original"):  # one tensor per parametrized name; its helpers' buffers go
            name = rest.removesuffix(".original")
            out[f"{head}.{name}"] = getattr(modules[head], name).detach()
    return out


def _cpu(t: torch.Tensor) -> torch.Tensor:
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    return t.detach().to("cpu", copy=True).contiguous()


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """``optimizer.state_dict()`` -> (tensors, JSON-able rest)."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in state["state"].items():
        for name, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{idx}.{name}"] = _cpu(value)
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], info: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        idx, name = key[len("optim.state.") :].split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in info.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write model (+ optimizer, + extra tensors) and JSON ``meta`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {f"model.{k}": _cpu(v) for k, v in clean_state_dict(plain_state_dict(model)).items()}
    meta = {"format_version": FORMAT_VERSION, **meta}
    if optimizer is not None:
        optim_tensors, meta["optim"] = _flatten_optimizer(optimizer.state_dict())
        tensors.update(optim_tensors)
    tensors.update({f"extra.{k}": _cpu(v) for k, v in (extra_tensors or {}).items()})
    from squeezelab.runtime import atomic_write_with

    # a full disk can surface as safetensors' own error, not an OSError: any Exception is a refused write
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}),
                      errors=(Exception,))
    return path


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a file written by save_checkpoint; anything else -> WeightsError (one line)."""
    tensors, raw_meta = _read_safetensors(Path(path))
    if META_KEY not in raw_meta:
        raise WeightsError(f"{path}: a safetensors file but not a squeezelab checkpoint (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw_meta[META_KEY])
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: corrupt checkpoint metadata ({err})") from None
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise WeightsError(f"{path}: checkpoint format {meta['format_version']} is newer than this squeezelab reads")
    groups: dict[str, dict[str, torch.Tensor]] = {"model": {}, "optim": {}, "extra": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition(".")
        if head in groups:
            groups[head][rest if head != "optim" else key] = value
    optim_info = meta.pop("optim", None)
    optim_state = _unflatten_optimizer(groups["optim"], optim_info) if optim_info is not None else None
    return Checkpoint(groups["model"], meta, optim_state, groups["extra"])


def read_checkpoint_meta(path: str | Path) -> dict | None:
    """The JSON metadata of a checkpoint without reading its tensors; None when the file is absent or
    unreadable (a resume uses it to check which epoch best.safetensors holds)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return json.loads((f.metadata() or {})[META_KEY])
    except Exception:  # absent, truncated, foreign: the caller re-derives the file
        return None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises several types for truncated / foreign files
        reason = " ".join(str(err).split()) or type(err).__name__
        raise WeightsError(f"{path}: not a readable safetensors checkpoint ({reason})") from None
    return tensors, meta
