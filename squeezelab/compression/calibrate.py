"""Calibration on training images, for quantisers that look at data: the diagonal Fisher information
(importance-weighted k-means) and empirical bias correction. ``data`` is (training ImageSet, preset):
any object whose ``dataset[i][0]`` is a uint8 image and whose ``preset.eval`` preprocesses a batch."""

from __future__ import annotations

import torch
from torch import nn

from squeezelab.errors import ConfigError


def _calibration(data, images: int, seed: int, device, where: str) -> list[torch.Tensor]:
    """``images`` training images (a seeded choice), preprocessed by the preset's eval transform, in batches."""
    if data is None:
        raise ConfigError(f"{where}.correct_bias needs training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"{where}.calibration_images must be >= 1, got {images}")
    pick = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:images]
    batch = torch.stack([dataset[i][0] for i in pick.tolist()])
    return [preset.eval(batch[i:i + 32].to(device)) for i in range(0, len(batch), 32)]


class _Reached(Exception):
    """Raised by the hook once the layer being corrected has its input (stops the forward there)."""


def _grab(inputs: list, x: torch.Tensor):
    inputs.append(x)
    raise _Reached


@torch.no_grad()
def correct_bias_(model: nn.Module, reference: dict[str, torch.Tensor], data, images: int, seed: int,
                  where: str = "share") -> None:
    """Empirical bias correction (Nagel et al. 2019, "Data-free quantization", section 4.2): layer by
    layer in network order, feed the calibration images through the (already corrected) shared model,
    and add to the layer's bias the mean over images and positions of (original weight - shared weight)
    applied to that layer's input, so the layer's outputs keep their mean."""
    device = next(model.parameters()).device
    batches = _calibration(data, images, seed, device, where)
    modules = dict(model.named_modules())
    was_training = model.training
    model.eval()
    for name, original in reference.items():
        layer = modules[name]
        if getattr(layer, "bias", None) is None or not isinstance(layer, nn.Conv2d):
            continue
        inputs: list[torch.Tensor] = []
        handle = layer.register_forward_pre_hook(lambda m, args: _grab(inputs, args[0]))
        shift = torch.zeros_like(layer.bias)
        for x in batches:
            inputs.clear()
            try:
                model(x)
            except _Reached:  # the layer's input is all this needs: the rest of the network is not run
                pass
            diff = nn.functional.conv2d(inputs[0], original - layer.weight, None, layer.stride, layer.padding,
                                        layer.dilation, layer.groups)
            shift += diff.mean(dim=(0, 2, 3)) * len(x)
        handle.remove()
        layer.bias += shift / sum(len(x) for x in batches)
    model.train(was_training)


def fisher_diagonal(model: nn.Module, data, images: int, seed: int, layers: list[str],
                    where: str = "share") -> dict[str, torch.Tensor]:
    """Diagonal of the Fisher information of each layer's weight: the mean over ``images`` training
    images (one at a time, the preset's eval transform) of the squared gradient of the log-likelihood
    of a label drawn from the model's own prediction (the true Fisher, no labels needed)."""
    if data is None:
        raise ConfigError(f"{where}.importance fisher needs training images (a run with data)")
    dataset, preset = data
    if images < 1:
        raise ConfigError(f"{where}.calibration_images must be >= 1, got {images}")
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
