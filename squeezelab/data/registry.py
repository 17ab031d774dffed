"""The one dataset registry: ``load_dataset(name, data_dir, split, ...)`` and ``list_datasets()``.

Each dataset module registers a ``DatasetSpec`` whose ``build(root, split)`` returns either an
``ImageSet`` (formats that already are pixel arrays: CIFAR pickles, sklearn digits) or a ``Listing``
(image files to decode: Tiny ImageNet, image folders, image lists). This module turns a Listing into an
in-memory ``ImageSet`` through the on-disk cache, or into a ``LazyImageSet`` for ``in_memory=False``,
and carves train/val splits. Everything is offline; nothing here touches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from squeezelab.data import cache
from squeezelab.data.decode import DecodePolicy, Listing, decode_all
from squeezelab.data.imageset import ImageSet, LazyImageSet, stratified_split
from squeezelab.data.transforms import Preset, default_preset_for, get_preset
from squeezelab.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset. ``splits[0]`` is its training split, ``heldout`` its official evaluation
    split; ``aliases`` maps extra accepted split names onto official ones."""

    name: str
    splits: tuple[str, ...]
    heldout: str
    build: Callable[..., "ImageSet | Listing"]  # build(root: Path | None, split: str, **kwargs)
    description: str
    needs_data_dir: bool = True
    aliases: dict = field(default_factory=dict)


_DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in _DATASETS:
        raise RuntimeError(f"dataset {spec.name!r} registered twice")
    _DATASETS[spec.name] = spec
    return spec


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_spec(name: str) -> DatasetSpec:
    try:
        return _DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(list_datasets())}") from None


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    *,
    preset: str | Preset | None = None,
    val_fraction: float = 0.0,
    seed: int = 0,
    cache_dir: str | os.PathLike | None | bool = None,
    in_memory: bool = True,
    download: bool = False,
) -> ImageSet | LazyImageSet:
    """Load one split of a registered dataset.

    name: one of ``list_datasets()`` (unknown -> ConfigError listing them).
    data_dir: the folder as users download it (see each dataset's docstring); None -> $SQUEEZELAB_DATA.
        ``digits`` needs none. Missing folder / wrong layout / corrupt files -> DataError (one line).
    split: "train", "val" or "test" as the dataset has them (cifar10/100, digits: train/test;
        tiny-imagenet, imagefolder: train/val; image-list: val, also called test).
    preset: name or Preset deciding the decode-time size of variable-size images (default: the
        dataset's ``default_preset_for``). Fixed-size datasets are always stored at native size.
    val_fraction: > 0 carves "train" and "val" from the official training split, stratified by class
        and chosen by ``seed`` (report 001: 0.1 -> 45k/5k); the official evaluation split is then "test".
    cache_dir: where decoded splits are cached (None -> $SQUEEZELAB_CACHE or ~/.cache/squeezelab;
        False -> no cache).
    in_memory: True -> ImageSet (uint8 [N,3,H,W] in memory); False -> LazyImageSet decoding per item
        (array formats — CIFAR, digits — are small and always in memory; ImageSet is a Dataset too).
    download: cifar10/cifar100 only: fetch the official archive into data_dir if absent (needs network).
    """
    spec = get_spec(name)
    native, carve = _resolve_split(spec, split, val_fraction)
    preset_obj = get_preset(preset if preset is not None else default_preset_for(name))
    # Training images may be stored larger than the network input (random crops need the margin).
    policy = preset_obj.decode_policy(train=(carve or native) == "train")
    if download:
        if name not in ("cifar10", "cifar100"):
            raise ConfigError(f"--download is only available for cifar10/cifar100, not {name}")
        if data_dir is not None:
            Path(data_dir).expanduser().mkdir(parents=True, exist_ok=True)
    root = _resolve_root(spec, data_dir)
    kwargs = {"download": True} if download else {}
    built = spec.build(root, native, **kwargs)
    if isinstance(built, Listing):
        built = _materialise(built, policy, cache_dir, in_memory)
    built.split = native
    if carve is None:
        return built
    keep, held = stratified_split(built.labels, val_fraction, seed)
    return built.subset(keep if carve == "train" else held, carve)


def _resolve_split(spec: DatasetSpec, split: str, val_fraction: float) -> tuple[str, str | None]:
    """-> (official split to read, carved part "train"/"val" or None)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction > 0:
        if split in ("train", "val"):
            return spec.splits[0], split
        if split == "test":
            return spec.heldout, None
        raise ConfigError(f"{spec.name} with val_fraction > 0 has splits train, val, test; got {split!r}")
    split = spec.aliases.get(split, split)
    if split not in spec.splits:
        valid = ", ".join(list(spec.splits) + list(spec.aliases))
        raise ConfigError(f"{spec.name} has splits {valid}; got {split!r} (val_fraction > 0 carves a val split)")
    return split, None


def _resolve_root(spec: DatasetSpec, data_dir) -> Path | None:
    if not spec.needs_data_dir:
        return None  # built in (digits): a data_dir meant for other datasets is simply not needed
    if data_dir is None:
        data_dir = os.environ.get("SQUEEZELAB_DATA")
    if data_dir is None:
        raise DataError(f"dataset {spec.name} needs a data directory (--data-dir or $SQUEEZELAB_DATA)")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (expected the {spec.name} folder: {spec.description})")
    return root


def _materialise(listing: Listing, policy: DecodePolicy, cache_dir, in_memory: bool):
    """Listing -> LazyImageSet, or ImageSet via the cache (decode on a miss, then store)."""
    if not in_memory:
        return LazyImageSet(listing, policy)
    policy = listing.policy_for(policy)
    path = None
    if cache_dir is not False:
        key = {"sources": listing.source.fingerprint(listing.refs), "decode": policy.key(), "n": len(listing.refs)}
        path = cache.cache_file(Path(cache_dir) if cache_dir else cache.default_cache_dir(), listing.name,
                                listing.split, key)
        hit = cache.load(path)
        if hit is not None and hit[0].shape[0] == len(listing.refs):
            images, labels, classes, _ = hit
            return ImageSet(images, labels, classes, listing.name, listing.split)
    images = decode_all(listing, policy)
    labels = torch.tensor(listing.labels, dtype=torch.int64)
    if path is not None:
        cache.save(path, images, labels, listing.classes, listing.extra)
    return ImageSet(images, labels, listing.classes, listing.name, listing.split)


def find_root(data_dir: Path, is_root: Callable[[Path], bool], canonical: tuple[str, ...]) -> Path | None:
    """The first of data_dir, data_dir/<canonical>, data_dir/*/<canonical> that ``is_root`` accepts,
    so ``--data-dir`` may name the dataset folder, its parent, or a folder of datasets."""
    candidates = [data_dir] + [data_dir / c for c in canonical]
    try:
        children = sorted(p for p in data_dir.iterdir() if p.is_dir())
    except OSError:
        children = []
    candidates += [child / c for child in children for c in canonical]
    return next((p for p in candidates if p.is_dir() and is_root(p)), None)
