"""Entropy coding of integer symbol streams (weight codes, relative-index gaps), with exact sizes.

A stream is ``count`` symbols from the alphabet ``{0 .. alphabet-1}``; the caller stores ``count``
and ``alphabet`` (the ``.sqz`` layer table does), so a coded stream is just bytes. Codecs
(``CODECS``), each a pair of pure functions symbols <-> bytes:

- ``raw``: fixed width, ceil(log2(alphabet)) bits per symbol (what the paper's file does: 8-bit codes,
  4-bit gaps).
- ``const``: every symbol the same; the bytes are that symbol as a varint.
- ``huffman``: Huffman coding, as in Deep Compression (Han et al. 2016, section 4). The table is the code
  length of each symbol (nibbles, or bytes when a code is longer than 15 bits); the codes are the
  canonical ones those lengths define (sorted by length, then symbol), so a file does not depend on how
  a library breaks ties. Coding runs in bitarray's C code.
- ``ans``: range/ANS coding (constriction's ``AnsCoder``, Rust), which gets closer to the entropy than
  Huffman's whole bits per symbol. The table holds the present symbols (a bitmap) and their counts
  quantised to 2^P (varints); the probabilities handed to constriction are those dyadic fractions,
  exactly representable in its 24-bit fixed point, so decoding does not depend on its float rounding.

``encode(symbols, alphabet, "auto")`` codes with every candidate and keeps the smallest (table included),
so the default is whichever is smaller for this stream. Decoding checks what it can (table validity,
symbol range, stream length) and raises :class:`WeightsError` on corrupt input; it never allocates
more than ``count`` symbols.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from squeezelab.errors import WeightsError

MAX_ALPHABET = 1 << 16  # symbols are codes (<= 16 bits) or gaps (<= 16 index bits)
ANS_PRECISION = 24  # constriction's DefaultAnsCoder: 32-bit words, 24-bit probabilities


class StreamError(WeightsError):
    """A coded stream is corrupt (the container adds which layer and stream)."""


# ------------------------------------------------------------------------------------ helpers


def symbol_width(alphabet: int) -> int:
    """Bits per symbol of the raw codec: ceil(log2(alphabet)), at least 1."""
    return max(1, (alphabet - 1).bit_length())


def entropy_bits(symbols: np.ndarray) -> float:
    """Shannon entropy of the empirical distribution times the count: the bound no coder beats."""
    counts = np.bincount(np.asarray(symbols, np.int64))
    counts = counts[counts > 0]
    if counts.size <= 1:
        return 0.0
    return float(-(counts * np.log2(counts / counts.sum())).sum())


def write_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def read_varint(data: bytes, offset: int) -> tuple[int, int]:
    """-> (value, new offset); at most 5 bytes (32 bits), else StreamError."""
    value = 0
    for i in range(5):
        if offset + i >= len(data):
            raise StreamError("stream ends inside a varint")
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, offset + i + 1
    raise StreamError("varint longer than 32 bits")


def _check_symbols(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    symbols = np.asarray(symbols)
    if not 1 <= alphabet <= MAX_ALPHABET:
        raise ValueError(f"alphabet must be in [1, {MAX_ALPHABET}], got {alphabet}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet):
        raise ValueError(f"symbols must lie in [0, {alphabet}), got [{symbols.min()}, {symbols.max()}]")
    return symbols.astype(np.int64, copy=False).ravel()


# ------------------------------------------------------------------------------------ raw / const


def _raw_encode(symbols: np.ndarray, alphabet: int) -> bytes:
    width = symbol_width(alphabet)
    bits = (symbols[:, None] >> np.arange(width - 1, -1, -1)) & 1  # MSB first
    return np.packbits(bits.astype(np.uint8).ravel()).tobytes()


def _raw_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    width = symbol_width(alphabet)
    if len(data) != (count * width + 7) // 8:
        raise StreamError(f"raw stream of {count} {width}-bit symbols must be {(count * width + 7) // 8} "
                          f"bytes, got {len(data)}")
    bits = np.unpackbits(np.frombuffer(data, np.uint8))[: count * width].reshape(count, width)
    out = bits.astype(np.int64) @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
    if out.size and out.max() >= alphabet:
        raise StreamError(f"raw stream holds symbol {out.max()} outside its alphabet of {alphabet}")
    return out


def _const_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    if symbols.size and (symbols != symbols[0]).any():
        return None  # not constant: this codec does not apply
    return write_varint(int(symbols[0]) if symbols.size else 0)


def _const_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    value, end = read_varint(data, 0)
    if end != len(data) or value >= alphabet:
        raise StreamError(f"const stream must be one varint below {alphabet}")
    return np.full(count, value, np.int64)


# ------------------------------------------------------------------------------------ Huffman


def _canonical(lengths: np.ndarray) -> tuple[list[int], list[int]]:
    """Code lengths per symbol -> bitarray's canonical tables (count per length, symbols in order)."""
    present = np.flatnonzero(lengths)
    order = present[np.lexsort((present, lengths[present]))]  # by length, then symbol
    count = np.bincount(lengths[order], minlength=int(lengths.max()) + 1).tolist()
    count[0] = 0
    return count, order.tolist()


def _huffman_lengths(symbols: np.ndarray, alphabet: int) -> np.ndarray:
    from bitarray.util import canonical_huffman

    counts = np.bincount(symbols, minlength=alphabet)
    present = np.flatnonzero(counts)
    lengths = np.zeros(alphabet, np.int64)
    if present.size == 1:
        lengths[present[0]] = 1  # one symbol: one bit each (const is the better codec then)
        return lengths
    code, _, _ = canonical_huffman({int(s): int(counts[s]) for s in present})
    for s, bits in code.items():
        lengths[s] = len(bits)
    return lengths


def _codes_from_canonical(count: list[int], order: list[int]) -> dict:
    """Canonical code words: consecutive integers within a length, shifted left at each new length."""
    from bitarray import frozenbitarray
    from bitarray.util import int2ba

    code, value, i = {}, 0, 0
    for length in range(1, len(count)):
        for _ in range(count[length]):
            code[order[i]] = frozenbitarray(int2ba(value, length))
            value, i = value + 1, i + 1
        value <<= 1
    return code


def _huffman_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    from bitarray import bitarray

    if not symbols.size:
        return None
    lengths = _huffman_lengths(symbols, alphabet)
    count, order = _canonical(lengths)
    bits = bitarray()
    bits.encode(_codes_from_canonical(count, order), symbols.tolist())
    return _pack_lengths(lengths) + bits.tobytes()


def _pack_lengths(lengths: np.ndarray) -> bytes:
    """One flag byte (4: nibbles, 8: bytes), then the code length of every symbol of the alphabet."""
    if lengths.max() <= 15:
        padded = np.zeros(2 * ((lengths.size + 1) // 2), np.uint8)
        padded[: lengths.size] = lengths
        return b"\x04" + (padded[0::2] << 4 | padded[1::2]).astype(np.uint8).tobytes()
    return b"\x08" + lengths.astype(np.uint8).tobytes()


def _unpack_lengths(data: bytes, alphabet: int) -> tuple[np.ndarray, int]:
    if not data:
        raise StreamError("empty Huffman stream")
    width = data[0]
    size = (alphabet + 1) // 2 if width == 4 else alphabet
    if width not in (4, 8) or len(data) < 1 + size:
        raise StreamError("corrupt Huffman table")
    raw = np.frombuffer(data, np.uint8, size, 1)
    if width == 4:
        lengths = np.empty(2 * size, np.int64)
        lengths[0::2], lengths[1::2] = raw >> 4, raw & 0x0F
        lengths = lengths[:alphabet]
    else:
        lengths = raw.astype(np.int64)
    return lengths, 1 + size


def _huffman_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    from bitarray import bitarray
    from bitarray.util import canonical_decode

    lengths, start = _unpack_lengths(data, alphabet)
    if not lengths.any() or lengths.max() > 32:
        raise StreamError("corrupt Huffman table (no symbol, or a code longer than 32 bits)")
    kraft = float(np.sum(2.0 ** -lengths[lengths > 0]))
    if kraft > 1.0:
        raise StreamError("corrupt Huffman table (its code lengths are not a prefix code)")
    if count > 8 * (len(data) - start):
        raise StreamError(f"Huffman stream of {len(data) - start} bytes cannot hold {count} symbols")
    bits = bitarray()
    bits.frombytes(data[start:])
    table = _canonical(lengths)
    try:
        out = np.fromiter(canonical_decode(bits, *table), dtype=np.int64, count=count)
    except ValueError as err:  # the bits ran out before `count` symbols, or hit an unused code
        raise StreamError(f"corrupt Huffman stream ({err})") from None
    return out


# ------------------------------------------------------------------------------------ ANS


def _ans_quantise(counts: np.ndarray, precision: int) -> np.ndarray:
    """Counts (all > 0) -> integers >= 1 summing to exactly 2**precision, close to proportional."""
    total = 1 << precision
    q = np.maximum(1, np.floor(counts * (total / counts.sum()))).astype(np.int64)
    diff = total - int(q.sum())
    order = np.argsort(-counts, kind="stable")
    i = 0
    while diff:  # hand out / take back the rounding remainder, largest counts first
        s = order[i % order.size]
        if diff > 0:
            q[s], diff = q[s] + 1, diff - 1
        elif q[s] > 1:
            q[s], diff = q[s] - 1, diff + 1
        i += 1
    return q


def _ans_model(q: np.ndarray, precision: int):
    import constriction

    # q / 2**precision is dyadic: exact in float64 and in the coder's 24-bit fixed point.
    probs = q.astype(np.float64) / float(1 << precision)
    return constriction.stream.model.Categorical(probs, perfect=False)


def _ans_encode(symbols: np.ndarray, alphabet: int) -> bytes | None:
    import constriction

    counts = np.bincount(symbols, minlength=alphabet)
    present = np.flatnonzero(counts)
    if present.size < 2:
        return None  # const codes this in a byte
    best = None
    for precision in range(max(8, math.ceil(math.log2(present.size)) + 1), 17):
        q = _ans_quantise(counts[present], precision)
        bits = float(-(counts[present] * np.log2(q / float(1 << precision))).sum())
        table = _ans_table(present, q, precision, alphabet)
        if best is None or len(table) + bits / 8 < best[0]:
            best = (len(table) + bits / 8, table, q, precision)
    _, table, q, precision = best
    rank = np.zeros(alphabet, np.int32)
    rank[present] = np.arange(present.size, dtype=np.int32)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(rank[symbols], _ans_model(q, precision))
    words = coder.get_compressed().astype("<u4")
    return table + words.tobytes()


def _ans_table(present: np.ndarray, q: np.ndarray, precision: int, alphabet: int) -> bytes:
    bitmap = np.zeros(8 * ((alphabet + 7) // 8), np.uint8)
    bitmap[present] = 1
    return (bytes([precision]) + np.packbits(bitmap).tobytes()
            + b"".join(write_varint(int(v) - 1) for v in q))


def _ans_decode(data: bytes, count: int, alphabet: int) -> np.ndarray:
    import constriction

    if not data or not 8 <= data[0] <= 16:
        raise StreamError("corrupt ANS table (precision)")
    precision, nbitmap = data[0], (alphabet + 7) // 8
    if len(data) < 1 + nbitmap:
        raise StreamError("ANS stream shorter than its table")
    present = np.flatnonzero(np.unpackbits(np.frombuffer(data, np.uint8, nbitmap, 1))[:alphabet])
    if present.size < 2:
        raise StreamError("corrupt ANS table (fewer than two symbols)")
    offset, q = 1 + nbitmap, np.empty(present.size, np.int64)
    for i in range(present.size):
        value, offset = read_varint(data, offset)
        q[i] = value + 1
    if int(q.sum()) != 1 << precision:
        raise StreamError("corrupt ANS table (probabilities do not sum to one)")
    body = data[offset:]
    if len(body) % 4:
        raise StreamError("ANS stream is not a whole number of 32-bit words")
    # Every symbol costs at least -log2(max q / 2^P) bits: a claim of more symbols than the
    # words can hold is refused before decoding (and the decode itself is bounded by `count`).
    min_bits = -math.log2(q.max() / float(1 << precision))
    if count and 32 * (len(body) // 4 + 2) < count * min_bits:
        raise StreamError(f"ANS stream of {len(body)} bytes cannot hold {count} symbols")
    words = np.frombuffer(body, "<u4").astype(np.uint32)
    try:
        coder = constriction.stream.stack.AnsCoder(words)
        ranks = coder.decode(_ans_model(q, precision), count)
    except BaseException as err:  # noqa: BLE001 - a Rust panic surfaces as PanicException(BaseException)
        if isinstance(err, (KeyboardInterrupt, SystemExit)):
            raise
        raise StreamError(f"corrupt ANS stream ({type(err).__name__})") from None
    if not coder.is_empty():
        raise StreamError("corrupt ANS stream (bits left over after the last symbol)")
    return present[np.asarray(ranks, np.int64)]


# ------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Codec:
    name: str
    encode: Callable[[np.ndarray, int], bytes | None]  # None: does not apply to these symbols
    decode: Callable[[bytes, int, int], np.ndarray]


CODECS: dict[str, Codec] = {c.name: c for c in (
    Codec("raw", _raw_encode, _raw_decode),
    Codec("const", _const_encode, _const_decode),
    Codec("huffman", _huffman_encode, _huffman_decode),
    Codec("ans", _ans_encode, _ans_decode),
)}
CODER_CHOICES = ("auto", "huffman", "ans", "raw")  # what a recipe may ask for ("const" is automatic)


def encode(symbols: np.ndarray, alphabet: int, coder: str = "auto") -> tuple[str, bytes]:
    """-> (codec name, bytes). ``auto``: the smallest of all codecs; ``huffman``/``ans``: that one
    (``const`` when the stream is constant, ``raw`` when it is empty); ``raw``: fixed width."""
    symbols = _check_symbols(symbols, alphabet)
    if coder not in CODER_CHOICES:
        raise ValueError(f"coder must be one of {', '.join(CODER_CHOICES)}, got {coder!r}")
    names = {"auto": ("raw", "const", "huffman", "ans"), "raw": ("raw",)}.get(coder, ("raw", "const", coder))
    if coder in ("huffman", "ans") and symbols.size and (symbols != symbols[0]).any():
        names = (coder,)
    best: tuple[str, bytes] | None = None
    for name in names:
        data = CODECS[name].encode(symbols, alphabet)
        if data is not None and (best is None or len(data) < len(best[1])):
            best = (name, data)
    assert best is not None  # raw always applies
    return best


def decode(codec: str, data: bytes, count: int, alphabet: int) -> np.ndarray:
    """Bytes of one stream -> int64[count] symbols in [0, alphabet); corrupt input -> StreamError."""
    if codec not in CODECS:
        raise StreamError(f"unknown codec {codec!r} (known: {', '.join(CODECS)})")
    if not 1 <= alphabet <= MAX_ALPHABET or count < 0:
        raise StreamError(f"bad stream parameters (alphabet {alphabet}, count {count})")
    out = CODECS[codec].decode(bytes(data), count, alphabet)
    if out.size != count:
        raise StreamError(f"{codec} stream decoded {out.size} symbols, expected {count}")
    return out
