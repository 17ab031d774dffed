"""The one registry of models: ``create_model(name, num_classes=..., **options)`` and ``list_models()``.

Every option a model takes is declared with an :class:`Opt` (default, type, allowed values or
range, one line of help), so a bad name, option or value ends as one :class:`ConfigError` line that
names the valid choices, and so the options of a built model are plain JSON values that a
checkpoint can store as ``{"name": ..., "num_classes": ..., "options": {...}}`` to rebuild it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from squeezelab.errors import ConfigError

_KIND_NAMES = {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list"}


@dataclass(frozen=True)
class Opt:
    """One model option: its default, its type and what values are allowed.

    ``kind`` is bool/int/float/str/list; ``choices`` limits a str (or each list item);
    ``lo``/``hi`` bound a number (inclusive; each list item for a list of ints);
    ``nullable`` allows None (meaning "the variant's default", said in ``help``).
    """

    default: object
    help: str
    kind: type = str
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    nullable: bool = False

    def check(self, where: str, value: object) -> object:
        """Return the value normalised (int -> float for floats, tuple -> list) or raise."""
        if value is None and self.nullable:
            return None
        if self.kind is list:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            return [self._check_scalar(where, v, int) for v in items]
        return self._check_scalar(where, value, self.kind)

    def _check_scalar(self, where: str, value: object, kind: type) -> object:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if kind is float and ok and not math.isfinite(value):
            ok = False
        if not ok:
            raise ConfigError(f"{where} must be {self._describe(kind)}; got {value!r}")
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise ConfigError(f"{where} must be {self._describe(kind)}; got {value!r}")
        return value

    def _describe(self, kind: type) -> str:
        text = _KIND_NAMES[kind] if self.kind is not list else "an integer or a list of integers"
        if self.choices:
            return f"one of {', '.join(map(str, self.choices))}"
        if self.lo is not None and self.hi is not None:
            text += f" in [{self.lo}, {self.hi}]"
        elif self.lo is not None:
            text += f" >= {self.lo}"
        return text + (" (or null)" if self.nullable else "")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the options it takes.

    ``default_input_size`` is 224 for every ImageNet model (square, pixels). The authors' Caffe
    SqueezeNet (``caffe=True``) was trained at 227 px; it also runs at 224 because the head pools
    globally, but use 227 to reproduce the published numbers.
    """

    name: str
    builder: Callable[..., object]
    description: str
    specs: Mapping[str, Opt]
    default_input_size: int = 224
    paper: str = ""
    options: Mapping[str, object] = field(init=False)

    def __post_init__(self):
        defaults = {k: v.default for k, v in sorted(self.specs.items())}
        object.__setattr__(self, "options", MappingProxyType(defaults))

    def resolve(self, options: Mapping[str, object]) -> dict[str, object]:
        """Defaults overlaid with ``options``, every value checked; unknown names raise."""
        out = {k: list(v) if isinstance(v, list) else v for k, v in self.options.items()}  # no shared lists
        for key, value in options.items():
            if key not in self.specs:
                valid = ", ".join(sorted(self.specs))
                raise ConfigError(f"unknown option {key!r} for {self.name}; valid: {valid}")
            out[key] = self.specs[key].check(f"option {key!r} for {self.name}", value)
        return out


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    """Add a model to the registry (called by the model modules for each row of their table)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} registered twice")
    _REGISTRY[entry.name] = entry
    return entry


def list_models() -> list[str]:
    """Names of every registered model, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    """The registry entry for ``name`` (``.name``, ``.default_input_size``, ``.options``, ...)."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}; valid: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, *, num_classes: int = 1000, sized: bool = False, **options):
    """Build a registered model. Bad name, option or value -> :class:`ConfigError`.

    A model whose fp32 weights would not fit this machine's memory is refused before allocating
    (``sized=True`` skips that check where the weights are in memory already). The model gets a
    ``model_spec`` attribute, ``{"name", "num_classes", "options"}`` with every
    option resolved, which is enough to rebuild it: ``create_model(s["name"],
    num_classes=s["num_classes"], **s["options"])``.
    """
    entry = get_model_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes for {name} must be an integer >= 1; got {num_classes!r}")
    resolved = entry.resolve(options)
    if not sized:  # sized=True: the caller holds these weights already (e.g. loaded from a file)
        _check_fits(entry, name, num_classes, resolved)
    model = entry.builder(num_classes=num_classes, where=name, **resolved)
    model.model_spec = {"name": name, "num_classes": num_classes, "options": resolved}
    return model


def _check_fits(entry, name: str, num_classes: int, resolved: dict) -> None:
    """A model whose fp32 weights exceed this machine's memory (base_e=100000000, num_classes=2^40) is a
    one-line ConfigError before any allocation: it is sized on the meta device first (no memory)."""
    import torch

    if torch.get_default_device().type == "meta":  # already sizing (measure, --dry-run)
        return
    with torch.device("meta"):
        on_meta = entry.builder(num_classes=num_classes, where=name, **resolved)
    need = 4 * sum(p.numel() for p in on_meta.parameters())
    have = _memory_bytes()
    if have and need > have:
        raise ConfigError(f"{name} with these options has {need // 4:,} parameters: {need / 2**30:,.1f} GiB of fp32 "
                          f"weights, more than this machine's {have / 2**30:,.1f} GiB of memory")


def _memory_bytes() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
