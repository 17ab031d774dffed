"""CIFAR-10 / CIFAR-100 from the official "python version" folders, read directly.

``cifar-10-batches-py/``: data_batch_1..5, test_batch, batches.meta (label_names);
``cifar-100-python/``: train, test, meta (fine_label_names; we use the 100 fine labels).
Each batch is a pickled dict with ``data`` uint8 [N, 3072] (R, G, B planes of 32x32) and labels.
torchvision's classes md5-check the files and refuse subsets (like ../shared/data's 10% CIFAR-10), so
we read them ourselves — with an unpickler that only admits the numpy globals those files use, since a
pickle from the internet could otherwise run arbitrary code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from squeezelab.data.decode import first_line
from squeezelab.data.download import ensure as fetch_archive
from squeezelab.data.imageset import ImageSet
from squeezelab.data.registry import DatasetSpec, find_root, register
from squeezelab.errors import DataError

_LAYOUT = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names="label_names", labels="labels"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names="fine_label_names", labels="fine_labels"),
}  # the official archives (url, md5) are in squeezelab.data.download.ARCHIVES

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
    ("__builtin__", "object"), ("builtins", "object"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing global {module}.{name}")
        if module == "numpy.core.multiarray":  # numpy 2 renamed it; avoid the deprecation shim
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """One CIFAR batch/meta file -> dict with str keys, or DataError naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected an official CIFAR python-version batch file)")
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated/garbled pickles raise many types; all mean "corrupt file"
        raise DataError(f"{path}: not a readable CIFAR pickle ({first_line(e)})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = read_pickle(path)
    data, labels = d.get("data"), d.get(label_key)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or labels is None:
        raise DataError(f"{path}: expected 'data' uint8 [N, 3072] and '{label_key}', got keys {sorted(d)}")
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (data.shape[0],):
        raise DataError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    return data.astype(np.uint8, copy=False), labels


def _find(name: str, data_dir: Path, download: bool) -> Path:
    lay = _LAYOUT[name]
    root = find_root(data_dir, lambda p: (p / lay["train"][0]).is_file(), (lay["folder"],))
    if root is None and download:  # only when absent: a folder already there is never fetched again
        fetch_archive(name, data_dir)
        root = find_root(data_dir, lambda p: (p / lay["train"][0]).is_file(), (lay["folder"],))
        if root is None:  # extraction never overwrites, so an incomplete folder of that name stays
            raise DataError(f"{data_dir / lay['folder']}: has no {lay['train'][0]} (an incomplete copy?); "
                            "move it away and run with --download again")
    if root is None:
        raise DataError(f"{data_dir}: no {lay['folder']}/ with {lay['train'][0]} found (expected the official "
                        f"CIFAR python-version folder, or pass --download)")
    return root


def build(name: str, data_dir: Path, split: str, download: bool = False) -> ImageSet:
    lay = _LAYOUT[name]
    root = _find(name, data_dir, download)
    names = read_pickle(root / lay["meta"]).get(lay["names"], [])
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    parts = [_read_batch(root / f, lay["labels"]) for f in lay[split]]
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if not classes or labels.min() < 0 or labels.max() >= len(classes):
        raise DataError(f"{root / lay['meta']}: class names missing or labels out of range 0..{len(classes) - 1}")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return ImageSet(images, torch.from_numpy(labels), classes, name, split)


for _name, _desc in (("cifar10", "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
                     ("cifar100", "cifar-100-python/ (train, test, meta)")):
    register(DatasetSpec(
        name=_name, splits=("train", "test"), heldout="test", description=_desc,
        build=lambda root, split, download=False, _n=_name: build(_n, root, split, download),
    ))
