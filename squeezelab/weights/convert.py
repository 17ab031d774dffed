"""``convert_weights(src, dst)``: between the weights formats; the output's extension picks one.

- ``.safetensors``: our checkpoint (model spec and preprocessing preset in its metadata). Lossless.
- ``.sqz``: our compressed container (``weights/sqz.py``). Lossless by default: a weight-shared,
  pruned model (the authors' ``.net`` file) keeps every weight bit for bit and only gets smaller. With
  a ``OneShotRecipe`` the weights are first pruned and/or weight-shared (no retraining: for that,
  ``squeezelab compress``), which is lossy.
- ``.net``: the Deep Compression file (SqueezeNet v1.0 with 1000 classes whose layers are weight-shared:
  at most 255 distinct non-zero values each). The weights are kept exactly; a ``.net`` read in is
  written back byte for byte (its codebooks and filler entries are kept as they were).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from squeezelab.errors import WeightsError
from squeezelab.weights import deep_compression, sqz
from squeezelab.weights.loading import LoadedWeights, load_weights

OUTPUT_SUFFIXES = (".safetensors", ".sqz", ".net")


def convert_weights(src: str | Path, dst: str | Path, recipe=None) -> LoadedWeights:
    """Read ``src`` (any format ``load_weights`` takes), write ``dst``; returns what was read.
    ``recipe``: a ``config.OneShotRecipe`` (``.sqz`` output only)."""
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise WeightsError(f"output {dst} must end with {', '.join(OUTPUT_SUFFIXES)}")
    if dst.is_dir():
        raise WeightsError(f"output {dst} is a folder; name the file to write")
    if not dst.parent.is_dir():
        raise WeightsError(f"output folder does not exist: {dst.parent}")
    if recipe is not None and suffix != ".sqz":
        raise WeightsError("a recipe (pruning / weight sharing) applies to .sqz output only")
    weights = load_weights(src)
    if suffix == ".net":
        write_deep_compression(dst, weights)
    elif suffix == ".sqz":
        write_sqz_file(dst, weights, recipe)
    else:
        save_as_checkpoint(dst, weights)
    return weights


def _model_for(weights: LoadedWeights, what: str) -> torch.nn.Module:
    from squeezelab.weights.model import model_from_weights

    spec = weights.model_spec
    if spec is None or spec["num_classes"] is None:
        raise WeightsError(f"{weights.path}: the file does not say which model it holds, so it cannot {what}")
    return model_from_weights(weights)


def save_as_checkpoint(dst: Path, weights: LoadedWeights) -> Path:
    """Build the model the weights describe, load them (checks every shape) and save our checkpoint."""
    from squeezelab.weights.checkpoint import save_checkpoint

    model = _model_for(weights, "become a self-describing checkpoint")
    meta = {"model": model.model_spec, "preset": weights.preset, "source": weights.source,
            "converted_from": str(weights.path), "classes": weights.classes}
    return save_checkpoint(dst, model, meta=meta)


def write_sqz_file(dst: Path, weights: LoadedWeights, recipe=None, *, provenance: dict | None = None) -> Path:
    """Encode the weights (after the recipe's one-shot pruning / sharing, if any) as .sqz, atomically."""
    from squeezelab.config import CodeConfig, config_to_dict

    state = dict(weights.state_dict)
    code = CodeConfig()
    if recipe is not None:
        state = apply_one_shot(weights, recipe).state_dict()
        code = recipe.code
    header = sqz_header(weights, {**(provenance or {}),
                                  "recipe": config_to_dict(recipe) if recipe is not None else None})
    data = sqz.write_sqz(state, header, coder=code.coder, index_bits=code.index_bits or "auto",
                         max_codebook=code.max_codebook, raw_float16=code.raw_float16,
                         codebook_float16=code.codebook_float16)
    _write_atomic(dst, data)
    return dst


def apply_one_shot(weights: LoadedWeights, recipe, seed: int = 0) -> torch.nn.Module:
    """The model with every compression method the recipe enables applied in registry order (pruning
    before quantisation), without retraining."""
    from squeezelab.compression import methods

    model = _model_for(weights, "be pruned or quantised")
    return methods.apply_one_shot(recipe, model, methods.Context(seed=seed))


def sqz_header(weights: LoadedWeights, provenance: dict) -> dict:
    """The JSON header of a .sqz file made from ``weights``: model, preset, classes, provenance."""
    from squeezelab import __version__
    from squeezelab.runtime import git_commit

    source = {"source": weights.source, "source_file": weights.path.name if weights.path else None}
    if weights.path is not None and weights.path.is_file():
        source["source_sha256"] = hashlib.sha256(weights.path.read_bytes()).hexdigest()
    if weights.header:  # a .sqz re-encoded: keep where it came from
        source["derived_from"] = weights.header.get("provenance")
    return {"model": weights.model_spec, "preset": weights.preset, "classes": weights.classes,
            "data_split": weights.data_split,
            "provenance": {**source, "squeezelab": __version__, "commit": git_commit(), **provenance}}


def write_deep_compression(dst: Path, weights: LoadedWeights) -> Path:
    """Encode a weight-shared SqueezeNet v1.0 (1000 classes) as a ``.net`` file, atomically. A
    ``.net`` read in keeps its own layers (codebook order, fillers): the bytes come back unchanged."""
    if weights.model_name not in (None, "squeezenet1_0") or weights.num_classes not in (None, 1000):
        raise WeightsError(f"the Deep Compression format holds SqueezeNet v1.0 with 1000 classes only; "
                           f"{weights.path} holds {weights.model_name} with {weights.num_classes} classes")
    if weights.source == "deep-compression" and weights.path is not None:
        data = deep_compression.write_layers(deep_compression.read_layers(weights.path.read_bytes()))
    else:
        try:
            data = deep_compression.encode(weights.state_dict)
        except WeightsError as err:
            raise WeightsError(f"cannot write {weights.path} as .net: {err}") from None
    _write_atomic(dst, data)
    return dst


def _write_atomic(path: Path, data: bytes) -> None:
    from squeezelab.runtime import atomic_write_bytes

    atomic_write_bytes(path, data)  # a refused write: WriteError, one line, exit 1
