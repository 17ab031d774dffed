"""Training with compression: every enabled method of the compression registry
(``compression.methods``: ``prune``, ``share``, ``ecq``, ...) as engine parts, and ``distill`` as the loss.

- each method's training hook (a Pruner's masks held through every optimizer step, on its schedule;
  shared layers whose codebooks train) goes into StepOptions; ``lr_factor`` and ``final_form`` come
  from the hooks (DSD's release and lower lr).
- ``distill`` -> the loss mixes the teacher's soft targets with the labels.

Checkpoints stay ordinary model checkpoints (plain weights under ``model.*``, so ``eval`` reads them as
any other); each method's state travels as extra tensors named after its section (``prune.mask.<layer>``,
``share.codes.<layer>``, ``share.codebook.<layer>``) and JSON (``compression.<section>``), which is what
makes ``--resume`` exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from squeezelab.compression import methods
from squeezelab.compression.distill import distillation_loss
from squeezelab.config import RunConfig
from squeezelab.engine.loop import InputLoss
from squeezelab.errors import ConfigError


@dataclass
class TrainingCompression:
    """The hooks a run's compression methods gave, by section; ``hooks`` go into StepOptions."""

    by_section: dict[str, methods.Hook] = field(default_factory=dict)

    @property
    def hooks(self) -> tuple:
        return tuple(self.by_section.values())

    def lr_factor(self, step: int) -> float:
        return math.prod(h.lr_factor(step) for h in self.by_section.values())

    def final_form(self, step: int) -> bool:
        """Whether the model at ``step`` has the form the run ends in (pruned to its target; for DSD
        dense again): only such epochs may become best.safetensors."""
        return all(h.final_form(step) for h in self.by_section.values())

    def state(self, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON meta by section, tensors) to store in a checkpoint."""
        meta, tensors = {}, {}
        for section, hook in self.by_section.items():
            m, t = hook.state(model)
            if m or t:
                meta[section] = m
                tensors.update(t)
        return meta, tensors


def setup(cfg: RunConfig, model: nn.Module, *, steps_per_epoch: int, total_steps: int,
          resume: tuple[dict, dict] | None = None, data=None) -> TrainingCompression:
    """Apply the config's compression method to ``model`` (before its optimizer is built). ``resume``:
    (checkpoint meta ``compression``, extra tensors) of the run being continued. ``data``:
    (training ImageSet, preset), for methods that calibrate on images."""
    meta, tensors = resume or ({}, {})
    ctx = methods.Context(seed=cfg.train.seed, epochs=cfg.train.epochs, steps_per_epoch=steps_per_epoch,
                          total_steps=total_steps, data=data)
    out = TrainingCompression()
    for method, section in methods.check_one_per_run(cfg):
        state = (meta[method.section], tensors) if method.section in meta else None
        out.by_section[method.section] = method.training(model, section, ctx, state)
    return out


class DistillLoss(InputLoss):
    """Soft targets of a frozen teacher on the same (augmented) batch, mixed with the labels."""

    def __init__(self, teacher: nn.Module, temperature: float, alpha: float, labels: bool, label_smoothing: float):
        super().__init__()
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.alpha, self.labels, self.label_smoothing = temperature, alpha, labels, label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.teacher(x)
        return distillation_loss(logits, target, y if self.labels else None, temperature=self.temperature,
                                 alpha=self.alpha, label_smoothing=self.label_smoothing)


def criterion(cfg: RunConfig, teacher: nn.Module | None) -> nn.Module:
    """Cross-entropy, or the distillation loss when the run has a teacher."""
    if teacher is None:
        return nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
    d = cfg.distill
    if d.temperature <= 0 or not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(f"distill: temperature must be > 0 and alpha in [0, 1]; got {d.temperature}, {d.alpha}")
    return DistillLoss(teacher, d.temperature, d.alpha, d.labels, cfg.train.label_smoothing)


def teacher_path(cfg: RunConfig) -> str | None:
    """distill.teacher resolved ("init": the weights the run starts from)."""
    t = cfg.distill.teacher
    if t == "init":
        if cfg.model.weights is None:
            raise ConfigError("distill.teacher: init needs model.weights (the weights the run starts from)")
        return cfg.model.weights
    return t
