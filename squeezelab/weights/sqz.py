"""The ``.sqz`` container: a compressed model file that anything in squeezelab loads back.

It stores a state dict losslessly — the lossy steps (pruning, weight sharing) happen before, in
``squeezelab.compression`` — in the form Deep Compression made small (Han et al. 2016, section 4):
sparse tensors as relative indices with filler entries, weight-shared tensors as a codebook plus
codes, both entropy coded per tensor (``compression.code``: Huffman, ANS, raw or const, whichever is
smallest unless the caller says). Layout, little-endian (version 1.0)::

    magic      8 bytes  b"\\x89SQZ\\r\\n\\x1a\\n"  (a high-bit byte and CR LF: damage by text-mode
                                                  transfers is caught at the first bytes)
    version    u16 major, u16 minor   (a reader refuses a major it does not know; minor
                                       additions are ignored by older readers)
    header     u8 encoding (0 JSON, 1 zlib JSON), u32 length, the bytes
               JSON: model {name, num_classes, options}, preset, classes, dataset,
               provenance {source, source_file, recipe, commit, squeezelab, created}
    table      u32 length, then per tensor: name, dtype, shape, positions (dense | sparse with
               index_bits and entry count), values (raw | codebook of K entries), and the codec
               and byte length of each of its streams
    payload    per tensor in table order: codebook (K values of the tensor's dtype), the gap stream
               (sparse), the code stream (codebook) or raw values
    checksum   u32 CRC-32 of everything before it

Version 2.0 (written only by a file that uses it, so every other file stays 1.0 and older readers keep
reading it): a codebook may be stored in the narrower stored dtype (float16 codebooks of float32
weights, ``codebook_float16``, lossy); a 1.x reader refuses such a file by its version.

Sparse positions: entry i sits gap_i + 1 places after entry i-1 (the first counted from -1), gaps
< 2^index_bits; a longer gap is bridged by filler entries of value 0, as in the paper's file.

Reading untrusted bytes (:func:`read_sqz`) checks the size, checksum and every count before it
allocates, so a hostile header cannot make it allocate more than ``MAX_EXPANSION`` times the file
size, and anything malformed raises :class:`WeightsError` (one line).
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from squeezelab.compression import code as codec
from squeezelab.errors import WeightsError

MAGIC = b"\x89SQZ\r\n\x1a\n"
VERSION = (1, 0)
NARROW_BOOK_VERSION = (2, 0)  # what a file with a float16 codebook is written as
READS = (1, 2)  # the majors this reader knows
# Decoded tensors may take at most this many bytes per byte of file: a 6-bit SqueezeNet expands
# 11x, Deep Compression's AlexNet 35x, a 1%-dense layer ~400x per layer (but not a whole model).
MAX_EXPANSION = 256
MAX_HEADER = 1 << 24
MAX_TENSORS = 1 << 16
MAX_NDIM = 8
CODEBOOK_MAX = 1 << 16
CODEC_IDS = {"raw": 0, "const": 1, "huffman": 2, "ans": 3}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
DTYPES = {  # id: (torch dtype, numpy dtype of the stored bytes)
    0: (torch.float32, np.dtype("<f4")), 1: (torch.float16, np.dtype("<f2")), 2: (torch.bfloat16, np.dtype("<u2")),
    3: (torch.float64, np.dtype("<f8")), 4: (torch.int64, np.dtype("<i8")), 5: (torch.int32, np.dtype("<i4")),
    6: (torch.int16, np.dtype("<i2")), 7: (torch.int8, np.dtype("i1")), 8: (torch.uint8, np.dtype("u1")),
    9: (torch.bool, np.dtype("u1")),
}
DTYPE_IDS = {t: i for i, (t, _) in DTYPES.items()}


# ---------------------------------------------------------------------------------------- model


@dataclass
class Stream:
    codec: str
    data: bytes


@dataclass
class TensorRecord:
    """One tensor as stored: positions (dense, or sparse gaps) and values (raw, or codebook + codes)."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    stored: torch.dtype | None = None  # dtype of raw values / codebook as stored (float16 for float32: lossy)
    index_bits: int | None = None  # None: dense
    entries: int = 0  # stored entries (sparse: non-zeros + fillers; dense: numel)
    codebook: np.ndarray | None = None  # values of the stored dtype (numpy view), None: raw values
    gaps: Stream | None = None
    values: Stream | None = None  # codes (codebook) or raw bytes

    @property
    def numel(self) -> int:
        return math.prod(self.shape)  # exact: numpy's int64 product of (2^32, 2^32) wraps to 0

    def decode_bytes(self) -> int:
        """Peak bytes that decoding this tensor allocates beyond its result: int64 codes, gaps and
        positions per stored entry, the values, and the dense flat array they are scattered into."""
        itemsize = DTYPES[DTYPE_IDS[self.dtype]][1].itemsize
        per_entry = 8 * (3 if self.sparse else 1) + itemsize
        return self.entries * per_entry + (self.numel * itemsize if self.sparse else 0)

    @property
    def sparse(self) -> bool:
        return self.index_bits is not None

    @property
    def store_dtype(self) -> torch.dtype:
        return self.stored or self.dtype

    def sizes(self) -> dict[str, int]:
        """Exact bytes of each part of this tensor in the payload."""
        itemsize = DTYPES[DTYPE_IDS[self.store_dtype]][1].itemsize
        return {"codebook": 0 if self.codebook is None else self.codebook.size * itemsize,
                "index": len(self.gaps.data) if self.gaps else 0, "values": len(self.values.data)}


@dataclass
class SqzFile:
    header: dict[str, Any]
    tensors: list[TensorRecord] = field(default_factory=list)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {t.name: decode_tensor(t) for t in self.tensors}


# ---------------------------------------------------------------------------------------- encode


def encode_tensor(name: str, tensor: torch.Tensor, *, coder: str = "auto", index_bits: int | str = "auto",
                  max_codebook: int = 256, layout: str = "auto", raw_float16: bool = False,
                  codebook_float16: bool = False) -> TensorRecord:
    """Lossless encoding of one tensor, in the smallest of the forms allowed.

    ``max_codebook``: at most this many distinct values -> codebook + codes (an already weight-shared
    layer; 0 disables). ``layout``: auto | dense | sparse. ``index_bits``: auto (the width whose
    estimated total is smallest) or 1..16. ``raw_float16``: float32/64 values that are not in a
    codebook (biases, BatchNorm) are stored as float16 — lossy, off by default; ``codebook_float16``:
    the codebooks of float32/64 tensors likewise (a weight-shared layer's values move by at most 2^-11
    of themselves; values that round together share a code)."""
    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype not in DTYPE_IDS:
        raise WeightsError(f"{name}: dtype {tensor.dtype} cannot be stored in .sqz")
    npdtype = DTYPES[DTYPE_IDS[tensor.dtype]][1]
    flat = _as_numpy(tensor).ravel()
    rec = TensorRecord(name, tensor.dtype, tuple(int(d) for d in tensor.shape))
    book, codes = _codebook(flat, max_codebook)
    if book is not None and codebook_float16 and tensor.dtype in (torch.float32, torch.float64):
        narrow = book.astype(np.float16)
        if np.isfinite(narrow).all() or not np.isfinite(book).all():  # (never turn a large value into inf)
            book, merged = np.unique(narrow, return_inverse=True)  # ascending; codes follow
            codes, rec.stored = merged.reshape(-1)[codes], torch.float16
            flat = book[codes].astype(npdtype)  # what the file holds: the layout is chosen for these values
    nonzero = np.flatnonzero(flat.view(_bits_dtype(npdtype)) != 0)  # -0.0 is stored, so bitwise
    bits = _choose_index_bits(nonzero, codes, flat.size, index_bits, layout, npdtype.itemsize)
    if bits is None:
        rec.entries, positions = flat.size, None
    else:
        positions, filler = _with_fillers(nonzero, bits)
        rec.index_bits, rec.entries = bits, positions.size
        gaps = np.diff(positions, prepend=-1) - 1
        rec.gaps = Stream(*codec.encode(gaps, 1 << bits, coder))
    if book is not None:
        symbols = codes if positions is None else codes[positions]  # a filler sits on a zero: zero's code
        rec.codebook = book
        rec.values = Stream(*codec.encode(symbols, book.size, coder))
    else:
        stored = flat if positions is None else flat[positions]
        if raw_float16 and tensor.dtype in (torch.float32, torch.float64):
            rec.stored, npdtype = torch.float16, DTYPES[DTYPE_IDS[torch.float16]][1]
        rec.values = Stream("raw", stored.astype(npdtype, copy=False).tobytes())
    return rec


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view("<u2")
    if t.dtype == torch.bool:
        return t.numpy().astype(np.uint8)
    return t.numpy().astype(DTYPES[DTYPE_IDS[t.dtype]][1], copy=False)


def _bits_dtype(npdtype: np.dtype) -> np.dtype:
    return np.dtype(f"<u{npdtype.itemsize}") if npdtype.itemsize > 1 else np.dtype("u1")


def _codebook(flat: np.ndarray, max_codebook: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(distinct values by bit pattern, codes) when there are at most ``max_codebook``; else (None, None)."""
    if max_codebook <= 0 or flat.size == 0:
        return None, None
    keys = flat.view(_bits_dtype(flat.dtype))
    distinct, codes = np.unique(keys, return_inverse=True)
    if distinct.size > min(max_codebook, CODEBOOK_MAX) or distinct.size * 2 > flat.size:
        return None, None  # a codebook only pays when values repeat
    book = distinct.view(flat.dtype)
    if flat.dtype.kind == "f":  # ascending by value (readable), codes follow
        order = np.argsort(book, kind="stable")
        book, codes = book[order], np.argsort(order)[codes]
    return book, codes.astype(np.int64)


def _choose_index_bits(nonzero: np.ndarray, codes: np.ndarray | None, numel: int, index_bits, layout: str,
                       itemsize: int) -> int | None:
    """None (dense) or the index width for sparse storage, by estimated bits (entropy)."""
    if layout == "dense" or (layout == "auto" and nonzero.size * 2 > numel) or numel == 0:
        return None
    candidates = range(1, 17) if index_bits == "auto" else [int(index_bits)]
    value_bits = (lambda s: codec.entropy_bits(s)) if codes is not None else (lambda s: 8.0 * itemsize * s.size)
    best = None
    for bits in candidates:
        positions, _ = _with_fillers(nonzero, bits)
        gaps = np.diff(positions, prepend=-1) - 1
        symbols = codes[positions] if codes is not None else positions
        # + a rough table cost, so that wide indices must earn their larger Huffman/ANS tables
        cost = codec.entropy_bits(gaps) + value_bits(symbols) + 8 * (1 << bits) ** 0.5
        if best is None or cost < best[0]:
            best = (cost, bits)
    if layout == "auto" and codes is not None:
        dense = codec.entropy_bits(codes)
        if dense <= best[0]:
            return None
    return best[1]


def _with_fillers(nonzero: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions with filler entries every 2^bits places across longer gaps; -> (positions, is_filler)."""
    span = 1 << bits
    gaps = np.diff(nonzero, prepend=-1) - 1
    n_fill = gaps // span
    if not n_fill.any():
        return nonzero.astype(np.int64), np.zeros(nonzero.size, bool)
    prev = np.concatenate(([-1], nonzero[:-1]))
    starts = np.repeat(prev, n_fill)
    step = np.arange(n_fill.sum()) - np.repeat(np.cumsum(n_fill) - n_fill, n_fill) + 1
    fillers = starts + span * step
    positions = np.concatenate([nonzero, fillers]).astype(np.int64)
    is_filler = np.concatenate([np.zeros(nonzero.size, bool), np.ones(fillers.size, bool)])
    order = np.argsort(positions, kind="stable")
    return positions[order], is_filler[order]


def write_sqz(state: dict[str, torch.Tensor], header: dict[str, Any], *, coder: str = "auto",
              index_bits: int | str = "auto", max_codebook: int = 256, raw_float16: bool = False,
              codebook_float16: bool = False) -> bytes:
    """State dict + JSON-able header -> the bytes of a .sqz file (lossless unless raw_float16 or
    codebook_float16)."""
    records = [encode_tensor(k, v, coder=coder, index_bits=index_bits, max_codebook=max_codebook,
                             raw_float16=raw_float16, codebook_float16=codebook_float16) for k, v in state.items()]
    return pack(SqzFile(dict(header), records))


def pack(sqz: SqzFile) -> bytes:
    head_json = json.dumps(sqz.header, separators=(",", ":"), sort_keys=True).encode()
    packed = zlib.compress(head_json, 9)
    encoding, head = (1, packed) if len(packed) < len(head_json) else (0, head_json)
    table, payload = bytearray(), []
    table += codec.write_varint(len(sqz.tensors))
    for t in sqz.tensors:
        name = t.name.encode()
        table += codec.write_varint(len(name)) + name
        table += bytes([DTYPE_IDS[t.dtype], DTYPE_IDS[t.store_dtype], len(t.shape)])
        table += b"".join(codec.write_varint(d) for d in t.shape)
        table += bytes([0 if t.index_bits is None else t.index_bits])
        if t.sparse:
            table += codec.write_varint(t.entries)
        table += codec.write_varint(0 if t.codebook is None else t.codebook.size)
        if t.codebook is not None:
            payload.append(t.codebook.tobytes())
        for stream in ([t.gaps] if t.sparse else []) + [t.values]:
            table += bytes([CODEC_IDS[stream.codec]]) + codec.write_varint(len(stream.data))
            payload.append(stream.data)
    narrow = any(t.codebook is not None and t.stored is not None for t in sqz.tensors)
    version = NARROW_BOOK_VERSION if narrow else VERSION
    body = (MAGIC + struct.pack("<HH", *version) + struct.pack("<BI", encoding, len(head)) + head
            + struct.pack("<I", len(table)) + bytes(table) + b"".join(payload))
    return body + struct.pack("<I", zlib.crc32(body))


# ---------------------------------------------------------------------------------------- decode


class _Cursor:
    """Bounds-checked reads from bytes: every read past the end is a WeightsError."""

    def __init__(self, data: bytes, offset: int = 0, end: int | None = None, what: str = "file"):
        self.data, self.pos, self.end, self.what = data, offset, len(data) if end is None else end, what

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WeightsError(f"corrupt .sqz: the {self.what} ends early (wanted {n} bytes at {self.pos})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def varint(self) -> int:
        try:
            value, self.pos = codec.read_varint(self.data[:self.end], self.pos)
        except codec.StreamError as err:
            raise WeightsError(f"corrupt .sqz {self.what}: {err}") from None
        return value


def looks_like_sqz(head: bytes) -> bool:
    return head[:len(MAGIC)] == MAGIC


def read_sqz(data: bytes, *, decode: bool = True) -> SqzFile:
    """Parse (and with ``decode``, check every stream of) a .sqz file's bytes; corrupt -> WeightsError."""
    data = bytes(data)
    fixed = len(MAGIC) + 4 + 5 + 4 + 4
    if len(data) < fixed or not looks_like_sqz(data):
        raise WeightsError("not a .sqz file (bad magic bytes)" if not looks_like_sqz(data)
                           else f"truncated .sqz file ({len(data)} bytes)")
    major, minor = struct.unpack_from("<HH", data, len(MAGIC))
    if major not in READS:
        raise WeightsError(f".sqz format version {major}.{minor} is not one this squeezelab reads "
                           f"(it reads {' and '.join(f'{m}.x' for m in READS)}; a newer squeezelab may)")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise WeightsError("corrupt .sqz file: checksum mismatch (the file was truncated, padded or damaged)")
    cur = _Cursor(data, len(MAGIC) + 4, len(data) - 4)
    header = _read_header(cur)
    table_len = struct.unpack("<I", cur.take(4))[0]
    table = _Cursor(data, cur.pos, cur.pos + table_len, "tensor table")
    cur.take(table_len)
    records = _read_table(table, cur, len(data), major)
    if cur.pos != cur.end:
        raise WeightsError(f"corrupt .sqz file: {cur.end - cur.pos} bytes after the last stream")
    sqz = SqzFile(header, records)
    if decode:
        for t in records:
            decode_tensor(t)  # raises on corrupt streams; results are cheap to recompute
    return sqz


def _read_header(cur: _Cursor) -> dict:
    encoding, length = struct.unpack("<BI", cur.take(5))
    if length > MAX_HEADER:
        raise WeightsError(f"corrupt .sqz header: claims {length} bytes")
    raw = cur.take(length)
    try:
        if encoding == 1:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(raw, MAX_HEADER)
            if inflater.unconsumed_tail:
                raise WeightsError("corrupt .sqz header: inflates beyond the header limit")
        elif encoding != 0:
            raise WeightsError(f"corrupt .sqz header: unknown encoding {encoding}")
        header = json.loads(raw.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise WeightsError(f"corrupt .sqz header ({type(err).__name__})") from None
    if not isinstance(header, dict):
        raise WeightsError("corrupt .sqz header: not a JSON object")
    return header


def _read_table(table: _Cursor, payload: _Cursor, file_size: int, major: int = 1) -> list[TensorRecord]:
    count = table.varint()
    if count > MAX_TENSORS:
        raise WeightsError(f"corrupt .sqz table: claims {count} tensors")
    records, names, total_bytes, scratch = [], set(), 0, 0
    for _ in range(count):
        rec, book_size = _read_record(table)
        if rec.name in names:
            raise WeightsError(f"corrupt .sqz table: tensor {rec.name} appears twice")
        names.add(rec.name)
        itemsize = DTYPES[DTYPE_IDS[rec.dtype]][1].itemsize
        total_bytes += rec.numel * itemsize
        scratch = max(scratch, rec.decode_bytes())  # tensors decode one at a time
        if total_bytes + scratch > MAX_EXPANSION * file_size:  # checked before anything is allocated
            raise WeightsError(f"corrupt .sqz table: decoding would take {total_bytes + scratch:,} bytes "
                               f"(tensors and their intermediates), more than {MAX_EXPANSION}x the file's "
                               f"{file_size:,}")
        if book_size and rec.stored is not None and major < 2:
            raise WeightsError(f"corrupt .sqz table: {rec.name} has a float16 codebook in a version {major} file")
        _read_streams(rec, book_size, table, payload, DTYPES[DTYPE_IDS[rec.store_dtype]][1].itemsize)
        records.append(rec)
    if table.pos != table.end:
        raise WeightsError("corrupt .sqz table: bytes left after the last tensor")
    return records


def _read_record(table: _Cursor) -> tuple[TensorRecord, int]:
    """One tensor's table entry -> (record without its streams, codebook size)."""
    length = table.varint()
    if length > 512:
        raise WeightsError(f"corrupt .sqz table: a tensor name of {length} bytes")
    try:
        name = table.take(length).decode("utf-8")
    except UnicodeDecodeError:
        raise WeightsError("corrupt .sqz table: a tensor name is not UTF-8") from None
    if not name.isprintable():
        raise WeightsError(f"corrupt .sqz table: tensor name {name[:40]!r} has control characters")
    dtype_id, stored_id, ndim = table.u8(), table.u8(), table.u8()
    if dtype_id not in DTYPES or ndim > MAX_NDIM or stored_id not in (dtype_id, DTYPE_IDS[torch.float16]):
        raise WeightsError(f"corrupt .sqz table: tensor {name!r} has dtype ids {dtype_id}/{stored_id}, {ndim} dims")
    shape = tuple(table.varint() for _ in range(ndim))
    stored = DTYPES[stored_id][0] if stored_id != dtype_id else None
    if stored is not None and DTYPES[dtype_id][0] not in (torch.float32, torch.float64):
        raise WeightsError(f"corrupt .sqz table: tensor {name!r} stores a non-float tensor as float16")
    rec = TensorRecord(name, DTYPES[dtype_id][0], shape, stored)
    bits = table.u8()
    if bits > 16:
        raise WeightsError(f"corrupt .sqz table: tensor {name} has {bits} index bits")
    if bits:
        rec.index_bits, rec.entries = bits, table.varint()
        if rec.entries > rec.numel:
            raise WeightsError(f"corrupt .sqz table: tensor {name} claims {rec.entries} of {rec.numel} entries")
    else:
        rec.entries = rec.numel
    book_size = table.varint()
    if book_size > min(CODEBOOK_MAX, max(1, rec.numel)):
        raise WeightsError(f"corrupt .sqz table: tensor {name} claims a codebook of {book_size} entries")
    return rec, book_size


def _read_streams(rec: TensorRecord, book_size: int, table: _Cursor, payload: _Cursor, raw_itemsize: int) -> None:
    if book_size:
        book_dtype = DTYPES[DTYPE_IDS[rec.store_dtype]][1]
        rec.codebook = np.frombuffer(payload.take(book_size * book_dtype.itemsize), book_dtype).copy()
    streams = []
    for _ in range(2 if rec.sparse else 1):
        codec_id, length = table.u8(), table.varint()
        if codec_id not in CODEC_NAMES:
            raise WeightsError(f"corrupt .sqz table: tensor {rec.name} uses unknown codec {codec_id}")
        streams.append(Stream(CODEC_NAMES[codec_id], payload.take(length)))
    if rec.sparse:
        rec.gaps = streams.pop(0)
    rec.values = streams[0]
    if rec.codebook is None and (rec.values.codec != "raw" or len(rec.values.data) != rec.entries * raw_itemsize):
        raise WeightsError(f"corrupt .sqz table: raw values of {rec.name} must be {rec.entries} x {raw_itemsize} bytes")


def decode_tensor(rec: TensorRecord) -> torch.Tensor:
    """One record -> its tensor (checked: positions inside the tensor, codes inside the codebook)."""
    npdtype = DTYPES[DTYPE_IDS[rec.dtype]][1]
    try:
        if rec.codebook is not None:
            codes = codec.decode(rec.values.codec, rec.values.data, rec.entries, rec.codebook.size)
            values = rec.codebook[codes].astype(npdtype, copy=False)
        else:
            stored = DTYPES[DTYPE_IDS[rec.store_dtype]][1]
            values = np.frombuffer(rec.values.data, stored, rec.entries).astype(npdtype)
        if rec.sparse:
            gaps = codec.decode(rec.gaps.codec, rec.gaps.data, rec.entries, 1 << rec.index_bits)
            positions = np.cumsum(gaps + 1) - 1
            if positions.size and positions[-1] >= rec.numel:
                raise WeightsError(f"its relative indices run past its {rec.numel} elements")
            flat = np.zeros(rec.numel, npdtype)
            flat[positions] = values
        else:
            flat = values
    except WeightsError as err:
        raise WeightsError(f"corrupt .sqz tensor {rec.name}: {err}") from None
    return _to_torch(flat.reshape(rec.shape), rec.dtype)


def _to_torch(arr: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    shape = arr.shape
    arr = np.ascontiguousarray(arr)  # (makes 0-d arrays 1-d: the shape is put back below)
    if dtype == torch.bfloat16:
        out = torch.from_numpy(arr.view(np.int16).copy()).view(torch.bfloat16)
    elif dtype == torch.bool:
        out = torch.from_numpy(arr != 0)
    else:
        out = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")).copy())
    return out.reshape(shape)


# ---------------------------------------------------------------------------------------- report


def layer_table(sqz: SqzFile) -> list[dict]:
    """One row per layer (tensors grouped by module: ``fire2.squeeze.weight``, ``.bias`` and its
    BatchNorm ``fire2.squeeze_bn.*`` -> ``fire2.squeeze``): params, density and code bits of its
    weight, exact stored bytes."""
    rows: dict[str, dict] = {}
    for t in sqz.tensors:
        layer = (t.name.rsplit(".", 1)[0] if "." in t.name else t.name).removesuffix("_bn")  # conv + its BN
        row = rows.setdefault(layer, {"layer": layer, "params": 0, "density": None, "bits": None,
                                      "index_bits": None, "fp32_bytes": 0, "stored_bytes": 0, "codecs": []})
        row["params"] += t.numel
        row["fp32_bytes"] += 4 * t.numel
        row["stored_bytes"] += sum(t.sizes().values())
        row["codecs"] += [s.codec for s in (t.gaps, t.values) if s is not None]
        if t.name.endswith("weight") and len(t.shape) > 1:
            nonzero = int(np.count_nonzero(decode_tensor(t).numpy()))
            row["density"] = nonzero / max(1, t.numel)
            row["bits"] = codec.symbol_width(t.codebook.size) if t.codebook is not None else \
                8 * DTYPES[DTYPE_IDS[t.dtype]][1].itemsize
            row["index_bits"] = t.index_bits
    return list(rows.values())
