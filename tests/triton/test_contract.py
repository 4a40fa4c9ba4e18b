"""The wire formats: raw image frames, encoded images, zero-padded rows with lengths."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from winnow.shared.triton import contract


def test_raw_frame_round_trip_is_exact():
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    frame = contract.encode_image(image)
    assert len(frame) == 16 + image.nbytes
    np.testing.assert_array_equal(contract.decode_image(frame), image)
    # non-contiguous input (a crop) is framed as its pixels
    np.testing.assert_array_equal(contract.decode_image(contract.encode_image(image[5:9, ::2])), image[5:9, ::2])


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_encoded_images_decode_to_rgb(format):
    image = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).convert("L").save(buffer, format=format)
    decoded = contract.decode_image(buffer.getvalue())
    assert decoded.shape == (20, 30, 3) and decoded.dtype == np.uint8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "neither a raw frame nor an image"),
        (b"<html>not an image</html>", "neither a raw frame nor an image"),
        (contract.encode_image(np.zeros((4, 4, 3), np.uint8))[:-1], "must be 64 bytes, got 63"),
        (contract.encode_image(np.zeros((4, 4, 3), np.uint8))[:10], "truncated"),
    ],
)
def test_bad_image_rows_raise_value_error(data, message):
    with pytest.raises(ValueError, match=message):
        contract.decode_image(data)


def test_encode_image_refuses_non_rgb():
    with pytest.raises(ValueError, match="uint8"):
        contract.encode_image(np.zeros((4, 4), np.uint8))


def test_rows_round_trip_and_validation():
    items = [b"abc", b"", "日本".encode(), bytes(range(256))]
    rows, lengths = contract.pack_rows(items)
    assert rows.dtype == np.uint8 and rows.shape == (4, 256) and lengths.shape == (4, 1)
    assert contract.unpack_rows(rows, lengths) == items
    assert contract.pack_rows([b""])[0].shape == (1, 1)  # never an empty tensor
    with pytest.raises(ValueError, match="outside"):
        contract.unpack_rows(rows, np.array([[3], [0], [6], [257]], np.int32))
    with pytest.raises(ValueError, match="4 rows but 2 lengths"):
        contract.unpack_rows(rows, lengths[:2])
    with pytest.raises(ValueError, match="not valid UTF-8"):
        contract.decode_text(b"\xff\xfe")
