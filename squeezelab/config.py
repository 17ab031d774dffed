"""Configuration: frozen dataclasses for a training run, and ``--set key=value`` parsing.

The one way in is ``load_config(path, overrides)``: load YAML -> apply dotted ``--set`` overrides
(``optim.lr=0.1``, ``model.options.sr=0.25``) -> validate every key and type against the
dataclasses below -> freeze. ``config_to_dict`` / ``dump_config`` give the resolved YAML back.

Values given to ``--set`` are parsed as YAML scalars, so ``--set sr=0.5`` gives a float,
``--set bn_fire=true`` a bool and ``--set bypass=simple`` a string.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Literal

import yaml

from squeezelab.errors import ConfigError


class YAMLRefused(yaml.YAMLError):
    """Valid YAML that is not a config: see ``load_yaml``."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, minus what a config never needs and a hostile file uses: aliases past a
    small count (a "billion laughs" file is a few lines whose expansion, when the config is copied,
    never ends), nesting past a depth (thousands of [[[... exhaust the recursive composer), duplicate
    keys (silently, the last one won) and implicit dates (a date is a string here, so that the type
    check names it, instead of a datetime reaching arithmetic)."""

    MAX_DEPTH = 64
    MAX_NODES = 100_000  # values once every alias is expanded: configs have hundreds

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> its value count with aliases expanded

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > self.MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise YAMLRefused(f"nested more than {self.MAX_DEPTH} levels deep (line {mark.line + 1})")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if id(node) not in self._sizes:  # an alias returns its anchor's node, already sized
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
            self._sizes[id(node)] = 1 + sum(self._sizes.get(id(c), 1) for c in children)
            if self._sizes[id(node)] > self.MAX_NODES:
                raise YAMLRefused(f"expands to more than {self.MAX_NODES:,} values through its aliases (*name): "
                                  f"refused, as a YAML alias bomb would be (line {node.start_mark.line + 1})")
        return node

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # <<: *base (its keys may be overridden here)
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise YAMLRefused(f"duplicate key {key!r} (line {key_node.start_mark.line + 1}): give each key once")
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def load_yaml(text: str):
    """Every YAML squeezelab reads (configs, recipes, study files, run folders, ``--set`` values) goes
    through here; a refusal is a ``yaml.YAMLError`` like any syntax error."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def parse_set_args(items: list[str] | None) -> dict[str, object]:
    """``["sr=0.5", "bypass=simple"]`` -> ``{"sr": 0.5, "bypass": "simple"}``."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


@dataclass(frozen=True)
class Bounds:
    """The range of a numeric config field (each end optional, closed or open). Values out of range
    are a ConfigError at load time, before anything reaches torch (``batch_size: 0`` used to end in a
    DataLoader traceback)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def violation(self, value: float) -> str | None:
        """None when ``value`` is in range, else what the range is."""
        for limit, ok, word in ((self.ge, lambda a, b: a >= b, ">="), (self.gt, lambda a, b: a > b, ">"),
                                (self.le, lambda a, b: a <= b, "<="), (self.lt, lambda a, b: a < b, "<")):
            if limit is not None and not ok(value, limit):
                return " and ".join(f"{w} {_num(v)}" for v, w in
                                    ((self.ge, ">="), (self.gt, ">"), (self.le, "<="), (self.lt, "<")) if v is not None)
        return None


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def bound(default: object, **limits: float) -> object:
    """A dataclass field with ``default`` and a Bounds (``ge``/``gt``/``le``/``lt``) checked on load;
    for a tuple or per-layer mapping every number in it is checked."""
    return field(default=default, metadata={"bounds": Bounds(**limits)})


# --------------------------------------------------------------------------------------------
# The training config. Every field says its unit / allowed values; Literal types are checked.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    name: str = "squeezenet1_1"
    num_classes: int | None = bound(None, ge=1)  # None: taken from the dataset
    options: Mapping[str, Any] = field(default_factory=dict)  # passed to create_model as keywords
    weights: str | None = None  # start from these weights (any --weights file); None: random init


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "cifar10"
    data_dir: str | None = None
    # A file naming the model's classes in order, one per line, the first word the class id (e.g.
    # ImageNet's synset_words.txt): the dataset's labels are mapped onto it by class id, so a
    # 1000-class ImageNet model can train on Tiny ImageNet's 200 (ImageNet) classes.
    class_map: str | None = None
    download: bool = False  # fetch the official archive into data_dir if absent (cifar10/100, tiny-imagenet)
    preset: str | None = None  # None: the dataset's default preset for this model
    val_fraction: float = bound(0.0, ge=0.0, lt=0.5)  # > 0: hold out this fraction of train for validation
    # "official": the dataset's train/held-out split, val carved from train (report 001: 45k/5k/10k);
    # "pooled": train+held-out pooled, then split by class (1 - 2*val_fraction, val_fraction, val_fraction)
    # into train/val/test (report 003: val_fraction 0.1 -> 80/10/10 of all 60k CIFAR-10 images).
    split_scheme: Literal["official", "pooled"] = "official"
    val_split: str | None = None  # split evaluated each epoch when val_fraction == 0 (None: "test"/"val")
    batch_size: int = bound(128, ge=1)  # images per optimizer step, summed over all processes
    eval_batch_size: int | None = bound(None, ge=1)  # None: 2 x batch_size
    in_memory: bool = True
    cache_dir: str | None = None
    limit: int | None = bound(None, ge=1)  # use only this many train and val images (seeded subset; smoke runs, tests)
    workers: int | None = bound(None, ge=0, le=256)  # DataLoader processes when in_memory is false; None: min(4, cpus)


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["sgd", "adam", "adamw", "adabound"] = "sgd"
    lr: float = bound(0.04, gt=0.0)  # peak learning rate (after warmup)
    momentum: float = bound(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = False
    weight_decay: float = bound(2e-4, ge=0.0)  # L2 for sgd/adam/adabound, decoupled for adamw
    betas: tuple[float, float] = bound((0.9, 0.999), ge=0.0, lt=1.0)
    eps: float = bound(1e-8, gt=0.0)
    final_lr: float = bound(0.1, gt=0.0)  # AdaBound: the SGD-like lr both bounds converge to
    gamma: float = bound(1e-3, gt=0.0)  # AdaBound: convergence speed of the bounds (per step)
    amsbound: bool = False


@dataclass(frozen=True)
class ScheduleConfig:
    name: Literal["fixed", "poly", "step", "plateau", "cosine", "onecycle"] = "fixed"
    warmup_epochs: float = bound(0.0, ge=0.0)  # linear ramp from 0 to lr, in epochs (fractions allowed)
    step_size: int = bound(30, ge=1)  # "step": epochs between decays
    step_factor: float = bound(0.1, gt=0.0, le=1.0)  # "step": lr multiplier at each decay (report 001: divide by 10)
    power: float = bound(1.0, gt=0.0)  # "poly": (1 - t/T)^power; 1.0 is the paper's linear decay to zero
    plateau_patience: int = bound(3, ge=0)  # "plateau": epochs without val-loss improvement before a decay
    plateau_factor: float = bound(0.5, gt=0.0, le=1.0)  # "plateau": lr multiplier at each decay (report 001: halve)
    min_factor: float = bound(0.0, ge=0.0, le=1.0)  # floor of the lr multiplier for cosine/poly/onecycle
    # cosine/poly/onecycle reach min_factor this many epochs before the end and hold it there: the last
    # epochs then ask whether more training at the final lr still helps (the studies' plateau check)
    hold_epochs: float = bound(0.0, ge=0.0)


@dataclass(frozen=True)
class EarlyStoppingConfig:
    patience: int | None = bound(None, ge=1)  # None: off. Epochs without top-5 improvement before stopping
    top5_threshold: float = bound(0.0, ge=0.0, le=1.0)  # counting starts once the best val top-5 (a fraction) reaches this


AmpChoice = Literal["auto", "bf16", "fp16", "off"]
AMP_CHOICES: tuple[str, ...] = typing.get_args(AmpChoice)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = bound(10, ge=0)  # 0 only in a compression stage (applied, not trained); fit needs >= 1
    label_smoothing: float = bound(0.0, ge=0.0, le=1.0)
    amp: AmpChoice = "auto"  # auto: bf16, fp16 or fp32 by hardware (runtime.resolve_amp)
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile; auto: on CUDA only (runtime.resolve_compile)
    sync_bn: bool = False  # under torchrun on GPUs: BatchNorm statistics over all processes' batches
    seed: int = bound(0, ge=0, le=2**32 - 1)  # numpy takes seeds in [0, 2^32)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    grad_clip: float | None = bound(None, gt=0.0)  # max global grad norm; None: off
    max_steps: int | None = bound(None, ge=1)  # stop after this many optimizer steps in total (tests, smoke runs)
    # What the run keeps as its result: "best" (best.safetensors, the epoch with the best top-1 on the
    # per-epoch split: a validation split when data.val_fraction > 0, else the test split — optimistic,
    # as the seed reports did, and labelled so) or "last" (the last epoch, nothing selected).
    select: Literal["best", "last"] = "best"
    threads: int | None = bound(None, ge=1, le=1024)  # torch CPU threads; None: the cores idle when the run starts (runtime.choose_threads)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass(frozen=True)
class OutputConfig:
    runs_dir: str = "runs"
    run_dir: str | None = None  # None: runs_dir/<date>-<time>-<model>-<dataset>-<hash>


# Per-layer values are a number for every selected layer or a mapping {glob: value, "default": value}
# over the paper's layer names (conv1, fire2.squeeze, fire*.expand3x3, conv10): the first glob that
# matches wins (squeezelab.compression.layers).
PerLayerFloat = Mapping[str, float] | float
PerLayerInt = Mapping[str, int] | int


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning held through training (off unless density or threshold is set)."""

    density: PerLayerFloat | None = bound(None, ge=0.0, le=1.0)  # target fraction of weights kept, e.g. {default: 0.35, conv1: 1.0}
    threshold: PerLayerFloat | None = bound(None, ge=0.0)  # Han's rule: prune |w| < threshold x std(layer's weights)
    layers: tuple[str, ...] = ("*",)  # globs over conv/linear layer names
    exclude: tuple[str, ...] = ()
    schedule: Literal["oneshot", "iterative", "gradual"] = "oneshot"
    start_epoch: float = bound(0.0, ge=0.0)  # first pruning (epochs, fractions allowed)
    end_epoch: float | None = bound(None, ge=0.0)  # iterative/gradual: target reached here (None: 3/4 of the run)
    rounds: int = bound(1, ge=1)  # iterative: prune -> retrain rounds; gradual: mask updates (Zhu & Gupta's n)
    release_epoch: float | None = bound(None, ge=0.0)  # DSD: drop the masks here and train dense again
    release_lr_factor: float = bound(0.1, gt=0.0)  # DSD: learning-rate multiplier after the release

    @property
    def enabled(self) -> bool:
        return self.density is not None or self.threshold is not None


@dataclass(frozen=True)
class ShareConfig:
    """Weight sharing (k-means per layer) with trained centroids (off unless bits is set)."""

    bits: PerLayerInt | None = bound(None, ge=1, le=16)  # code width per layer, e.g. {default: 6, conv1: 8}
    layers: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    init: Literal["linear", "density", "random"] = "linear"  # Han et al.: linear is best
    # "fisher": k-means weighted by each weight's diagonal Fisher information, estimated on
    # calibration_images training images (Choi et al. 2017); "none": plain k-means (Han et al.)
    importance: Literal["none", "fisher"] = "none"
    # Empirical bias correction (Nagel et al. 2019): after sharing, each layer's bias absorbs the mean
    # shift of its outputs that the shared weights cause, measured on calibration_images training images
    # layer by layer (layers without a bias are left as they are).
    correct_bias: bool = False
    # Layer-wise output reconstruction on calibration_images training images (compression/calibrate.py):
    # "codebook" solves each layer's codebook and bias so its outputs match the original network's
    # (least squares, codes fixed; subsumes correct_bias); "gptq" first re-rounds the weights onto the
    # codebook as GPTQ does (output error, not weight error), then solves the codebook. "none": off.
    reconstruct: Literal["none", "codebook", "gptq"] = "none"
    calibration_images: int = bound(256, ge=1)

    @property
    def enabled(self) -> bool:
        return self.bits is not None


@dataclass(frozen=True)
class ECQConfig:
    """Entropy-constrained quantisation (compression/ecq.py; off unless bits is set): per layer at most
    2^bits codes, each weight assigned for squared error + rate_weight x var(layer) x its code's bits."""

    bits: PerLayerInt | None = bound(None, ge=1, le=16)  # the most codes per layer, e.g. {default: 6, conv1: 8}
    rate_weight: PerLayerFloat = bound(0.0, ge=0.0)  # lambda: the normalised error one coded bit is worth; 0 = k-means
    layers: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    correct_bias: bool = False  # as share.correct_bias (Nagel et al. 2019), on calibration_images training images
    reconstruct: Literal["none", "codebook", "gptq"] = "none"  # as share.reconstruct
    # "free" (with reconstruct: gptq): the priced rounding may round kept weights of a pruned layer to the
    # exact zero too, so its sparsity follows the rate (compression/ecq.py); "fixed": only pruned weights
    zeros: Literal["fixed", "free"] = "fixed"
    calibration_images: int = bound(256, ge=1)

    @property
    def enabled(self) -> bool:
        return self.bits is not None


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from a teacher (off unless teacher is set)."""

    teacher: str | None = None  # weights of the teacher; "init": the weights this run starts from
    temperature: float = bound(4.0, gt=0.0)
    alpha: float = bound(0.9, ge=0.0, le=1.0)  # weight of the soft targets; 1.0 (or labels: false) uses no labels
    labels: bool = True  # false: ignore the dataset's labels (images without, or of other classes)

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


@dataclass(frozen=True)
class CodeConfig:
    """How a .sqz file codes its streams (all lossless)."""

    coder: Literal["auto", "huffman", "ans", "raw"] = "auto"  # auto: the smallest per stream
    index_bits: int | None = bound(None, ge=1, le=16)  # relative-index width; None: per tensor, the one that codes smallest
    max_codebook: int = bound(256, ge=0, le=65536)  # tensors with at most this many distinct values: codebook + codes
    raw_float16: bool = False  # biases / BatchNorm as float16 (lossy, ~1e-3 relative); weights unaffected
    # codebooks of weight-shared layers as float16 (lossy: each value moves by at most 2^-11 of itself; ~2
    # bytes a code saved); such a file is .sqz version 2.0, which squeezelab before it does not read
    codebook_float16: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """Where ``squeezelab compress`` measures accuracy before and after (default: the recipe's data,
    its official held-out split, or the pooled test part)."""

    enabled: bool = True  # false: no accuracy in the report (e.g. while choosing a recipe)
    dataset: str | None = None
    data_dir: str | None = None
    split: str | None = None
    batch_size: int = bound(256, ge=1)


@dataclass(frozen=True)
class OneShotRecipe:
    """``squeezelab convert --recipe``: prune and/or share without retraining, then code."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    share: ShareConfig = field(default_factory=ShareConfig)
    ecq: ECQConfig = field(default_factory=ECQConfig)
    code: CodeConfig = field(default_factory=CodeConfig)


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    share: ShareConfig = field(default_factory=ShareConfig)
    ecq: ECQConfig = field(default_factory=ECQConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


# --------------------------------------------------------------------------------------------
# Loading, overriding, validating.
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path | None, overrides: Mapping[str, object] | list[str] | None = None) -> RunConfig:
    """YAML file (or None for the defaults) + dotted overrides -> a validated, frozen RunConfig."""
    raw = _read_yaml(Path(path)) if path is not None else {}
    if isinstance(overrides, list):
        overrides = parse_set_args(overrides)
    return config_from_dict(apply_overrides(raw, overrides or {}))


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text (UTF-8) file, byte {err.start} ({err.reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(raw: Mapping, overrides: Mapping[str, object]) -> dict:
    """Return a copy of ``raw`` with ``{"optim.lr": 0.1}``-style dotted keys set (dicts created)."""
    out = json.loads(json.dumps(raw, default=list))  # deep copy of plain YAML data
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for i, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {'.'.join(parents[: i + 1])} is not a section")
            node = child
        node[leaf] = value
    return out


def config_from_dict(raw: Mapping, cls: type = None, prefix: str = ""):
    """Validate a nested plain dict against RunConfig (or ``cls``); unknown key / wrong type -> ConfigError."""
    return _build(cls or RunConfig, raw, prefix=prefix)


def load_recipe(path: str | Path, cls: type, overrides: Mapping[str, object] | list[str] | None = None):
    """A YAML file validated against the dataclass ``cls`` (e.g. OneShotRecipe), with --set overrides."""
    if isinstance(overrides, list):
        overrides = parse_set_args(overrides)
    return _build(cls, apply_overrides(_read_yaml(Path(path)), overrides or {}), prefix="")


def _build(cls: type, raw: object, prefix: str):
    where = prefix.rstrip(".") or "config"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        raise ConfigError(f"unknown key {prefix}{unknown[0]!s}; valid keys at {where}: {', '.join(names)}")
    kwargs = {k: _check(v, hints[k], f"{prefix}{k}") for k, v in raw.items()}
    for f in dataclasses.fields(cls):
        if f.name in kwargs and "bounds" in f.metadata:
            _check_bounds(kwargs[f.name], f.metadata["bounds"], f"{prefix}{f.name}")
    return cls(**kwargs)


def _check_bounds(value: object, bounds: Bounds, key: str) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):  # per-layer {glob: value}
        for k, v in value.items():
            _check_bounds(v, bounds, f"{key}.{k}")
        return
    if isinstance(value, tuple):
        for i, v in enumerate(value):
            _check_bounds(v, bounds, f"{key}[{i}]")
        return
    why = bounds.violation(value)
    if why:
        raise ConfigError(f"{key}: must be {why}, got {value!r}")


def _check(value: object, hint: object, key: str) -> object:
    """Return ``value`` converted to ``hint`` (int -> float, list -> tuple) or raise ConfigError."""
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for alternative in inner:  # the first alternative that accepts the value
            try:
                return _check(value, alternative, key)
            except ConfigError as err:
                errors.append(err)
        if len(inner) == 1:
            raise errors[0]
        for alternative, err in zip(inner, errors):  # a mapping with a bad value: say which one
            if isinstance(value, Mapping) and typing.get_origin(alternative) in (Mapping, dict):
                raise err
        raise ConfigError(f"{key}: expected {' or '.join(_describe(a) for a in inner)}, got "
                          f"{type(value).__name__} {value!r}")
    if origin is Literal:
        if isinstance(value, bool) and ("off" in args):  # YAML 1.1 reads on/off as booleans
            value = "on" if value else "off"
        if value not in args:
            raise ConfigError(f"{key}: expected one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[str, ...]: any length
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise _type_error(key, f"a list of {_describe(args[0])}", value)
        return tuple(_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(items))
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _type_error(key, f"a list of {len(args)} numbers", value)
        return tuple(_check(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if hint is Mapping[str, Any] or origin in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise _type_error(key, "a mapping", value)
        if len(args) == 2 and args[1] is not Any:  # Mapping[str, float]: check every value
            value = {str(k): _check(v, args[1], f"{key}.{k}") for k, v in value.items()}
        return types.MappingProxyType(dict(value))
    return _check_scalar(value, hint, key)


def _describe(hint: object) -> str:
    origin = typing.get_origin(hint)
    if origin in (Mapping, dict):
        return f"a mapping of {_describe(typing.get_args(hint)[1])}"
    return getattr(hint, "__name__", str(hint))


# No setting means anything past 2^32 (seeds end there): a larger number passed a one-sided range check
# and overflowed later (lr 1e308 in float32 arithmetic, warmup_epochs 1e308 rounded to an int).
MAX_MAGNITUDE = 2**32


def _check_magnitude(value: int | float, key: str) -> None:
    if abs(value) > MAX_MAGNITUDE:
        raise ConfigError(f"{key}: must be at most {MAX_MAGNITUDE:,} in magnitude, got {value!r}")


def _check_scalar(value: object, hint: object, key: str) -> object:
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # nan compares false with every bound: refuse it here
                raise ConfigError(f"{key}: must be a finite number, got {value!r}")
            _check_magnitude(value, key)
            return float(value)
        raise _type_error(key, "float", value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):  # bool is an int
        raise _type_error(key, hint.__name__, value)
    if hint is int:
        _check_magnitude(value, key)
    return value


def _type_error(key: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{key}: expected {expected}, got {type(value).__name__} {value!r}")


# --------------------------------------------------------------------------------------------
# Dumping.
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Compression recipes (squeezelab compress): a base training recipe + stages + coding.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompressRecipe:
    """Stages run in order, each an ordinary training run starting from the previous one's weights
    (the first from ``weights``); then the result is coded into a .sqz file and measured."""

    stages: tuple[tuple[str, RunConfig], ...]
    weights: str | None = None  # the dense model to compress; None: the first stage trains it
    code: CodeConfig = field(default_factory=CodeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    select: Literal["last", "best"] = "last"  # which checkpoint of a stage the next one starts from
    raw: Mapping[str, Any] = field(default_factory=dict)  # the recipe as resolved (provenance, resume)


RECIPE_KEYS = ("base", "weights", "stages", "code", "eval", "select")


def load_compress_recipe(path: str | Path, overrides: Mapping[str, object] | list[str] | None = None) -> CompressRecipe:
    """YAML -> CompressRecipe. Top-level keys: ``base`` (a training recipe, relative to this file),
    ``weights``, ``stages`` (a list of {name, <RunConfig sections>}), ``code``, ``eval``, ``select``,
    and RunConfig sections shared by all stages. ``--set stages.<name or index>.train.epochs=2``
    reaches one stage."""
    path = Path(path)
    return compress_recipe_from_dict(_read_yaml(path), path.parent, overrides)


def compress_recipe_from_dict(raw: Mapping, base_dir: Path = Path("."),
                              overrides: Mapping[str, object] | list[str] | None = None) -> CompressRecipe:
    """``load_compress_recipe`` for a recipe already in memory (``base`` is relative to base_dir)."""
    if isinstance(overrides, list):
        overrides = parse_set_args(overrides)
    stage_sets = {k: v for k, v in (overrides or {}).items() if k.startswith("stages.")}
    raw = apply_overrides(raw, {k: v for k, v in (overrides or {}).items() if k not in stage_sets})
    base = {}
    if raw.get("base") is not None:
        if not isinstance(raw["base"], str):
            raise _type_error("base", "a path to a training recipe", raw["base"])
        base = _read_yaml(Path(base_dir) / raw["base"])
    shared = {k: v for k, v in raw.items() if k not in RECIPE_KEYS}
    stages = _stage_dicts(raw.get("stages"), stage_sets)
    out = []
    for name, stage in stages:
        merged = _deep_merge(_deep_merge(base, shared), stage)
        out.append((name, _build(RunConfig, merged, prefix=f"stages.{name}.")))
    top = {k: raw[k] for k in ("weights", "code", "eval", "select") if k in raw}
    recipe = _build(CompressRecipe, {**top, "stages": (), "raw": {}}, prefix="")
    resolved = {"weights": recipe.weights, "select": recipe.select, "code": config_to_dict(recipe.code),
                "eval": config_to_dict(recipe.eval), "stages": [{"name": n, **config_to_dict(c)} for n, c in out]}
    return dataclasses.replace(recipe, stages=tuple(out), raw=resolved)


def _stage_dicts(stages: object, stage_sets: Mapping[str, object]) -> list[tuple[str, dict]]:
    if not isinstance(stages, list) or not stages:
        raise ConfigError("stages: expected a list of stages, e.g. [{name: prune, prune: {density: 0.35}}, "
                          "{name: share, share: {bits: 6}}]")
    out = []
    for i, stage in enumerate(stages):
        if not isinstance(stage, Mapping) or not isinstance(stage.get("name"), str) or not stage["name"]:
            raise ConfigError(f"stages[{i}]: expected a mapping with a name, got {stage!r}")
        name = stage["name"]
        if not all(c.isalnum() or c in "-_" for c in name) or name in [n for n, _ in out]:
            raise ConfigError(f"stages[{i}]: name {name!r} must be unique and use letters, digits, - and _")
        out.append((name, {k: v for k, v in stage.items() if k != "name"}))
    for dotted, value in stage_sets.items():
        _, which, *rest = dotted.split(".")
        index = {n: i for i, (n, _) in enumerate(out)}.get(which, int(which) if which.isdigit() else None)
        if index is None or index >= len(out) or not rest:
            raise ConfigError(f"--set {dotted}: no stage {which!r} (stages: {', '.join(n for n, _ in out)})")
        out[index] = (out[index][0], apply_overrides(out[index][1], {".".join(rest): value}))
    return out


def _deep_merge(base: Mapping, top: Mapping) -> dict:
    out = json.loads(json.dumps(base, default=list))
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in _LEAF_MAPPINGS:
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = json.loads(json.dumps(value, default=list))
    return out


_LEAF_MAPPINGS = ("density", "threshold", "bits")  # per-layer maps replace, never merge


def config_to_dict(cfg: object) -> dict:
    """A frozen config -> nested plain dict (tuples as lists), fit for YAML/JSON."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, Mapping):
            value = json.loads(json.dumps(dict(value)))
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML text (loading it back gives an equal RunConfig)."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_hash(cfg: RunConfig, length: int = 6) -> str:
    """Short stable hash of the config's content, ignoring where its output goes and whether its data
    was downloaded (neither changes what is trained; run ids stay those of older versions)."""
    data = config_to_dict(cfg)
    data.pop("output", None)
    data["data"].pop("download", None)
    # Sections and keys added later hash as before while they keep their defaults.
    for section, cls in (("prune", PruneConfig), ("share", ShareConfig), ("ecq", ECQConfig), ("distill", DistillConfig)):
        if data.get(section) == config_to_dict(cls()):
            data.pop(section)
    if data.get("ecq", {}).get("zeros") == "fixed":  # (added later: the default hashes as before)
        data["ecq"].pop("zeros")
    for section, key in (("model", "weights"), ("data", "class_map")):
        if data[section].get(key) is None:
            data[section].pop(key, None)
    if data["train"].get("select") == "best":
        data["train"].pop("select")
    data["train"]["compile"] = {"on": True, "off": False}.get(data["train"].get("compile"), data["train"].get("compile"))
    blob = json.dumps(data, sort_keys=True).encode()
    return hashlib.sha1(blob).hexdigest()[:length]
