"""Configuration: parsing ``--set key=value`` overrides (shared by every CLI command).

Values are parsed as YAML scalars, so ``--set sr=0.5`` gives a float, ``--set bn_fire=true`` a bool
and ``--set bypass=simple`` a string; dotted keys (``optim.lr=0.1``) are kept as dotted strings for
the caller to apply to its nested config.
"""

from __future__ import annotations

import yaml

from squeezelab.errors import ConfigError


def parse_set_args(items: list[str] | None) -> dict[str, object]:
    """``["sr=0.5", "bypass=simple"]`` -> ``{"sr": 0.5, "bypass": "simple"}``."""
    out: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out
