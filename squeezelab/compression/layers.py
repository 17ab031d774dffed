"""Which layers a compression step touches, and per-layer values by pattern.

Layers are the model's convolutions and linear layers under their paper names (``conv1``,
``fire2.squeeze``, ``fire2.expand1x1``, ``fire2.expand3x3``, ..., ``conv10``; AlexNet's ``conv1`` ..
``fc8``), chosen by globs (``fire*.expand3x3``) or a predicate, never by lists written out.
Per-layer values (a density, a bit width) come from a mapping of globs to values with an optional
``default``: the first pattern that matches, in the order written, wins.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping, Sequence

from torch import nn

from squeezelab.errors import ConfigError

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)
Selector = Sequence[str] | Callable[[str, nn.Module], bool] | str


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def weight_layers(model: nn.Module, include: Selector = ("*",), exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    """{paper name: module} of the conv/linear layers that ``include`` selects and ``exclude`` does not.

    ``include``: globs over the names, or ``predicate(name, module) -> bool``. A glob that selects
    nothing is an error (a typo must not silently compress nothing)."""
    if isinstance(include, str):
        include = (include,)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)}
    if callable(include):
        chosen = {n: m for n, m in layers.items() if include(n, m)}
    else:
        for pattern in list(include) + list(exclude):
            if not any(fnmatch.fnmatchcase(n, pattern) for n in layers):
                raise ConfigError(f"layer pattern {pattern!r} matches no layer; layers: {', '.join(layers)}")
        chosen = {n: m for n, m in layers.items() if _matches(n, include)}
    return {n: m for n, m in chosen.items() if not _matches(n, exclude)}


def per_layer(values: Mapping[str, object] | float | int | None, name: str, what: str):
    """The value for layer ``name`` from ``{pattern: value, "default": value}`` (or one plain value
    for every layer); None when nothing matches and there is no default."""
    if values is None or not isinstance(values, Mapping):
        return values
    for pattern, value in values.items():
        if pattern != "default" and fnmatch.fnmatchcase(name, pattern):
            return value
    return values.get("default")


def check_patterns(values: Mapping[str, object] | None, names: Sequence[str], what: str) -> None:
    """Every non-default pattern of a per-layer mapping must select at least one layer."""
    if not isinstance(values, Mapping):
        return
    for pattern in values:
        if pattern != "default" and not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"{what}: pattern {pattern!r} matches no layer; layers: {', '.join(names)}")
