"""The SqueezeNext block (Gholami et al. 2018, "SqueezeNext", Fig. 2), as used by seed report 004.

    x (C) -> squeeze1 1x1 (C/2) -> squeeze2 1x1 (C/4) -> conv3x1 (C/2) -> conv1x3 (C/2)
          -> expand 1x1 (out) ; + shortcut(x) ; act

Every conv is followed by BatchNorm and the activation (the last one after the residual add).
The shortcut is the identity when C == out, else a 1x1 conv + BN. What differs from the paper:
no stride (report 004 only puts the block at the end of SqueezeNet v1.1, where nothing is
downsampled), channel counts are floored and clamped to >= 1, and the residual can be switched off
(``residual=False``), as report 004 compares both.

The models that use it (``fire_next``, ``sq1``) are rows of the table in ``squeezenet.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from squeezelab.models.layers import conv_bn, make_act


class SqNxtBlock(nn.Module):
    """SqueezeNext block: two halving 1x1 squeezes, separable 3x1 + 1x3, 1x1 expand, residual add."""

    def __init__(self, in_channels: int, out_channels: int, *, act: str = "relu", slope: float = 0.01,
                 residual: bool = True):
        super().__init__()
        c2, c4 = max(in_channels // 2, 1), max(in_channels // 4, 1)
        self.squeeze1, self.squeeze1_bn = conv_bn(in_channels, c2, 1, True)
        self.squeeze2, self.squeeze2_bn = conv_bn(c2, c4, 1, True)
        self.conv3x1, self.conv3x1_bn = conv_bn(c4, c2, (3, 1), True, padding=(1, 0))
        self.conv1x3, self.conv1x3_bn = conv_bn(c2, c2, (1, 3), True, padding=(0, 1))
        self.expand, self.expand_bn = conv_bn(c2, out_channels, 1, True)
        self.acts = nn.ModuleList(make_act(act, slope) for _ in range(5))  # a PReLU each, not shared
        self.out_channels = out_channels
        self.residual = residual
        if residual and in_channels != out_channels:
            self.shortcut, self.shortcut_bn = conv_bn(in_channels, out_channels, 1, True)
        else:
            self.shortcut, self.shortcut_bn = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.acts[0](self.squeeze1_bn(self.squeeze1(x)))
        y = self.acts[1](self.squeeze2_bn(self.squeeze2(y)))
        y = self.acts[2](self.conv3x1_bn(self.conv3x1(y)))
        y = self.acts[3](self.conv1x3_bn(self.conv1x3(y)))
        y = self.expand_bn(self.expand(y))
        if self.residual:
            y = y + self.shortcut_bn(self.shortcut(x))
        return self.acts[4](y)
