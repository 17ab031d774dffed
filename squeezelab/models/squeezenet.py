"""SqueezeNet (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer parameters
and <0.5MB model size") and the variants of its reproductions, as one table of rows.

Layer names are the paper's (Table 1): ``conv1``, ``maxpool1``, ``fire2`` .. ``fire9`` (each with
``squeeze``, ``expand1x1``, ``expand3x3``), ``maxpool4`` / ``maxpool8``, ``conv10``, ``avgpool10`` —
all top-level modules, so state-dict keys are ``conv1.weight``, ``fire2.squeeze.weight``,
``conv10.bias`` (not torchvision's positional ``features.3...``; see ``torchvision_compat``).

Rows of ``VARIANTS``:

* ``squeezenet1_0`` — paper Table 1: conv1 96 filters 7x7/2, 3x3/2 max-pools after conv1, fire4,
  fire8; 1,248,424 parameters at 1000 classes.
* ``squeezenet1_1`` — the authors' v1.1: conv1 64 filters 3x3/2, pools after conv1, fire3, fire5;
  same Fire dimensions; 1,235,496 parameters (2.4x less computation).
* ``fire_next`` — seed report 004: v1.1 with its last Fire (fire9) replaced by a SqueezeNext block
  (``sqnxt_out`` output channels, 128 by default).
* ``sq1`` — seed report 004: v1.1 plus, after the global pool, dropout(0.1) -> fc1 (num_classes ->
  ``mlp_width``=32) -> head activation -> dropout(0.1) -> fc2 (-> num_classes). Report 004 appended
  the layers to the unchanged v1.1, so fc1 reads the ``num_classes`` pooled conv10 outputs.

What differs from the paper, and why:

* Max-pools round up (``pool_ceil=True``) as in Caffe and torchvision, so torchvision's weights and
  outputs match ours exactly; ``pool_ceil=False`` gives PyTorch's default floor rounding.
* ``caffe=True`` reproduces the authors' Caffe definition: ceil pools and conv10 with padding 1
  (the zero border then feeds the global average pool), needed to run their published weights
  at 227x227. ReLU after conv10 is the default in both (``head_act="relu"``).
* Weight init follows torchvision (Kaiming-uniform; conv10 ~ N(0, 0.01)), not Caffe's Xavier.

Options (each one switch; see ``SQUEEZENET_OPTIONS`` for types and ranges):

* Design space (paper §5.1, ``design_space.fire_specs``): ``base_e, incr_e, pct_3x3, freq, sr``;
  ``num_fire`` (default 8) removes Fire modules from the end or adds more (they continue the
  formula: fire10 has e = base_e + incr_e * floor(8 / freq)). Pools after removed Fires are dropped.
* Macroarchitecture (paper §6, Fig. 2): ``bypass="simple"`` adds identity bypasses around fire3, 5,
  7, 9 (odd Fires; no parameters) — on v1.1 these are report 000's residual connections, so
  ``bypass="residual"`` is accepted as another name for the same network;
  ``bypass="complex"`` also adds a 1x1 conv bypass around every other Fire (adds parameters).
* ``bn_fire`` / ``bn_conv1`` / ``bn_conv10``: BatchNorm after those convs (reports 001, 003).
* ``act`` (features: conv1, Fires) and ``head_act`` (after conv10 and between sq1's linears):
  relu, leaky_relu (``leaky_slope``), softplus, prelu; ``head_act="none"`` drops conv10's ReLU.
* ``dropout`` before conv10 (paper: 0.5).
* ``conv1_kernel`` (1/3/5/7) and ``conv1_stride`` (report 003).
* ``extra_pool_after``: Fire numbers k that get an extra 3x3/2 max-pool between fire k and fire k+1
  (report 000).
* ``stem``: input sizes. ``"imagenet"`` (default, for 224/227 px): conv1 as in the row, padding 0,
  and a max-pool after conv1 — 4x downsampling before fire2 and 16x by fire9, too much for small images.
  ``"small"`` (for 32x32 CIFAR and 64x64 Tiny ImageNet): conv1 3x3, stride 1, padding
  ``kernel // 2`` (size-preserving), 96/64 filters as in the row, and NO max-pool after conv1; the
  row's other pools stay (v1.0: after fire4 and fire8, v1.1: after fire3 and fire5), so a 32 px
  input reaches fire9 at 8x8 (v1.0 and v1.1). ``conv1_kernel`` / ``conv1_stride`` override the
  stem's kernel and stride when given. The ImageNet stem also runs at 32 px (ceil pools leave
  1x1 at fire9) but throws most of the image away; use the small stem there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeezelab.errors import ConfigError
from squeezelab.models.design_space import FireSpec, fire_specs
from squeezelab.models.layers import ACTIVATIONS, Fire, StagedNet, conv_bn, make_act
from squeezelab.models.registry import ModelEntry, Opt, register
from squeezelab.models.squeezenext import SqNxtBlock

PAPER = "Iandola et al. 2016, arXiv:1602.07360"


@dataclass(frozen=True)
class Variant:
    """One row: what makes a named SqueezeNet what it is (options change the rest)."""

    description: str
    conv1_filters: int
    conv1_kernel: int  # with the ImageNet stem (stride 2, padding 0)
    pool_after: tuple[int, ...]  # 3x3/2 max-pools after these layers: 1 = conv1, k = fire k
    last_block: str = "fire"  # "sqnxt": the last Fire is replaced by a SqueezeNext block
    mlp: bool = False  # sq1: two linear layers after the global pool
    extra_options: tuple[str, ...] = ()  # option names only this row takes


VARIANTS: dict[str, Variant] = {
    "squeezenet1_0": Variant("SqueezeNet v1.0, exactly paper Table 1", 96, 7, (1, 4, 8)),
    "squeezenet1_1": Variant("SqueezeNet v1.1 (conv1 3x3/64, early pools; 2.4x fewer FLOPs)", 64, 3, (1, 3, 5)),
    "fire_next": Variant("v1.1 with fire9 replaced by a SqueezeNext block (seed report 004)", 64, 3, (1, 3, 5),
                         last_block="sqnxt", extra_options=("sqnxt_out", "sqnxt_residual")),
    "sq1": Variant("v1.1 plus two linear layers with dropout after the global pool (seed report 004)",
                   64, 3, (1, 3, 5), mlp=True, extra_options=("mlp_width", "mlp_dropout1", "mlp_dropout2")),
}

SQUEEZENET_OPTIONS: dict[str, Opt] = {
    "base_e": Opt(128, "expand filters of fire2 (paper §5.1)", int, lo=2),
    "incr_e": Opt(128, "expand filters added every `freq` Fires", int, lo=0),
    "pct_3x3": Opt(0.5, "fraction of expand filters that are 3x3", float, lo=0.01, hi=0.99),
    "freq": Opt(2, "Fires between increments of e", int, lo=1),
    "sr": Opt(0.125, "squeeze ratio s1x1 / e", float, lo=0.01, hi=1.0),
    "num_fire": Opt(8, "number of Fire modules (8 = fire2..fire9)", int, lo=1, hi=24),
    "bypass": Opt("none", "none | simple (identity around fire3,5,7,9) | complex (+1x1 conv elsewhere) | "
                          "residual (report 000's name for simple)",
                  choices=("none", "simple", "complex", "residual")),
    "bn_fire": Opt(False, "BatchNorm after every conv inside the Fire modules", bool),
    "bn_conv1": Opt(False, "BatchNorm after conv1", bool),
    "bn_conv10": Opt(False, "BatchNorm after conv10", bool),
    "act": Opt("relu", "activation in the features (conv1, Fires)", choices=ACTIVATIONS),
    "head_act": Opt("relu", "activation after conv10 (none: no ReLU there)", choices=ACTIVATIONS + ("none",)),
    "leaky_slope": Opt(0.01, "negative slope of leaky_relu", float, lo=0.0, hi=1.0),
    "dropout": Opt(0.5, "dropout ratio before conv10", float, lo=0.0, hi=1.0),
    "stem": Opt("imagenet", "imagenet (224/227 px) | small (32/64 px: conv1 3x3/1, no first pool)",
                choices=("imagenet", "small")),
    "conv1_kernel": Opt(None, "conv1 kernel size (null: 7 for v1.0, 3 for v1.1 and the small stem)", int,
                        choices=(1, 3, 5, 7), nullable=True),
    "conv1_stride": Opt(None, "conv1 stride (null: 2 for the imagenet stem, 1 for the small one)", int,
                        lo=1, hi=4, nullable=True),
    "extra_pool_after": Opt([], "Fire numbers k with an extra 3x3/2 max-pool after fire k", list, lo=2, hi=25),
    "caffe": Opt(False, "authors' Caffe definition: ceil pools and conv10 padding 1 (227 px)", bool),
    "pool_ceil": Opt(True, "max-pools round up (Caffe, torchvision); false: floor", bool),
    "sqnxt_out": Opt(128, "output channels of the SqueezeNext block replacing fire9", int, lo=1),
    "sqnxt_residual": Opt(True, "residual add inside the SqueezeNext block", bool),
    "mlp_width": Opt(32, "width of the hidden linear layer after the global pool", int, lo=1),
    "mlp_dropout1": Opt(0.1, "dropout before the first linear layer", float, lo=0.0, hi=1.0),
    "mlp_dropout2": Opt(0.1, "dropout before the second linear layer", float, lo=0.0, hi=1.0),
}
_ROW_ONLY = {name for v in VARIANTS.values() for name in v.extra_options}


@dataclass(frozen=True)
class SqueezeNetConfig:
    """A fully resolved SqueezeNet: every layer's size is fixed here, nothing is left to defaults."""

    num_classes: int
    conv1_filters: int
    conv1_kernel: int
    conv1_stride: int
    conv1_padding: int
    pools: tuple[int, ...]  # 1 = after conv1, k = after fire k
    fires: tuple[FireSpec, ...]  # fire2, fire3, ...
    bypass: str = "none"
    bn_fire: bool = False
    bn_conv1: bool = False
    bn_conv10: bool = False
    act: str = "relu"
    head_act: str = "relu"
    leaky_slope: float = 0.01
    dropout: float = 0.5
    caffe: bool = False
    pool_ceil: bool = True
    last_block: str = "fire"
    sqnxt_out: int = 128
    sqnxt_residual: bool = True
    mlp: bool = False
    mlp_width: int = 32
    mlp_dropout1: float = 0.1
    mlp_dropout2: float = 0.1


def resolve_config(variant: Variant, num_classes: int, where: str = "squeezenet", **opt) -> SqueezeNetConfig:
    """Variant row + checked options -> a :class:`SqueezeNetConfig` (raises ConfigError on conflicts)."""
    small = opt["stem"] == "small"
    kernel = opt["conv1_kernel"] or (3 if small else variant.conv1_kernel)
    stride = opt["conv1_stride"] or (1 if small else 2)
    fires = fire_specs(opt["base_e"], opt["incr_e"], opt["pct_3x3"], opt["freq"], opt["sr"], opt["num_fire"])
    last = len(fires) + 1  # number of the last Fire
    extra = set(opt["extra_pool_after"])
    base_pools = {k for k in variant.pool_after if k <= last and not (small and k == 1)}
    if bad := sorted(k for k in extra if k > last or k in base_pools):
        raise ConfigError(f"extra_pool_after for {where}: fire{bad[0]} does not exist or already has a "
                          f"pool after it; Fires are fire2..fire{last}, pools after {sorted(base_pools)}")
    resolved_here = ("conv1_kernel", "conv1_stride")
    fields = {k: opt[k] for k in SqueezeNetConfig.__dataclass_fields__ if k in opt and k not in resolved_here}
    return SqueezeNetConfig(
        num_classes=num_classes, conv1_filters=variant.conv1_filters, conv1_kernel=kernel,
        conv1_stride=stride, conv1_padding=kernel // 2 if small else 0, pools=tuple(sorted(base_pools | extra)),
        fires=tuple(fires), last_block=variant.last_block, mlp=variant.mlp, **fields)


def _bypass_kind(cfg: SqueezeNetConfig, k: int, cin: int, cout: int, where: str) -> str:
    """Paper Fig. 2: identity around odd Fires (fire3, 5, ...); complex adds 1x1 convs elsewhere."""
    if cfg.bypass == "none":
        return "none"
    if k % 2 == 1 and cin == cout:
        return "identity"
    if cfg.bypass == "complex":
        return "conv"
    if k % 2 == 1:
        raise ConfigError(f"bypass={cfg.bypass} for {where} needs equal input and output channels around fire{k} "
                          f"({cin} != {cout}, e.g. freq=1); use bypass=complex")
    return "none"


class SqueezeNet(StagedNet):
    """SqueezeNet built from a :class:`SqueezeNetConfig`, with timm-style feature/head split.

    ``forward_features``: conv1 .. last Fire (fire9); ``forward_head``: dropout, conv10, head
    activation, global average pool, flatten (and sq1's linears) -> logits [N, num_classes].
    """

    def __init__(self, cfg: SqueezeNetConfig, where: str = "squeezenet"):
        super().__init__()
        self.config = cfg
        self.conv1, self.conv1_bn = conv_bn(3, cfg.conv1_filters, cfg.conv1_kernel, cfg.bn_conv1,
                                            stride=cfg.conv1_stride, padding=cfg.conv1_padding)
        self.conv1_act = make_act(cfg.act, cfg.leaky_slope)
        names = ["conv1", "conv1_bn", "conv1_act"]
        channels = cfg.conv1_filters
        for i, spec in enumerate(cfg.fires):
            k = i + 2
            if k - 1 in cfg.pools:
                names.append(self._add_pool(k - 1))
            is_last = i == len(cfg.fires) - 1
            if is_last and cfg.last_block == "sqnxt":
                block = SqNxtBlock(channels, cfg.sqnxt_out, act=cfg.act, slope=cfg.leaky_slope,
                                   residual=cfg.sqnxt_residual)
            else:
                bypass = _bypass_kind(cfg, k, channels, spec.out_channels, where)
                block = Fire(channels, *spec, act=cfg.act, slope=cfg.leaky_slope, bn=cfg.bn_fire, bypass=bypass)
            self.add_module(f"fire{k}", block)
            names.append(f"fire{k}")
            channels = block.out_channels
        if len(cfg.fires) + 1 in cfg.pools:
            names.append(self._add_pool(len(cfg.fires) + 1))
        self.feature_names = tuple(names)  # call order of forward_features (static: torch.compile-safe)
        self.num_features = channels
        self.dropout = nn.Dropout(cfg.dropout)
        self.avgpool10 = nn.AdaptiveAvgPool2d(1)
        self._make_head(cfg.num_classes)
        self._init_weights()

    def _add_pool(self, k: int) -> str:
        ceil = self.config.pool_ceil or self.config.caffe
        self.add_module(f"maxpool{k}", nn.MaxPool2d(3, stride=2, ceil_mode=ceil))
        return f"maxpool{k}"

    def _make_head(self, num_classes: int) -> None:
        cfg = self.config
        self.num_classes = num_classes
        self.conv10, self.conv10_bn = conv_bn(self.num_features, num_classes, 1, cfg.bn_conv10,
                                              padding=1 if cfg.caffe else 0)
        self.conv10_act = make_act(cfg.head_act, cfg.leaky_slope)
        if cfg.mlp:
            self.fc1_dropout, self.fc2_dropout = nn.Dropout(cfg.mlp_dropout1), nn.Dropout(cfg.mlp_dropout2)
            self.fc1 = nn.Linear(num_classes, cfg.mlp_width)
            self.fc1_act = make_act(cfg.head_act, cfg.leaky_slope)
            self.fc2 = nn.Linear(cfg.mlp_width, num_classes)

    def _init_weights(self) -> None:
        # torchvision's init: Kaiming-uniform convs, conv10 ~ N(0, 0.01) so the initial logits are small.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if m is self.conv10:
                    nn.init.normal_(m.weight, mean=0.0, std=0.01)
                else:
                    nn.init.kaiming_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace conv10 (and sq1's linears) for ``num_classes`` outputs; features are kept."""
        device, dtype = self.conv10.weight.device, self.conv10.weight.dtype
        self._make_head(num_classes)
        nn.init.normal_(self.conv10.weight, mean=0.0, std=0.01)
        if self.conv10.bias is not None:
            nn.init.constant_(self.conv10.bias, 0)
        for name in ("conv10", "conv10_bn", "conv10_act", "fc1", "fc1_act", "fc2"):
            if hasattr(self, name):
                getattr(self, name).to(device=device, dtype=dtype)
        if isinstance(getattr(self, "model_spec", None), dict):
            self.model_spec["num_classes"] = num_classes

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv10_act(self.conv10_bn(self.conv10(self.dropout(x))))
        x = torch.flatten(self.avgpool10(x), 1)
        if self.config.mlp:
            x = self.fc1_act(self.fc1(self.fc1_dropout(x)))
            x = self.fc2(self.fc2_dropout(x))
        return x


def _builder(name: str, variant: Variant):
    def build(*, num_classes: int, where: str = name, **options) -> SqueezeNet:
        return SqueezeNet(resolve_config(variant, num_classes, where, **options), where)

    build.__name__ = name
    return build


def _register_all() -> None:
    for name, variant in VARIANTS.items():
        keep = {k: v for k, v in SQUEEZENET_OPTIONS.items() if k not in _ROW_ONLY or k in variant.extra_options}
        register(ModelEntry(name=name, builder=_builder(name, variant), description=variant.description,
                            specs=keep, default_input_size=224, paper=PAPER))


_register_all()
__all__ = ["SqueezeNet", "SqueezeNetConfig", "VARIANTS", "SQUEEZENET_OPTIONS", "resolve_config"]
