"""The Deep Compression .net reader/writer, anchored to the authors' published file and its counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from squeezelab.errors import WeightsError
from squeezelab.weights import deep_compression as dc

NET_SIZE = 675_763


@pytest.fixture(scope="module")
def net_bytes(shared_data) -> bytes:
    data = (shared_data / "squeezenet-deep-compression" / "compressed_SqueezeNet.net").read_bytes()
    assert len(data) == NET_SIZE
    return data


@pytest.fixture(scope="module")
def layers(net_bytes):
    return dc.read_layers(net_bytes)


def test_decoded_counts_match_the_published_file(layers):
    assert len(layers) == 26
    assert sum(layer.size for layer in layers) == 1_244_448
    assert sum(layer.n_stored for layer in layers) == 422_083
    assert sum(layer.n_nonzero for layer in layers) == 415_921
    assert sum(layer.bias.size for layer in layers) == 3_976
    state = dc.layers_to_state_dict(layers)
    assert sum(t.numel() for t in state.values()) == 1_248_424
    assert tuple(state["fire9.expand3x3.weight"].shape) == (256, 64, 3, 3)


def test_decode_then_encode_gives_back_the_identical_bytes(net_bytes, layers):
    assert dc.write_layers(layers) == net_bytes


def test_encoding_dense_tensors_reproduces_fillers_and_file(net_bytes, layers):
    # From plain dense tensors + the authors' codebooks: the filler entries must come out the same.
    again = [dc.DeepCompressedLayer.from_dense(layer.dense(), layer.bias, layer.codebook) for layer in layers]
    assert dc.write_layers(again) == net_bytes


def test_encode_with_own_codebook_round_trips_the_weights(layers):
    state = dc.layers_to_state_dict(layers)
    data = dc.encode(state)
    assert len(data) == NET_SIZE  # same entries and fillers, only the codebook order differs
    back = dc.decode(data)
    assert all(torch.equal(state[k], back[k]) for k in state)


def test_fillers_bridge_long_gaps():
    weight = np.zeros((2, 3, 7, 7), np.float32)
    weight.flat[[0, 16, 50, 293]] = [0.5, -1.0, 0.5, 2.0]
    layer = dc.DeepCompressedLayer.from_dense(weight, np.zeros(2, np.float32))
    assert layer.gaps().max() <= 15
    assert layer.n_nonzero == 4 and layer.n_stored == 4 + (33 // 16) + (242 // 16)
    np.testing.assert_array_equal(layer.dense(), weight)


def test_too_many_distinct_values_asks_to_quantise_first():
    weight = np.arange(1, 301, dtype=np.float32).reshape(300, 1, 1, 1)
    with pytest.raises(WeightsError, match="compress/quantise"):
        dc.DeepCompressedLayer.from_dense(weight, np.zeros(300, np.float32))


def _with_count(data: bytes, layer: int, delta: int) -> bytes:
    counts = np.frombuffer(data[:104], "<u4").copy()
    counts[layer] += delta
    return counts.tobytes() + data[104:]


def _index_past_end(data: bytes, layers) -> bytes:
    # Set every 4-bit gap of the last layer (conv10) to 15: positions run far past 512,000.
    n = layers[-1].n_stored
    return data[: len(data) - (n + 1) // 2] + b"\xff" * ((n + 1) // 2)


@pytest.mark.parametrize("corrupt, message", [
    (lambda d, _: d[:-1], "truncated"),
    (lambda d, _: d[: len(d) // 2], "truncated"),
    (lambda d, _: d + b"\x00" * 7, "trailing bytes"),
    (lambda d, _: _with_count(d, 3, +1), "header describes"),
    (lambda d, _: _with_count(d, 0, 10**6), "claims"),
    (lambda d, _: b"", "too short"),
    (lambda d, _: np.random.default_rng(0).bytes(NET_SIZE), "claims"),
    (_index_past_end, "run past the end"),
])
def test_corrupt_files_raise_one_clear_error(net_bytes, layers, corrupt, message):
    with pytest.raises(WeightsError, match=message) as info:
        dc.read_layers(corrupt(net_bytes, layers))
    assert "\n" not in str(info.value)
