"""Magnitude pruning: masks from weights, held through training, on a schedule.

Han et al. 2015 ("Learning both weights and connections") prune the smallest-magnitude weights of
each layer, either to a target density or below a threshold of ``quality x std(weights)``, then
retrain with the pruned weights held at zero; Deep Compression (Han et al. 2016) starts from that.
Schedules (``progress``): one-shot; iterative (prune -> retrain in rounds, the sparsity growing
linearly per round); gradual (Zhu & Gupta 2017, "To prune, or not to prune": sparsity
s_t = s_f (1 - (1 - t/T)^3) in n steps). DSD (Han et al. 2017, paper section 7) drops the masks at
``release`` and trains dense again at a lower learning rate.

The maths are pure tensor functions (``magnitude_mask``, ``threshold_mask``, ``progress``);
``prune_(model, spec)`` prunes in place and returns the masks; :class:`Pruner` is the training hook
that keeps pruned weights exactly zero through every optimizer step (gradients masked before the
step, weights masked after it, so momentum and weight decay cannot revive them) and whose masks go
into checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from squeezelab.compression.layers import check_patterns, per_layer, weight_layers
from squeezelab.compression.methods import Context, Hook, Method, register
from squeezelab.errors import ConfigError

SCHEDULES = ("oneshot", "iterative", "gradual")


# ------------------------------------------------------------------------------------ masks


def magnitude_mask(weight: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the round(density x numel) largest |w| (ties: the earlier position); bool, weight's shape."""
    if not 0.0 <= density <= 1.0:
        raise ConfigError(f"density must be in [0, 1], got {density}")
    flat = weight.detach().abs().flatten()
    keep = int(round(density * flat.numel()))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=weight.device)
    if keep:
        order = torch.argsort(flat, descending=True, stable=True)
        mask[order[:keep]] = True
    return mask.view_as(weight)


def threshold_mask(weight: torch.Tensor, quality: float) -> torch.Tensor:
    """Han et al.'s rule: keep |w| > quality x std(w) (the layer's weights before this pruning)."""
    if quality < 0:
        raise ConfigError(f"pruning threshold (quality parameter) must be >= 0, got {quality}")
    w = weight.detach()
    return w.abs() > quality * w.float().std().to(w.dtype)


def progress(step: int, schedule: str, start: int, end: int, rounds: int) -> float:
    """Fraction of the target sparsity in force at optimizer step ``step`` (0 before ``start``).

    oneshot: 1 from ``start`` on. iterative: ``rounds`` equal rounds between start and end, round r
    (0-based) at (r+1)/rounds. gradual: ``rounds`` updates, the k-th at 1 - (1 - k/rounds)^3.
    A pure function of the step, so a resumed run prunes exactly when the uninterrupted one did."""
    if step < start:
        return 0.0
    if schedule == "oneshot" or end <= start:
        return 1.0
    rounds = max(1, rounds)
    span = (end - start) / rounds
    k = min(rounds, int((step - start) // span) + (1 if schedule == "iterative" else 0))
    if schedule == "iterative":
        return k / rounds
    if schedule == "gradual":
        return 1.0 - (1.0 - k / rounds) ** 3
    raise ConfigError(f"unknown pruning schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")


# ------------------------------------------------------------------------------------ spec


@dataclass(frozen=True)
class PruneSpec:
    """What to prune: ``density`` ({pattern: target fraction kept, "default": ...}) or ``threshold``
    ({pattern: quality parameter}), over the layers ``layers`` selects minus ``exclude``. A layer
    that no pattern (and no default) covers is not pruned."""

    density: Mapping[str, float] | float | None = None
    threshold: Mapping[str, float] | float | None = None
    layers: Sequence[str] = ("*",)
    exclude: Sequence[str] = ()

    def __post_init__(self):
        if (self.density is None) == (self.threshold is None):
            raise ConfigError("pruning needs exactly one of density (target fraction kept per layer) "
                              "or threshold (Han's quality parameter x the layer's weight std)")

    def targets(self, model: nn.Module) -> dict[str, tuple[str, float]]:
        """{layer: ("density" | "threshold", value)} for every layer this spec prunes."""
        layers = weight_layers(model, self.layers, self.exclude)
        kind, values = ("density", self.density) if self.density is not None else ("threshold", self.threshold)
        check_patterns(values, list(layers), f"prune.{kind}")
        out = {}
        for name in layers:
            value = per_layer(values, name, kind)
            if value is None:
                continue
            value = float(value)
            if kind == "density" and not 0.0 <= value <= 1.0:
                raise ConfigError(f"prune.density for {name} must be in [0, 1], got {value}")
            if kind == "threshold" and value < 0:
                raise ConfigError(f"prune.threshold for {name} must be >= 0, got {value}")
            out[name] = (kind, value)
        return out


def layer_mask(weight: torch.Tensor, kind: str, value: float, fraction: float = 1.0) -> torch.Tensor:
    """The mask of one layer at ``fraction`` of its target (density 1 - fraction x (1 - d); quality
    fraction x q), among the weights that are still non-zero (pruned ones stay pruned)."""
    alive = weight.detach() != 0
    if kind == "density":
        density = 1.0 - fraction * (1.0 - value)
        return magnitude_mask(weight, density) & alive
    return threshold_mask(weight, fraction * value) & alive


def prune_(model: nn.Module, spec: PruneSpec, fraction: float = 1.0) -> dict[str, torch.Tensor]:
    """Prune ``model`` in place (one shot) and return {layer: bool mask}."""
    modules = dict(model.named_modules())
    masks = {}
    with torch.no_grad():
        for name, (kind, value) in spec.targets(model).items():
            weight = modules[name].weight
            masks[name] = layer_mask(weight, kind, value, fraction)
            weight.mul_(masks[name])
    return masks


def density_of(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, float]:
    """Fraction of non-zero weights per conv/linear layer."""
    layers = weight_layers(model)
    return {n: float((m.weight != 0).float().mean()) for n, m in layers.items() if names is None or n in names}


# ------------------------------------------------------------------------------------ training hook


@dataclass
class Pruner(Hook):
    """Masks held through training, updated on a schedule of optimizer steps.

    The engine calls ``before_step(step)`` before each step's forward pass, ``before_update()``
    between backward and the optimizer step, ``after_update()`` after it, and ``lr_factor(step)``
    when it sets the learning rate. ``state_tensors()`` / ``load_state()`` carry the masks through
    checkpoints, so ``--resume`` is exact."""

    model: nn.Module
    spec: PruneSpec
    schedule: str = "oneshot"
    start: int = 0  # optimizer step of the first pruning
    end: int = 0  # iterative / gradual: the step at which the target is reached
    rounds: int = 1
    release: int | None = None  # DSD: step from which the masks are dropped
    release_lr_factor: float = 1.0  # DSD: lr multiplier once released
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    applied: float = 0.0  # the progress the current masks were made for

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown pruning schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        self._targets = self.spec.targets(self.model)
        self._modules = dict(self.model.named_modules())

    def released(self, step: int) -> bool:
        return self.release is not None and step >= self.release

    def before_step(self, step: int) -> None:
        if self.released(step):
            self.masks = {}
            return
        target = progress(step, self.schedule, self.start, self.end, self.rounds)
        if target > self.applied:
            with torch.no_grad():
                for name, (kind, value) in self._targets.items():
                    self.masks[name] = layer_mask(self._modules[name].weight, kind, value, target)
            self.applied = target
            self.after_update()

    def before_update(self) -> None:
        for name, mask in self.masks.items():
            grad = self._modules[name].weight.grad
            if grad is not None:
                grad.mul_(mask)

    def after_update(self) -> None:
        with torch.no_grad():
            for name, mask in self.masks.items():
                self._modules[name].weight.mul_(mask)

    def final_form(self, step: int) -> bool:
        """At the target sparsity (or, with DSD, released and dense again)."""
        if self.release is not None:
            return self.released(step)
        return progress(step, self.schedule, self.start, self.end, self.rounds) >= 1.0

    def lr_factor(self, step: int) -> float:
        return self.release_lr_factor if self.released(step) else 1.0

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"prune.mask.{name}": mask.to(torch.uint8) for name, mask in self.masks.items()}

    def state_meta(self) -> dict:
        return {"applied": self.applied, "layers": sorted(self.masks)}

    def state(self, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        return self.state_meta(), self.state_tensors()

    def load_state(self, meta: dict, tensors: Mapping[str, torch.Tensor]) -> None:
        self.applied = float(meta.get("applied", 0.0))
        device = next(self.model.parameters()).device
        self.masks = {name: tensors[f"prune.mask.{name}"].to(device=device, dtype=torch.bool)
                      for name in meta.get("layers", [])}


def steps_of(epochs: float | None, steps_per_epoch: int) -> int:
    """Epochs (fractions allowed) -> optimizer steps."""
    return 0 if epochs is None else int(math.floor(epochs * steps_per_epoch + 1e-9))


# ------------------------------------------------------------------------------------ the method


class PruneMethod(Method):
    """The ``prune`` section: one-shot magnitude pruning, or a Pruner held through training."""

    section = "prune"
    order = 10
    summary = "magnitude pruning (Han et al. 2015), one-shot, iterative or gradual; DSD"

    def spec(self, p, seed: int = 0) -> PruneSpec:
        return PruneSpec(p.density, p.threshold, p.layers, p.exclude)

    def apply_(self, model: nn.Module, p, ctx: Context) -> None:
        prune_(model, self.spec(p))

    def training(self, model: nn.Module, p, ctx: Context, state) -> Pruner:
        end = p.end_epoch if p.end_epoch is not None else 0.75 * ctx.epochs
        if p.schedule != "oneshot" and end <= p.start_epoch:
            raise ConfigError(f"prune.end_epoch ({end}) must come after prune.start_epoch ({p.start_epoch})")
        if p.rounds < 1:
            raise ConfigError(f"prune.rounds must be >= 1, got {p.rounds}")
        if p.release_epoch is not None and p.release_epoch <= p.start_epoch:
            raise ConfigError("prune.release_epoch (DSD) must come after prune.start_epoch")
        per = ctx.steps_per_epoch
        release = steps_of(p.release_epoch, per) if p.release_epoch is not None else None
        pruner = Pruner(model, self.spec(p), p.schedule, steps_of(p.start_epoch, per), steps_of(end, per),
                        p.rounds, release, p.release_lr_factor)
        if state is not None:
            pruner.load_state(*state)
        return pruner


register(PruneMethod())
