"""Every weights file format, below the engine: our checkpoints, the authors' Deep Compression ``.net``
file, torchvision ``.pth`` and our compressed ``.sqz`` container.

- ``load_weights(path) -> LoadedWeights``: any accepted file (recognised by content), as a state dict
  under our keys plus the model spec and the preprocessing preset the weights expect.
- ``load_into(model, weights)``: copy after checking every name and shape.
- ``model_from_weights(weights, ...)``: the model a file describes, loaded (every command builds it so);
  ``classes_fit``: whether a dataset's labels index a model's classes.
- ``convert_weights(src, dst)``: between the formats (the output's extension picks one).
- ``checkpoint``: our ``.safetensors`` checkpoints (``save_checkpoint``, ``read_checkpoint``).
- ``deep_compression``: the ``.net`` reader/writer (``read_layers``, ``write_layers``, ``encode``,
  ``decode``, ``DeepCompressedLayer``).
"""

from squeezelab.weights import checkpoint, deep_compression
from squeezelab.weights.checkpoint import Checkpoint, read_checkpoint, save_checkpoint
from squeezelab.weights.convert import convert_weights
from squeezelab.weights.deep_compression import DeepCompressedLayer, read_layers, write_layers
from squeezelab.weights.loading import ACCEPTED, LoadedWeights, load_into, load_weights, sniff_format
from squeezelab.weights.model import classes_fit, model_from_weights

__all__ = [
    "ACCEPTED", "Checkpoint", "DeepCompressedLayer", "LoadedWeights", "checkpoint", "classes_fit",
    "convert_weights", "deep_compression", "load_into", "load_weights", "model_from_weights", "read_checkpoint",
    "read_layers", "save_checkpoint", "sniff_format", "write_layers",
]
