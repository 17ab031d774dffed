"""Loaders the engine trains and evaluates from: (uint8 batch, int64 labels) on the device.

In-memory sets (``ImageSet``: one uint8 tensor) go through ``TensorLoader`` (batched slicing, no
workers, no per-sample Python). Sets decoded per item (``in_memory: false``) go through a torch
DataLoader with a DistributedSampler (which also shards for a single process and reshuffles per epoch
from (seed, epoch), keeping resume exact).

Evaluation is sharded by hand, ``images[rank::world_size]``, so the all-reduced sums count every image
exactly once (a DistributedSampler would pad with repeats).
"""

from __future__ import annotations

import os

import torch

from squeezelab.runtime import DistInfo


def _is_in_memory(dataset) -> bool:
    return isinstance(getattr(dataset, "images", None), torch.Tensor)


def train_loader(dataset, batch_size: int, seed: int, device: torch.device, info: DistInfo,
                 workers: int | None = None):
    """Shuffled, drop-last batches of this rank's share; has ``set_epoch(e)`` and ``len()``."""
    if _is_in_memory(dataset):
        from squeezelab.data import TensorLoader

        return TensorLoader(dataset.images, dataset.labels, batch_size, shuffle=True, drop_last=True,
                            device=device, seed=seed, rank=info.rank, world_size=info.world_size)
    return StreamLoader(dataset, batch_size, shuffle=True, drop_last=True, seed=seed, info=info, workers=workers)


def eval_loader(dataset, batch_size: int, device: torch.device, info: DistInfo, workers: int | None = None):
    """This rank's disjoint shard of ``dataset`` in order, all images once."""
    if _is_in_memory(dataset):
        from squeezelab.data import TensorLoader

        images, labels = dataset.images[info.rank :: info.world_size], dataset.labels[info.rank :: info.world_size]
        return TensorLoader(images, labels, batch_size, shuffle=False, drop_last=False, device=device, seed=0)
    shard = torch.utils.data.Subset(dataset, range(info.rank, len(dataset), info.world_size))
    return StreamLoader(shard, batch_size, shuffle=False, drop_last=False, seed=0, info=DistInfo(), workers=workers)


class StreamLoader:
    """A DataLoader over a per-item Dataset with the TensorLoader interface (set_epoch, len)."""

    def __init__(self, dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int, info: DistInfo,
                 workers: int | None = None):
        from torch.utils.data import DataLoader, DistributedSampler

        self.sampler = DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                          shuffle=shuffle, seed=seed, drop_last=drop_last)
        workers = min(4, os.cpu_count() or 1) if workers is None else workers
        self.loader = DataLoader(dataset, batch_size, sampler=self.sampler, drop_last=drop_last,
                                 num_workers=workers, pin_memory=torch.cuda.is_available(),
                                 persistent_workers=workers > 0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)
