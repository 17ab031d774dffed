"""Reading and decoding image files, from folders or straight out of zip archives.

A *listing* says which files make a split (``refs`` + ``labels``) and where their bytes come from (a
``FileSource`` or a ``ZipSource``); nothing is decoded until ``decode_all`` (the in-memory/cache path)
or ``decode_one`` (the lazy DataLoader path) is called. Decoding uses torchvision.io (libjpeg-turbo,
about 3x faster than PIL on 64x64 JPEGs and pixel-identical to it), falling back to PIL for formats it
does not read.
"""

from __future__ import annotations

import functools
import io
import os
import threading
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch

from squeezelab.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff", ".gif")


@dataclass(frozen=True)
class DecodePolicy:
    """How images of varying size are brought to one size when decoded (chosen by the preset).

    ``size=None`` keeps images as they are (they must then all have one size). Otherwise the image is
    resized (``square=True``: to size x size, ignoring aspect, as Caffe's ImageNet LMDBs did;
    ``square=False``: shorter side to ``size``) and then centre-cropped to ``crop`` (default ``size``).
    Images that are already ``keep`` x ``keep`` are stored untouched (the Caffe evaluation rule).
    Datasets whose images all share one size (CIFAR, Tiny ImageNet, digits) ignore the policy and are
    stored at native size: upsampling happens on the batch, never on disk.
    """

    size: int | None = None
    square: bool = False
    crop: int | None = None
    keep: int | None = None

    @property
    def out_size(self) -> int | None:
        """Side of the stored (square) image, or None for native size."""
        if self.size is None:
            return None
        return self.crop or self.size

    def key(self) -> str:
        """A short string that changes whenever the stored pixels would (used in cache keys)."""
        if self.size is None:
            return "native"
        return f"{'sq' if self.square else 'short'}{self.size}-crop{self.out_size}-keep{self.keep}"

    def apply(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] -> uint8 [3, S, S] (or unchanged for the native policy)."""
        h, w = img.shape[-2:]
        if self.size is None or (self.keep is not None and h == w == self.keep):
            return img
        from torchvision.transforms.v2 import functional as TF  # lazy: torchvision takes ~1.5 s to import

        target = [self.size, self.size] if self.square else self.size
        if not self.square and max(h, w) > MAX_RESIZED * min(h, w):
            # the short side at `size` makes the long side size * w / h: a 1 x 60M strip asked for terabytes
            raise DataError(f"a {w}x{h} image (aspect {max(h, w) / max(min(h, w), 1):,.0f}:1) is too elongated to "
                            f"resize its short side to {self.size} px: at most {MAX_RESIZED}:1 is decoded")
        img = TF.resize(img, target, antialias=True)
        return TF.center_crop(img, [self.out_size, self.out_size])


NATIVE = DecodePolicy()
MAX_RESIZED = 64  # the longest aspect ratio resized by its short side (panoramas are ~10:1)


class FileSource:
    """Files under a root folder; refs are paths relative to ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def read(self, ref: str) -> bytes:
        from squeezelab.runtime import read_regular

        return read_regular(self.root / ref, "image file")

    def describe(self, ref: str) -> str:
        return str(self.root / ref)

    def fingerprint(self, refs: list[str]) -> list:
        """(path, size, mtime) of every file: any edit, addition or removal changes the cache key."""
        out = []
        for ref in refs:
            st = (self.root / ref).stat()
            out.append((ref, st.st_size, st.st_mtime_ns))
        return [str(self.root.resolve()), out]


class ZipSource:
    """Members of one or more zip archives; refs are ``(archive index, member name)``.

    Each thread and each process (DataLoader workers fork) opens its own handles: a ZipFile shares one
    file offset, so sharing it across forks would read garbage.
    """

    def __init__(self, zips: list[Path]):
        self.zips = [Path(z) for z in zips]
        self._local = threading.local()

    def __getstate__(self):
        return {"zips": self.zips}

    def __setstate__(self, state):
        self.__init__(state["zips"])

    def _handle(self, i: int) -> zipfile.ZipFile:
        cache = getattr(self._local, "handles", None)
        if cache is None or self._local.pid != os.getpid():
            cache = self._local.handles = {}
            self._local.pid = os.getpid()
        if i not in cache:
            cache[i] = open_zip(self.zips[i])
        return cache[i]

    def read(self, ref: tuple[int, str]) -> bytes:
        i, member = ref
        try:
            return self._handle(i).read(member)
        except (zipfile.BadZipFile, OSError, KeyError) as e:
            raise DataError(f"{self.zips[i]}: cannot read member {member} ({first_line(e)})") from None

    def describe(self, ref: tuple[int, str]) -> str:
        return f"{self.zips[ref[0]]}:{ref[1]}"

    def fingerprint(self, refs) -> list:
        # Archives are immutable units: their size + mtime stand for every member.
        return [(str(z.resolve()), z.stat().st_size, z.stat().st_mtime_ns) for z in self.zips]


def first_line(e: BaseException) -> str:
    """An exception as one short line (errors a user sees are one line, see squeezelab.errors)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip archive, turning a corrupt/truncated file into a one-line DataError."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(f"{path}: not a readable zip archive ({first_line(e)})") from None


@dataclass
class Listing:
    """The files of one split, not yet decoded."""

    name: str
    split: str
    source: FileSource | ZipSource
    refs: list
    labels: list[int]
    classes: list[str]
    fixed_size: bool  # True: every image has one native size and the decode policy is ignored
    extra: dict = field(default_factory=dict)  # e.g. class_names

    def policy_for(self, policy: DecodePolicy) -> DecodePolicy:
        return NATIVE if self.fixed_size else policy


@functools.lru_cache(maxsize=1)
def _torchvision_decoder():
    """torchvision's decode_image, imported on first use (torchvision takes ~1.5 s to import).

    torchvision 0.29 warns on every call that its decoders will move to torchcodec; that one message is
    silenced here (a targeted filter, installed once: catch_warnings is not thread-safe), and the PIL
    fallback keeps decoding working once they are gone. None when torchvision.io is unavailable.
    """
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return lambda t: decode_image(t, mode=ImageReadMode.RGB)


def decode_bytes(data: bytes, where: str) -> torch.Tensor:
    """Encoded image bytes -> uint8 [3, H, W] RGB (greyscale/CMYK/alpha converted), or DataError."""
    decoder = _torchvision_decoder()
    if decoder is not None:
        try:
            img = decoder(torch.frombuffer(bytearray(data), dtype=torch.uint8))
            if img.ndim == 4:  # an animated GIF / WebP decodes to [frames, C, H, W]: its first frame
                img = img[0]
            # 16-bit PNGs decode to uint16: keep the high byte, as PIL's 8-bit conversion does.
            return img if img.dtype == torch.uint8 else (img.to(torch.int32) >> 8).to(torch.uint8)
        except (RuntimeError, ValueError):
            pass  # a format libjpeg/libpng/libwebp does not read (e.g. BMP, TIFF): PIL below
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            arr = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
            return arr.view(im.height, im.width, 3).permute(2, 0, 1).contiguous()
    except Exception as e:  # PIL raises many types for a corrupt file; all mean the same to the user
        raise DataError(f"{where}: cannot decode image ({first_line(e)})") from None


def decode_one(listing: Listing, i: int, policy: DecodePolicy) -> torch.Tensor:
    """Decode item ``i`` of a listing at the policy's size."""
    ref = listing.refs[i]
    img = decode_bytes(listing.source.read(ref), listing.source.describe(ref))
    return listing.policy_for(policy).apply(img)


def decode_all(listing: Listing, policy: DecodePolicy, workers: int | None = None) -> torch.Tensor:
    """Decode every image of a listing into one uint8 tensor [N, 3, S, S].

    Threads help because torchvision's decoders release the GIL; chunks keep per-task overhead low.
    """
    from tqdm.auto import tqdm

    n = len(listing.refs)
    if n == 0:
        raise DataError(f"{listing.name}/{listing.split}: no images found")
    first = decode_one(listing, 0, policy)
    out = torch.empty((n, *first.shape), dtype=torch.uint8)
    workers = workers or min(4, os.cpu_count() or 1)
    chunks = [range(s, min(s + 512, n)) for s in range(0, n, 512)]

    def fill(chunk: range) -> int:
        for i in chunk:
            img = decode_one(listing, i, policy)
            if img.shape != first.shape:
                raise DataError(
                    f"{listing.source.describe(listing.refs[i])}: image is {tuple(img.shape[1:])}, expected "
                    f"{tuple(first.shape[1:])} like the others (pick a preset that resizes at decode time)"
                )
            out[i] = img
        return len(chunk)

    desc = f"decoding {listing.name}/{listing.split}"
    with ThreadPoolExecutor(workers) as pool, tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        for done in pool.map(fill, chunks):
            bar.update(done)
    return out


def list_image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted so that listings are deterministic."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found
