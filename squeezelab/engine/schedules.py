"""Learning-rate schedules as pure functions of the optimizer step.

``lr_factor(cfg, step, steps_per_epoch, total_steps)`` returns the multiplier of the peak lr for the
step about to be taken (0-based). Only reduce-on-plateau depends on the past (val losses), so it is a
tiny state object whose multiplier is folded in by the caller; its state is a JSON-able dict.

Schedules (report numbers refer to the seed reports):
- ``fixed``: 1.
- ``poly``: (1 - t/T)^power; power 1 is the SqueezeNet paper's linear decay to zero.
- ``step``: multiplied by ``step_factor`` (0.1) every ``step_size`` epochs (report 001).
- ``plateau``: halved after ``plateau_patience`` (3) epochs without val-loss improvement (report 001).
- ``cosine``: half-cosine from 1 to ``min_factor``.
- ``onecycle``: linear up over the warmup, then linear down to ``min_factor`` (airbench-style).
``warmup_epochs`` > 0 multiplies any of them by a linear ramp from 1/W to 1 over the first W epochs;
``hold_epochs`` > 0 makes the decaying ones reach their floor that many epochs early and hold it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from squeezelab.config import ScheduleConfig


def lr_factor(cfg: ScheduleConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based) of ``total_steps``."""
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    return ramp * _decay(cfg, step, steps_per_epoch, total_steps, warmup)


def _decay(cfg: ScheduleConfig, step: int, steps_per_epoch: int, total_steps: int, warmup: int) -> float:
    name, floor = cfg.name, cfg.min_factor
    if name in ("fixed", "plateau"):
        return 1.0
    if name == "step":
        return cfg.step_factor ** (step // (cfg.step_size * steps_per_epoch))
    # the decaying schedules start after the warmup and reach their floor at the last step, or
    # hold_epochs before it (and stay there)
    end = max(warmup + 1, total_steps - round(cfg.hold_epochs * steps_per_epoch))
    t = min(1.0, max(0.0, (step - warmup) / max(1, end - warmup)))
    if name == "poly":
        return floor + (1 - floor) * (1 - t) ** cfg.power
    if name == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    if name == "onecycle":
        return floor + (1 - floor) * (1 - t)
    raise ValueError(f"unknown schedule {name!r}")


@dataclass
class Plateau:
    """Reduce-on-plateau: multiply the lr by ``factor`` after ``patience`` epochs without a new best
    val loss (an improvement must beat the best by ``rel_tol`` relative, as torch's default 1e-4)."""

    factor: float = 0.5
    patience: int = 3
    rel_tol: float = 1e-4
    best: float = math.inf
    bad_epochs: int = 0
    scale: float = 1.0  # current multiplier

    def update(self, val_loss: float) -> float:
        if val_loss < self.best * (1 - self.rel_tol):
            self.best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs >= self.patience:
                self.scale *= self.factor
                self.bad_epochs = 0
        return self.scale

    def state_dict(self) -> dict:
        return {"best": self.best if math.isfinite(self.best) else None, "bad_epochs": self.bad_epochs,
                "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.best = math.inf if state.get("best") is None else state["best"]
        self.bad_epochs, self.scale = state["bad_epochs"], state["scale"]
