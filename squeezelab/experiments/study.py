"""A study file: a base training recipe, per-scale overrides, a search space over any config key, seeds,
constraints on parameters / FLOPs, and (optionally) the published numbers to set beside ours.

    name: fig3a_sr
    base: ../configs/cifar10_subset_cpu.yaml      # relative to this file
    sampler: grid                                  # grid | random | tpe
    metric: top1                                   # summary best.<metric> (val top-1 of the best epoch)
    seeds: {key: train.seed, values: [0, 1, 2]}
    space: {model.options.sr: [0.125, 0.25, 0.5, 0.75, 1.0]}
    constraints: {max_params: 2000000, max_flops: 1.0e9, max_size_mb: 8}
    set: {model.name: squeezenet1_0}               # every scale (a scale's own set wins)
    scales:
      smoke: {base: ../configs/digits_smoke.yaml, set: {train.epochs: 1}, seeds: [0, 1], space: {...}}
      cpu:   {set: {data.data_dir: ../../shared/data/cifar-10-subset}}
      full:  {base: ../configs/tinyimagenet64_small_best.yaml, set: {...}}
    published: {dataset: imagenet, source: "paper Table 3", rows: [{match: {model.options.bypass: none},
                top1: 57.5, top5: 80.3}]}

Every trial's config is validated by ``config.load_config`` when the study is loaded, so an unknown
key or a wrong type anywhere in the study is one line (ConfigError) before anything runs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeezelab.config import RunConfig, load_config, load_yaml
from squeezelab.errors import ConfigError

SCALES = ("smoke", "cpu", "full")
SAMPLERS = ("grid", "random", "tpe")
TOP_KEYS = ("name", "description", "base", "set", "sampler", "n_trials", "metric", "seeds", "variants", "space",
            "constraints",
            "scales", "published", "labels")
SCALE_KEYS = ("base", "set", "seeds", "variants", "space", "n_trials", "note")
VARIANT = "variant"  # the search dimension over named variants (each a set of overrides)
CONSTRAINT_KEYS = ("max_params", "max_flops", "max_size_mb")
MAX_RUNS = 100_000  # runs of one study (grid points or n_trials, x seeds): more is a mistake, not a plan
METRICS = ("top1", "top5")
# Config keys holding paths: in a study file they are relative to the study file (as `base` is).
PATH_KEYS = ("data.data_dir", "data.class_map", "data.cache_dir", "model.weights")


@dataclass(frozen=True)
class Trial:
    """One point: the searched params (without the seed), the seed, and a unique key over both."""

    params: dict[str, Any]
    seed: int

    @property
    def key(self) -> str:
        return json.dumps({**self.params, "__seed__": self.seed}, sort_keys=True)

    @property
    def variant(self) -> str:
        return json.dumps(self.params, sort_keys=True)


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    scale: str
    base: Path
    overrides: dict[str, Any]
    sampler: str
    metric: str
    seed_key: str
    seeds: tuple[int, ...]
    space: dict[str, Any]  # key -> list of choices, or {low, high, log} (random / tpe); "variant" first
    variants: dict[str, dict[str, Any]]  # name -> overrides (empty: no named variants)
    n_trials: int | None
    constraints: dict[str, float]
    published: dict | None
    raw: dict = field(repr=False, default_factory=dict)  # the resolved study (stored in the study folder)

    def trials(self) -> list[Trial]:
        """The grid (space x seeds) in a fixed order; only for the grid sampler."""
        keys = list(self.space)
        combos = itertools.product(*(self.space[k] for k in keys)) if keys else [()]
        return [Trial(dict(zip(keys, values)), seed) for values in combos for seed in self.seeds]

    def config(self, trial: Trial, extra: dict[str, Any] | None = None) -> RunConfig:
        """The trial's validated training config: base + overrides (study, scale, --set) + the named
        variant's overrides + the searched params + the seed."""
        params = dict(trial.params)
        named = self.variants.get(params.pop(VARIANT, None), {})
        return build_config(self.base, {**self.overrides, **(extra or {}), **named, **params,
                                        self.seed_key: trial.seed})

    @property
    def digest(self) -> str:
        """Identity of what this study runs: a folder holds one study (resuming checks this)."""
        return hashlib.sha1(json.dumps(self.raw, sort_keys=True).encode()).hexdigest()[:12]


def build_config(base: Path, overrides: dict[str, Any]) -> RunConfig:
    return load_config(base, dict(overrides))


def load_study(path: str | Path, scale: str = "smoke", extra: dict[str, Any] | None = None) -> Study:
    """Read and validate a study file at one scale; every trial's config is checked."""
    path = Path(path)
    raw = _read_study(path)
    _check_keys(raw, TOP_KEYS, "study")
    if scale not in SCALES:
        raise ConfigError(f"--scale: expected one of {', '.join(SCALES)}, got {scale!r}")
    scales = raw.get("scales") or {}
    if not isinstance(scales, dict) or scale not in scales:
        raise ConfigError(f"{path}: no scale {scale!r} (scales: {', '.join(scales) or 'none'})")
    sc = scales[scale] or {}
    _check_keys(sc, SCALE_KEYS, f"scales.{scale}")
    study = _assemble(path, raw, scale, sc)
    _validate_trials(study, extra or {})
    return study


def _assemble(path: Path, raw: dict, scale: str, sc: dict) -> Study:
    here = path.parent
    base = sc.get("base") or raw.get("base")
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a path to a training recipe, got {base!r}")
    base_path = (here / base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base recipe not found: {base_path}")
    sampler = raw.get("sampler", "grid")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
    metric = raw.get("metric", "top1")
    if metric not in METRICS:
        raise ConfigError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")
    seed_key, seeds = _seeds(raw.get("seeds"), sc.get("seeds"))
    variants = _variants(raw.get("variants"), sc.get("variants"), here)
    space = {**({VARIANT: list(variants)} if variants else {}),
             **_space(sc.get("space", raw.get("space")) or {}, sampler)}
    n_trials = sc.get("n_trials", raw.get("n_trials"))
    if sampler != "grid" and (not isinstance(n_trials, int) or n_trials < 1):
        raise ConfigError(f"n_trials: the {sampler} sampler needs a positive integer, got {n_trials!r}")
    overrides = _resolve_paths({**_mapping(raw.get("set"), "set"), **_mapping(sc.get("set"), f"scales.{scale}.set")},
                               here)
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name):
        # it names the study folder (studies/<name>-<scale>): never a path, never outside studies/
        raise ConfigError(f"name: expected letters, digits, '.', '_' or '-' (a folder name), got {name!r}")
    runs = len(seeds) * (math.prod(len(v) if isinstance(v, list) else 1 for v in space.values())
                         if sampler == "grid" else n_trials)
    if runs > MAX_RUNS:  # sized before anything is materialised: a 10^9-point grid is refused at once
        raise ConfigError(f"the study has {runs:,} runs ({'grid points' if sampler == 'grid' else 'n_trials'} x "
                          f"{len(seeds)} seeds); at most {MAX_RUNS:,}: split it, or sample it (sampler: random)")
    resolved = {"name": name, "scale": scale, "base": str(base_path),
                "set": overrides, "sampler": sampler, "metric": metric, "seeds": {"key": seed_key, "values": seeds},
                "space": space, "variants": variants, "n_trials": n_trials, "constraints": _constraints(raw.get("constraints"))}
    return Study(name=resolved["name"], path=path, scale=scale, base=base_path, overrides=overrides,
                 sampler=sampler, metric=metric, seed_key=seed_key, seeds=tuple(seeds), space=space, variants=variants,
                 n_trials=n_trials if sampler != "grid" else None, constraints=resolved["constraints"],
                 published=_published(raw.get("published")), raw=resolved)


def _read_study(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"study file not found: {path}")
    import yaml

    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a valid YAML study file ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def _check_keys(raw: object, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys: {', '.join(allowed)}")


def _mapping(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys to values, got {value!r}")
    return dict(value)


def _resolve_paths(overrides: dict, here: Path) -> dict:
    return {k: str((here / v).resolve()) if k in PATH_KEYS and isinstance(v, str) else v
            for k, v in overrides.items()}


def _seeds(top: object, scale_values: object) -> tuple[str, list[int]]:
    top = top if isinstance(top, dict) else {"values": top} if top is not None else {}
    _check_keys(top, ("key", "values"), "seeds")
    key = top.get("key", "train.seed")
    values = scale_values if scale_values is not None else top.get("values", [0])
    if not isinstance(values, list) or not values or not all(isinstance(v, int) and not isinstance(v, bool)
                                                             for v in values):
        raise ConfigError(f"seeds: expected a non-empty list of integers, got {values!r}")
    if len(set(values)) != len(values):
        raise ConfigError(f"seeds: values must be distinct, got {values}")
    return key, list(values)


def _space(space: object, sampler: str) -> dict[str, Any]:
    """key -> list of choices (any sampler) or {low, high, log} (random / tpe only)."""
    out = {}
    for key, dom in _mapping(space, "space").items():
        if isinstance(dom, list) and dom:
            if not all(v is None or isinstance(v, (bool, int, float, str)) for v in dom):
                raise ConfigError(f"space.{key}: choices must be numbers, strings, booleans or null; got {dom!r}")
            out[key] = list(dom)
        elif isinstance(dom, dict) and sampler != "grid":
            _check_keys(dom, ("low", "high", "log"), f"space.{key}")
            if not (isinstance(dom.get("low"), (int, float)) and isinstance(dom.get("high"), (int, float))
                    and dom["low"] < dom["high"]):
                raise ConfigError(f"space.{key}: expected low < high, got {dom!r}")
            out[key] = {"low": dom["low"], "high": dom["high"], "log": bool(dom.get("log", False))}
        else:
            what = "a non-empty list of choices" + ("" if sampler == "grid" else " or {low, high, log}")
            raise ConfigError(f"space.{key}: expected {what}, got {dom!r}")
    return out


def _variants(raw: object, keep: object, here: Path) -> dict[str, dict]:
    """``variants: {name: {key: value}}``, optionally cut to the names a scale lists (in its order)."""
    variants = {str(k): _resolve_paths(_mapping(v, f"variants.{k}"), here) for k, v in _mapping(raw, "variants").items()}
    if keep is None:
        return variants
    if not isinstance(keep, list) or not keep or any(k not in variants for k in keep):
        raise ConfigError(f"variants: a scale lists names of the study's variants ({', '.join(variants)}), got {keep!r}")
    return {k: variants[k] for k in keep}


def _constraints(raw: object) -> dict[str, float]:
    raw = _mapping(raw, "constraints")
    _check_keys(raw, CONSTRAINT_KEYS, "constraints")
    for k, v in raw.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"constraints.{k}: expected a positive number, got {v!r}")
    return {k: float(v) for k, v in raw.items()}


def _published(raw: object) -> dict | None:
    if raw is None:
        return None
    from squeezelab.experiments.verdict import check_claims

    _check_keys(raw, ("dataset", "source", "metric_note", "rows", "claims"), "published")
    rows = raw.get("rows", [])
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("match"), dict)
                                             for r in rows):
        raise ConfigError("published.rows: expected a list of {match: {key: value}, top1: .., top5: ..}")
    claims = check_claims(raw.get("claims"))
    return {**raw, "rows": rows, **({"claims": claims} if claims else {})}


def _validate_trials(study: Study, extra: dict) -> None:
    """Build the config and the model (on the meta device) of every choice once, so that a bad key,
    value or model option fails before any trial runs."""
    from squeezelab.experiments.measure import measure

    sample = {k: (v if isinstance(v, list) else [v["low"], v["high"]]) for k, v in study.space.items()}
    cfg = study.config(Trial({}, study.seeds[0]), extra)
    measure(cfg)
    _trainable(cfg, "")
    if cfg.data.data_dir is not None and not Path(cfg.data.data_dir).exists():
        raise ConfigError(f"data.data_dir not found: {cfg.data.data_dir} (scale {study.scale}; "
                          f"--set data.data_dir=PATH points it at your copy)")
    for key, values in sample.items():
        for value in values:
            try:
                cfg = study.config(Trial({key: value}, study.seeds[0]), extra)
                measure(cfg)
                _trainable(cfg, "")
            except ConfigError as err:
                raise ConfigError(f"space.{key}={value!r}: {err}") from None


def _trainable(cfg: RunConfig, where: str) -> None:
    """What `squeezelab train` would refuse only once the trial starts, refused for the whole study."""
    if cfg.train.epochs < 1 and cfg.train.max_steps is None:
        raise ConfigError(f"{where}train.epochs is {cfg.train.epochs}: a trial trains at least 1 epoch")
