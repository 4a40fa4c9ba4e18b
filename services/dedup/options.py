"""The dedup stage's options: ``winnow run --dedup.*`` flags and the service's ``WINNOW_*`` settings."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.shared.option_flags import option

#: The pool index's options keep the names the service has always read (WINNOW_POOL_FLAT_LIMIT, ...).
POOL_INDEX_NAMES = {"pool_index.flat_limit": "pool_flat_limit", "pool_index.factory": "pool_index_factory",
                    "pool_index.search_params": "pool_search_params",
                    "pool_index.binary_backend": "pool_binary_backend"}


@dataclass(frozen=True)
class PoolIndexConfig:
    """How the pool's kept descriptors are indexed (``winnow.services.dedup.pool_index``)."""

    flat_limit: int = option(65_536, help="float descriptors: exact IndexFlatIP up to this many kept images")
    factory: str = option("IVF1024,Flat", help="faiss index_factory string for the float index past flat_limit")
    search_params: str = option("nprobe=32", help="faiss ParameterSpace string applied to that index")
    binary_backend: str = option("auto", choices=("auto", "flat", "multihash"),
                                 help="hashes: auto (cost model), flat (scan) or multihash; all exact")


@dataclass(frozen=True)
class DedupOptions:
    """The dedup stage's options (``WINNOW_REGISTRY_DIR``, ... for the service)."""

    eval_index_dir: str = option("", help="a directory made by `winnow dedup build-index`; empty: no "
                                          "decontamination")
    registry_dir: str = option("", help="where the pool registry lives; empty: {job_root}/dedup when the job is local")
    pool_threshold: float | None = option(None, help="near-duplicate cosine; None: the descriptor's own threshold")
    exact: bool = option(True, help="drop exact duplicates (same sha256)")
    near: bool = option(True, help="drop near duplicates (perceptual descriptor)")
    batch_size: int = option(64, help="images per descriptor call")
    pool_index: PoolIndexConfig = PoolIndexConfig()
