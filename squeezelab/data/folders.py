"""Image folders: ImageNet-style class trees (``imagefolder``) and Caffe-style lists (``image-list``).

``imagefolder``: ``<data_dir>/train/<class>/...`` and ``<data_dir>/val/<class>/...`` (any depth under
the class folder). Classes are the sorted ``train/`` folder names; ``val/`` may hold a subset of them.
``image-list``: ``<data_dir>/images/`` + ``labels.txt`` of ``<file> <class index>`` lines (the Caffe
validation list); an optional ``synset_words.txt`` (``<wnid> <name>, <name>...`` per class, in index
order) names the classes (first name, e.g. "tench"), otherwise they are "0", "1", ...
Images vary in size, so both are brought to one size at decode time by the preset's ``DecodePolicy``.
"""

from __future__ import annotations

from pathlib import Path

from squeezelab.data.decode import FileSource, Listing, list_image_files
from squeezelab.data.registry import DatasetSpec, read_text, register
from squeezelab.errors import DataError


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def build_imagefolder(root: Path, split: str) -> Listing:
    train_dir, split_dir = root / "train", root / split
    for d in {train_dir, split_dir}:
        if not d.is_dir():
            raise DataError(f"{root}: no {d.name}/ folder (expected {d.name}/<class>/<images> like ImageNet)")
    classes = [d.name for d in _class_dirs(train_dir)]
    if not classes:
        raise DataError(f"{train_dir}: no class folders (expected train/<class>/<images>)")
    index = {c: i for i, c in enumerate(classes)}
    refs, labels = [], []
    for d in _class_dirs(split_dir):
        if d.name not in index:
            raise DataError(f"{d}: class {d.name!r} is not a folder under {train_dir}")
        files = list_image_files(d)
        if not files:
            raise DataError(f"{d}: class folder has no images (expected .jpg/.jpeg/.png/... files)")
        refs += [str(f.relative_to(root)) for f in files]
        labels += [index[d.name]] * len(files)
    if not refs:
        raise DataError(f"{split_dir}: no class folders (expected {split}/<class>/<images>)")
    return Listing("imagefolder", split, FileSource(root), refs, labels, classes, fixed_size=False)


def _synset_names(path: Path) -> list[str]:
    """synset_words.txt -> first human-readable name per class ("n01440764 tench, Tinca tinca" -> "tench")."""
    names = []
    for line in read_text(path, "synset_words.txt").splitlines():
        if line.strip():
            _, _, words = line.strip().partition(" ")
            names.append(words.split(",")[0].strip() or line.split()[0])
    return names


def build_image_list(root: Path, split: str) -> Listing:
    labels_txt, images = root / "labels.txt", root / "images"
    if not labels_txt.is_file() or not images.is_dir():
        raise DataError(f"{root}: expected images/ and labels.txt ('<file> <class index>' lines)")
    refs, labels, where = [], [], {}
    inside = images.resolve()
    for n, line in enumerate(read_text(labels_txt, "labels.txt").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{labels_txt}:{n}: expected '<file> <class index>', got {line[:60]!r}")
        image = images / parts[0]
        if not image.resolve().is_relative_to(inside):  # ../../etc/hostname, /abs/path, a link out
            raise DataError(f"{labels_txt}:{n}: {parts[0]!r} leaves {images}; name files inside it")
        if not image.is_file():
            raise DataError(f"{labels_txt}:{n}: image {image} not found")
        refs.append(f"images/{parts[0]}")
        labels.append(int(parts[1]))
        where.setdefault(labels[-1], n)
    if not refs:
        raise DataError(f"{labels_txt}: no '<file> <class index>' lines")
    synsets = root / "synset_words.txt"
    classes = _synset_names(synsets) if synsets.is_file() else [str(i) for i in range(max(max(labels), 0) + 1)]
    bad = next((v for v in labels if not 0 <= v < len(classes)), None)
    if bad is not None:
        raise DataError(f"{labels_txt}:{where[bad]}: class index {bad} out of range 0..{len(classes) - 1}")
    return Listing("image-list", split, FileSource(root), refs, labels, classes, fixed_size=False,
                   extra={"classes_declared": synsets.is_file()})


register(DatasetSpec(
    name="imagefolder", splits=("train", "val"), heldout="val", build=build_imagefolder,
    description="train/<class>/ and val/<class>/ image folders",
))
register(DatasetSpec(
    name="image-list", splits=("val",), heldout="val", build=build_image_list, aliases={"test": "val"},
    description="images/ + labels.txt ('<file> <class index>'), optional synset_words.txt",
))
