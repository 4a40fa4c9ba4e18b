"""Real HTML pages for the extractor's tests, each with the pairs a browser user would expect."""

from __future__ import annotations

from tests.extractor.crawl_files import Page

GALLERY_URL = "https://www.example.org/travel/alps/gallery.html"
GALLERY = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Alps gallery</title>
  <link rel="stylesheet" href="/css/site.css">
  <script>window.dataLayer = []; var fake = '<img src="in-script.jpg" alt="not an image">';</script>
</head>
<body>
  <header><img src="/static/logo.svg" alt=""></header>
  <main>
    <h1>Summer in the Alps</h1>
    <figure>
      <img src="photos/matterhorn.jpg" alt="The Matterhorn at   sunrise,
          seen from Zermatt" width="800" height="600">
      <figcaption>Matterhorn</figcaption>
    </figure>
    <img src="../lakes/lake-geneva.jpg" alt="Lake Geneva &amp; the Jet d&#39;Eau">
    <img src="//cdn.example.net/img/chalet.webp?w=640#top" alt="A wooden chalet">
    <img src="https://images.example.com/cow.jpg" alt="A cow with a bell">
    <img src="photos/edelweiss.jpg">
    <img src="photos/spacer.gif" alt="   ">
    <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=" alt="Tracking pixel">
    <img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="
         srcset="photos/glacier-480.jpg 480w, photos/glacier-1200.jpg 1200w, photos/glacier-800.jpg 800w"
         alt="Aletsch glacier">
    <img srcset="photos/marmot.jpg, photos/marmot@2x.jpg 2x" alt="A marmot">
    <picture>
      <source srcset="photos/ibex.avif" type="image/avif">
      <img src="photos/ibex.jpg" alt="An ibex on a ridge">
    </picture>
    <a href="javascript:void(0)"><img src="javascript:void(0)" alt="Open the lightbox"></a>
    <img src="mailto:info@example.org" alt="Write to us">
    <img src="photos/matterhorn.jpg" alt="The Matterhorn at sunrise, seen from Zermatt">
    <img src="photos/matterhorn.jpg" alt="The Matterhorn in winter">
    <img src="photos/x.jpg" alt="x">
    <!-- <img src="photos/old.jpg" alt="commented out"> -->
  </main>
</body>
</html>
"""
GALLERY_PAIRS = [
    ("https://www.example.org/travel/alps/photos/matterhorn.jpg", "The Matterhorn at sunrise, seen from Zermatt"),
    ("https://www.example.org/travel/lakes/lake-geneva.jpg", "Lake Geneva & the Jet d'Eau"),
    ("https://cdn.example.net/img/chalet.webp?w=640", "A wooden chalet"),
    ("https://images.example.com/cow.jpg", "A cow with a bell"),
    ("https://www.example.org/travel/alps/photos/glacier-1200.jpg", "Aletsch glacier"),
    ("https://www.example.org/travel/alps/photos/marmot@2x.jpg", "A marmot"),
    ("https://www.example.org/travel/alps/photos/ibex.jpg", "An ibex on a ridge"),
    ("https://www.example.org/travel/alps/photos/matterhorn.jpg", "The Matterhorn in winter"),
]
# Why each other <img> of the gallery goes (the one in the script and the comment are no images).
GALLERY_REASONS = {"empty_alt": 2, "missing_alt": 1, "data_url": 1, "unsupported_scheme": 2,
                   "duplicate_in_file": 1, "caption_too_short": 1}

BASE_URL = "https://news.example.com/2024/03/story.html"
BASE = """<html><head><base href="https://static.example.com/media/"><title>Story</title></head>
<body><p>Text</p><img src="crowd.jpg" alt="A crowd in the square"><img src="/top/banner.png" alt="Banner">
<base href="https://ignored.example.com/"><img src="later.jpg" alt="After a second base tag"></body></html>"""
BASE_PAIRS = [
    ("https://static.example.com/media/crowd.jpg", "A crowd in the square"),
    ("https://static.example.com/top/banner.png", "Banner"),
    ("https://static.example.com/media/later.jpg", "After a second base tag"),
]

BROKEN_URL = "http://shop.example.net/item?id=7"
# Unclosed elements, stray end tags, an unquoted attribute, a tag cut off at the end of the file.
BROKEN = """<html><body><div class="product"><table><tr><td>
<img src=/img/kettle.jpg alt="Red kettle">
<p><b>Price <i>29.90</b></i></span></div></div>
<ul><li><img src="/img/kettle-side.jpg" alt='Kettle, side view'><li>more
<img src="/img/lid.jpg" alt=Lid></td></tr>
<div><img src="/img/cut.jpg" alt="this tag never clo"""
BROKEN_PAIRS = [
    ("http://shop.example.net/img/kettle.jpg", "Red kettle"),
    ("http://shop.example.net/img/kettle-side.jpg", "Kettle, side view"),
    ("http://shop.example.net/img/lid.jpg", "Lid"),
]

CP1252_URL = "http://patisserie.example.fr/desserts"
CP1252 = """<html><head><title>Desserts</title></head><body>
<img src="creme.jpg" alt="Crème brûlée – “maison”">
<img src="tarte.jpg" alt="Tarte à l’abricot">
</body></html>"""
CP1252_PAIRS = [
    ("http://patisserie.example.fr/creme.jpg", "Crème brûlée – “maison”"),
    ("http://patisserie.example.fr/tarte.jpg", "Tarte à l’abricot"),
]

SJIS_URL = "http://neko.example.jp/photos/index.html"
SJIS = """<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">
<title>猫の写真</title></head><body>
<img src="tama.jpg" alt="縁側で眠る猫のタマ">
<img src="/photos/mike.jpg" alt="三毛猫　ミケ">
</body></html>"""
SJIS_PAIRS = [
    ("http://neko.example.jp/photos/tama.jpg", "縁側で眠る猫のタマ"),
    ("http://neko.example.jp/photos/mike.jpg", "三毛猫 ミケ"),  # the ideographic space is whitespace
]


def gallery() -> Page:
    return Page.html(GALLERY_URL, GALLERY)


def with_base() -> Page:
    return Page.html(BASE_URL, BASE)


def broken() -> Page:
    return Page.html(BROKEN_URL, BROKEN)


def windows_1252() -> Page:
    """Declared only in the HTTP header, as most servers of such pages do."""
    return Page.html(CP1252_URL, CP1252, charset="windows-1252")


def shift_jis() -> Page:
    """Declared only in a ``<meta http-equiv>``: the HTTP header says ``text/html`` without a charset."""
    return Page.html(SJIS_URL, SJIS, charset="shift_jis", header_charset=False)


def not_found() -> Page:
    return Page("http://www.example.org/missing", b"<html><img src='/x.jpg' alt='Not found page'></html>",
                status="404 Not Found")


def jpeg() -> Page:
    return Page("http://www.example.org/photo.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64, content_type="image/jpeg")


def all_pages() -> list[Page]:
    return [gallery(), with_base(), broken(), windows_1252(), shift_jis(), not_found(), jpeg()]


ALL_PAIRS = GALLERY_PAIRS + BASE_PAIRS + BROKEN_PAIRS + CP1252_PAIRS + SJIS_PAIRS
