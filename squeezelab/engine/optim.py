"""Optimisers: SGD, Adam, AdamW (torch's) and AdaBound (ours, from the paper).

AdaBound: Luo, Xiong, Liu & Sun, "Adaptive Gradient Methods with Dynamic Bound of Learning Rate",
ICLR 2019. Adam whose per-parameter step size ``lr_hat / (sqrt(v_hat) + eps)`` is clipped into
``[lower(t), upper(t)]`` with

    lower(t) = final_lr * (1 - 1 / (gamma * t + 1))
    upper(t) = final_lr * (1 + 1 / (gamma * t))

so it starts like Adam (bounds 0 and inf) and ends like SGD with lr ``final_lr`` (both bounds -> it).
As in the authors' reference code, ``final_lr`` follows the lr schedule: it is scaled by
``lr / base_lr`` where base_lr is the lr the optimiser was built with. Weight decay is L2 (added to the
gradient). The PyPI ``adabound`` 0.0.5 package uses pre-1.5 torch call signatures; this is a rewrite.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from squeezelab.config import OptimConfig
from squeezelab.errors import ConfigError


class AdaBound(torch.optim.Optimizer):
    """Adam with dynamic bounds on each parameter's step size (AMSBound with ``amsbound=True``)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
    ):
        if lr <= 0 or final_lr <= 0 or gamma <= 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ConfigError(f"AdaBound: need lr, final_lr, gamma > 0 and betas in [0, 1); got "
                              f"lr={lr} final_lr={final_lr} gamma={gamma} betas={betas}")
        defaults = dict(lr=lr, base_lr=lr, betas=tuple(betas), final_lr=final_lr, gamma=gamma, eps=eps,
                        weight_decay=weight_decay, amsbound=amsbound)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        grad = p.grad
        if grad.is_sparse:
            raise RuntimeError("AdaBound does not support sparse gradients")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)  # a tensor: checkpoints store it as one
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group["amsbound"]:
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = int(state["step"].item())
        if group["weight_decay"]:
            grad = grad.add(p, alpha=group["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        if group["amsbound"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            exp_avg_sq = state["max_exp_avg_sq"]
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        step_size = group["lr"] * math.sqrt(1 - beta2**t) / (1 - beta1**t)
        final_lr = group["final_lr"] * group["lr"] / group["base_lr"]
        lower = final_lr * (1 - 1 / (group["gamma"] * t + 1))
        upper = final_lr * (1 + 1 / (group["gamma"] * t))
        step = torch.full_like(denom, step_size).div_(denom).clamp_(lower, upper).mul_(exp_avg)
        p.sub_(step)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """All trainable parameters in one group with ``weight_decay`` (as Caffe did, biases included:
    the seed protocols decay everything)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": params, "weight_decay": weight_decay}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.name`` over ``model``'s trainable parameters."""
    groups = param_groups(model, cfg.weight_decay)
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.lr}")
    if cfg.name == "sgd":
        if cfg.nesterov and cfg.momentum <= 0:
            raise ConfigError("optim.nesterov: needs optim.momentum > 0")
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.name == "adabound":
        return AdaBound(groups, lr=cfg.lr, betas=cfg.betas, final_lr=cfg.final_lr, gamma=cfg.gamma,
                        eps=cfg.eps, amsbound=cfg.amsbound)
    raise ConfigError(f"optim.name: unknown optimiser {cfg.name!r}")


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> float:
    """Set every group's lr to ``base_lr * factor`` (schedules are multipliers); returns the lr."""
    lr = base_lr * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
