"""Building blocks: activations by name and the Fire module (Iandola et al. 2016, §3.2, Fig. 1).

A Fire module is a 1x1 ``squeeze`` conv feeding two parallel ``expand1x1`` / ``expand3x3`` convs whose
outputs are concatenated. Optional extras, each off by default (so the plain module has exactly the
paper's, and torchvision's, parameters and state-dict names):

* BatchNorm after each of the three convs (seed reports 001/003); the conv then has no bias,
  since BN's shift makes it redundant.
* A bypass (paper §6, Fig. 2) added to the concatenated output: ``"identity"`` (simple bypass,
  no parameters) or ``"conv"`` (complex bypass: a 1x1 conv, plus BN when the Fire has BN).
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = ("relu", "leaky_relu", "softplus", "prelu")


class StagedNet(nn.Module):
    """timm-style split shared by our networks: ``forward_features`` calls the modules named in
    ``self.feature_names`` in order (a static tuple, so torch.compile sees no Python-side branching);
    subclasses define ``forward_head`` and ``reset_classifier``."""

    feature_names: tuple[str, ...] = ()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for name in self.feature_names:
            x = getattr(self, name)(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # each network defines its own head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def make_act(name: str, slope: float = 0.01) -> nn.Module:
    """A fresh activation module. ``slope``: LeakyReLU's negative slope; ``"none"``: identity.

    Never in-place: an in-place ReLU on a tensor that a bypass also reads would break autograd.
    """
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(slope)
    if name == "softplus":
        return nn.Softplus()
    if name == "prelu":
        return nn.PReLU()  # one learned slope per layer (PyTorch's default, init 0.25)
    if name == "none":
        return nn.Identity()
    raise ValueError(f"unknown activation {name!r}")


def conv_bn(cin: int, cout: int, kernel, bn: bool, **kw) -> tuple[nn.Conv2d, nn.Module]:
    """A conv and its BatchNorm (or an Identity); the conv has a bias only without BN."""
    conv = nn.Conv2d(cin, cout, kernel, bias=not bn, **kw)
    return conv, (nn.BatchNorm2d(cout) if bn else nn.Identity())


class Fire(nn.Module):
    """Fire module: squeeze (s1x1 1x1 filters) -> expand1x1 (e1x1) || expand3x3 (e3x3) -> concat."""

    def __init__(self, in_channels: int, s1x1: int, e1x1: int, e3x3: int, *, act: str = "relu",
                 slope: float = 0.01, bn: bool = False, bypass: str = "none"):
        super().__init__()
        self.squeeze, self.squeeze_bn = conv_bn(in_channels, s1x1, 1, bn)
        self.squeeze_act = make_act(act, slope)
        self.expand1x1, self.expand1x1_bn = conv_bn(s1x1, e1x1, 1, bn)
        self.expand1x1_act = make_act(act, slope)
        self.expand3x3, self.expand3x3_bn = conv_bn(s1x1, e3x3, 3, bn, padding=1)
        self.expand3x3_act = make_act(act, slope)
        self.out_channels = e1x1 + e3x3
        if bypass == "identity":
            if in_channels != self.out_channels:
                raise ValueError(f"identity bypass needs in == out channels ({in_channels} != {self.out_channels})")
            self.bypass, self.bypass_bn = nn.Identity(), nn.Identity()
        elif bypass == "conv":
            self.bypass, self.bypass_bn = conv_bn(in_channels, self.out_channels, 1, bn)
        else:
            self.bypass = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze_act(self.squeeze_bn(self.squeeze(x)))
        out = torch.cat([self.expand1x1_act(self.expand1x1_bn(self.expand1x1(s))),
                         self.expand3x3_act(self.expand3x3_bn(self.expand3x3(s)))], dim=1)
        if self.bypass is None:
            return out
        return out + self.bypass_bn(self.bypass(x))
