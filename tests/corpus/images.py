"""The corpus's image files: real photos (scikit-image's samples) in the odd and broken forms the
web serves them in, made with Pillow (a few headers are patched by hand, as a hostile server
would). Each source photo is used once among the files that should be kept, so dedup keeps them
all."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from tests.infra.images import skimage_images


def _photo(name: str) -> Image.Image:
    path = {p.name: p for p in skimage_images()}[name]
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _patched_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0/SOF2) claiming another size."""
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        at = data.find(marker)
        if at >= 0:
            return data[:at + 5] + struct.pack(">HH", height, width) + data[at + 9:]
    raise ValueError("no SOF marker")


def _gif_claiming(width: int, height: int) -> bytes:
    """A one-frame GIF whose screen and image descriptor claim ``width`` x ``height``."""
    data = bytearray(_encoded(_photo("page.png").resize((8, 8)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    palette = 3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0
    descriptor = data.index(b"\x2c", 13 + palette)
    data[descriptor + 5:descriptor + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def _corrupt_png_data(data: bytes) -> bytes:
    """The PNG with bytes inside its first IDAT overwritten (its CRC no longer matches)."""
    at = data.index(b"IDAT") + 4
    middle = at + 200
    return data[:middle] + bytes(64) + data[middle + 64:]


def _animated(image: Image.Image) -> bytes:
    frames = [image.rotate(angle) for angle in (0, 5, 10)]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(image, "JPEG", quality=90, exif=exif.tobytes())


def write_corpus_images(root: Path) -> None:
    """Write every file the corpus serves under ``/img/`` into ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    rocket = _encoded(_photo("rocket.jpg"), "JPEG", quality=90)
    astronaut = _encoded(_photo("astronaut.png"), "JPEG", quality=90)
    camera = np.asarray(_photo("camera.png"), dtype=np.uint16) * 257
    coins = _photo("coins.png")
    alpha = Image.fromarray(np.tile(np.linspace(40, 255, coins.width, dtype=np.uint8), (coins.height, 1)))
    files = {
        # odd but whole: these are kept
        "cmyk.jpg": _encoded(_photo("astronaut.png").convert("CMYK"), "JPEG", quality=90),
        "gray16.png": _encoded(Image.fromarray(camera), "PNG"),
        "palette_alpha.png": _encoded(_palette_with_transparency(_photo("coffee.png")), "PNG"),
        "animated.gif": _animated(_photo("chelsea.png")),
        "no_eoi.jpg": rocket[:-2],
        "progressive.jpg": _encoded(_photo("hubble_deep_field.jpg"), "JPEG", quality=90, progressive=True),
        "gray.jpg": _encoded(_photo("moon.png"), "JPEG", quality=90),
        "gray_alpha.png": _encoded(Image.merge("LA", (coins, alpha)), "PNG"),
        "photo.webp": _encoded(_photo("motorcycle_left.png"), "WEBP", quality=90),
        "photo.bmp": _encoded(_photo("brick.png"), "BMP"),
        "photo.tiff": _encoded(_photo("gravel.png"), "TIFF"),
        "exif_rotated.jpg": _with_exif_orientation(_photo("retina.jpg").resize((700, 700)), 6),
        "trailing_junk.jpg": _encoded(_photo("color.png"), "JPEG", quality=90) + b"<!-- tracking -->" * 50,
        "rgba.png": _encoded(_photo("horse.png"), "PNG"),
        "icon.ico": _encoded(_photo("logo.png"), "ICO", sizes=[(128, 128)]),
        "one_pixel.png": _encoded(_photo("phantom.png").resize((1, 1)), "PNG"),
        "mislabeled.png": _encoded(_photo("ihc.png"), "JPEG", quality=90),  # JPEG bytes named .png
        # broken: these are refused, each for its reason
        "truncated.jpg": astronaut[: int(len(astronaut) * 0.6)],
        "truncated.png": _encoded(_photo("cell.png"), "PNG")[:20_000],
        "corrupt_idat.png": _corrupt_png_data(_encoded(_photo("chelsea.png"), "PNG")),
        "empty.jpg": b"",
        "drawing.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" '
                       b'height="10"/></svg>',
        "jpeg_bomb.jpg": _patched_jpeg_size(rocket, 60000, 60000),
        "gif_bomb.gif": _gif_claiming(65535, 65535),
        "pdf_as.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)


def _palette_with_transparency(image: Image.Image) -> Image.Image:
    paletted = image.quantize(64)
    paletted.info["transparency"] = 0
    return paletted
