"""Reader and writer for the Deep Compression SqueezeNet file (``compressed_SqueezeNet.net``).

Format (Han et al., "Deep Compression", 2016; the file published with the SqueezeNet paper), as
documented in ``docs/deep-compression-format.md``: little-endian, ``uint32[26]`` stored-entry counts,
then per layer ``float32[256]`` codebook, ``float32[out]`` bias, ``uint8[n]`` codes and ``uint8[ceil(n/2)]``
4-bit relative positions (low nibble first). A gap over 15 is bridged by filler entries with code 0
(codebook[0] == 0.0). The file ends right after the last layer.

The intermediate form is :class:`DeepCompressedLayer` (codebook + bias + positions + codes): keeping
the codebook and the filler entries as they are is what makes decode -> encode byte-identical.
Everything here is a pure function of bytes / arrays; torch appears only at the state-dict boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from squeezelab.errors import WeightsError

CODEBOOK_SIZE = 256  # 8-bit codes: all SqueezeNet layers are convolutions
MAX_GAP = 15  # 4-bit relative index
HEADER_ENTRY = np.dtype("<u4")
F32 = np.dtype("<f4")


def _squeezenet_v1_0_layout() -> tuple[tuple[str, tuple[int, int, int, int]], ...]:
    """(state-dict prefix, weight shape) of the 26 layers, in file order."""
    fires = [(16, 96, 64), (16, 128, 64), (32, 128, 128), (32, 256, 128),
             (48, 256, 192), (48, 384, 192), (64, 384, 256), (64, 512, 256)]  # (s1x1, in, e1x1=e3x3)
    layout = [("conv1", (96, 3, 7, 7))]
    for i, (s, cin, e) in enumerate(fires, start=2):
        layout += [(f"fire{i}.squeeze", (s, cin, 1, 1)), (f"fire{i}.expand1x1", (e, s, 1, 1)),
                   (f"fire{i}.expand3x3", (e, s, 3, 3))]
    layout.append(("conv10", (1000, 512, 1, 1)))
    return tuple(layout)


SQUEEZENET_V1_0_LAYOUT = _squeezenet_v1_0_layout()


@dataclass(frozen=True, eq=False)
class DeepCompressedLayer:
    """One weight-shared sparse layer: ``weight.flat[positions] = codebook[codes]``, zeros elsewhere.

    ``positions`` includes the filler entries (code 0), exactly as stored in the file.
    """

    shape: tuple[int, ...]
    codebook: np.ndarray  # float32[256]
    bias: np.ndarray  # float32[shape[0]]
    positions: np.ndarray  # int64[n], strictly increasing flat indices
    codes: np.ndarray  # uint8[n]

    @property
    def n_stored(self) -> int:
        return int(self.codes.size)

    @property
    def n_nonzero(self) -> int:
        return int(np.count_nonzero(self.codebook[self.codes]))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def dense(self) -> np.ndarray:
        flat = np.zeros(self.size, dtype=np.float32)
        flat[self.positions] = self.codebook[self.codes]
        return flat.reshape(self.shape)

    def gaps(self) -> np.ndarray:
        """The 4-bit relative indices: entry i sits gap_i + 1 places after entry i-1 (first from -1)."""
        return (np.diff(self.positions, prepend=-1) - 1).astype(np.uint8)

    @classmethod
    def from_dense(cls, weight: np.ndarray, bias: np.ndarray,
                   codebook: np.ndarray | None = None) -> DeepCompressedLayer:
        """Encode an already weight-shared tensor; ``codebook=None`` builds one from its values."""
        flat = np.ascontiguousarray(weight, dtype=np.float32).ravel()
        nonzero = np.flatnonzero(flat)
        codebook = _codebook_for(flat[nonzero]) if codebook is None else np.asarray(codebook, F32)
        codes = _codes_for(flat[nonzero], codebook)
        positions, codes = _insert_fillers(nonzero, codes)
        return cls(tuple(weight.shape), codebook, np.asarray(bias, F32).ravel(), positions, codes)


def _codebook_for(values: np.ndarray) -> np.ndarray:
    """Entry 0 is 0.0 (the fillers point at it), then the distinct non-zero values, sorted."""
    distinct = np.unique(values)
    if distinct.size > CODEBOOK_SIZE - 1:
        raise WeightsError(
            f"a layer has {distinct.size} distinct non-zero weight values, but the Deep Compression "
            f"format holds at most {CODEBOOK_SIZE - 1} (8-bit codes): compress/quantise the model "
            "(weight sharing) first")
    codebook = np.zeros(CODEBOOK_SIZE, dtype=F32)
    codebook[1:1 + distinct.size] = distinct
    return codebook


def _codes_for(values: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """Index of each value in the codebook (exact match; code 0 is kept for the fillers)."""
    order = np.argsort(codebook[1:], kind="stable") + 1
    idx = np.clip(np.searchsorted(codebook[order], values), 0, order.size - 1)
    codes = order[idx]
    if values.size and not np.array_equal(codebook[codes], values):
        raise WeightsError("a weight value is not in the layer's codebook")
    return codes.astype(np.uint8)


def _insert_fillers(nonzero: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bridge gaps > 15 with code-0 entries every 16 places, as the authors' encoder did."""
    gaps = np.diff(nonzero, prepend=-1) - 1
    n_fill = gaps // (MAX_GAP + 1)
    if not n_fill.any():
        return nonzero.astype(np.int64), codes
    prev = np.concatenate(([-1], nonzero[:-1]))
    fill_pos = [p + (MAX_GAP + 1) * np.arange(1, k + 1) for p, k in zip(prev[n_fill > 0], n_fill[n_fill > 0])]
    positions = np.concatenate([nonzero, *fill_pos]).astype(np.int64)
    all_codes = np.concatenate([codes, np.zeros(positions.size - codes.size, np.uint8)])
    order = np.argsort(positions, kind="stable")
    return positions[order], all_codes[order]


# ---------------------------------------------------------------------------------------- bytes


def expected_size(counts: np.ndarray, layout=SQUEEZENET_V1_0_LAYOUT) -> int:
    """Bytes a file with these stored-entry counts must have."""
    body = sum(4 * CODEBOOK_SIZE + 4 * shape[0] + int(n) + (int(n) + 1) // 2
               for n, (_, shape) in zip(counts, layout))
    return len(layout) * HEADER_ENTRY.itemsize + body


def looks_like_deep_compression(head: bytes, layout=SQUEEZENET_V1_0_LAYOUT) -> bool:
    """Cheap content sniff: a full header whose counts all fit their layers (random data fails it)."""
    header_bytes = len(layout) * HEADER_ENTRY.itemsize
    if len(head) < header_bytes:
        return False
    counts = np.frombuffer(head[:header_bytes], HEADER_ENTRY)
    sizes = np.array([np.prod(shape) for _, shape in layout])
    return bool(np.all((counts > 0) & (counts <= sizes)))


def read_layers(data: bytes, layout=SQUEEZENET_V1_0_LAYOUT) -> list[DeepCompressedLayer]:
    """Decode the file's bytes, checking every length; corrupt input raises WeightsError."""
    header_bytes = len(layout) * HEADER_ENTRY.itemsize
    if len(data) < header_bytes:
        raise WeightsError(f"too short for a Deep Compression file: {len(data)} bytes, the header "
                           f"alone is {header_bytes}")
    counts = np.frombuffer(data[:header_bytes], HEADER_ENTRY).astype(np.int64)
    for n, (name, shape) in zip(counts, layout):
        if n > np.prod(shape):
            raise WeightsError(f"corrupt Deep Compression header: layer {name} claims {n} stored "
                               f"entries but has only {np.prod(shape)} weights")
    want = expected_size(counts, layout)
    if len(data) != want:
        kind = "truncated" if len(data) < want else "has trailing bytes"
        raise WeightsError(f"Deep Compression file {kind}: it is {len(data)} bytes but its header "
                           f"describes {want} bytes")
    layers, offset = [], header_bytes
    for n, (name, shape) in zip(counts, layout):
        layer, offset = _read_layer(data, offset, int(n), name, shape)
        layers.append(layer)
    return layers


def _read_layer(data: bytes, offset: int, n: int, name: str, shape) -> tuple[DeepCompressedLayer, int]:
    def take(count: int, dtype) -> np.ndarray:
        nonlocal offset
        arr = np.frombuffer(data, dtype, count, offset)
        offset += arr.nbytes
        return arr

    codebook, bias = take(CODEBOOK_SIZE, F32).copy(), take(shape[0], F32).copy()
    codes, packed = take(n, np.uint8).copy(), take((n + 1) // 2, np.uint8)
    gaps = np.empty(2 * packed.size, np.int64)
    gaps[0::2], gaps[1::2] = packed & 0x0F, packed >> 4
    positions = np.cumsum(gaps[:n] + 1) - 1
    size = int(np.prod(shape))
    if n and positions[-1] >= size:
        raise WeightsError(f"corrupt Deep Compression file: the relative indices of layer {name} run "
                           f"past the end of its tensor (position {positions[-1]} >= {size} weights)")
    if not (np.isfinite(codebook).all() and np.isfinite(bias).all()):
        raise WeightsError(f"corrupt Deep Compression file: layer {name} has non-finite codebook/bias values")
    if codebook[0] != 0.0 and np.any(codes == 0):
        raise WeightsError(f"corrupt Deep Compression file: codebook entry 0 of layer {name} must be 0.0")
    return DeepCompressedLayer(tuple(shape), codebook, bias, positions, codes), offset


def write_layers(layers: list[DeepCompressedLayer]) -> bytes:
    """Encode layers in file order; the inverse of :func:`read_layers` (byte-identical)."""
    parts = [np.array([layer.n_stored for layer in layers], HEADER_ENTRY).tobytes()]
    for layer in layers:
        steps = np.diff(layer.positions, prepend=-1)
        if layer.codes.size != steps.size or (steps < 1).any() or (steps > MAX_GAP + 1).any():
            raise WeightsError("positions must be strictly increasing, one per code, at most 16 apart (fillers)")
        gaps = (steps - 1).astype(np.uint8)
        packed = np.zeros(2 * ((gaps.size + 1) // 2), np.uint8)
        packed[:gaps.size] = gaps
        parts += [np.asarray(layer.codebook, F32).tobytes(), np.asarray(layer.bias, F32).tobytes(),
                  np.asarray(layer.codes, np.uint8).tobytes(), (packed[0::2] | (packed[1::2] << 4)).tobytes()]
    return b"".join(parts)


# ----------------------------------------------------------------------------------- state dicts


def layers_to_state_dict(layers: list[DeepCompressedLayer], layout=SQUEEZENET_V1_0_LAYOUT) -> dict[str, torch.Tensor]:
    """Dense float32 tensors under our keys (``conv1.weight``, ``fire2.squeeze.bias``, ...)."""
    state = {}
    for layer, (name, _) in zip(layers, layout):
        state[f"{name}.weight"] = torch.from_numpy(layer.dense())
        state[f"{name}.bias"] = torch.from_numpy(layer.bias.copy())
    return state


def state_dict_to_layers(state: dict[str, torch.Tensor], layout=SQUEEZENET_V1_0_LAYOUT) -> list[DeepCompressedLayer]:
    """Encode a weight-shared SqueezeNet v1.0 state dict (our keys); each layer gets its own codebook."""
    expected = {f"{name}.{kind}" for name, _ in layout for kind in ("weight", "bias")}
    extra = sorted(set(state) - expected)
    if extra:
        raise WeightsError(f"the Deep Compression format holds plain SqueezeNet v1.0 convolutions only; "
                           f"this model also has {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}")
    layers = []
    for name, shape in layout:
        weight, bias = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if weight is None or bias is None:
            raise WeightsError(f"the state dict has no {name}.weight/.bias: the Deep Compression format "
                               "holds SqueezeNet v1.0 (1000 classes) only")
        if tuple(weight.shape) != shape:
            raise WeightsError(f"{name}.weight has shape {tuple(weight.shape)}, the Deep Compression "
                               f"format needs {shape} (SqueezeNet v1.0, 1000 classes)")
        try:
            layers.append(DeepCompressedLayer.from_dense(weight.detach().float().cpu().numpy(),
                                                         bias.detach().float().cpu().numpy()))
        except WeightsError as err:
            raise WeightsError(f"layer {name}: {err}") from None
    return layers


def decode(data: bytes) -> dict[str, torch.Tensor]:
    """Bytes of a ``.net`` file -> state dict (our keys)."""
    return layers_to_state_dict(read_layers(data))


def encode(state: dict[str, torch.Tensor]) -> bytes:
    """State dict (our keys, weight-shared) -> bytes of a ``.net`` file."""
    return write_layers(state_dict_to_layers(state))
