"""``convert_weights(src, dst)``: between the authors' ``.net`` file, torchvision ``.pth`` and our checkpoints.

The output format follows the output's extension: ``.safetensors`` (our checkpoint, with the model
spec and preprocessing preset in its metadata) or ``.net`` (Deep Compression, SqueezeNet v1.0 only,
which needs weight-shared layers: at most 255 distinct non-zero values each).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from squeezelab.errors import WeightsError
from squeezelab.weights import deep_compression
from squeezelab.weights.loading import LoadedWeights, load_into, load_weights

OUTPUT_SUFFIXES = (".safetensors", ".net")


def convert_weights(src: str | Path, dst: str | Path) -> LoadedWeights:
    """Read ``src`` (any format ``load_weights`` takes), write ``dst``; returns what was read."""
    dst = Path(dst)
    suffix = dst.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise WeightsError(f"output {dst} must end with {' or '.join(OUTPUT_SUFFIXES)}")
    if not dst.parent.is_dir():
        raise WeightsError(f"output folder does not exist: {dst.parent}")
    weights = load_weights(src)
    if suffix == ".net":
        write_deep_compression(dst, weights)
    else:
        save_as_checkpoint(dst, weights)
    return weights


def save_as_checkpoint(dst: Path, weights: LoadedWeights) -> Path:
    """Build the model the weights describe, load them (checks every shape) and save our checkpoint."""
    from squeezelab.weights.checkpoint import save_checkpoint
    from squeezelab.models import create_model

    spec = weights.model_spec
    if spec is None or spec["num_classes"] is None:
        raise WeightsError(f"{weights.path}: the file does not say which model it holds, so it cannot "
                           "become a self-describing checkpoint")
    model = create_model(spec["name"], num_classes=spec["num_classes"], **spec["options"])
    load_into(model, weights)
    meta = {"model": model.model_spec, "preset": weights.preset, "source": weights.source,
            "converted_from": str(weights.path)}
    return save_checkpoint(dst, model, meta=meta)


def write_deep_compression(dst: Path, weights: LoadedWeights) -> Path:
    """Encode a weight-shared SqueezeNet v1.0 (1000 classes) as a ``.net`` file, atomically."""
    if weights.model_name not in (None, "squeezenet1_0") or weights.num_classes not in (None, 1000):
        raise WeightsError(f"the Deep Compression format holds SqueezeNet v1.0 with 1000 classes only; "
                           f"{weights.path} holds {weights.model_name} with {weights.num_classes} classes")
    try:
        data = deep_compression.encode(weights.state_dict)
    except WeightsError as err:
        raise WeightsError(f"cannot write {weights.path} as .net: {err}") from None
    _write_atomic(dst, data)
    return dst


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
