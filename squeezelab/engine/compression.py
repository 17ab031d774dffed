"""Training with compression: the config's ``prune``, ``share`` and ``distill`` sections as engine parts.

- ``prune`` -> a :class:`~squeezelab.compression.prune.Pruner` step hook (masks held through every
  optimizer step, on its schedule; DSD's release and lower lr).
- ``share`` -> every selected layer's weight becomes ``codebook[codes]`` (k-means at the start, or the
  codebooks of the checkpoint being resumed); the optimizer then trains the codebooks.
- ``distill`` -> the loss mixes the teacher's soft targets with the labels.

Checkpoints stay ordinary model checkpoints (plain weights under ``model.*``, so ``eval`` reads them as
any other); the masks and codebooks travel as extra tensors (``prune.mask.<layer>``,
``share.codes.<layer>``, ``share.codebook.<layer>``) and JSON (``compression``), which is what makes
``--resume`` exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from squeezelab.compression import prune, share
from squeezelab.compression.distill import distillation_loss
from squeezelab.config import RunConfig
from squeezelab.engine.loop import InputLoss
from squeezelab.errors import ConfigError


@dataclass
class TrainingCompression:
    """What a run's compression sections built; ``hooks`` go into StepOptions."""

    pruner: prune.Pruner | None = None
    shared: dict[str, share.Shared] = field(default_factory=dict)

    @property
    def hooks(self) -> tuple:
        return (self.pruner,) if self.pruner is not None else ()

    def lr_factor(self, step: int) -> float:
        return self.pruner.lr_factor(step) if self.pruner is not None else 1.0

    def final_form(self, step: int) -> bool:
        """Whether the model at ``step`` has the form the run ends in (pruned to its target; for DSD
        dense again): only such epochs may become best.safetensors."""
        return self.pruner is None or self.pruner.final_form(step)

    def state(self, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON meta, tensors) to store in a checkpoint."""
        meta, tensors = {}, {}
        if self.pruner is not None:
            meta["prune"] = self.pruner.state_meta()
            tensors.update(self.pruner.state_tensors())
        shared = share.current(model)
        if shared:
            meta["share"] = {name: {"zero": s.zero} for name, s in shared.items()}
            for name, s in shared.items():
                tensors[f"share.codes.{name}"] = s.codes.to(torch.int32)
                tensors[f"share.codebook.{name}"] = s.codebook
        return meta, tensors


def setup(cfg: RunConfig, model: nn.Module, *, steps_per_epoch: int, total_steps: int,
          resume: tuple[dict, dict] | None = None, data=None) -> TrainingCompression:
    """Apply the config's compression to ``model`` (before its optimizer is built). ``resume``:
    (checkpoint meta ``compression``, extra tensors) of the run being continued. ``data``:
    (training ImageSet, preset), for share.importance "fisher"."""
    if cfg.prune.enabled and cfg.share.enabled:
        raise ConfigError("prune and share in one run: prune first, then share in a second run "
                          "(squeezelab compress runs them as stages)")
    meta, tensors = resume or ({}, {})
    out = TrainingCompression()
    if cfg.prune.enabled:
        out.pruner = _pruner(cfg, model, steps_per_epoch, total_steps)
        if "prune" in meta:
            out.pruner.load_state(meta["prune"], tensors)
    if cfg.share.enabled:
        spec = share.ShareSpec(cfg.share.bits, cfg.share.layers, cfg.share.exclude, cfg.share.init, cfg.train.seed)
        restored = _restored_shared(meta.get("share"), tensors) if "share" in meta else None
        importance, reference = None, None
        if restored is None and cfg.share.importance == "fisher":
            importance = fisher_diagonal(model, data, cfg.share.calibration_images, cfg.train.seed,
                                         list(spec.targets(model)))
        if restored is None and cfg.share.correct_bias:
            reference = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in spec.targets(model)}
        out.shared = share.share_(model, spec, trainable=True, shared=restored, importance=importance)
        if reference is not None:
            correct_bias_(model, reference, data, cfg.share.calibration_images, cfg.train.seed)
    return out


def _calibration(data, images: int, seed: int, device) -> list[torch.Tensor]:
    """``images`` training images (a seeded choice), preprocessed by the preset's eval transform, in batches."""
    if data is None:
        raise ConfigError("share.importance / share.correct_bias need training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"share.calibration_images must be >= 1, got {images}")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images]
    batch = torch.stack([dataset[i][0] for i in pick.tolist()])
    return [preset.eval(batch[i:i + 32].to(device)) for i in range(0, len(batch), 32)]


@torch.no_grad()
def correct_bias_(model: nn.Module, reference: dict[str, torch.Tensor], data, images: int, seed: int) -> None:
    """Empirical bias correction (Nagel et al. 2019, "Data-free quantization", section 4.2): layer by
    layer in network order, feed the calibration images through the (already corrected) shared model,
    and add to the layer's bias the mean over images and positions of (original weight - shared weight)
    applied to that layer's input, so the layer's outputs keep their mean."""
    device = next(model.parameters()).device
    batches = _calibration(data, images, seed, device)
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    for name, original in reference.items():
        layer = modules[name]
        if getattr(layer, "bias", None) is None or not isinstance(layer, nn.Conv2d):
            continue
        inputs: list[torch.Tensor] = []
        handle = layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
        shift = torch.zeros_like(layer.bias)
        for x in batches:
            inputs.clear()
            model(x)
            diff = nn.functional.conv2d(inputs[0], original - layer.weight, None, layer.stride, layer.padding,
                                        layer.dilation, layer.groups)
            shift += diff.mean(dim=(0, 2, 3)) * len(x)
        handle.remove()
        layer.bias += shift / sum(len(x) for x in batches)
    model.train(was_training)


def fisher_diagonal(model: nn.Module, data, images: int, seed: int, layers: list[str]) -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher information of each layer's weight: the mean over ``images`` training
    images (one at a time, the preset's eval transform) of the squared gradient of the log-likelihood
    of a label drawn from the model's own prediction (the true Fisher, no labels needed)."""
    if data is None:
        raise ConfigError("share.importance fisher needs training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"share.calibration_images must be >= 1, got {images}")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(dataset), generator=g)[:images]
    modules = dict(model.named_modules())
    sums = {name: torch.zeros_like(modules[name].weight) for name in layers}
    was_training = model.training
    model.eval()
    for i in pick.tolist():
        x = preset.eval(dataset[i][0][None].to(device))
        logits = model(x)
        y = torch.multinomial(logits.detach().float().softmax(1).cpu(), 1, generator=g).to(device)[:, 0]
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(logits.float(), y).backward()
        for name in layers:
            sums[name] += modules[name].weight.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    model.train(was_training)
    return {name: s / len(pick) for name, s in sums.items()}


def _pruner(cfg: RunConfig, model: nn.Module, steps_per_epoch: int, total_steps: int) -> prune.Pruner:
    p = cfg.prune
    spec = prune.PruneSpec(p.density, p.threshold, p.layers, p.exclude)
    epochs = cfg.train.epochs
    end = p.end_epoch if p.end_epoch is not None else 0.75 * epochs
    if p.schedule != "oneshot" and end <= p.start_epoch:
        raise ConfigError(f"prune.end_epoch ({end}) must come after prune.start_epoch ({p.start_epoch})")
    if p.rounds < 1:
        raise ConfigError(f"prune.rounds must be >= 1, got {p.rounds}")
    if p.release_epoch is not None and p.release_epoch <= p.start_epoch:
        raise ConfigError("prune.release_epoch (DSD) must come after prune.start_epoch")
    release = prune.steps_of(p.release_epoch, steps_per_epoch) if p.release_epoch is not None else None
    return prune.Pruner(model, spec, p.schedule, prune.steps_of(p.start_epoch, steps_per_epoch),
                        prune.steps_of(end, steps_per_epoch), p.rounds, release, p.release_lr_factor)


def _restored_shared(meta: dict, tensors: dict) -> dict[str, share.Shared]:
    return {name: share.Shared(tensors[f"share.codebook.{name}"].float(), tensors[f"share.codes.{name}"].long(),
                               bool(info["zero"])) for name, info in meta.items()}


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
