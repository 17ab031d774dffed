"""The one dataset registry: ``load_dataset(name, data_dir, split, ...)`` and ``list_datasets()``.

Each dataset module registers a ``DatasetSpec`` whose ``build(root, split)`` returns either an
``ImageSet`` (formats that already are pixel arrays: CIFAR pickles, sklearn digits) or a ``Listing``
(image files to decode: Tiny ImageNet, image folders, image lists). This module turns a Listing into an
in-memory ``ImageSet`` through the on-disk cache, or into a ``LazyImageSet`` for ``in_memory=False``,
and carves train/val(/test) splits. Everything is offline unless ``download=True`` (see ``download``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from squeezelab.data import cache
from squeezelab.data.decode import DecodePolicy, Listing, decode_all
from squeezelab.data.download import downloadable
from squeezelab.data.imageset import ImageSet, LazyImageSet, stratified_split, stratified_three_way
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

# How train/val/test are drawn: "official" keeps the dataset's own train/held-out split (val_fraction
# carves val from train; report 001: 45k/5k/10k); "pooled" pools both and re-splits them (report 003).
SPLIT_SCHEMES = ("official", "pooled")


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
    split_scheme: str = "official",
    seed: int = 0,
    cache_dir: str | os.PathLike | None | bool = None,
    in_memory: bool = True,
    download: bool = False,
    class_map: str | os.PathLike | None = None,
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
    split_scheme: "official" (above) or "pooled": the official training and held-out splits are
        concatenated and split by class into "train"/"val"/"test" with fractions
        (1 - 2*val_fraction, val_fraction, val_fraction), chosen by ``seed`` (report 003: 0.1 -> 80/10/10
        of all 60k CIFAR-10 images; per class of n images, round(n*val_fraction) each to val and test).
        Needs 0 < val_fraction < 0.5 and in_memory=True; otherwise ConfigError.
    cache_dir: where decoded splits are cached (None -> $SQUEEZELAB_CACHE or ~/.cache/squeezelab;
        False -> no cache).
    in_memory: True -> ImageSet (uint8 [N,3,H,W] in memory); False -> LazyImageSet decoding per item
        (array formats — CIFAR, digits — are small and always in memory; ImageSet is a Dataset too).
    download: fetch the dataset's official archive into data_dir if it is not there (needs network):
        the datasets in ``squeezelab.data.download.ARCHIVES``; digits (built in) ignores it; others ->
        ConfigError. data_dir (or $SQUEEZELAB_DATA) is created; neither given -> ConfigError.
    class_map: a text file naming a model's classes in order, one per line, its first word the class
        id (ImageNet's ``synset_words.txt``): labels are mapped onto it by class name, so that Tiny
        ImageNet's 200 wnids become indices of the 1000 ImageNet classes. A class it lacks -> DataError.
    """
    data = _load_split(name, data_dir, split, preset=preset, val_fraction=val_fraction, split_scheme=split_scheme,
                       seed=seed, cache_dir=cache_dir, in_memory=in_memory, download=download)
    return data if class_map is None else apply_class_map(data, Path(class_map))


def count_images(name: str, data_dir=None, split: str | None = None) -> int:
    """Images in one official split, from its listing (no decoding: what sizing a study needs, even for
    100,000 Tiny ImageNet images not cached yet). ``split`` None: the training split."""
    spec = get_spec(name)
    split = split or spec.splits[0]
    built = spec.build(_resolve_root(spec, data_dir), spec.aliases.get(split, split))
    return len(built.refs) if isinstance(built, Listing) else len(built)


def read_text(path: Path, what: str = "file") -> str:
    """A dataset's text file (labels.txt, wnids.txt, a class list) as UTF-8; absent, unreadable or
    not UTF-8 -> one-line DataError naming the file (and the first bad byte's line)."""
    from squeezelab.runtime import read_regular

    path = Path(path)
    data = read_regular(path, what, max_bytes=256 << 20)  # a FIFO or /dev/zero: one line, not a hang
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x}); save the {what} as "
                        f"UTF-8") from None


def read_class_list(path: Path) -> list[str]:
    """First word of every non-empty line (a class list or synset_words.txt); bad file -> DataError."""
    text = read_text(path, "class list")
    names = [line.split()[0] for line in text.splitlines() if line.strip()]
    if not names or len(set(names)) != len(names):
        raise DataError(f"{path}: expected one unique class id per line, got {len(names)} lines")
    return names


def apply_class_map(data: ImageSet | LazyImageSet, path: Path) -> ImageSet | LazyImageSet:
    target = read_class_list(path)
    index = {c: i for i, c in enumerate(target)}
    missing = [c for c in data.classes if c not in index]
    if missing:
        raise DataError(f"{path} does not name {len(missing)} of {data.name}'s classes "
                        f"(e.g. {', '.join(missing[:3])})")
    lut = torch.tensor([index[c] for c in data.classes], dtype=torch.int64)
    return data.with_classes(lut, target)


def _load_split(name, data_dir, split, *, preset, val_fraction, split_scheme, seed, cache_dir, in_memory,
                download) -> ImageSet | LazyImageSet:
    spec = get_spec(name)
    if split_scheme == "pooled":
        carve = _resolve_pooled_split(spec, split, val_fraction, in_memory)
        parts = (spec.splits[0], spec.heldout)
    elif split_scheme == "official":
        native, carve = _resolve_split(spec, split, val_fraction)
        parts = (native,)
    else:
        raise ConfigError(f"unknown split_scheme {split_scheme!r}; valid: {', '.join(SPLIT_SCHEMES)}")
    preset_obj = get_preset(preset if preset is not None else default_preset_for(name))
    # Training images may be stored larger than the network input (random crops need the margin).
    # (pooled: both official splits are decoded alike, by the part asked for, so they can be concatenated)
    policy = preset_obj.decode_policy(train=(carve or parts[0]) == "train")
    if download and spec.needs_data_dir:  # built-in sets (digits) have nothing to fetch
        data_dir = _prepare_download(name, data_dir)
    root = _resolve_root(spec, data_dir)
    kwargs = {"download": True} if download and spec.needs_data_dir else {}
    loaded = []
    for part in parts:
        built = spec.build(root, part, **kwargs)
        if isinstance(built, Listing):
            declared = built.extra.get("classes_declared", True)
            built = _materialise(built, policy, cache_dir, in_memory)
            built.classes_declared = declared
        built.split = part
        loaded.append(built)
    if split_scheme == "pooled":
        pooled = _concat(loaded)
        train, val, test = stratified_three_way(pooled.labels, val_fraction, seed)
        return pooled.subset({"train": train, "val": val, "test": test}[carve], carve)
    built = loaded[0]
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


def _resolve_pooled_split(spec: DatasetSpec, split: str, val_fraction: float, in_memory: bool) -> str:
    """split_scheme "pooled": -> the part asked for, "train", "val" or "test"."""
    if val_fraction == 0:
        raise ConfigError(f"split_scheme pooled re-splits {spec.name}'s train+{spec.heldout} into train/val/test "
                          "with fractions (1 - 2f, f, f), f = val_fraction; set val_fraction > 0 (report 003: 0.1)")
    if not 0.0 < val_fraction < 0.5:
        raise ConfigError(f"split_scheme pooled needs val_fraction in (0, 0.5), got {val_fraction}")
    if not in_memory:
        raise ConfigError("split_scheme pooled needs in_memory: true (it concatenates two in-memory splits)")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"{spec.name} with split_scheme pooled has splits train, val, test; got {split!r}")
    return split


def _concat(sets: list[ImageSet]) -> ImageSet:
    """One in-memory ImageSet of ``sets`` in order (the official train split, then the held-out one)."""
    first = sets[0]
    for other in sets[1:]:
        if other.classes != first.classes:
            raise DataError(f"{first.name}: splits {first.split} and {other.split} have different classes; "
                            "cannot pool them")
        if other.images.shape[1:] != first.images.shape[1:]:
            raise DataError(f"{first.name}: splits {first.split} and {other.split} decode to different sizes "
                            f"({tuple(first.images.shape[1:])} vs {tuple(other.images.shape[1:])}); cannot pool them")
    return ImageSet(torch.cat([s.images for s in sets]), torch.cat([s.labels for s in sets]), first.classes,
                    first.name, "pooled")


def _resolve_root(spec: DatasetSpec, data_dir) -> Path | None:
    if not spec.needs_data_dir:
        return None  # built in (digits): a data_dir meant for other datasets is simply not needed
    if data_dir is None:
        data_dir = os.environ.get("SQUEEZELAB_DATA")
    if data_dir is None:
        raise DataError(f"dataset {spec.name} needs a data directory: --set data.data_dir=DIR for train / "
                        f"compress, --data-dir DIR for eval / transfer / export, or $SQUEEZELAB_DATA")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (expected the {spec.name} folder: {spec.description})")
    return root


def _prepare_download(name: str, data_dir) -> Path:
    """Check ``name`` has an official archive and create the folder it will be fetched into."""
    if name not in downloadable():
        raise ConfigError(f"--download is available for {', '.join(downloadable())}, not {name} "
                          "(download it yourself and pass --data-dir)")
    data_dir = data_dir if data_dir is not None else os.environ.get("SQUEEZELAB_DATA")
    if data_dir is None:
        raise ConfigError(f"--download needs a folder to download {name} into: pass --data-dir "
                          "(or set $SQUEEZELAB_DATA)")
    root = Path(data_dir).expanduser()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{root}: cannot create the data directory ({e.strerror or e})") from None
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
