"""AlexNet (Krizhevsky et al. 2012), the baseline SqueezeNet is measured against (paper Table 2).

Layout and parameter count are torchvision's single-GPU variant (``torchvision.models.alexnet``,
after "One weird trick", Krizhevsky 2014: 64/192/384/256/256 filters): 61,100,840 parameters at 1000
classes, with the paper's layer names (``conv1`` .. ``conv5``, ``fc6`` .. ``fc8``) instead of
positional keys. What differs, as options:

* ``bn=True``: BatchNorm after every conv (seed reports 001/003 compare against it); those convs
  then have no bias.
* ``stem="small"`` for 32x32 / 64x64 inputs: conv1 is 3x3, stride 1, padding 1 (instead of 11x11/4,
  padding 2) and the adaptive average pool before fc6 gives 2x2 instead of 6x6 (fc6 then reads
  256*2*2 = 1024 features). The three 3x3/2 max-pools stay, so a 32 px input reaches conv5 at 7x7 and
  leaves maxpool5 at 3x3 (a 6x6 pool would only repeat pixels). The ImageNet stem needs >= 63 px.
* ``fc_width``: width of fc6/fc7 (4096 in AlexNet); ``dropout`` before fc6 and fc7 (0.5).
"""

from __future__ import annotations

import torch
from torch import nn

from squeezelab.models.layers import StagedNet, conv_bn
from squeezelab.models.registry import ModelEntry, Opt, register

ALEXNET_OPTIONS = {
    "bn": Opt(False, "BatchNorm after every conv", bool),
    "stem": Opt("imagenet", "imagenet (224 px) | small (32/64 px: conv1 3x3/1, 2x2 pool before fc6)",
                choices=("imagenet", "small")),
    "dropout": Opt(0.5, "dropout ratio before fc6 and fc7", float, lo=0.0, hi=1.0),
    "fc_width": Opt(4096, "width of fc6 and fc7", int, lo=1),
}

# (name, out channels, kernel, padding, followed by a 3x3/2 max-pool) for conv2..conv5; conv1 is the stem.
_CONVS = (("conv2", 192, 5, 2, True), ("conv3", 384, 3, 1, False), ("conv4", 256, 3, 1, False),
          ("conv5", 256, 3, 1, True))


class AlexNet(StagedNet):
    """AlexNet with timm-style ``forward_features`` (conv1..maxpool5) / ``forward_head``."""

    def __init__(self, num_classes: int = 1000, *, bn: bool = False, stem: str = "imagenet",
                 dropout: float = 0.5, fc_width: int = 4096):
        super().__init__()
        small = stem == "small"
        kernel, stride, pad = (3, 1, 1) if small else (11, 4, 2)
        self.conv1, self.conv1_bn = conv_bn(3, 64, kernel, bn, stride=stride, padding=pad)
        self.conv1_act, self.maxpool1 = nn.ReLU(), nn.MaxPool2d(3, stride=2)
        names, cin = ["conv1", "conv1_bn", "conv1_act", "maxpool1"], 64
        for name, cout, k, p, pool in _CONVS:
            conv, norm = conv_bn(cin, cout, k, bn, padding=p)
            self.add_module(name, conv)
            self.add_module(f"{name}_bn", norm)
            self.add_module(f"{name}_act", nn.ReLU())
            names += [name, f"{name}_bn", f"{name}_act"]
            if pool:
                self.add_module(f"maxpool{name[-1]}", nn.MaxPool2d(3, stride=2))
                names.append(f"maxpool{name[-1]}")
            cin = cout
        self.feature_names = tuple(names)
        self.num_features = cin
        pooled = 2 if small else 6
        self.avgpool = nn.AdaptiveAvgPool2d(pooled)
        self.fc6_dropout, self.fc6, self.fc6_act = nn.Dropout(dropout), nn.Linear(cin * pooled**2, fc_width), nn.ReLU()
        self.fc7_dropout, self.fc7, self.fc7_act = nn.Dropout(dropout), nn.Linear(fc_width, fc_width), nn.ReLU()
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """A new fc8 for ``num_classes`` outputs (on fc7's device and dtype)."""
        self.num_classes = num_classes
        self.fc8 = nn.Linear(self.fc7.out_features, num_classes).to(self.fc7.weight.device, self.fc7.weight.dtype)
        if isinstance(getattr(self, "model_spec", None), dict):
            self.model_spec["num_classes"] = num_classes

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        x = self.fc6_act(self.fc6(self.fc6_dropout(x)))
        x = self.fc7_act(self.fc7(self.fc7_dropout(x)))
        return self.fc8(x)


def _build(*, num_classes: int, where: str = "alexnet", **options) -> AlexNet:
    return AlexNet(num_classes, **options)


register(ModelEntry(name="alexnet", builder=_build, specs=ALEXNET_OPTIONS, default_input_size=224,
                    description="AlexNet, torchvision layout (the paper's baseline, Table 2)",
                    paper="Krizhevsky et al. 2012; torchvision.models.alexnet"))
