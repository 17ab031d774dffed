"""State-dict key mapping between our SqueezeNets and torchvision's ``squeezenet1_0`` / ``squeezenet1_1``.

torchvision names layers by position (``features.3.squeeze.weight`` is fire2's squeeze,
``classifier.1.weight`` is conv10); we use the paper's names. The positions are derived from the
variant table (conv1, its ReLU, then one slot per max-pool and Fire in order), not written out by
hand, so the mapping follows the table. Only the plain models map: keys that torchvision has no
counterpart for (BatchNorm, bypass convs) raise :class:`WeightsError`. Tensors are not copied.
"""

from __future__ import annotations

from collections.abc import Mapping

from squeezelab.errors import ConfigError, WeightsError
from squeezelab.models.squeezenet import VARIANTS

_TV_NAMES = ("squeezenet1_0", "squeezenet1_1")


def _prefix_map(name: str) -> dict[str, str]:
    """Our module prefix -> torchvision's, e.g. ``fire2`` -> ``features.3``."""
    if name not in _TV_NAMES:
        raise ConfigError(f"torchvision has no {name!r}; valid: {', '.join(_TV_NAMES)}")
    variant = VARIANTS[name]
    out, index = {"conv1": "features.0"}, 2  # features.1 is conv1's ReLU
    for k in range(1, 10):  # layer 1 = conv1, k = fire k
        if k > 1:
            out[f"fire{k}"] = f"features.{index}"
            index += 1
        if k in variant.pool_after:
            index += 1
    out["conv10"] = "classifier.1"  # classifier = Dropout, conv10, ReLU, AdaptiveAvgPool
    return out


def _infer_name(state_dict: Mapping, conv1_key: str) -> str:
    """v1.0 and v1.1 differ in conv1: 96x3x7x7 vs 64x3x3x3."""
    if conv1_key not in state_dict:
        raise WeightsError(f"not a SqueezeNet state dict: no {conv1_key!r} key")
    shape = tuple(state_dict[conv1_key].shape)
    for name in _TV_NAMES:
        v = VARIANTS[name]
        if shape == (v.conv1_filters, 3, v.conv1_kernel, v.conv1_kernel):
            return name
    raise WeightsError(f"{conv1_key} has shape {shape}; expected that of squeezenet1_0 or squeezenet1_1")


def _rename(state_dict: Mapping, mapping: dict[str, str], what: str) -> dict:
    out = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head == "features" or head == "classifier":  # torchvision key: prefix is two parts
            idx, _, rest = rest.partition(".")
            head = f"{head}.{idx}"
        if head not in mapping:
            raise WeightsError(f"key {key!r} has no {what} counterpart (only plain squeezenet1_0/1_1 map)")
        out[f"{mapping[head]}.{rest}"] = value
    return out


def to_torchvision_state_dict(state_dict: Mapping, name: str | None = None) -> dict:
    """Our keys (``fire2.squeeze.weight``) -> torchvision's (``features.3.squeeze.weight``).

    ``name``: ``"squeezenet1_0"`` or ``"squeezenet1_1"``; inferred from conv1's shape when None.
    """
    name = name or _infer_name(state_dict, "conv1.weight")
    return _rename(state_dict, _prefix_map(name), "torchvision")


def from_torchvision_state_dict(state_dict: Mapping, name: str | None = None) -> dict:
    """torchvision's keys -> ours; the inverse of :func:`to_torchvision_state_dict`."""
    name = name or _infer_name(state_dict, "features.0.weight")
    inverse = {tv: ours for ours, tv in _prefix_map(name).items()}
    return _rename(state_dict, inverse, "squeezelab")
