"""``squeezelab predict``: top-k classes of image files, with the weights' own preprocessing.

Through torch (any ``--weights``) or any exported file (``--file``: ONNX, OpenVINO, LiteRT, ExecuTorch;
its metadata carries the preset and class names), in its own runtime. Each image is decoded on its own: a file that cannot be read (corrupt, not an
image, an odd mode, larger than ``MAX_PIXELS``) gets one line on stderr and the others are still
predicted.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from squeezelab.errors import ConfigError, DataError

MAX_PIXELS = 8192 * 8192  # larger images would take gigabytes to decode: refused, with the reason


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[int, str, float]]  # (class index, name, probability)


def image_paths(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to the image files in them (sorted); a missing path -> DataError."""
    from squeezelab.data.decode import list_image_files

    out = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += list_image_files(p)
        elif p.exists():
            out.append(p)
        else:
            raise DataError(f"image not found: {p}")
    if not out:
        raise DataError(f"no image files in {', '.join(items)}")
    return out


def load_image(path: Path) -> torch.Tensor:
    """uint8 [3, H, W] RGB; unreadable or too large -> DataError (one line)."""
    from PIL import Image

    from squeezelab.data.decode import decode_bytes, first_line
    from squeezelab.runtime import read_regular

    data = read_regular(path, "image")
    try:
        with Image.open(io.BytesIO(data)) as im:  # reads the header only: the size before decoding
            w, h = im.size
    except Image.DecompressionBombError:
        raise DataError(f"{path}: larger than the {MAX_PIXELS:,} pixels predict decodes") from None
    except Image.UnidentifiedImageError:
        raise DataError(f"{path}: not an image (no image format recognised)") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for damaged headers
        raise DataError(f"{path}: not a readable image ({first_line(err)})") from None
    if w * h > MAX_PIXELS:
        raise DataError(f"{path}: {w}x{h} pixels is larger than the {MAX_PIXELS:,} predict decodes")
    return decode_bytes(data, str(path))


class Predictor:
    """Weights (torch) or an exported file in its runtime, its preset and class names;
    ``top(image, k)``."""

    def __init__(self, weights: str | None = None, file: str | None = None, classes: list[str] | None = None,
                 backend: str | None = None):
        from squeezelab.data import get_preset
        from squeezelab.deploy.backends import check_metadata, load_file

        if (weights is None) == (file is None):
            raise ConfigError("predict needs --weights or --file (one of them)")
        self.loaded = load_file(weights or file, backend="torch" if weights else backend)
        meta = check_metadata(weights or file, self.loaded.meta)
        self.run = self.loaded.run
        self.preset = get_preset(meta["preset"]["name"])
        self.classes = classes or meta.get("classes")

    def prepare(self, image: torch.Tensor) -> torch.Tensor:
        """One decoded image -> the network's input [1, 3, S, S] (the preset's eval transform)."""
        policy = self.preset.decode_eval
        return self.preset.eval(policy.apply(image)[None]).numpy()

    def top(self, image: torch.Tensor, k: int) -> list[tuple[int, str, float]]:
        logits = self.run(self.prepare(image))[0].astype(np.float64)
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = np.argsort(-p)[:k]
        self.classes = imagenet_names(self.classes, len(p))
        name = (lambda i: self.classes[i] if self.classes and i < len(self.classes) else str(i))
        return [(int(i), name(int(i)), float(p[i])) for i in order]


def imagenet_names(classes: list[str] | None, outputs: int) -> list[str] | None:
    """ImageNet's category names (torchvision ships them) for a 1000-class model whose classes are
    unnamed, are indices, or are WordNet ids in ImageNet's standard (sorted) order, so that the authors'
    file prints "tabby cat", not "281"; any other class list is kept as it is."""
    if classes and len(classes) != outputs:  # not one name per output (e.g. a source dataset's 200 wnids)
        classes = None
    if outputs != 1000:
        return classes
    wnid = lambda c: len(c) == 9 and c[0] == "n" and c[1:].isdigit()
    plain = not classes or (len(classes) == 1000 and all(str(c).isdigit() or wnid(str(c)) for c in classes)
                            and [c for c in classes if wnid(str(c))] == sorted(c for c in classes if wnid(str(c))))
    if not plain:
        return classes
    try:
        from torchvision.models import AlexNet_Weights

        return list(AlexNet_Weights.IMAGENET1K_V1.meta["categories"])
    except (ImportError, AttributeError, KeyError):
        return classes


def read_class_names(path: str) -> list[str]:
    """A class list: one class per line in output order; ImageNet's synset_words.txt works as is
    (``n01440764 tench, Tinca tinca``: the words after the id are the name)."""
    from squeezelab.runtime import read_regular

    try:
        text = read_regular(path, "class list", max_bytes=64 << 20).decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: cannot read the class names ({type(err).__name__})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return [line.split(maxsplit=1)[1] if len(line.split(maxsplit=1)) == 2 and line[:1] == "n" and
            line.split()[0][1:].isdigit() else line for line in lines]
