"""Pretrained weights in foreign formats: the authors' Deep Compression ``.net`` file and torchvision ``.pth``.

- ``load_weights(path) -> LoadedWeights``: any accepted file (recognised by content), as a state dict
  under our keys plus the model spec and the preprocessing preset the weights expect.
- ``load_into(model, weights)``: copy after checking every name and shape.
- ``convert_weights(src, dst)``: ``.net`` / ``.pth`` / ``.safetensors`` -> ``.safetensors`` or ``.net``.
- ``deep_compression``: the ``.net`` reader/writer (``read_layers``, ``write_layers``, ``encode``,
  ``decode``, ``DeepCompressedLayer``).
"""

from squeezelab.pretrained import deep_compression
from squeezelab.pretrained.convert import convert_weights
from squeezelab.pretrained.deep_compression import DeepCompressedLayer, read_layers, write_layers
from squeezelab.pretrained.weights import ACCEPTED, LoadedWeights, load_into, load_weights, sniff_format

__all__ = [
    "ACCEPTED", "DeepCompressedLayer", "LoadedWeights", "convert_weights", "deep_compression", "load_into",
    "load_weights", "read_layers", "sniff_format", "write_layers",
]
