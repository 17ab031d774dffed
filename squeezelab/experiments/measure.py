"""Parameters, fp32 size and FLOPs of a training config's model, measured on the meta device (no memory,
no data loaded) at the input size of the config's preset: what the constraints and `--dry-run` use."""

from __future__ import annotations

from functools import lru_cache

from squeezelab.config import RunConfig
from squeezelab.errors import ConfigError

# Classes per dataset when the config does not say (building the model must not load the data).
NUM_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "tiny-imagenet": 200}


def measure(cfg: RunConfig) -> dict:
    """{"params", "size_bytes", "size_mb", "flops", "macs", "input_size"} of the config's model."""
    from squeezelab.data import default_preset_for, get_preset

    preset = get_preset(cfg.data.preset or default_preset_for(cfg.data.dataset))
    num_classes = cfg.model.num_classes or NUM_CLASSES.get(cfg.data.dataset, 1000)
    options = tuple(sorted((k, _hashable(v)) for k, v in cfg.model.options.items()))
    return dict(_measure(cfg.model.name, num_classes, options, preset.input_size))


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


@lru_cache(maxsize=256)  # a grid repeats each variant once per seed
def _measure(name: str, num_classes: int, options: tuple, input_size: int) -> tuple:
    import torch

    from squeezelab import complexity
    from squeezelab.models import create_model

    opts = {k: list(v) if isinstance(v, tuple) else v for k, v in options}
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes, **opts)
    try:
        flops = complexity.count_flops(model, input_size)
    except RuntimeError as err:  # a pool or conv whose input is smaller than its kernel
        raise ConfigError(f"{name} with {opts} cannot take {input_size} px input "
                          f"({str(err).splitlines()[0]})") from None
    size = complexity.size_bytes(model)
    return (("params", complexity.count_params(model)), ("size_bytes", size), ("size_mb", size / 1e6),
            ("flops", flops["flops"]), ("macs", flops["macs"]), ("input_size", input_size))


def violations(m: dict, constraints: dict[str, float]) -> str | None:
    """The first constraint the measured model breaks, as a reason, or None."""
    checks = (("max_params", m["params"], "params"), ("max_flops", m["flops"], "FLOPs"),
              ("max_size_mb", m["size_mb"], "MB fp32"))
    for key, value, unit in checks:
        if key in constraints and value > constraints[key]:
            return f"{unit} {_show(value)} > {key} {_show(constraints[key])}"
    return None


def _show(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.4g}"  # 15,754 params; 0.3089 MB
