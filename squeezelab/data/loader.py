"""TensorLoader: batches straight out of a uint8 tensor that lives on the training device.

The fast path for datasets that fit in (GPU) memory (airbench's lesson: no worker processes, no
per-image Python, no host->device copy per step). Pair it with a Preset, which augments the batch on
the same device: ``for x, y in loader: logits = model(preset.train(x, generator=g))``.
"""

from __future__ import annotations

import torch


class TensorLoader:
    """Iterate (uint8 images [B, 3, H, W], int64 labels [B]) on ``device``.

    images/labels: the whole split (e.g. ``ImageSet.images`` / ``.labels``); copied to ``device`` once
    (through pinned memory on CUDA). shuffle: a new order each epoch from a CPU torch.Generator seeded
    by (seed, epoch), identical on every machine and every rank. drop_last: drop the final short batch.
    rank/world_size: DDP sharding like DistributedSampler — each rank takes every world_size-th index
    of the (shuffled) order, padded by wrapping around so all ranks run the same number of steps
    (or truncated with drop_last). Epochs: ``set_epoch(e)`` selects the order; a completed pass
    advances the epoch by one, so forgetting set_epoch still reshuffles. ``len()`` = batches per epoch.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *, shuffle: bool,
                 drop_last: bool, device: str | torch.device = "cpu", seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        if batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world_size, got {batch_size}, {rank}, {world_size}")
        self.device = torch.device(device)
        self.images = self._to_device(images)
        self.labels = self._to_device(labels.to(torch.int64))
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if t.device == self.device:
            return t
        if self.device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _per_rank(self) -> int:
        n = self.images.shape[0]
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __len__(self) -> int:
        per_rank = self._per_rank()
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def indices(self) -> torch.Tensor:
        """This rank's sample indices for the current epoch (CPU)."""
        n = self.images.shape[0]
        if self.shuffle:
            # Mix seed and epoch into one 63-bit seed so (seed, epoch) pairs never collide in practice.
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % (2**63))
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        total = self._per_rank() * self.world_size
        if total > n:  # pad by wrapping, as DistributedSampler does
            order = order.repeat(-(-total // n))
        return order[:total][self.rank :: self.world_size]

    def __iter__(self):
        idx = self.indices().to(self.device)
        for b in range(len(self)):
            sel = idx[b * self.batch_size : (b + 1) * self.batch_size]
            yield self.images[sel], self.labels[sel]
        self.epoch += 1
