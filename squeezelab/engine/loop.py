"""The training loop: ``train_one_epoch`` and ``evaluate`` (each fits on a screen); ``fit`` (engine/run.py)
drives them through a ``Run``. Of the engine this imports only ``metrics``: the engine's imports have no circle.

Determinism / exact resume: every epoch re-seeds torch's generator and the augmentation generator
from (seed, epoch, rank) and the loader shuffles by (seed, epoch), so an epoch's randomness is a pure
function of its index. A run resumed from the checkpoint written after epoch k therefore replays
epochs k+1.. exactly as the uninterrupted run did (bit-identical on CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from squeezelab import runtime
from squeezelab.engine.metrics import Progress, Sums, topk_correct
from squeezelab.errors import TrainingError


@dataclass
class StepOptions:
    """How each step runs (resolved from the config for the device at hand)."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_clip: float | None = None
    max_steps: int | None = None  # global cap on optimizer steps
    check_every: int = 25  # steps between host syncs that check the loss is finite
    scaler: torch.amp.GradScaler | None = None  # fp16 only (runtime.needs_grad_scaler)
    compile: bool = False  # the model is wrapped in torch.compile (runtime.resolve_compile)
    # Objects with before_step(step) / before_update() / after_update(), called before each step's
    # forward pass, between backward and the optimizer step, and after it (e.g. pruning masks).
    hooks: tuple = ()


class InputLoss(nn.Module):
    """A loss that also needs the step's input batch (distillation runs the teacher on it):
    called as ``loss(logits, labels, inputs)`` instead of ``loss(logits, labels)``."""


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def _prepare_batch(x: torch.Tensor, fn: Callable, channels_last: bool, device: torch.device) -> torch.Tensor:
    x = fn(x.to(device, non_blocking=True))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    preset,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    *,
    device: torch.device,
    lr_at: Callable[[int], float],
    start_step: int,
    opts: StepOptions,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> dict:
    """One pass over ``loader``. ``lr_at(step)`` sets the lr before each step (schedules are pure
    functions of the global step). Returns {"train_loss", "images", "steps", "lr"}; raises
    TrainingError if the loss stops being finite (checked every ``opts.check_every`` steps)."""
    model.train()
    sums = Sums(["loss", "n"], device)
    step, lr = start_step, float("nan")
    batches = progress if progress is not None else loader
    for x, y in batches:
        if opts.max_steps is not None and step >= opts.max_steps:
            break
        lr = lr_at(step)
        for hook in opts.hooks:
            hook.before_step(step)
        x = _prepare_batch(x, lambda b: preset.train(b, generator=generator), opts.channels_last, device)
        y = y.to(device, non_blocking=True)
        with _autocast(device, opts.amp_dtype):
            logits = model(x)
            loss = criterion(logits, y, x) if isinstance(criterion, InputLoss) else criterion(logits, y)
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(model, optimizer, loss, opts)
        step += 1
        sums.add(loss=loss.detach().float() * len(y), n=len(y))
        if (step - start_step) % opts.check_every == 0:
            _check_finite(sums, step, progress)
    totals = sums.reduce()
    mean = totals["loss"] / max(1.0, totals["n"])
    if not math.isfinite(mean):
        raise _nan_error(step, mean)
    return {"train_loss": mean, "images": int(totals["n"]), "steps": step - start_step, "lr": lr}


def backward_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                       opts: StepOptions) -> None:
    """backward + optional gradient clipping + step; with fp16 through the GradScaler, which skips
    steps whose gradients overflowed and adapts the scale (clipping sees unscaled gradients)."""
    scaler = opts.scaler
    (scaler.scale(loss) if scaler else loss).backward()
    for hook in opts.hooks:
        hook.before_update()
    if opts.grad_clip:
        if scaler:
            scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    for hook in opts.hooks:
        hook.after_update()


def _check_finite(sums: Sums, step: int, progress: Progress | None) -> None:
    values = sums.values.clone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(values)  # all ranks must stop at the same step, or DDP hangs
    loss_sum, n = values.tolist()
    if not math.isfinite(loss_sum):
        raise _nan_error(step, loss_sum)
    if progress is not None:
        progress.set(f"loss {loss_sum / max(1.0, n):.4f}")


def _nan_error(step: int, value: float) -> TrainingError:
    return TrainingError(f"loss became {value} at step {step}; stopping (lower optim.lr or add warmup)")


def early_stopping(best_top5: float, bad_epochs: int, top5: float, patience: int | None,
                   threshold: float) -> tuple[float, int, bool]:
    """Report 000's rule: once the best val top-5 (a fraction) has reached ``threshold``, stop after
    ``patience`` epochs in a row without a new best (their SN_lr1: best top-5 79.41% at epoch 95,
    stopped at 146 with patience 50 and threshold 0.79). -> (best_top5, bad_epochs, stop)."""
    if top5 > best_top5:
        return top5, 0, False
    if patience is None or best_top5 < threshold:
        return best_top5, bad_epochs, False
    return best_top5, bad_epochs + 1, bad_epochs + 1 >= patience


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    preset,
    device: torch.device | str,
    *,
    amp: str | torch.dtype | None = "auto",
    channels_last: bool | str = False,
    distributed: bool = False,
    teacher: nn.Module | None = None,
) -> dict:
    """Top-1 / top-5 (fractions), mean cross-entropy and count over ``loader``'s (uint8, label)
    batches. ``distributed=True``: each rank saw a disjoint shard and the sums are all-reduced.
    ``teacher``: also ``agreement`` (fraction of images where both predict the same class) and
    ``kl`` (mean KL(teacher || model) at temperature 1): what distillation is judged by when the
    labels do not cover the model's classes."""
    device = torch.device(device)
    dtype = runtime.resolve_amp(amp, device) if isinstance(amp, str) else amp
    cl = runtime.resolve_channels_last(channels_last, device) if isinstance(channels_last, str) else channels_last
    model.eval()
    sums = Sums(["loss", "top1", "top5", "n", "agree", "kl"], device)
    for x, y in loader:
        x = _prepare_batch(x, preset.eval, cl, device)
        y = y.to(device, non_blocking=True)
        with _autocast(device, dtype):
            logits = model(x)
            reference = teacher(x) if teacher is not None else None
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        top1, top5 = topk_correct(logits, y, (1, 5))
        sums.add(loss=loss, top1=top1, top5=top5, n=len(y), **_teacher_sums(logits, reference))
    totals = sums.reduce() if distributed else dict(zip(sums.names, sums.values.tolist()))
    n = max(1.0, totals["n"])
    out = {"top1": totals["top1"] / n, "top5": totals["top5"] / n, "loss": totals["loss"] / n, "n": int(totals["n"])}
    if teacher is not None:
        out.update(agreement=totals["agree"] / n, kl=totals["kl"] / n)
    return out


def _teacher_sums(logits: torch.Tensor, reference: torch.Tensor | None) -> dict:
    if reference is None:
        return {"agree": 0.0, "kl": 0.0}
    agree = (logits.argmax(1) == reference.argmax(1)).sum()
    kl = nn.functional.kl_div(logits.float().log_softmax(1), reference.float().log_softmax(1), log_target=True,
                              reduction="sum")
    return {"agree": agree, "kl": kl}


# --------------------------------------------------------------------------------------------
# fit: the whole run. The pieces live in engine/run.py (building) and here (looping).
# --------------------------------------------------------------------------------------------


@dataclass
class RunState:
    """What changes from epoch to epoch and must survive a resume (stored in checkpoint metadata)."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    best: dict = field(default_factory=lambda: {"metric": "top1", "value": None, "epoch": None})
    best_top5: float = -1.0
    es_bad_epochs: int = 0
    plateau: dict = field(default_factory=dict)
    stopped_early: bool = False

    def to_meta(self) -> dict:
        return dict(self.__dict__)
