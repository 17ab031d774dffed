"""The two shapes a loaded split takes: ``ImageSet`` (all pixels in memory) and ``LazyImageSet``
(decoded per item, for the plain DataLoader path). Both are torch Datasets with the same
``classes`` / ``num_classes`` / ``labels`` / ``name`` / ``split``.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from squeezelab.data.decode import DecodePolicy, Listing, decode_one


class ImageSet(Dataset):
    """A split held in memory.

    ``images``: uint8 [N, 3, H, W], RGB (greyscale expanded to 3 channels), at the decode size;
    ``labels``: int64 [N]; ``classes``: list[str] in label order. Indexing gives (uint8 CHW, int).
    Hand ``images``/``labels`` to ``TensorLoader`` and augment the batches with a ``Preset``.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str], name: str, split: str):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must be [N={images.shape[0]}], got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.classes = list(classes)
        self.name = name
        self.split = split
        # False: no class list came with the data (image-list without synset_words.txt): the classes
        # are 0..max label, so a model may have more (a labelled subset of ImageNet's 1000 classes)
        self.classes_declared = True

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def subset(self, index: torch.Tensor, split: str) -> "ImageSet":
        out = ImageSet(self.images[index], self.labels[index], self.classes, self.name, split)
        out.classes_declared = self.classes_declared
        return out

    def with_classes(self, lut: torch.Tensor, classes: list[str]) -> "ImageSet":
        """The same images with label l relabelled lut[l], in the class list ``classes``."""
        return ImageSet(self.images, lut[self.labels], classes, self.name, self.split)

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.images.shape[1:]))
        return f"ImageSet({self.name}/{self.split}: {len(self)} images {shape}, {self.num_classes} classes)"


class LazyImageSet(Dataset):
    """A split decoded on access (``in_memory=False``): for folders too big for memory.

    ``__getitem__`` -> (uint8 [3, S, S] at the preset's decode size, int label). Safe to use with
    DataLoader workers (zip handles are reopened per process).
    """

    def __init__(self, listing: Listing, policy: DecodePolicy, split: str | None = None, index=None):
        self.listing = listing
        self.policy = policy
        self.index = list(range(len(listing.refs))) if index is None else [int(i) for i in index]
        self.labels = torch.tensor([listing.labels[i] for i in self.index], dtype=torch.int64)
        self.classes = list(listing.classes)
        self.name = listing.name
        self.split = split or listing.split
        self.lut: torch.Tensor | None = None  # relabelling of with_classes
        self.classes_declared = listing.extra.get("classes_declared", True)  # as ImageSet's

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.index[i]
        label = self.listing.labels[j]
        return decode_one(self.listing, j, self.policy), label if self.lut is None else int(self.lut[label])

    def subset(self, index: torch.Tensor, split: str) -> "LazyImageSet":
        out = LazyImageSet(self.listing, self.policy, split, [self.index[int(i)] for i in index])
        if self.lut is not None:
            out.lut, out.classes, out.labels = self.lut, self.classes, self.labels[torch.as_tensor(index)]
        return out

    def with_classes(self, lut: torch.Tensor, classes: list[str]) -> "LazyImageSet":
        out = LazyImageSet(self.listing, self.policy, self.split, self.index)
        out.lut = lut if self.lut is None else lut[self.lut]
        out.labels, out.classes, out.classes_declared = lut[self.labels], list(classes), True
        return out

    def describe(self, i: int) -> str:
        """Where item ``i`` comes from (a path, or archive:member)."""
        return self.listing.source.describe(self.listing.refs[self.index[i]])

    def __repr__(self) -> str:
        return f"LazyImageSet({self.name}/{self.split}: {len(self)} images, {self.num_classes} classes)"


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held_out): ``fraction`` of every class held out, chosen by ``seed``.

    Stratified so that a 10% validation split of CIFAR has 10% of each class (report 001: 45k/5k);
    deterministic for a given (labels, fraction, seed) on every machine (CPU generator).
    """
    g = torch.Generator().manual_seed(seed)
    keep, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        held.append(idx[:k])
        keep.append(idx[k:])
    return torch.cat(keep).sort().values, torch.cat(held).sort().values


def stratified_three_way(labels: torch.Tensor, fraction: float, seed: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Indices (train, val, test) partitioning ``labels``: for every class of n images,
    ``round(n * fraction)`` go to val, as many to test, the rest to train (report 003: 0.1 -> 80/10/10).

    ``fraction`` must be in (0, 0.5); then 2 * round(n * fraction) <= n, so train is never negative.
    Chosen by ``seed``, deterministic on every machine (CPU generator), like ``stratified_split``.
    """
    if not 0.0 < fraction < 0.5:
        raise ValueError(f"fraction must be in (0, 0.5), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    train, val, test = [], [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        val.append(idx[:k])
        test.append(idx[k:2 * k])
        train.append(idx[2 * k:])
    return tuple(torch.cat(part).sort().values for part in (train, val, test))
