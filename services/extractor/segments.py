"""Crawl segment lists: the ``warc.paths.gz`` / ``wat.paths.gz`` files Common Crawl publishes.

One path a line, relative to the crawl's bucket (``crawl-data/CC-MAIN-2024-10/segments/...``),
gzip'd or not. Relative paths are joined to a prefix, by default Common Crawl's HTTP endpoint
(``s3://commoncrawl/`` works from AWS); absolute URIs and absolute local paths stay as they are.
Blank lines and ``#`` comments are skipped. WET files are refused: they hold plain text, no links.
"""

from __future__ import annotations

import gzip

from winnow.shared import storage

COMMON_CRAWL_PREFIX = "https://data.commoncrawl.org/"
LIST_SUFFIXES = (".paths", ".paths.gz")


def is_segment_list(uri: str) -> bool:
    """True for names Common Crawl gives its path lists (``warc.paths.gz`` and the like)."""
    return uri.lower().endswith(LIST_SUFFIXES)


def resolve_path(path: str, prefix: str = COMMON_CRAWL_PREFIX) -> str:
    if "://" in path or path.startswith("/") or not prefix:
        return path
    return prefix.rstrip("/") + "/" + path.lstrip("/")


def check_crawl_file(uri: str) -> str:
    """``uri`` when it can hold image links; ValueError for WET files."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].lower()
    if ".wet." in name or name.endswith(".wet"):
        raise ValueError(f"{uri} is a WET file (plain text, no links); use the WARC or WAT file of that segment")
    return uri


def read_segment_list(uri: str, prefix: str = COMMON_CRAWL_PREFIX, max_files: int = 0) -> list[str]:
    """The crawl files a segment list names, resolved against ``prefix``, in list order."""
    data = storage.read_bytes(uri)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"segment list {uri} is not a readable gzip file: {exc}") from exc
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ValueError(f"segment list {uri} is not text: {exc}") from exc
    files = [check_crawl_file(resolve_path(line.strip(), prefix)) for line in lines
             if line.strip() and not line.lstrip().startswith("#")]
    if not files:
        raise ValueError(f"segment list {uri} names no files")
    return files[:max_files] if max_files else files


def expand_inputs(inputs: list[str], prefix: str = COMMON_CRAWL_PREFIX, max_files: int = 0) -> list[str]:
    """Crawl files and segment lists, in order, as the crawl files they name (each once).

    A crawl file is taken as given (a local path or a URI); only the paths inside segment lists
    are joined to ``prefix``.
    """
    files: list[str] = []
    for item in inputs:
        if is_segment_list(item):
            files.extend(read_segment_list(item, prefix))
        else:
            files.append(check_crawl_file(item))
    files = list(dict.fromkeys(files))
    return files[:max_files] if max_files else files
