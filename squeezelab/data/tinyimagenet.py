"""Tiny ImageNet (200 classes, 64x64): the official tree, or its zip archive(s) read in place.

``data_dir`` may be the folder holding ``tiny-imagenet-200/``, that folder itself, or a folder holding
the zip file(s): the official single ``tiny-imagenet-200.zip`` or the parts
``tiny-imagenet-200.partKofN.zip`` (../shared/data's four stored parts; every part must be present).
Layout: ``wnids.txt`` (class order), ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG`` +
``val/val_annotations.txt`` (file, wnid, box). Images are listed from the tree or the zip directories
(no decoding), so a listing of all 110k images takes well under a second.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from squeezelab.data.decode import FileSource, Listing, ZipSource, open_zip
from squeezelab.data.download import ensure as fetch_archive
from squeezelab.data.registry import DatasetSpec, find_root, read_text, register
from squeezelab.errors import DataError

TOP = "tiny-imagenet-200"
_PART = re.compile(r"tiny-imagenet-200\.part(\d+)of(\d+)\.zip$")
_TRAIN = re.compile(rf"{TOP}/train/([^/]+)/images/([^/]+\.jpe?g)$", re.IGNORECASE)
_VAL = re.compile(rf"{TOP}/val/images/([^/]+\.jpe?g)$", re.IGNORECASE)


def _zips_in(folder: Path) -> list[Path]:
    """The archive(s) in ``folder``: all N parts of a split archive, or the single official zip."""
    parts = sorted(folder.glob("tiny-imagenet-200.part*of*.zip"))
    if parts:
        nums = {int(_PART.search(p.name).group(1)): int(_PART.search(p.name).group(2)) for p in parts
                if _PART.search(p.name)}
        total = max(nums.values())
        missing = [f"tiny-imagenet-200.part{k}of{total}.zip" for k in range(1, total + 1) if k not in nums]
        if missing:
            raise DataError(f"{folder}: missing zip part(s) {', '.join(missing)} (all {total} parts are needed)")
        return [folder / f"tiny-imagenet-200.part{k}of{total}.zip" for k in range(1, total + 1)]
    single = folder / "tiny-imagenet-200.zip"
    return [single] if single.is_file() else []


def _is_root(p: Path) -> bool:
    return (p / "wnids.txt").is_file() or bool(_zips_in(p))


def _parse_wnids(text: str, where: str) -> list[str]:
    wnids = [w.strip() for w in text.splitlines() if w.strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise DataError(f"{where}: expected one unique wnid per line, got {len(wnids)} lines")
    return wnids


def _parse_val(text: str, where: str, index: dict[str, int]) -> dict[str, int]:
    """val_annotations.txt -> {file name: class index}."""
    out = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(f"{where}:{n}: expected '<file>\\t<wnid from wnids.txt>\\t<box>', got {line[:60]!r}")
        out[fields[0]] = index[fields[1]]
    return out


def _natural(name: str) -> list:
    """Sort key putting val_2 before val_10 (the order a person reading the folder expects)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _member_name(ref) -> list:
    return _natural(ref[1] if isinstance(ref, tuple) else ref)


def _listing(source, wnids: list[str], train: dict[str, list], val_files: dict[str, object],
             val_text: str, where: str, split: str) -> Listing:
    """Shared by the tree and zip readers: refs + labels in wnids.txt order, checked."""
    index = {w: i for i, w in enumerate(wnids)}
    unknown = sorted(set(train) - set(index))
    if unknown:
        raise DataError(f"{where}: train/{unknown[0]}/ is not listed in wnids.txt")
    if split == "train":
        empty = [w for w in wnids if not train.get(w)]
        if empty:
            raise DataError(f"{where}: class {empty[0]} has no images under train/{empty[0]}/images/ "
                            f"({len(empty)} of {len(wnids)} classes empty)")
        refs = [ref for w in wnids for ref in sorted(train[w], key=_member_name)]
        labels = [index[w] for w in wnids for _ in train[w]]
    else:
        ann = _parse_val(val_text, f"{where}/val/val_annotations.txt", index)
        missing = sorted(set(ann) - set(val_files))
        if missing:
            raise DataError(f"{where}: val/images/{missing[0]} is annotated but missing ({len(missing)} missing)")
        names = sorted(ann, key=_natural)
        refs, labels = [val_files[f] for f in names], [ann[f] for f in names]
    return Listing("tiny-imagenet", split, source, refs, labels, wnids, fixed_size=True)


def _from_tree(root: Path, split: str) -> Listing:
    wnids = _parse_wnids(read_text(root / "wnids.txt", "wnids.txt"), str(root / "wnids.txt"))
    train = {}
    if split == "train":
        if not (root / "train").is_dir():
            raise DataError(f"{root}: no train/ folder (expected train/<wnid>/images/*.JPEG)")
        for d in sorted((root / "train").iterdir()):
            if d.is_dir():
                train[d.name] = sorted(f"train/{d.name}/images/{f.name}" for f in (d / "images").glob("*")
                                       if f.suffix.lower() in (".jpeg", ".jpg"))
        val_files, val_text = {}, ""
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DataError(f"{root}: no val/val_annotations.txt (expected the official Tiny ImageNet val/)")
        val_files = {f.name: f"val/images/{f.name}" for f in (root / "val" / "images").glob("*")}
        val_text = read_text(ann, "val_annotations.txt")
    return _listing(FileSource(root), wnids, train, val_files, val_text, str(root), split)


def _from_zips(zips: list[Path], split: str) -> Listing:
    train, val_files, texts = _zip_index(tuple((str(z), z.stat().st_size, z.stat().st_mtime_ns) for z in zips))
    where = str(zips[0].parent)
    if f"{TOP}/wnids.txt" not in texts:
        raise DataError(f"{where}: no {TOP}/wnids.txt in {', '.join(z.name for z in zips)} (not Tiny ImageNet?)")
    wnids = _parse_wnids(texts[f"{TOP}/wnids.txt"], f"{zips[0]}:{TOP}/wnids.txt")
    val_text = texts.get(f"{TOP}/val/val_annotations.txt")
    if split == "val" and val_text is None:
        raise DataError(f"{where}: no {TOP}/val/val_annotations.txt in the zip file(s)")
    return _listing(ZipSource(zips), wnids, train, val_files, val_text or "", where, split)


@functools.lru_cache(maxsize=4)
def _zip_index(stats: tuple) -> tuple[dict, dict, dict]:
    """Read the zip directories once per process (keyed by path, size, mtime): loading train then val
    lists 110k members once, not twice."""
    train: dict[str, list] = {}
    val_files, texts = {}, {}
    for i, (path, _, _) in enumerate(stats):
        zf = open_zip(Path(path))
        for member in zf.namelist():
            if m := _TRAIN.match(member):
                train.setdefault(m.group(1), []).append((i, member))
            elif m := _VAL.match(member):
                val_files[m.group(1)] = (i, member)
            elif member in (f"{TOP}/wnids.txt", f"{TOP}/val/val_annotations.txt"):
                texts[member] = _member_text(zf, Path(path), member)
    return train, val_files, texts


def _member_text(zf, path: Path, member: str) -> str:
    """A text member of the zip (wnids.txt, val_annotations.txt) as UTF-8; a damaged, oversized or
    binary one is a one-line DataError naming it."""
    import zipfile
    import zlib

    if zf.getinfo(member).file_size > 64 << 20:  # the real ones are 2 KB and 400 KB
        raise DataError(f"{path}:{member}: {zf.getinfo(member).file_size:,} bytes is not a Tiny ImageNet text file")
    try:
        return zf.read(member).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{member}: not UTF-8 text (byte {err.start}); the zip file is damaged or not "
                        f"Tiny ImageNet") from None
    except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
        raise DataError(f"{path}:{member}: cannot be read from the zip ({' '.join(str(err).split())[:100]})") from None


def build(data_dir: Path, split: str, download: bool = False) -> Listing:
    root = find_root(data_dir, _is_root, (TOP,))
    if root is None and download:  # the official zip is read in place, so fetching it is all there is to do
        root = find_root(fetch_archive("tiny-imagenet", data_dir), _is_root, (TOP,))
    if root is None:
        raise DataError(f"{data_dir}: no Tiny ImageNet found (expected {TOP}/ with wnids.txt, or "
                        f"tiny-imagenet-200.zip / tiny-imagenet-200.partKofN.zip files)")
    if (root / "wnids.txt").is_file():
        return _from_tree(root, split)
    return _from_zips(_zips_in(root), split)


register(DatasetSpec(
    name="tiny-imagenet", splits=("train", "val"), heldout="val", build=build,
    description=f"{TOP}/ (wnids.txt, train/<wnid>/images, val/images + val_annotations.txt) or its zip file(s)",
))
