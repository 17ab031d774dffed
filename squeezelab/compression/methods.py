"""The one registry of compression methods, as ``models/registry.py`` is of models.

A method (pruning, weight sharing, entropy-constrained quantisation, ...) is one class that
- names its config section (``prune``, ``share``, ``ecq``: a field of ``RunConfig`` and ``OneShotRecipe``),
- builds its spec from that section (``spec``), and checks a model against it (``check``: a typo in a
  layer pattern is a one-line ConfigError before anything trains),
- applies itself in place for one-shot use (``apply_``: ``convert --recipe``, a compress stage of 0 epochs),
- gives a training hook (``training``: what keeps its form through every optimizer step) whose
  ``state`` goes into checkpoints and comes back on ``--resume``.

Training, ``squeezelab compress`` and ``convert`` loop over ``enabled(cfg)`` instead of naming methods,
so a new method is one module that calls ``register`` (imported in ``compression/__init__.py``) plus
its config section.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from squeezelab.errors import ConfigError


@dataclass(frozen=True)
class Context:
    """What a method may need beyond its section: the run's seed and schedule, and training images."""

    seed: int = 0
    epochs: float = 0.0  # the run's length (schedules in epochs become steps)
    steps_per_epoch: int = 1
    total_steps: int = 0
    data: Any = None  # (training ImageSet, preset) for methods that calibrate on images; None without data
    # the model as it was before this one-shot recipe (set by apply_one_shot when a method calibrates):
    # what layer-wise reconstruction matches, so a quantiser after pruning also compensates the pruning
    original: Any = None


class Hook:
    """A method's part in training: the engine calls ``before_step(step)`` before a step's forward,
    ``before_update()`` between backward and the optimizer step, ``after_update()`` after it;
    ``lr_factor`` and ``final_form`` shape the schedule and the choice of best epoch; ``state`` /
    the method's ``training(..., state=)`` carry it through checkpoints. The defaults do nothing."""

    def before_step(self, step: int) -> None:
        pass

    def before_update(self) -> None:
        pass

    def after_update(self) -> None:
        pass

    def lr_factor(self, step: int) -> float:
        return 1.0

    def final_form(self, step: int) -> bool:
        return True

    def state(self, model: nn.Module) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON meta, tensors) of this method for a checkpoint (tensor names start with the section)."""
        return {}, {}


class Method:
    """One compression method; subclasses set ``section`` and implement ``spec``, ``apply_``, ``training``."""

    section: str = ""
    summary: str = ""  # one line for listings and errors
    order: int = 20  # one-shot recipes apply lower first: pruning (10) before quantisers (20), as Han et al.

    def enabled(self, section) -> bool:
        return bool(section.enabled)

    def spec(self, section, seed: int = 0):
        raise NotImplementedError

    def check(self, section, model: nn.Module) -> None:
        """Every layer pattern and per-layer value of the section against ``model`` (ConfigError)."""
        self.spec(section).targets(model)

    def needs_data(self, section) -> bool:
        """Whether applying it needs training images (calibration)."""
        return False

    def apply_(self, model: nn.Module, section, ctx: Context) -> None:
        """One shot, in place, no retraining."""
        raise NotImplementedError

    def training(self, model: nn.Module, section, ctx: Context, state: tuple[dict, Mapping] | None) -> Hook:
        """Apply for training (before the optimizer is built); ``state``: this method's (meta, tensors)
        from the checkpoint being resumed."""
        raise NotImplementedError


_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if not method.section or method.section in _METHODS:
        raise ValueError(f"compression method section {method.section!r} is empty or registered twice")
    _METHODS[method.section] = method
    return method


def methods() -> dict[str, Method]:
    """Every registered method by its section, in the order one-shot recipes apply them."""
    return dict(sorted(_METHODS.items(), key=lambda kv: kv[1].order))


def enabled(cfg) -> list[tuple[Method, Any]]:
    """(method, its section) for every method ``cfg`` (a RunConfig or OneShotRecipe) turns on."""
    return [(m, getattr(cfg, name)) for name, m in methods().items()
            if hasattr(cfg, name) and m.enabled(getattr(cfg, name))]


def check_one_per_run(cfg, where: str = "run") -> list[tuple[Method, Any]]:
    """Training holds one method's form at a time: two in one run (prune and share) would fight over
    the same weights (masks vs codebooks); compression stages run them one after another."""
    on = enabled(cfg)
    if len(on) > 1:
        names = " and ".join(m.section for m, _ in on)
        raise ConfigError(f"{names} in one {where}: one compression method per {where}, in order (prune first, "
                          f"then quantise; squeezelab compress runs them as stages)")
    return on


def check_model(cfg, model: nn.Module) -> None:
    for method, section in enabled(cfg):
        method.check(section, model)


def apply_one_shot(cfg, model: nn.Module, ctx: Context | None = None) -> nn.Module:
    """Every enabled method of ``cfg``, in ``order`` (prune before quantisers), in place."""
    ctx = ctx or Context()
    on = enabled(cfg)
    if ctx.original is None and any(m.needs_data(section) for m, section in on):
        ctx = dataclasses.replace(ctx, original=copy.deepcopy(model).eval())
    for method, section in on:
        if method.needs_data(section) and ctx.data is None:
            raise ConfigError(f"{method.section}: this setting calibrates on training images; one-shot use without "
                              f"data cannot apply it (run it as a compress stage with data)")
        method.apply_(model, section, ctx)
    return model
