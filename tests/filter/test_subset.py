"""Subset files: uid hex <-> u8,u8 records, sorted, byte for byte as DataComp writes them."""

from __future__ import annotations

import random
import struct

import numpy as np
import pyarrow as pa
import pytest

from winnow.shared.subset import (
    SUBSET_DTYPE,
    SubsetFormatError,
    SubsetIndex,
    is_sorted,
    load_subset,
    save_subset,
    sort_uids,
    uid_from_hex,
    uids_from_hex,
    uids_to_hex,
)


def random_uids(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [f"{rng.getrandbits(128):032x}" for _ in range(n)]


def datacomp_records(uids: list[str]) -> np.ndarray:
    """DataComp's own conversion (baselines/apply_filter.py), the reference."""
    return np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))


def test_hex_to_records_matches_datacomp_and_back():
    uids = random_uids(2000) + ["0" * 32, "f" * 32, "00000000000000010000000000000000"]
    records = uids_from_hex(uids)
    assert records.dtype == SUBSET_DTYPE
    assert np.array_equal(records, datacomp_records(uids))
    assert uids_to_hex(records).tolist() == uids


def test_upper_case_and_arrow_inputs():
    uids = random_uids(10, seed=1)
    upper = [u.upper() for u in uids]
    chunked = pa.chunked_array([pa.array(upper[:4]), pa.array(upper[4:])])
    assert np.array_equal(uids_from_hex(chunked), datacomp_records(uids))
    assert np.array_equal(uids_from_hex(pa.array(uids).slice(3)), datacomp_records(uids[3:]))
    assert np.array_equal(uids_from_hex(pa.array(uids, pa.large_string())), datacomp_records(uids))
    assert np.array_equal(uids_from_hex(pa.array(uids).dictionary_encode()), datacomp_records(uids))
    assert uid_from_hex(uids[0]) == datacomp_records(uids[:1])[0]


@pytest.mark.parametrize("bad", ["abc", "g" * 32, "0" * 33, " " + "0" * 31])
def test_malformed_uids_are_refused(bad):
    with pytest.raises(SubsetFormatError):
        uids_from_hex(["0" * 32, bad])


def test_null_uid_is_refused():
    with pytest.raises(SubsetFormatError, match="null"):
        uids_from_hex(pa.array(["0" * 32, None]))


def test_sort_order_is_numpy_record_order_even_with_shared_upper_halves():
    uids = random_uids(500, seed=2)
    # Same upper half, different lower halves, and exact repeats: the lower half must decide.
    uids += ["1234567890abcdef" + "f" * 16, "1234567890abcdef" + "0" * 16, uids[0], uids[0]]
    records = uids_from_hex(uids)
    expected = datacomp_records(uids)
    expected.sort()  # what DataComp does before np.save
    assert np.array_equal(sort_uids(records), expected)
    assert is_sorted(expected) and not is_sorted(records)


def test_round_trip_through_npy_with_datacomp_byte_layout(tmp_path):
    uids = random_uids(100, seed=3)
    path = tmp_path / "sub" / "subset.npy"
    assert save_subset(uids_from_hex(uids), str(path)) == 100
    loaded = load_subset(str(path))
    assert loaded.dtype == SUBSET_DTYPE and loaded.dtype.descr == [("f0", "<u8"), ("f1", "<u8")]
    assert sorted(uids) == uids_to_hex(loaded).tolist()  # hex order is numeric order
    # After the .npy header: per uid, its upper then lower 64 bits, each little-endian.
    raw = path.read_bytes()
    body = b"".join(struct.pack("<QQ", int(u[:16], 16), int(u[16:], 16)) for u in sorted(uids))
    assert raw.endswith(body) and raw.startswith(b"\x93NUMPY")
    reference = datacomp_records(uids)
    reference.sort()
    np.save(tmp_path / "datacomp.npy", reference)
    assert (tmp_path / "datacomp.npy").read_bytes() == raw


def test_raw_memmap_subsets_are_read_like_datacomp(tmp_path):
    records = sort_uids(uids_from_hex(random_uids(20, seed=4)))
    path = tmp_path / "subset.bin"
    records.tofile(path)
    assert np.array_equal(load_subset(str(path)), records)


def test_unsorted_or_wrong_dtype_subsets_are_refused(tmp_path):
    records = uids_from_hex(random_uids(20, seed=5))
    np.save(tmp_path / "unsorted.npy", sort_uids(records)[::-1])
    with pytest.raises(SubsetFormatError, match="sorted"):
        load_subset(str(tmp_path / "unsorted.npy"))
    np.save(tmp_path / "wrong.npy", np.arange(4, dtype=np.uint64))
    with pytest.raises(SubsetFormatError, match="dtype"):
        load_subset(str(tmp_path / "wrong.npy"))


def test_subset_index_counts_repeats():
    uids = random_uids(50, seed=6)
    twin = uids[0][:16] + "0" * 16  # shares an upper half with uids[0]
    subset = sort_uids(uids_from_hex([uids[0], uids[0], uids[0], uids[1], twin, uids[2], uids[2]]))
    index = SubsetIndex(subset)
    counts = index.count_hex([uids[0], uids[1], uids[2], uids[3], twin, uids[0][:16] + "f" * 16])
    assert counts.tolist() == [3, 1, 2, 0, 1, 0]
    assert SubsetIndex(np.zeros(0, SUBSET_DTYPE)).count_hex(uids[:2]).tolist() == [0, 0]
