"""Real test images for the downloader's tests and benchmarks.

Sources (no synthetic noise images):

* the sample images shipped inside the scikit-image wheel (``skimage/data``):
  astronaut, chelsea, coffee, rocket, retina, hubble_deep_field, ...
* the Debian package ``openclipart-png`` (~8,000 clip-art PNGs under
  ``/usr/share/openclipart/png`` whose file names are titles), if installed.

``make_jpeg_corpus`` turns these into many distinct, larger-than-target JPEG
files (deterministic and cached on disk) to be served by
:class:`tests.infra.image_server.ImageServer`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

OPENCLIPART_ROOT = Path("/usr/share/openclipart/png")

# skimage/data files that are not useful as photographs (binary masks, text,
# calibration patterns) are still real images; we keep all png/jpg but rank
# the photographic ones first for corpus building.
_SKIMAGE_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "retina.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "moon.png",
    "coins.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "ihc.png",
    "cell.png",
    "immunohistochemistry.png",
    "microaneurysms.png",
    "page.png",
    "color.png",
)

# Tokens in openclipart file names that carry no meaning for a caption.
_NOISE_TOKENS = {"md", "sm", "lg", "thumb", "small", "big", "png", "svg", "clipart", "openclipart"}
# Categories of openclipart that are mostly flat patterns/gradients/tiny icons.
_CLIPART_SKIP_DIRS = ("special/",)


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


@lru_cache(maxsize=1)
def skimage_images() -> list[Path]:
    """All png/jpg images shipped in ``skimage/data`` (color and grayscale), sorted by name."""
    d = skimage_data_dir()
    return sorted(
        p for p in d.iterdir() if p.is_file() and p.suffix.lower() in (".png", ".jpg", ".jpeg")
    )


def skimage_photos() -> list[Path]:
    """The photographic subset of :func:`skimage_images`, in a fixed order."""
    by_name = {p.name: p for p in skimage_images()}
    return [by_name[n] for n in _SKIMAGE_PHOTOS if n in by_name]


@lru_cache(maxsize=1)
def _all_openclipart() -> tuple[Path, ...]:
    if not OPENCLIPART_ROOT.is_dir():
        return ()
    return tuple(sorted(OPENCLIPART_ROOT.rglob("*.png"), key=lambda p: p.as_posix()))


def openclipart_images(limit: int | None = None) -> list[Path]:
    """Clip-art PNGs from the Debian ``openclipart-png`` package, sorted by path.

    Returns ``[]`` if the package is not installed. With ``limit``, returns
    ``limit`` paths spread evenly over the sorted list (so a small sample still
    covers many categories), still deterministic and in sorted order.
    """
    allp = _all_openclipart()
    if limit is None or limit >= len(allp):
        return list(allp)
    if limit <= 0:
        return []
    step = len(allp) / limit
    return [allp[int(i * step)] for i in range(limit)]


def title_from_path(path: str | Path) -> str:
    """A human caption from a clip-art (or corpus) file name.

    ``red_apple.png`` / ``red-apple.png`` -> ``"red apple"``; numeric ids such
    as ``_01``, ``00042_`` or a trailing ``2`` glued to the last word are
    dropped, as are size markers like ``-md``.
    """
    stem = Path(path).stem
    # split camelCase ("RedApple" -> "Red Apple")
    stem = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)
    tokens = [t for t in re.split(r"[\s_\-.+,()\[\]]+", stem) if t]
    words: list[str] = []
    for t in tokens:
        low = t.lower()
        if low.isdigit():
            # keep small counts at the start ("2 dead frogs"), drop ids
            if not words and len(low) == 1 and len(tokens) > 1 and tokens.index(t) == 0:
                words.append(low)
            continue
        if low in _NOISE_TOKENS:
            continue
        words.append(low)
    # trailing digits glued to the final word are ids ("vasamaa2", "star03")
    if words:
        last = re.sub(r"\d+$", "", words[-1])
        if last:
            words[-1] = last
        else:
            words.pop()
    # a lone leading count with nothing else is not a caption
    if len(words) == 1 and words[0].isdigit():
        words = []
    return " ".join(words)


def _slug(text: str, maxlen: int = 48) -> str:
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return s[:maxlen].rstrip("_") or "image"


def _clipart_candidates(min_bytes: int = 8000, min_side: int = 200) -> list[Path]:
    """Clip-art suitable as corpus sources: not patterns, not tiny icons."""
    out = []
    for p in _all_openclipart():
        rel = p.relative_to(OPENCLIPART_ROOT).as_posix()
        if rel.startswith(_CLIPART_SKIP_DIRS):
            continue
        try:
            if p.stat().st_size < min_bytes:
                continue
        except OSError:
            continue
        out.append(p)
    return out


_GRAY_PHOTOS = {"camera.png", "moon.png", "coins.png", "brick.png", "grass.png",
                "gravel.png", "cell.png", "microaneurysms.png", "page.png"}
_MAX_CLIPART_PIXELS = 16_000_000


def _photo_cycle() -> list[Path]:
    """Photo sources in corpus order: 3 color photos, then 1 grayscale one."""
    photos = skimage_photos() or skimage_images()
    color = [p for p in photos if p.name not in _GRAY_PHOTOS]
    gray = [p for p in photos if p.name in _GRAY_PHOTOS]
    if not color or not gray:
        return photos
    cycle: list[Path] = []
    ci = gi = 0
    # long enough that every color and every gray photo appears
    while ci < len(color) or gi < len(gray):
        for _ in range(3):
            cycle.append(color[ci % len(color)])
            ci += 1
        cycle.append(gray[gi % len(gray)])
        gi += 1
    return cycle


def _clipart_ok(path: Path) -> bool:
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
    except Exception:  # includes PIL.Image.DecompressionBombError
        return False
    return w * h <= _MAX_CLIPART_PIXELS and min(w, h) >= 64


def _load_rgb_or_l(path: Path):
    from PIL import Image

    im = Image.open(path)
    im.load()
    if im.mode in ("L", "RGB"):
        return im
    if im.mode in ("I;16", "I", "F"):
        return im.convert("L")
    if im.mode == "LA" or im.mode == "1":
        return im.convert("L")
    return im.convert("RGB")


def _composite_on_white(path: Path):
    from PIL import Image

    im = Image.open(path)
    im.load()
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        return bg.convert("RGB")
    return im.convert("RGB")


def _photo_variant(src: Path, rng, min_side: int):
    """A cropped/flipped/rotated/rescaled variant of a real photo."""
    from PIL import Image, ImageEnhance

    im = _load_rgb_or_l(src)
    w, h = im.size
    # random crop keeping 55-100% of each dimension
    fw, fh = rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0)
    cw, ch = max(16, int(w * fw)), max(16, int(h * fh))
    x0 = int(rng.integers(0, w - cw + 1))
    y0 = int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rot = int(rng.integers(0, 4))
    if rot:
        im = im.transpose(
            (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[rot - 1]
        )
    if rng.random() < 0.5:
        im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.85, 1.15)))
    if im.mode == "RGB" and rng.random() < 0.3:
        im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.7, 1.3)))
    return _resize_min_side(im, min_side + int(rng.integers(0, 400)))


def _resize_min_side(im, target_short: int):
    from PIL import Image

    w, h = im.size
    scale = target_short / min(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    return im.resize((nw, nh), Image.Resampling.BICUBIC)


def make_jpeg_corpus(dest: Path, n: int, min_side: int = 800) -> list[Path]:
    """Write ``n`` distinct real-image JPEGs (quality 90) into ``dest``.

    Even indices (or all, if openclipart is not installed) are variants of the
    scikit-image photos (random crop, flip, 90-degree rotation, brightness /
    saturation jitter, bicubic upscale); odd indices are openclipart PNGs
    composited on white. Every file's shorter side is >= ``min_side``
    (``min_side`` .. ``min_side + 399``). Grayscale sources (camera, moon,
    coins, ...) stay single-channel JPEGs.

    File names are ``{index:05d}_{caption_slug}.jpg``, so
    :func:`title_from_path` recovers a caption. Deterministic for a given
    environment; files that already exist are not rewritten.
    """
    import numpy as np

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    photos = _photo_cycle()
    clip = _clipart_candidates()
    if clip:
        # deterministic shuffle so consecutive clip-art items differ in category
        order = np.random.default_rng(12345).permutation(len(clip))
        clip = [clip[i] for i in order]
    out: list[Path] = []
    n_photo = 0
    n_clip = 0
    for i in range(n):
        use_clip = bool(clip) and i % 2 == 1
        if use_clip:
            # skip clip-art that cannot be opened or is huge (the package has
            # real 100-600 megapixel PNGs that trip PIL's bomb check)
            while True:
                src = clip[n_clip % len(clip)]
                n_clip += 1
                if _clipart_ok(src) or n_clip > 10 * len(clip):
                    break
            title = title_from_path(src) or "clip art"
        else:
            src = photos[n_photo % len(photos)]
            n_photo += 1
            title = src.stem.replace("_", " ")
        path = dest / f"{i:05d}_{_slug(title)}.jpg"
        out.append(path)
        if path.exists() and path.stat().st_size > 0:
            continue
        rng = np.random.default_rng(1_000_003 * (i + 1) + min_side)
        if use_clip:
            im = _composite_on_white(src)
            im = _resize_min_side(im, min_side + int(rng.integers(0, 400)))
        else:
            im = _photo_variant(src, rng, min_side)
        tmp = path.with_suffix(".jpg.tmp")
        im.save(tmp, format="JPEG", quality=90)
        tmp.replace(path)
    return out


def on_white(image):
    """RGB with transparency matted on white, as the downloader does (not PIL's black)."""
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background


def near_copy(path: Path, scale: float, quality: int, crop: float = 0.02) -> bytes:
    """A near-duplicate of a real image: cropped by ``crop`` per side, rescaled, re-encoded as JPEG."""
    import io

    from PIL import Image

    with Image.open(path) as image:
        image = on_white(image)
        w, h = image.size
        dx, dy = int(w * crop), int(h * crop)
        image = image.crop((dx, dy, w - dx, h - dy)).resize((int(w * scale), int(h * scale)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return buffer.getvalue()


# What the photos show, for captions (scikit-image's file names are not captions).
_PHOTO_CAPTIONS = {
    "astronaut": "astronaut eileen collins in her flight suit",
    "chelsea": "chelsea the tabby cat",
    "coffee": "a cup of coffee on a saucer",
    "rocket": "a rocket on the launch pad",
    "retina": "fundus photograph of a human retina",
    "hubble_deep_field": "hubble deep field, thousands of galaxies",
    "motorcycle_left": "a red motorcycle, left view",
    "motorcycle_right": "a red motorcycle, right view",
    "camera": "a cameraman with a tripod, black and white",
    "moon": "the surface of the moon",
    "coins": "ancient greek coins on a table",
    "brick": "a brick wall texture",
    "grass": "green grass texture",
    "gravel": "gravel texture",
    "ihc": "stained tissue under a microscope",
    "immunohistochemistry": "immunohistochemistry stained tissue under a microscope",
    "cell": "a cell under a microscope",
    "microaneurysms": "retina with microaneurysms",
    "page": "a scanned page of an old book",
    "color": "a color test chart",
}
_PHOTO_TEMPLATES = ("{}", "photo of {}", "{} - stock photo", "{}, high resolution", "close-up of {}")
_CLIPART_TEMPLATES = ("{}", "{} clip art", "a drawing of {}", "{} vector illustration", "free {} clipart image",
                      "cartoon {} on a white background")
WEB_LONGEST_SIDE = (300, 1600)  # px, log-uniform: web images are more often small than large


def _web_sources(n: int, seed: int) -> list[tuple[Path, bool]]:
    """``(source, is_photo)`` for indices ``0..n-1``: every fifth a scikit-image photo, the rest
    clip art in a seed-shuffled order (cycling when ``n`` exceeds the clip art)."""
    import numpy as np

    photos = _photo_cycle()
    clip = _clipart_candidates()
    if clip:
        clip = [clip[i] for i in np.random.default_rng(seed).permutation(len(clip))]
    sources: list[tuple[Path, bool]] = []
    usable: list[Path] = []  # clip art that opens and is not a pixel bomb, checked as far as needed
    checked = 0
    for i in range(n):
        if not clip or i % 5 == 0:
            sources.append((photos[(i // 5) % len(photos)], True))
            continue
        k = i - i // 5 - 1  # this drawing's rank among the drawings
        while len(usable) <= k and checked < len(clip):
            if _clipart_ok(clip[checked]):
                usable.append(clip[checked])
            checked += 1
        sources.append((usable[k % len(usable)], False))
    return sources


def _web_variant(src: Path, is_photo: bool, index: int, seed: int) -> tuple[bytes, str, str]:
    """One web-sized variant of a real image: ``(encoded bytes, extension, caption)``."""
    import io
    import math

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    im = _load_rgb_or_l(src) if is_photo else _composite_on_white(src)
    w, h = im.size
    low = 0.55 if is_photo else 0.75  # clip art cropped less, so the drawing stays in the frame
    cw, ch = max(16, int(w * rng.uniform(low, 1.0))), max(16, int(h * rng.uniform(low, 1.0)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    longest = math.exp(rng.uniform(math.log(WEB_LONGEST_SIDE[0]), math.log(WEB_LONGEST_SIDE[1])))
    scale = longest / max(im.size)
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                   Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    if rng.random() < (0.05 if is_photo else 0.3):
        im.save(buffer, "PNG", optimize=False, compress_level=int(rng.integers(3, 10)))
        extension = "png"
    else:
        im.save(buffer, "JPEG", quality=int(rng.integers(60, 96)), progressive=bool(rng.random() < 0.2),
                optimize=bool(rng.random() < 0.5))
        extension = "jpg"
    if is_photo:
        subject = _PHOTO_CAPTIONS.get(src.stem, src.stem.replace("_", " "))
        templates = _PHOTO_TEMPLATES
    else:
        subject = title_from_path(src) or "clip art"
        templates = _CLIPART_TEMPLATES
    caption = templates[int(rng.integers(0, len(templates)))].format(subject)
    return buffer.getvalue(), extension, caption


def _write_web_image(task: tuple[Path, bool, int, int, Path]) -> tuple[str, str]:
    src, is_photo, index, seed, dest = task
    data, extension, caption = _web_variant(src, is_photo, index, seed)
    path = dest / f"{index:06d}_{_slug(caption, 40)}.{extension}"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path.name, caption


def make_web_corpus(dest: Path, n: int, seed: int = 0, processes: int = 1) -> list[tuple[Path, str]]:
    """``n`` distinct real images at web sizes and formats in ``dest``: ``(path, caption)`` by index.

    Every fifth image is a scikit-image photo, the others openclipart drawings (matted on white),
    each randomly cropped, maybe mirrored, scaled to a longest side of 300-1,600 px
    (log-uniform) and recompressed: JPEG at quality 60-95 (some progressive), or PNG (30 % of
    drawings, 5 % of photos). Captions are the photo's subject or the drawing's title in one of
    a few web-like phrasings. Image ``i`` depends only on ``(seed, i)``, so a smaller corpus is
    the start of a larger one; made images are listed in ``dest/captions.tsv`` and not remade.
    """
    from concurrent.futures import ProcessPoolExecutor

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest / "captions.tsv"
    made: dict[int, tuple[str, str]] = {}
    if listing.exists():
        for line in listing.read_text().splitlines():
            name, caption = line.split("\t")
            made[int(name.split("_", 1)[0])] = (name, caption)
    missing = [i for i in range(n) if i not in made or not (dest / made[i][0]).exists()]
    if missing:
        sources = _web_sources(n, seed)
        tasks = [(*sources[i], i, seed, dest) for i in missing]
        with ProcessPoolExecutor(max(1, processes)) as pool:
            for i, (name, caption) in zip(missing, pool.map(_write_web_image, tasks, chunksize=16)):
                made[i] = (name, caption)
        listing.write_text("".join(f"{made[i][0]}\t{made[i][1]}\n" for i in sorted(made)))
    return [(dest / made[i][0], made[i][1]) for i in range(n)]
