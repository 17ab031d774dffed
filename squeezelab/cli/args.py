"""argparse types for numeric options: a value out of range is a one-line usage error (exit 2) at
parse time, before it can reach torch (``--batch-size 0`` used to end in a DataLoader traceback and
``--input-size 0`` silently meant the default)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# The same cap as every config number: past 2^32 nothing means anything (seeds end there).
from squeezelab.config import MAX_MAGNITUDE


def _parse(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    if abs(value) > MAX_MAGNITUDE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_MAGNITUDE:,} in magnitude, got {text}")
    return value


def integer(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    """An int in [lo, hi] (either end optional)."""

    def parse(text: str) -> int:
        value = _parse(text, int)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_range(lo, hi)}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Callable[[str], float]:
    """A finite float in the range [lo, hi] (or open at either end)."""

    def parse(text: str) -> float:
        value = _parse(text, float)
        low_bad = lo is not None and (value <= lo if lo_open else value < lo)
        high_bad = hi is not None and (value >= hi if hi_open else value > hi)
        if low_bad or high_bad:
            parts = [f"{'>' if lo_open else '>='} {lo:g}"] if lo is not None else []
            parts += [f"{'<' if hi_open else '<='} {hi:g}"] if hi is not None else []
            raise argparse.ArgumentTypeError(f"must be {' and '.join(parts)}, got {value:g}")
        return value

    parse.__name__ = "number"
    return parse


def _range(lo, hi) -> str:
    return " and ".join(([f">= {lo}"] if lo is not None else []) + ([f"<= {hi}"] if hi is not None else []))


# The options several commands share.
COUNT = integer(1)  # batch sizes, epochs, images, iterations
THREADS = integer(1, 1024)
SEED = integer(0, 2**32 - 1)  # numpy's seed range
FRACTION = number(0.0, 0.5, hi_open=True)  # --val-fraction: val and test part each
POSITIVE = number(0.0, lo_open=True)  # learning rates

# Every --weights takes the same formats (squeezelab.weights.load_weights recognises them by content).
WEIGHTS_HELP = "a run folder, a .safetensors checkpoint, a .sqz file, the authors' .net or a torchvision .pth"
