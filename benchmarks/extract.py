"""Extraction throughput: winnow's extractor against warcio + BeautifulSoup (lxml), on one WARC.

The input is a Common-Crawl-shaped WARC written here with warcio (cached in
``benchmarks/_data``): a ``warcinfo`` record, then per page a ``request``, a ``response`` and a
``metadata`` record, each gzip'd on its own as Common Crawl does. The pages are varied HTML:
six site templates with their own inline CSS and scripts (JSON-LD, analytics, a bundled
framework), navigation menus, text paragraphs (sizes drawn log-normally, median about 45 KB of
HTML), and several images each, written the many ways pages write them: relative, root-relative,
protocol-relative and absolute URLs, ``<base href>``, lazy-loading ``data:`` placeholders with
``srcset``, missing, empty, one-character and entity-laden alt text, icons, repeated images,
``javascript:`` links; some pages in windows-1252 (declared in the HTTP header); some responses
are images or 404s.

Both sides read the same file once, in this process, on one core, and produce the same rows
(uid, url, text, page_url) in the same order:

- winnow: ``winnow.services.extractor.extract.extract_file`` (FastWARC, Resiliparse's Lexbor parser);
- baseline, written the usual way: warcio's ``ArchiveIterator``, ``BeautifulSoup(html, "lxml",
  from_encoding=<the HTTP charset>)``, ``find("base")``, ``find_all("img")``. It applies the very
  same caption, URL and uid rules (imported from winnow), so only the reading and parsing differ.

Records/s and pages/s are measured over the whole file; the rows are compared and any
difference is printed. The projection for a full Common Crawl WARC (about 1 GB gzip'd, about
35,000 pages, each compressed page about 30 KB) is given two ways: by compressed bytes at the
measured MB/s, and by pages at the measured pages/s.

Run from the repository root::

    .venv/bin/python -m benchmarks.extract [--pages 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from winnow.services.downloader.pool import generate_uid
from winnow.services.extractor.captions import CaptionRules, caption_or_reason
from winnow.services.extractor.extract import extract_file
from winnow.services.extractor.urls import image_url, page_base
from winnow.shared.logs import configure_logging

log = structlog.get_logger("benchmarks.extract")

DATA_DIR = Path(__file__).resolve().parent / "_data"
CC_WARC_BYTES = 1_000_000_000  # a Common Crawl WARC file, gzip'd
CC_WARC_PAGES = 35_000  # ~3.1 billion pages in ~90,000 files per crawl
GOAL_RATIO = 5.0
GOAL_SECONDS = 60.0

WORDS = ("the of and a to in is you that it he was for on are as with his they at be this have from or one had by "
         "word but not what all were we when your can said there use an each which she do how their if will up other "
         "about out many then them these so some her would make like him into time has look two more write go see "
         "number no way could people my than first water been call who oil its now find long down day did get come "
         "made may part mountain river lake city street market garden kitchen recipe chocolate bread travel hotel "
         "beach summer winter autumn spring photo camera portrait landscape sunset village church castle bridge "
         "museum painting music concert festival football team player season match goal score news politics "
         "election market economy company product price review design interior furniture sofa table chair lamp "
         "wedding dress shoes fashion style beauty health doctor hospital school student teacher university "
         "science research space planet star galaxy ocean forest animal dog cat bird horse flower tree").split()
ACCENTED = "café crème brûlée déjà vu naïve façade über straße élève garçon señor año piñata".split()
SITES = ("news.example.com", "shop.example.net", "blog.example.org", "recipes.example.co.uk", "travel.example.de",
         "forum.example.fr")


@dataclass(frozen=True)
class Row:
    uid: str
    url: str
    text: str
    page_url: str


def _sentence(rng: np.random.Generator, low: int, high: int, words=WORDS) -> str:
    return " ".join(words[i] for i in rng.integers(0, len(words), rng.integers(low, high)))


class PageMaker:
    """Random but realistic HTML pages; everything is drawn from one seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        rng = self.rng
        self.paragraphs = [_sentence(rng, 25, 140).capitalize() + "." for _ in range(6000)]
        self.templates = []
        for site in SITES:
            css = "\n".join(f".c{j} {{ margin: {j % 13}px; color: #{rng.integers(0, 0xFFFFFF):06x}; "
                            f"font: {10 + j % 9}px/1.4 sans-serif; }}" for j in range(rng.integers(60, 400)))
            script = "\n".join(f"function f{j}(a, b) {{ var s = '<div class=\"x{j}\">' + a + '</div>'; "
                               f"return s.length > {j} ? b : a; }}" for j in range(rng.integers(300, 1500)))
            nav = "".join(f'<li><a href="/section/{j}/{_sentence(rng, 1, 3).replace(" ", "-")}">'
                          f"{_sentence(rng, 1, 3)}</a></li>" for j in range(rng.integers(30, 160)))
            self.templates.append((site, css, script, nav))

    def caption(self, words=WORDS) -> str:
        rng = self.rng
        text = _sentence(rng, 2, 14, words)
        roll = rng.random()
        if roll < 0.08:
            text = text.replace(" ", " &amp; ", 1)
        elif roll < 0.14:
            text = f"  {text}\n   {_sentence(rng, 1, 4)}  "
        elif roll < 0.18:
            text = f"&quot;{text}&quot; &#8211; {_sentence(rng, 1, 3)}"
        return text

    def image(self, index: int, site: str, previous: list[str], words=WORDS) -> str:
        rng = self.rng
        name = f"{_sentence(rng, 1, 3).replace(' ', '-')}-{rng.integers(1, 10**6)}.jpg"
        roll = rng.random()
        if previous and roll < 0.05:
            return previous[int(rng.integers(0, len(previous)))]  # the same image again
        if roll < 0.20:
            return f'<img src="/static/img/{name}" class="c{index}" width="300" height="200">'  # no alt
        if roll < 0.28:
            return f'<img src="/static/icons/{name}" alt="">'
        if roll < 0.31:
            return f'<img src="/static/icons/{name}" alt="|">'
        if roll < 0.36:
            return (f'<img src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7" '
                    f'srcset="/media/{name}?w=480 480w, /media/{name}?w=1080 1080w" alt="{self.caption()}" '
                    f'loading="lazy">')
        if roll < 0.38:
            return f'<a href="#"><img src="javascript:void(0)" alt="{self.caption()}"></a>'
        forms = (f"images/{name}", f"/uploads/2024/03/{name}", f"//cdn.{site}/{name}",
                 f"https://img.{site}/full/{name}", f"../assets/{name}")
        src = forms[int(rng.integers(0, len(forms)))]
        tag = f'<img src="{src}" alt="{self.caption(words)}" width="{rng.integers(100, 1600)}">'
        previous.append(tag)
        return tag

    def page(self, number: int) -> tuple[str, bytes, str, str]:
        """``(url, body, content_type, status)`` of page ``number``."""
        rng = self.rng
        site, css, script, nav = self.templates[number % len(self.templates)]
        url = f"https://{site}/{_sentence(rng, 1, 4).replace(' ', '/')}/{number}.html"
        roll = rng.random()
        if roll < 0.02:
            body = b"\xff\xd8\xff\xe0" + rng.bytes(int(rng.integers(2000, 40000)))
            return url.replace(".html", ".jpg"), body, "image/jpeg", "200 OK"
        legacy = roll < 0.07
        paragraphs = max(3, int(rng.lognormal(3.9, 0.8)))
        images, previous = int(rng.poisson(6)) + 1, []
        blocks = [f"<p class=\"c{i % 40}\">{self.paragraphs[int(rng.integers(0, len(self.paragraphs)))]}</p>"
                  for i in range(min(paragraphs, 600))]
        words = ACCENTED + WORDS if legacy else WORDS
        for i in range(images):
            blocks.insert(int(rng.integers(0, len(blocks) + 1)),
                          f"<figure>{self.image(i, site, previous, words)}</figure>")
        base = f'<base href="https://{site}/archive/">' if rng.random() < 0.05 else ""
        title = _sentence(rng, 3, 9, words)
        meta = "" if legacy else '<meta charset="utf-8">'
        ld = json.dumps({"@context": "https://schema.org", "@type": "Article", "headline": title,
                         "keywords": _sentence(rng, 5, 20).split()})
        html = (f"<!DOCTYPE html>\n<html lang=\"en\"><head>{meta}<title>{title}</title>{base}"
                f"<meta name=\"viewport\" content=\"width=device-width\"><style>{css}</style>"
                f"<script type=\"application/ld+json\">{ld}</script><script>{script}</script></head>"
                f"<body><header><nav><ul>{nav}</ul></nav></header><main><h1>{title}</h1>"
                f"<article>{''.join(blocks)}</article></main>"
                f"<footer><p>&copy; 2024 {site}</p><ul>{nav[:2000]}</ul></footer></body></html>")
        if legacy:
            return url, html.encode("cp1252"), "text/html; charset=windows-1252", "200 OK"
        return url, html.encode(), "text/html; charset=UTF-8", "404 Not Found" if rng.random() < 0.02 else "200 OK"


def make_warc(pages: int, seed: int = 0) -> Path:
    """Write (or reuse) the benchmark WARC."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = DATA_DIR / f"extract-{pages}-{seed}.warc.gz"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    maker = PageMaker(seed)
    partial = path.with_suffix(".partial")
    started = time.perf_counter()
    with open(partial, "wb") as handle:
        writer = WARCWriter(handle, gzip=True)
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "winnow-benchmark",
                                                                      "format": "WARC File Format 1.1"}))
        for number in range(pages):
            url, body, content_type, status = maker.page(number)
            request = StatusAndHeaders(f"GET {url} HTTP/1.1", [("User-Agent", "CCBot/2.0"), ("Accept", "*/*")],
                                       is_http_request=True)
            writer.write_record(writer.create_warc_record(url, "request", payload=io.BytesIO(b""),
                                                          http_headers=request))
            headers = StatusAndHeaders(status, [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                                ("Server", "nginx")], protocol="HTTP/1.1")
            writer.write_record(writer.create_warc_record(url, "response", payload=io.BytesIO(body),
                                                          http_headers=headers))
            fetch = f"fetchTimeMs: {100 + number % 900}\ncharset-detected: UTF-8\n".encode()
            writer.write_record(writer.create_warc_record(url, "metadata", payload=io.BytesIO(fetch),
                                                          warc_content_type="application/warc-fields"))
            if number and number % 2000 == 0:
                log.info("writing", pages=number, seconds=round(time.perf_counter() - started))
    partial.rename(path)
    return path


def baseline_rows(path: Path, rules: CaptionRules) -> tuple[list[Row], dict]:
    """The usual extraction: warcio records, BeautifulSoup with lxml, the same rules as winnow."""
    from bs4 import BeautifulSoup
    from warcio.archiveiterator import ArchiveIterator

    rows, seen = [], set()
    counts = {"records": 0, "pages": 0}
    with open(path, "rb") as stream:
        for record in ArchiveIterator(stream):
            counts["records"] += 1
            if record.rec_type != "response" or record.http_headers is None:
                continue
            if record.http_headers.get_statuscode() != "200":
                continue
            content_type = record.http_headers.get_header("Content-Type") or ""
            if not content_type.lower().startswith("text/html"):
                continue
            charset = content_type.lower().split("charset=")[-1].strip() if "charset=" in content_type.lower() else None
            page_url = record.rec_headers.get_header("WARC-Target-URI")
            soup = BeautifulSoup(record.content_stream().read(), "lxml", from_encoding=charset)
            counts["pages"] += 1
            base_tag = soup.find("base", href=True)
            base = page_base(page_url, base_tag["href"] if base_tag else None)
            for img in soup.find_all("img"):
                caption, reason = caption_or_reason(img.get("alt"), rules)
                if reason is None:
                    url, reason = image_url(img.get("src"), img.get("srcset"), base)
                if reason is None:
                    uid = generate_uid(url, caption)
                    if uid not in seen:
                        seen.add(uid)
                        rows.append(Row(uid, url, caption, page_url))
    return rows, counts


def timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _differences(ours: list[Row], theirs: list[Row]) -> Iterator[str]:
    only_ours, only_theirs = set(ours) - set(theirs), set(theirs) - set(ours)
    for row in sorted(only_ours)[:5]:
        yield f"  only winnow:   {row.url} | {row.text!r}"
    for row in sorted(only_theirs)[:5]:
        yield f"  only baseline: {row.url} | {row.text!r}"
    if not only_ours and not only_theirs:
        yield "  same rows, in another order"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=20_000, help="HTML pages in the WARC (at least 20,000 for the "
                                                                  "headline)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    configure_logging(json_format=False)
    started = time.perf_counter()
    path = make_warc(args.pages, args.seed)
    size = path.stat().st_size
    log.info("warc ready", path=str(path), mb=round(size / 1e6), seconds=round(time.perf_counter() - started, 1))
    path.read_bytes()  # both sides start with the file in the page cache

    extraction, winnow_s, winnow_cpu = timed(lambda: extract_file(str(path)))
    ours = [Row(r.uid, r.url, r.text, r.page_url) for r in extraction.rows]
    stats = extraction.stats
    log.info("winnow done", seconds=round(winnow_s, 1), pairs=len(ours))
    (theirs, counts), baseline_s, baseline_cpu = timed(lambda: baseline_rows(path, CaptionRules()))
    log.info("baseline done", seconds=round(baseline_s, 1), pairs=len(theirs))

    same = ours == theirs
    figures = {
        "pages": stats.pages, "records": stats.records, "warc_mb": round(size / 1e6, 1),
        "images": stats.images, "pairs": len(ours), "same_rows": same,
        "winnow_seconds": round(winnow_s, 2), "winnow_cpu_seconds": round(winnow_cpu, 2),
        "winnow_records_per_s": round(stats.records / winnow_s), "winnow_pages_per_s": round(stats.pages / winnow_s),
        "winnow_mb_per_s": round(size / 1e6 / winnow_s, 1),
        "baseline_seconds": round(baseline_s, 2), "baseline_cpu_seconds": round(baseline_cpu, 2),
        "baseline_records_per_s": round(counts["records"] / baseline_s),
        "baseline_pages_per_s": round(counts["pages"] / baseline_s),
        "ratio": round(baseline_s / winnow_s, 2),
        "projected_cc_warc_seconds_by_bytes": round(CC_WARC_BYTES / (size / winnow_s), 1),
        "projected_cc_warc_seconds_by_pages": round(CC_WARC_PAGES / (stats.pages / winnow_s), 1),
        "cpus": os.cpu_count(),
    }
    print(f"input: {args.pages:,} responses ({stats.pages:,} HTML pages), {stats.records:,} records, "
          f"{figures['warc_mb']} MB gzip'd WARC ({size / args.pages / 1e3:.1f} KB per response); "
          f"{stats.images:,} <img>, {len(ours):,} pairs")
    print(f"winnow (FastWARC + Resiliparse):        {winnow_s:7.1f} s  {figures['winnow_records_per_s']:7,} records/s "
          f"{figures['winnow_pages_per_s']:6,} pages/s  {figures['winnow_mb_per_s']} MB/s  (CPU {winnow_cpu:.1f} s)")
    print(f"baseline (warcio + BeautifulSoup/lxml): {baseline_s:7.1f} s  "
          f"{figures['baseline_records_per_s']:7,} records/s {figures['baseline_pages_per_s']:6,} pages/s  "
          f"(CPU {baseline_cpu:.1f} s)")
    print(f"same rows (uid, url, text, page_url, in order): {'yes' if same else 'NO'}")
    if not same:
        print("\n".join(_differences(ours, theirs)))
    print(f"projected for a ~1 GB Common Crawl WARC on one core: {figures['projected_cc_warc_seconds_by_bytes']} s "
          f"by bytes, {figures['projected_cc_warc_seconds_by_pages']} s by {CC_WARC_PAGES:,} pages "
          f"(goal < {GOAL_SECONDS:.0f} s)")
    print(f"extract: winnow {figures['winnow_pages_per_s']:,} pages/s, baseline {figures['baseline_pages_per_s']:,} "
          f"pages/s, ratio {figures['ratio']:.2f}x (goal >= {GOAL_RATIO:.0f}x)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
