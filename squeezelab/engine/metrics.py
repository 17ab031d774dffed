"""Metrics: top-k counts, sums that can be all-reduced over processes, the metrics.jsonl log, and
progress output (a tqdm bar on a terminal, plain log lines otherwise)."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import torch

from squeezelab.runtime import atomic_write_text


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> list[torch.Tensor]:
    """Number of rows whose target is among the top-k logits, for each k (k capped at #classes).
    Returned as 0-d tensors on the logits' device, so callers can sum without a host sync."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices  # [N, kmax]
    hit = top.eq(targets.view(-1, 1))
    return [hit[:, : min(k, kmax)].any(dim=1).sum() for k in ks]


class Sums:
    """Running sums kept on the device (no per-step sync); ``reduce`` all-reduces across ranks."""

    def __init__(self, names: Iterable[str], device: torch.device):
        self.names = list(names)
        self.values = torch.zeros(len(self.names), dtype=torch.float64, device=device)

    def add(self, **values: torch.Tensor | float) -> None:
        for name, value in values.items():
            self.values[self.names.index(name)] += value

    def reduce(self) -> dict[str, float]:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.values)
        return dict(zip(self.names, self.values.tolist()))


def is_finite(x: float) -> bool:
    return math.isfinite(x)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per epoch. The whole file is rewritten atomically each time,
    so a crash leaves either the old or the new version, and a resumed run can drop later epochs."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        if self.path.is_file():
            self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate(self, last_epoch: int) -> None:
        """Forget epochs after ``last_epoch`` (1-based) — they belong to an interrupted attempt."""
        self.rows = [r for r in self.rows if r["epoch"] <= last_epoch]
        self._write()

    def append(self, row: dict) -> None:
        self.rows.append(row)
        self._write()

    def _write(self) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.rows))


class Progress:
    """Iterate with a tqdm bar when stderr is a terminal, else print a line every ``every`` seconds."""

    def __init__(self, iterable, total: int, desc: str, enabled: bool = True, every: float = 30.0):
        self.iterable, self.total, self.desc, self.every = iterable, total, desc, every
        self.enabled = enabled
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
        self.postfix = ""

    def set(self, text: str) -> None:
        self.postfix = text
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)

    def __iter__(self) -> Iterator:
        last = time.perf_counter()
        try:
            for i, item in enumerate(self.iterable, 1):
                yield item
                if self.bar is not None:
                    self.bar.update(1)
                elif self.enabled and time.perf_counter() - last > self.every:
                    last = time.perf_counter()
                    log(f"{self.desc} {i}/{self.total} {self.postfix}")
        finally:  # also when the consumer stops early (max_steps) or raises (NaN)
            if self.bar is not None:
                self.bar.close()


def log(message: str) -> None:
    """A plain log line on stderr (stdout stays for results, e.g. ``eval --json``)."""
    print(message, file=sys.stderr, flush=True)
