"""Transfer learning from pretrained SqueezeNet weights (seed report 004's protocol, made cheap).

Modes (``TRANSFER_MODES``):

* ``linear``    — frozen pretrained features, a new conv10 classifier (report 004 froze all but the last layer).
* ``sq1``       — frozen features + the Sq-1 head: conv10 -> ReLU -> global pool -> dropout -> fc1 (-> 32)
                  -> ReLU -> dropout -> fc2 (report 004's ``sq1``, on the pretrained features).
* ``fire_next`` — frozen features + a new SqueezeNext block on fire9's output, then conv10 (report 004).
* ``full``      — fine-tune everything; the new classifier learns 10x faster than the pretrained layers.
* ``scratch``   — the same network, randomly initialised, trained with the same budget (the baseline).

Frozen modes never run the frozen part while training: the fire9 outputs are computed ONCE for the
whole dataset (:func:`extract_features`) and only the head trains on that tensor, so an epoch costs
the head's FLOPs, not the network's. Images are resized to ``input_size`` for the pretrained network
and normalised the way its weights expect (their preset: Caffe BGR 0..255 minus mean, or ImageNet).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from squeezelab.data import TensorLoader, get_preset
from squeezelab.data.transforms import normalize, random_hflip, resize, to_float

TRANSFER_MODES = ("linear", "sq1", "fire_next", "full", "scratch")
FROZEN_MODES = ("linear", "sq1", "fire_next")


@dataclass(frozen=True)
class TransferConfig:
    mode: str = "linear"
    input_size: int = 96  # pixels per side the pretrained network sees (images are resized)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3  # AdamW peak lr of the new layers; pretrained layers (mode "full") get lr / 10
    weight_decay: float = 5e-4
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N (runtime.choose_device)


class ResizedPreset:
    """A weights' preset (normalisation, channel order) at another input size; train adds a h-flip.

    Has the ``train(x, generator)`` / ``eval(x)`` interface of ``squeezelab.data.Preset`` on uint8 batches.
    """

    def __init__(self, name: str, size: int):
        self.base, self.size = get_preset(name), size

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = resize(to_float(x, self.base.pixel_max / 255), (self.size, self.size))
        x = x.flip(1) if self.base.channel_order == "BGR" else x
        return normalize(x, self.base.mean, self.base.std)

    def train(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        return random_hflip(self._finish(x), generator)

    def eval(self, x: torch.Tensor) -> torch.Tensor:
        return self._finish(x)


class _Identity:
    """Preset stand-in for batches that are already features."""

    def train(self, x, generator=None):
        return x

    def eval(self, x):
        return x


class Sq1Head(nn.Module):
    """Report 004's Sq-1 head on pretrained features: conv10 + global pool, then two linear layers."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, dropout: float = 0.1):
        super().__init__()
        self.conv10 = nn.Conv2d(in_channels, num_classes, 1)
        self.mlp = nn.Sequential(nn.Dropout(dropout), nn.Linear(num_classes, width), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.relu(self.conv10(x)).mean((2, 3)))


class ConvHead(nn.Module):
    """SqueezeNet's own classifier: dropout, conv10 (1x1), ReLU, global average pool."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        self.dropout, self.conv10 = nn.Dropout(dropout), nn.Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.conv10.weight, std=0.01)  # small initial logits (torchvision's init)
        nn.init.zeros_(self.conv10.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv10(self.dropout(x))).mean((2, 3))


def make_head(mode: str, in_channels: int, num_classes: int) -> nn.Module:
    """The trainable head of a frozen mode, reading ``in_channels`` feature maps (fire9's output)."""
    if mode == "linear":
        return ConvHead(in_channels, num_classes)
    if mode == "sq1":
        return Sq1Head(in_channels, num_classes)
    if mode == "fire_next":
        from squeezelab.models.squeezenext import SqNxtBlock

        block = SqNxtBlock(in_channels, 128)
        return nn.Sequential(block, ConvHead(block.out_channels, num_classes))
    raise ValueError(f"no separate head for mode {mode!r}; frozen modes: {', '.join(FROZEN_MODES)}")


def build_backbone(weights, pretrained: bool = True):
    """The model the weights describe, loaded (``pretrained``) or freshly initialised (scratch)."""
    from squeezelab.weights import model_from_weights

    return model_from_weights(weights, load=pretrained)


@torch.no_grad()
def extract_features(model: nn.Module, images: torch.Tensor, preset, batch_size: int = 128) -> torch.Tensor:
    """``model.forward_features`` of every uint8 image, once, in eval mode -> float tensor [N, C, h, w]
    on the model's device (the uint8 images may live anywhere; each batch is moved there)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model.forward_features(preset.eval(images[i:i + batch_size].to(device)))
                      for i in range(0, len(images), batch_size)])


def train_and_evaluate(model: nn.Module, train: tuple, test: tuple, preset, cfg: TransferConfig,
                       param_groups: list[dict]) -> dict:
    """AdamW with a cosine schedule for ``cfg.epochs`` over (x, y) tensors; returns test metrics + times."""
    from squeezelab.engine.loop import StepOptions, evaluate, train_one_epoch

    device = next(model.parameters()).device
    loader = TensorLoader(*train, cfg.batch_size, shuffle=True, drop_last=True, seed=cfg.seed, device=device)
    optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * len(loader)

    def lr_at(step: int) -> float:  # cosine to zero; each group keeps its own peak (base_lr)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / total))
        return optimizer.param_groups[-1]["lr"]

    generator = torch.Generator(device).manual_seed(cfg.seed)
    start, step, history = time.perf_counter(), 0, []
    for epoch in range(cfg.epochs):
        loader.set_epoch(epoch)
        out = train_one_epoch(model, loader, preset, optimizer, nn.CrossEntropyLoss(), device=device,
                              lr_at=lr_at, start_step=step, opts=StepOptions(), generator=generator)
        step += out["steps"]
        history.append(out["train_loss"])
    train_s = time.perf_counter() - start
    test_loader = TensorLoader(*test, 2 * cfg.batch_size, shuffle=False, drop_last=False, device=device)
    metrics = evaluate(model, test_loader, preset, device, amp="off")
    return {**metrics, "train_s": train_s, "eval_s": time.perf_counter() - start - train_s, "train_loss": history}


def run_transfer(weights, train_set, test_set, cfg: TransferConfig, feature_cache: dict | None = None) -> dict:
    """One transfer experiment: ``weights`` (LoadedWeights) onto ``train_set`` / ``test_set`` (uint8 ImageSets).

    ``feature_cache``: a dict shared by several frozen-mode runs on the same data and input size, so
    the frozen features are computed once for all of them.
    """
    if cfg.mode not in TRANSFER_MODES:
        from squeezelab.errors import ConfigError

        raise ConfigError(f"transfer mode must be one of {', '.join(TRANSFER_MODES)}; got {cfg.mode!r}")
    from squeezelab.runtime import choose_device

    torch.manual_seed(cfg.seed)
    preset = ResizedPreset(weights.preset or "report004", cfg.input_size)
    num_classes = train_set.num_classes
    device = choose_device(cfg.device, where="--device")
    model = build_backbone(weights, pretrained=cfg.mode != "scratch").to(device)
    _check_input_size(model, cfg.input_size, device)
    train, test = (train_set.images, train_set.labels), (test_set.images, test_set.labels)
    if cfg.mode in FROZEN_MODES:
        return _run_frozen(model, train, test, preset, num_classes, cfg, feature_cache)
    model.reset_classifier(num_classes)  # the new conv10 is created on the model's device
    head = [p for n, p in model.named_parameters() if n.startswith("conv10")]
    body = [p for n, p in model.named_parameters() if not n.startswith("conv10")]
    body_lr = cfg.lr if cfg.mode == "scratch" else cfg.lr / 10  # keep pretrained features close to where they were
    groups = [{"params": body, "base_lr": body_lr}, {"params": head, "base_lr": cfg.lr}]
    return {"mode": cfg.mode, "feature_s": 0.0, **train_and_evaluate(model, train, test, preset, cfg, groups)}


def _check_input_size(model: torch.nn.Module, size: int, device) -> None:
    """One image through the network first: too small an --input-size for its pools and strides is a
    one-line error here, not a traceback after the features of a whole dataset."""
    from squeezelab.errors import ConfigError

    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=device))
    except RuntimeError as err:
        raise ConfigError(f"--input-size {size} is too small for this network ({str(err).splitlines()[0]}); "
                          f"try 64 or more") from None
    finally:
        model.train(was)


def _run_frozen(model, train, test, preset, num_classes: int, cfg: TransferConfig, cache: dict | None) -> dict:
    start, key = time.perf_counter(), ("features", cfg.input_size)
    if cache is None or key not in cache:
        features = (extract_features(model, train[0], preset), extract_features(model, test[0], preset))
        cache = {} if cache is None else cache
        cache[key] = (features, time.perf_counter() - start)
    (train_f, test_f), feature_s = cache[key]
    head = make_head(cfg.mode, train_f.shape[1], num_classes).to(train_f.device)
    groups = [{"params": list(head.parameters()), "base_lr": cfg.lr}]
    result = train_and_evaluate(head, (train_f, train[1]), (test_f, test[1]), _Identity(), cfg, groups)
    return {"mode": cfg.mode, "feature_s": feature_s, "feature_shape": list(train_f.shape[1:]), **result}
