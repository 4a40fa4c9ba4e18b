"""resize_image on real images: img2dataset's modes, encodings, alpha, and bad input."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from winnow.services.downloader.resize import ResizeError, ResizeMode, ResizeOptions, resize_image
from tests.infra.image_server import NOT_IMAGE_BODY, bomb_png_bytes
from tests.infra.images import openclipart_images

REPO_ROOT = Path(__file__).resolve().parents[2]


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def source_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def reason_for(data: bytes, options: ResizeOptions = ResizeOptions()) -> str:
    with pytest.raises(ResizeError) as info:
        resize_image(data, options)
    return info.value.reason


# -- modes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("attr", "size"), [("large_jpeg", 512), ("rgb_png", 256), ("alpha_png", 300)])
@pytest.mark.parametrize("mode", list(ResizeMode))
def test_each_mode_gives_the_size_img2dataset_gives(sample_images, attr, size, mode):
    path = getattr(sample_images, attr)
    width, height = source_size(path)
    assert min(width, height) > size  # every mode has to scale these down

    result = resize_image(path.read_bytes(), ResizeOptions(image_size=size, resize_mode=mode))

    out = decode(result.data)
    assert (out.width, out.height) == (result.width, result.height)
    assert (result.original_width, result.original_height) == (width, height)
    assert out.mode == "RGB"
    if mode is ResizeMode.no:
        assert out.size == (width, height)
    elif mode in (ResizeMode.center_crop, ResizeMode.border):
        assert out.size == (size, size)
    else:
        side = min if mode is ResizeMode.keep_ratio else max
        assert side(out.size) == size
        assert out.width / out.height == pytest.approx(width / height, rel=0.01)


@pytest.mark.parametrize("mode", list(ResizeMode))
def test_resize_only_if_bigger_keeps_a_small_image_as_it_is(sample_images, mode):
    width, height = source_size(sample_images.small_jpeg)
    result = resize_image(sample_images.small_jpeg.read_bytes(), ResizeOptions(image_size=1024, resize_mode=mode))
    assert decode(result.data).size == (width, height) == (result.width, result.height)


def test_without_resize_only_if_bigger_a_small_image_is_scaled_up(sample_images):
    options = ResizeOptions(image_size=1024, resize_mode=ResizeMode.keep_ratio_largest, resize_only_if_bigger=False)
    result = resize_image(sample_images.small_jpeg.read_bytes(), options)
    assert max(decode(result.data).size) == 1024


def test_border_pads_with_white(sample_images):
    width, height = source_size(sample_images.large_jpeg)
    assert height > width  # a portrait photo: the padding is left and right
    options = ResizeOptions(image_size=512, resize_mode=ResizeMode.border, encode_format="png", encode_quality=1)
    pixels = np.asarray(decode(resize_image(sample_images.large_jpeg.read_bytes(), options).data))
    inner_width = round(width * 512 / height)
    pad = (512 - inner_width) // 2
    assert pad >= 10
    assert (pixels[:, :pad] == 255).all()
    assert (pixels[:, 512 - pad:] == 255).all()
    assert (pixels[:, pad + 5:512 - pad - 5] != 255).any()  # the photo itself is not blank


def test_center_crop_keeps_the_middle(sample_images):
    options = ResizeOptions(image_size=256, resize_mode=ResizeMode.center_crop, encode_format="png", encode_quality=1)
    cropped = np.asarray(decode(resize_image(sample_images.rgb_png.read_bytes(), options).data), dtype=float)
    with Image.open(sample_images.rgb_png) as source:  # 600x400 -> 384x256, then the middle 256 columns
        reference = np.asarray(source.convert("RGB").resize((384, 256), Image.Resampling.BOX), dtype=float)
    assert np.abs(cropped - reference[:, 64:320]).mean() < 2


def test_alpha_is_matted_on_white(sample_images):
    with Image.open(sample_images.alpha_png) as source:
        rgba = np.asarray(source.convert("RGBA"))
    transparent, opaque = rgba[..., 3] == 0, rgba[..., 3] == 255
    assert transparent.sum() > 1000 and opaque.sum() > 1000

    options = ResizeOptions(resize_mode=ResizeMode.no, encode_format="png", encode_quality=1)
    out = np.asarray(decode(resize_image(sample_images.alpha_png.read_bytes(), options).data))

    assert out.shape == rgba.shape[:2] + (3,)
    assert (out[transparent] == 255).all()
    assert (out[opaque] == rgba[opaque][:, :3]).all()


def _palette_png_with_transparency() -> bytes:
    for path in openclipart_images(limit=400):
        with Image.open(path) as image:
            if image.mode == "P" and "transparency" in image.info and min(image.size) >= 100:
                return path.read_bytes()
    pytest.skip("openclipart-png is not installed: no palette image with transparency")


def _gray_alpha_png(sample_images) -> bytes:
    buffer = io.BytesIO()
    with Image.open(sample_images.alpha_png) as image:
        image.convert("LA").save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["P", "LA"])
def test_other_kinds_of_transparency_are_matted_on_white(sample_images, kind):
    data = _palette_png_with_transparency() if kind == "P" else _gray_alpha_png(sample_images)
    with Image.open(io.BytesIO(data)) as source:
        assert source.mode == kind
        alpha = np.asarray(source.convert("RGBA"))[..., 3]
    options = ResizeOptions(resize_mode=ResizeMode.no, encode_format="png", encode_quality=1)
    out = np.asarray(decode(resize_image(data, options).data))
    assert (alpha == 0).sum() > 1000
    assert (out[alpha == 0] == 255).all()


def test_grayscale_comes_out_as_rgb(sample_images):
    out = decode(resize_image(sample_images.gray_png.read_bytes(), ResizeOptions(image_size=256)).data)
    assert out.mode == "RGB" and out.size == (256, 256)


# -- encoding -------------------------------------------------------------------------------


@pytest.mark.parametrize(("encode_format", "pil_format", "quality"), [
    ("jpg", "JPEG", 95), ("webp", "WEBP", 90), ("png", "PNG", 6),
])
def test_encode_formats_give_decodable_images_of_that_format(sample_images, encode_format, pil_format, quality):
    options = ResizeOptions(image_size=256, encode_format=encode_format, encode_quality=quality)
    result = resize_image(sample_images.large_jpeg.read_bytes(), options)
    out = decode(result.data)
    assert out.format == pil_format
    assert result.extension == encode_format
    assert max(out.size) == 256


@pytest.mark.parametrize("changes", [
    {"encode_format": "gif"}, {"encode_format": "png", "encode_quality": 95}, {"image_size": 0},
    {"resize_mode": "stretch"},
])
def test_bad_options_are_refused(changes):
    with pytest.raises(ValueError):
        ResizeOptions(**changes)


def test_skip_reencode_returns_the_source_bytes_when_nothing_changes(sample_images):
    data = sample_images.small_jpeg.read_bytes()
    options = ResizeOptions(image_size=1024, encode_format="jpg", skip_reencode=True)
    assert resize_image(data, options).data == data
    # A resize, or another format, means a new encoding.
    assert resize_image(data, ResizeOptions(image_size=256, skip_reencode=True)).data != data
    png = sample_images.rgb_png.read_bytes()
    assert decode(resize_image(png, options).data).format == "JPEG"


def test_without_skip_reencode_the_image_is_reencoded(sample_images):
    data = sample_images.small_jpeg.read_bytes()
    assert resize_image(data, ResizeOptions(image_size=1024)).data != data


# -- draft-mode decoding --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_draft_decoding_looks_like_a_full_decode(sample_images, mode):
    with Image.open(sample_images.large_jpeg) as source:
        assert min(source.size) >= 2 * 512  # large enough that libjpeg decodes at a reduced scale
        buffer = io.BytesIO()
        source.convert(mode).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    options = ResizeOptions(image_size=512, encode_format="png", encode_quality=1)
    fast = decode(resize_image(data, options).data)

    with Image.open(io.BytesIO(data)) as full:  # no draft: every pixel decoded
        reference = full.convert("RGB").resize(fast.size, Image.Resampling.LANCZOS)
    difference = np.abs(np.asarray(fast, dtype=float) - np.asarray(reference, dtype=float)).mean()
    # Measured 1.6-1.7 for the DCT-scaled decode with bicubic (img2dataset's full decode with an
    # area filter: 0.5); under 2 of 255 is invisible, and the decode costs about half as much.
    assert difference < 2.0, f"mean absolute difference {difference:.2f} on 0..255"


# -- bad input ------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_quickly():
    data = bomb_png_bytes()
    start = time.monotonic()
    assert reason_for(data) == "decompression_bomb"
    assert time.monotonic() - start < 0.5


def test_decompression_bomb_is_refused_without_allocating_it(tmp_path):
    # PIL allocates outside Python's allocator, so measure the peak RSS of a fresh process.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png_bytes())
    script = textwrap.dedent(f"""
        import resource
        from winnow.services.downloader.resize import ResizeError, ResizeOptions, resize_image
        data = open({str(bomb)!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            resize_image(data, ResizeOptions())
        except ResizeError as exc:
            print(exc.reason)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    reason, grown_mib = done.stdout.split()
    assert reason == "decompression_bomb"
    assert int(grown_mib) < 50, f"peak memory grew by {grown_mib} MiB for a 900-megapixel image"


def test_pixel_cap_is_configurable(sample_images):
    width, height = source_size(sample_images.large_jpeg)
    options = ResizeOptions(max_image_pixels=width * height - 1)
    assert reason_for(sample_images.large_jpeg.read_bytes(), options) == "decompression_bomb"


@pytest.mark.parametrize("attr", ["large_jpeg", "rgb_png"])
def test_truncated_image_is_a_decode_error(sample_images, attr):
    data = getattr(sample_images, attr).read_bytes()
    assert reason_for(data[: int(len(data) * 0.6)]) == "decode_error"


@pytest.mark.parametrize("data", [NOT_IMAGE_BODY, b"", b"GIF89a", "un texte accentué".encode()])
def test_non_image_bytes_are_not_an_image(data):
    assert reason_for(data) == "not_an_image"


@pytest.mark.parametrize(("changes", "reason"), [
    ({"min_image_size": 1000}, "image_too_small"),
    ({"max_aspect_ratio": 1.2}, "aspect_ratio_too_large"),
    ({"max_image_area": 100_000}, "image_area_too_large"),
])
def test_img2dataset_filters_give_their_reason(sample_images, changes, reason):
    assert reason_for(sample_images.small_jpeg.read_bytes(), ResizeOptions(**changes)) == reason
