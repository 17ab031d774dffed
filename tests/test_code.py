"""Entropy codecs: hand-computed bytes, the entropy bound, round trips and corrupt streams."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from squeezelab.compression import code


def test_raw_packs_fixed_width_msb_first():
    # alphabet 4 -> 2 bits: 01 10 11 -> 0b01101100
    assert code.CODECS["raw"].encode(np.array([1, 2, 3]), 4) == bytes([0b01101100])
    assert code.decode("raw", bytes([0b01101100]), 3, 4).tolist() == [1, 2, 3]


def test_huffman_table_and_bits_by_hand():
    # counts {0: 2, 1: 1, 2: 1} -> lengths (1, 2, 2) -> canonical codes 0, 10, 11
    data = code.CODECS["huffman"].encode(np.array([0, 0, 1, 2]), 3)
    #        flag  lengths (1,2) (2,0)  bits 0 0 10 11 + padding
    assert data == bytes([4, 0x12, 0x20, 0b00101100])
    assert code.decode("huffman", data, 4, 3).tolist() == [0, 0, 1, 2]


def test_const_and_auto_choose_the_smallest():
    assert code.encode(np.full(1000, 7), 16) == ("const", bytes([7]))
    rng = np.random.default_rng(0)
    skewed = rng.choice(64, size=20_000, p=np.r_[0.5, np.full(63, 0.5 / 63)])
    name, data = code.encode(skewed, 64)
    sizes = {c: len(code.encode(skewed, 64, c)[1]) for c in ("huffman", "ans", "raw")}
    assert len(data) == min(sizes.values()) and name in ("huffman", "ans")


def test_ans_is_within_a_table_of_the_entropy_and_huffman_is_not_below_it():
    rng = np.random.default_rng(1)
    p = np.exp(-np.arange(32) / 4.0)
    symbols = rng.choice(32, size=50_000, p=p / p.sum())
    bound = code.entropy_bits(symbols) / 8
    ans = len(code.encode(symbols, 32, "ans")[1])
    huffman = len(code.encode(symbols, 32, "huffman")[1])
    assert bound <= ans <= bound * 1.005 + 80  # + the table
    assert huffman >= bound  # whole bits per symbol: Huffman never beats the entropy


def test_entropy_of_a_fair_coin():
    assert code.entropy_bits(np.array([0, 1] * 50)) == pytest.approx(100.0)
    assert code.entropy_bits(np.zeros(10, int)) == 0.0


@settings(max_examples=150, deadline=None)
@given(alphabet=st.integers(1, 300), data=st.data(), coder=st.sampled_from(["auto", "huffman", "ans", "raw"]))
def test_every_codec_round_trips(alphabet, data, coder):
    symbols = np.array(data.draw(st.lists(st.integers(0, alphabet - 1), max_size=400)), dtype=np.int64)
    name, blob = code.encode(symbols, alphabet, coder)
    assert code.decode(name, blob, symbols.size, alphabet).tolist() == symbols.tolist()


@pytest.mark.parametrize("codec", ["raw", "const", "huffman", "ans"])
def test_corrupt_streams_raise_stream_errors(codec):
    rng = np.random.default_rng(2)
    symbols = rng.integers(0, 20, 500)
    if codec == "const":
        symbols[:] = 3
    blob = code.CODECS[codec].encode(symbols, 20)
    for bad in (blob[: len(blob) // 2], b"", blob + b"\xff" * 9, bytes(b ^ 0xA5 for b in blob)):
        try:
            out = code.decode(codec, bad, symbols.size, 20)
        except code.StreamError as err:
            assert "\n" not in str(err)
        else:  # some damage still decodes: then it is in range and of the right length
            assert out.size == symbols.size and out.min() >= 0 and out.max() < 20
    if codec in ("huffman", "ans", "raw"):
        with pytest.raises(code.StreamError, match="cannot hold|must be"):
            code.decode(codec, blob, 10**12, 20)  # a claim no stream of this size can back


def test_unknown_codec_and_bad_parameters():
    with pytest.raises(code.StreamError, match="unknown codec"):
        code.decode("zstd", b"", 0, 2)
    with pytest.raises(ValueError, match="symbols must lie"):
        code.encode(np.array([5]), 4)
