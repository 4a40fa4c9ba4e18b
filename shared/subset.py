"""DataComp subset files: the uids a filter keeps, as a sorted ``.npy`` of dtype ``u8,u8``.

A uid is 32 hex characters (128 bits). DataComp stores it as a record of two unsigned 64-bit
integers, the upper half in field ``f0`` and the lower half in ``f1``, and sorts the records,
so a subset written here is read by DataComp's ``resharder.py`` and the other way round.
A uid may occur more than once: the resharder writes such a sample once per occurrence.

Conversions work on whole arrays (the hex digits are decoded with a lookup table straight from
Arrow's string buffer), since a pool holds billions of uids.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.shared import storage

SUBSET_DTYPE = np.dtype("u8,u8")
UID_HEX_LENGTH = 32
_NPY_MAGIC = b"\x93NUMPY"

# ASCII byte -> nibble value, 255 for bytes that are not hex digits.
_HEX_VALUE = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_VALUE[_c] = 10 + _i
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class SubsetFormatError(ValueError):
    """A uid or a subset file is not in DataComp's format."""


def _as_string_array(uids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray) -> pa.Array:
    if isinstance(uids, pa.ChunkedArray):
        uids = uids.combine_chunks() if uids.num_chunks != 1 else uids.chunk(0)
    elif not isinstance(uids, pa.Array):
        uids = pa.array(np.asarray(uids, dtype=object) if isinstance(uids, np.ndarray) else list(uids),
                        type=pa.string())
    if pa.types.is_dictionary(uids.type) or not pa.types.is_string(uids.type):
        uids = uids.cast(pa.string())
    return uids


def uids_from_hex(uids: pa.Array | pa.ChunkedArray | Sequence[str] | np.ndarray) -> np.ndarray:
    """32-hex-character uids -> records of dtype ``u8,u8`` in the same order (not sorted)."""
    array = _as_string_array(uids)
    n = len(array)
    out = np.empty(n, dtype=SUBSET_DTYPE)
    if n == 0:
        return out
    if array.null_count:
        raise SubsetFormatError(f"{array.null_count} uid(s) are null")
    lengths = pc.binary_length(array)
    bounds = pc.min_max(lengths)
    if bounds["min"].as_py() != UID_HEX_LENGTH or bounds["max"].as_py() != UID_HEX_LENGTH:
        bad = array.filter(pc.not_equal(lengths, UID_HEX_LENGTH))[0].as_py()
        raise SubsetFormatError(f"a uid must be {UID_HEX_LENGTH} hex characters, got {bad!r}")
    # Every value has the same length, so the characters sit back to back in the data buffer.
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int32, count=n + 1, offset=array.offset * 4)
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8, count=n * UID_HEX_LENGTH, offset=int(offsets[0]))
    nibbles = _HEX_VALUE[data].reshape(n, UID_HEX_LENGTH)
    if (nibbles == 255).any():
        row = int(np.nonzero((nibbles == 255).any(axis=1))[0][0])
        raise SubsetFormatError(f"uid is not hexadecimal: {array[row].as_py()!r}")
    packed = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]  # (n, 16) bytes, most significant first
    halves = packed.view(">u8")  # (n, 2) big-endian words: upper, lower
    out["f0"] = halves[:, 0]
    out["f1"] = halves[:, 1]
    return out


def uids_to_hex(uids: np.ndarray) -> np.ndarray:
    """Records of dtype ``u8,u8`` -> 32-character lower-case hex strings (``numpy`` ``U32``)."""
    uids = _check_dtype(np.asarray(uids))
    n = len(uids)
    words = np.empty((n, 2), dtype=">u8")
    words[:, 0] = uids["f0"]
    words[:, 1] = uids["f1"]
    raw = words.view(np.uint8).reshape(n, 16)
    chars = np.empty((n, UID_HEX_LENGTH), dtype=np.uint8)
    chars[:, 0::2] = _HEX_DIGITS[raw >> 4]
    chars[:, 1::2] = _HEX_DIGITS[raw & 0x0F]
    return chars.view(f"S{UID_HEX_LENGTH}").reshape(n).astype(f"U{UID_HEX_LENGTH}")


def uid_from_hex(uid: str) -> np.void:
    """One uid as a ``u8,u8`` record (DataComp: ``divmod(int(uid, 16), 2**64)``)."""
    return uids_from_hex([uid])[0]


def _check_dtype(uids: np.ndarray) -> np.ndarray:
    if uids.dtype != SUBSET_DTYPE:
        raise SubsetFormatError(f"a subset has dtype {SUBSET_DTYPE} (u8,u8), got {uids.dtype}")
    return uids


def sort_uids(uids: np.ndarray) -> np.ndarray:
    """A sorted copy: by upper half, then lower half (the order of ``ndarray.sort`` on ``u8,u8``)."""
    uids = _check_dtype(np.asarray(uids))
    upper = uids["f0"]
    order = np.argsort(upper, kind="stable")
    ordered_upper = upper[order]
    # Upper halves of distinct random uids almost never tie; repeated uids do, and then the
    # lower half decides, so only a tie needs the slower two-key sort.
    if len(order) > 1 and (ordered_upper[1:] == ordered_upper[:-1]).any():
        order = np.lexsort((uids["f1"], upper))
    return uids[order]


def is_sorted(uids: np.ndarray) -> bool:
    uids = _check_dtype(np.asarray(uids))
    if len(uids) < 2:
        return True
    hi, lo = uids["f0"], uids["f1"]
    later, earlier = slice(1, None), slice(None, -1)
    return bool(np.all((hi[later] > hi[earlier]) | ((hi[later] == hi[earlier]) & (lo[later] >= lo[earlier]))))


def save_subset(uids: np.ndarray, uri: str) -> int:
    """Sort and write ``uids`` as a ``.npy`` at ``uri`` (any fsspec URI); returns how many."""
    ordered = uids if is_sorted(uids) else sort_uids(uids)
    with storage.atomic_open(uri) as handle:
        np.save(handle, ordered, allow_pickle=False)
    return len(ordered)


def load_subset(uri: str, *, check_sorted: bool = True) -> np.ndarray:
    """A subset file: a ``.npy`` of dtype ``u8,u8``, or (as DataComp accepts) a raw memmap of them.

    Local files are memory-mapped. An unsorted subset is an error, since lookups bisect it.
    """
    if storage.is_local(uri):
        with open(uri, "rb") as handle:
            magic = handle.read(len(_NPY_MAGIC))
        if magic == _NPY_MAGIC:
            uids = np.load(uri, mmap_mode="r", allow_pickle=False)
        else:
            uids = np.memmap(uri, dtype=SUBSET_DTYPE, mode="r")
    else:
        data = storage.read_bytes(uri)
        if data.startswith(_NPY_MAGIC):
            import io

            uids = np.load(io.BytesIO(data), allow_pickle=False)
        else:
            if len(data) % SUBSET_DTYPE.itemsize:
                raise SubsetFormatError(f"{uri}: size {len(data)} is not a multiple of 16 bytes")
            uids = np.frombuffer(data, dtype=SUBSET_DTYPE)
    _check_dtype(uids)
    if check_sorted and not is_sorted(uids):
        raise SubsetFormatError(f"{uri}: the subset is not sorted (DataComp subsets are)")
    return uids


class SubsetIndex:
    """Answers "how many times is this uid in the subset?" for many uids at once."""

    def __init__(self, subset: np.ndarray) -> None:
        subset = _check_dtype(np.asarray(subset))
        self._upper = np.ascontiguousarray(subset["f0"])
        self._lower = np.ascontiguousarray(subset["f1"])
        self.size = len(subset)

    def counts(self, uids: np.ndarray) -> np.ndarray:
        """Occurrences in the subset of each of ``uids`` (``u8,u8``), as ``int64``."""
        uids = _check_dtype(np.asarray(uids))
        upper, lower = uids["f0"], uids["f1"]
        start = np.searchsorted(self._upper, upper, side="left")
        stop = np.searchsorted(self._upper, upper, side="right")
        counts = np.zeros(len(uids), dtype=np.int64)
        # The run of equal upper halves is the uid's repeats (plus, astronomically rarely,
        # another uid sharing its upper half): compare the lower halves along it.
        for step in range(int((stop - start).max(initial=0))):
            active = np.nonzero(stop - start > step)[0]
            counts[active] += self._lower[start[active] + step] == lower[active]
        return counts

    def count_hex(self, uids: Iterable[str]) -> np.ndarray:
        return self.counts(uids_from_hex(list(uids)))
