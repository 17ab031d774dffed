"""TensorBoard event files beside a run's metrics.jsonl, when the ``tensorboard`` package is installed
(the ``experiments`` extra), so that ``tensorboard --logdir runs/`` or ``--logdir studies/X`` shows
runs and studies. The run folder stays the source of truth: events are a view of metrics.jsonl and
summary.json, written after them; a failure to write one never fails a run.

    <run>/tensorboard/events.*          per epoch: loss/train, loss/val, accuracy/top1, accuracy/top5,
                                        lr, speed/images_per_second, speed/epoch_seconds
    <run>/tensorboard/hparams/events.*  a sweep trial's searched parameters and seed with its scores
                                        (TensorBoard's HParams tab compares the study's trials)
"""

from __future__ import annotations

import warnings
from pathlib import Path

SCALARS = (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/top1", "top1"),
           ("accuracy/top5", "top5"), ("lr", "lr"), ("speed/images_per_second", "images_per_second"),
           ("speed/epoch_seconds", "epoch_seconds"))


def _writer(log_dir: Path, purge_step: int | None = None):
    """A SummaryWriter, or None when tensorboard is not installed or the folder cannot be written."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    try:
        return SummaryWriter(str(log_dir), purge_step=purge_step)
    except OSError:
        return None


class EventLog:
    """Per-epoch scalars of one run. ``first_epoch``: the epochs already done (a resumed run purges the
    events of an interrupted attempt after them, as metrics.jsonl drops its rows)."""

    def __init__(self, run_dir: Path, first_epoch: int = 0):
        self.writer = _writer(Path(run_dir) / "tensorboard", purge_step=first_epoch + 1 if first_epoch else None)

    def epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        try:
            for tag, key in SCALARS:
                if isinstance(row.get(key), (int, float)):
                    self.writer.add_scalar(tag, row[key], row["epoch"])
            self.writer.flush()
        except OSError:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except OSError:
                pass
            self.writer = None


def write_hparams(run_dir: Path, params: dict, metrics: dict) -> bool:
    """A sweep trial's parameters (numbers, strings, booleans; anything else as text) and its scores."""
    writer = _writer(Path(run_dir) / "tensorboard" / "hparams")
    if writer is None:
        return False
    from torch.utils.tensorboard.summary import hparams

    clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in params.items()}
    scores = {f"hparam/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    try:  # what SummaryWriter.add_hparams writes, without the extra writer (and file) it opens
        for summary in hparams(clean, scores):
            writer._get_file_writer().add_summary(summary)
        for tag, value in scores.items():
            writer.add_scalar(tag, value)
        writer.close()
        return True
    except (OSError, ValueError, TypeError):
        return False
