"""WordNet for the text-based filter: a word's first synset, and ImageNet-21k's synsets.

DataComp asks NLTK's ``wordnet.synsets(word)[0].offset()`` for each caption word and keeps the
caption when that offset is one of ImageNet-21k's 21,843 WordNet ids. Here:

- WordNet 3.0 is read by NLTK from, in order: ``wordnet_dir`` (or ``$WINNOW_WORDNET_DIR``), a
  directory holding WordNet's database files; NLTK's own data (``nltk.download('wordnet')``);
  Debian's ``wordnet-base`` package (``/usr/share/wordnet``).
  A plain database directory is laid out once as NLTK expects (NLTK also wants ``lexnames``,
  which Debian does not ship) under ``~/.cache/winnow/nltk_data``.
- ImageNet-21k's ids are the list Google published with BiT (the file DataComp downloads,
  ``imagenet21k_wordnet_ids.txt``), which ``timm`` ships as ``imagenet21k_goog_synsets.txt``;
  ``synset_ids_path`` points at any other list of ``n01234567`` lines.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import warnings
from pathlib import Path

DEBIAN_WORDNET_DIR = "/usr/share/wordnet"
TIMM_IMAGENET21K_IDS = "data/_info/imagenet21k_goog_synsets.txt"
_DATABASE_FILES = ("index.noun", "index.verb", "index.adj", "index.adv",
                   "data.noun", "data.verb", "data.adj", "data.adv",
                   "noun.exc", "verb.exc", "adj.exc", "adv.exc")
_OPTIONAL_FILES = ("cntlist.rev",)
# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category.
_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location "
    "noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process "
    "noun.quantity noun.relation noun.shape noun.state noun.substance noun.time verb.body verb.change "
    "verb.cognition verb.communication verb.competition verb.consumption verb.contact verb.creation "
    "verb.emotion verb.motion verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
_LAYOUT_VERSION = 2


class WordNetUnavailable(RuntimeError):
    """No WordNet 3.0 database could be found."""


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "winnow" / "nltk_data"


def _nltk_layout(database_dir: Path) -> Path:
    """An NLTK data root whose ``corpora/wordnet`` holds the database of ``database_dir``."""
    root = _cache_root()
    target = root / "corpora" / "wordnet"
    marker = target / ".complete"
    if marker.exists() and marker.read_text() == f"{_LAYOUT_VERSION} {database_dir.resolve()}":
        return root
    target.mkdir(parents=True, exist_ok=True)
    for name in (*_DATABASE_FILES, *_OPTIONAL_FILES):
        source = database_dir / name
        if source.exists():
            shutil.copyfile(source, target / name)  # NLTK refuses symbolic links into its roots
    # Only sense-key look-ups need the sense index; left empty, NLTK skips mapping WordNet 3.0
    # onto itself, which would read the 7 MB file twice on every load.
    (target / "index.sense").write_text("")
    lexnames = database_dir / "lexnames"
    if lexnames.exists():
        shutil.copyfile(lexnames, target / "lexnames")
    else:
        (target / "lexnames").write_text(
            "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(_LEXNAMES)))
    marker.write_text(f"{_LAYOUT_VERSION} {database_dir.resolve()}")
    return root


def _is_database(path: Path) -> bool:
    return all((path / name).exists() for name in _DATABASE_FILES)


@functools.lru_cache(maxsize=4)
def load_wordnet(wordnet_dir: str | None = None):
    """NLTK's WordNet corpus reader over the first WordNet 3.0 database found (see module doc)."""
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as exc:
        raise WordNetUnavailable("the text-based filter needs nltk (pip install nltk)") from exc

    explicit = wordnet_dir or os.environ.get("WINNOW_WORDNET_DIR")
    if not explicit:
        try:
            return _reader(WordNetCorpusReader, nltk.data.find("corpora/wordnet"))
        except LookupError:
            pass
    database = Path(explicit or DEBIAN_WORDNET_DIR)
    if not _is_database(database):
        where = explicit or f"NLTK's data path or {DEBIAN_WORDNET_DIR}"
        raise WordNetUnavailable(
            f"no WordNet 3.0 database in {where}: install Debian's wordnet-base, "
            "run python -m nltk.downloader wordnet, or pass --wordnet_dir")
    root = str(_nltk_layout(database))
    if root not in nltk.data.path:
        nltk.data.path.insert(0, root)
    return _reader(WordNetCorpusReader, nltk.data.find("corpora/wordnet"))


def _reader(reader_class, pointer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "multilingual functions are not available": not needed here
        return reader_class(pointer, None)


class WordNetFirstSynset:
    """``word -> wordnet.synsets(word)[0].offset()``, or None when WordNet has no synset."""

    name = "wordnet-3.0"

    def __init__(self, wordnet_dir: str | None = None) -> None:
        self._wordnet = load_wordnet(wordnet_dir)

    def __call__(self, word: str) -> int | None:
        synsets = self._wordnet.synsets(word)
        return synsets[0].offset() if synsets else None


def imagenet21k_synset_offsets(synset_ids_path: str | None = None) -> frozenset[int]:
    """ImageNet-21k's WordNet ids (``n01234567`` lines) as synset offsets."""
    if synset_ids_path:
        text = Path(synset_ids_path).read_text()
    else:
        # Found without importing timm, which would import torch.
        spec = importlib.util.find_spec("timm")
        listed = Path(spec.submodule_search_locations[0]) / TIMM_IMAGENET21K_IDS if spec else None
        if listed is None or not listed.exists():
            raise FileNotFoundError(
                "ImageNet-21k's synset list ships with timm (pip install timm); or pass --synset_ids FILE")
        text = listed.read_text()
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    bad = [i for i in ids if not (i[:1] == "n" and i[1:].isdigit())]
    if bad:
        raise ValueError(f"synset ids look like n01234567, got {bad[:3]}")
    return frozenset(int(i[1:]) for i in ids)
