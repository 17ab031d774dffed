"""On-disk cache of decoded splits: decode once, load in seconds on every later run.

One safetensors file per (dataset, split, decode policy, source files): the key hashes the source
files' paths, sizes and mtimes, so editing/adding a file or choosing another decode size gives a new
entry instead of stale pixels. safetensors rather than pickle/torch.save: loading cannot run code and
reads at disk speed. Files are written to a temp name and ``os.replace``-d, so a crash or a concurrent
run never leaves a half-written entry under the real name.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

FORMAT_VERSION = 1  # bump when the stored layout or decoding changes


def default_cache_dir() -> Path:
    """$SQUEEZELAB_CACHE, else ~/.cache/squeezelab."""
    env = os.environ.get("SQUEEZELAB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "squeezelab"


def cache_file(cache_dir: Path, name: str, split: str, key_parts: dict) -> Path:
    """Path of the entry for these key parts (dataset, split, sources, decode policy)."""
    blob = json.dumps({"v": FORMAT_VERSION, "name": name, "split": split, **key_parts}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{name}-{split}-{digest}.safetensors"


def load(path: Path) -> tuple[torch.Tensor, torch.Tensor, list[str], dict] | None:
    """(images, labels, classes, extra) from a cache entry, or None if absent/unreadable."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
        return images, labels, json.loads(meta["classes"]), json.loads(meta["extra"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        warnings.warn(f"ignoring unreadable cache entry {path} ({e}); decoding again", stacklevel=2)
        return None


def save(path: Path, images: torch.Tensor, labels: torch.Tensor, classes: list[str], extra: dict) -> None:
    """Write an entry atomically. A cache that cannot be written is a warning, not a failure."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"classes": json.dumps(classes), "extra": json.dumps(extra)}
        save_file({"images": images.contiguous(), "labels": labels.contiguous()}, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except Exception as e:  # OSError, or safetensors' own error for a full disk
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. $SQUEEZELAB_CACHE is a file: there is no folder to clean
            pass
        reason = " ".join(str(e).split())
        warnings.warn(f"could not write dataset cache {path} ({reason}); continuing without it", stacklevel=2)
