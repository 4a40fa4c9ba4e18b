"""``import winnow``: the commands as typed Python functions.

    winnow.download(url_list, ...)                 img2dataset's download(), on winnow's downloader
    winnow.run(pool, out, ...)                     the pipeline in one process, then a filter and reshard
    winnow.filter(metadata_dir, name=...)          a DataComp baseline (or your own filter) -> subset .npy
    winnow.reshard(input_dir, output_dir, subset_file)   the subset's samples as new shards
    winnow.train(scale, data, output_dir)          a CLIP at a DataComp scale
    winnow.evaluate(train_output_dir, data_dir=...)      its zero-shot scores

Each takes its command's options as keyword arguments with the command's defaults, returns a
dataclass, and raises (``ValueError`` for a bad option, ``FileNotFoundError``, ``PoolFormatError``,
...) where the command would print an error and exit. Progress bars and logging are all they
show. Nothing heavy is imported before a function is called: ``import winnow`` imports no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnow.pipeline import STAGE_NAMES

if TYPE_CHECKING:
    from winnow.services.downloader.job import DownloadResult, DownloadSpec
    from winnow.services.evaluator.evaluate import Results
    from winnow.services.filter.apply import FilterResult
    from winnow.services.reshard.resharder import ReshardResult
    from winnow.services.trainer.train import TrainResult
    from winnow.shared.jobs import JobManifest, StageTotals
    from winnow.shared.messages import DeadLetter
    from winnow.shared.stage import Stage

log = logging.getLogger("winnow.api")
PathLike = str | os.PathLike
Say = Callable[[str], None]


def _log_line(line: str) -> None:
    log.info("%s", line)


# --- download -------------------------------------------------------------------------------------


def download(
    url_list: str,
    image_size: int = 256,
    output_folder: str = "images",
    processes_count: int = 1,
    resize_mode: str = "border",
    resize_only_if_bigger: bool = False,
    upscale_interpolation: str = "lanczos",
    downscale_interpolation: str = "area",
    encode_quality: int = 95,
    encode_format: str = "jpg",
    skip_reencode: bool = False,
    output_format: str = "files",
    input_format: str = "txt",
    url_col: str = "url",
    caption_col: str | None = None,
    bbox_col: str | None = None,
    thread_count: int = 256,
    number_sample_per_shard: int = 10000,
    extract_exif: bool = True,
    save_additional_columns: list[str] | None = None,
    timeout: float = 10,
    enable_wandb: bool = False,
    wandb_project: str = "img2dataset",
    oom_shard_count: int = 5,
    compute_hash: str | None = "sha256",
    verify_hash: list[str] | None = None,
    distributor: str = "multiprocessing",
    subjob_size: int = 1000,
    retries: int = 0,
    disable_all_reencoding: bool = False,
    min_image_size: int = 0,
    max_image_area: float = float("inf"),
    max_aspect_ratio: float = float("inf"),
    incremental_mode: str = "incremental",
    max_shard_retry: int = 1,
    user_agent_token: str | None = None,
    disallowed_header_directives: list[str] | None = None,
    *,
    allow_networks: Sequence[str] = (),
    max_image_pixels: int = 89_478_485,
    total_timeout: float = 60.0,
    max_bytes: int = 32 * 1024 * 1024,
    per_domain_concurrency: int = 8,
    user_agent: str | None = None,
    ignore_ssl_certificate: bool = False,
    respect_robots_txt: bool = False,
    max_samples: int = 0,
    job_id: str = "",
    disable_progress: bool = False,
) -> DownloadResult:
    """img2dataset 1.47.0's ``download()``: the same parameters, in its order, with its defaults.

    Shards are written into ``output_folder`` as img2dataset writes them, beside winnow's
    ``job.json`` and ``pool/``; calling again with the same arguments resumes the job, and other
    output-changing arguments are refused (``ValueError``) unless ``incremental_mode`` is
    ``"overwrite"`` or ``"extend"``. As in img2dataset, ``input_format`` defaults to ``"txt"``
    (``winnow download`` reads the file name instead), ``disallowed_header_directives=None`` is
    img2dataset's four directives and ``[]`` switches the check off. What winnow cannot honour is
    refused as ``winnow download`` refuses it: another interpolation, ``output_format`` tfrecord
    or dummy, ``distributor`` pyspark or ray; ``subjob_size`` changes nothing.

    The keyword-only parameters are winnow's own (``winnow download`` has them too):
    ``allow_networks`` exempts CIDRs such as ``"127.0.0.0/8"`` from the private-address guard;
    the others cap a request (pixels, seconds, bytes, requests per domain), set the User-Agent,
    read robots.txt, take only the first ``max_samples`` rows, name the job, and hide the bar.

    Returns the job's manifest and the downloader's totals; shards that failed every try
    (``max_shard_retry``) are in ``failed_shards``, and the others are written all the same.
    """
    from winnow.services.downloader.job import DownloadJob, DownloadSpec, download_job
    from winnow.services.downloader.options import IMG2DATASET_DIRECTIVES

    if disallowed_header_directives is None:  # img2dataset's default; [] switches the check off
        disallowed_header_directives = list(IMG2DATASET_DIRECTIVES)
    spec = DownloadSpec(
        image_size=image_size, resize_mode=resize_mode, resize_only_if_bigger=resize_only_if_bigger,
        upscale_interpolation=upscale_interpolation, downscale_interpolation=downscale_interpolation,
        encode_format=encode_format, encode_quality=encode_quality, skip_reencode=skip_reencode,
        disable_all_reencoding=disable_all_reencoding, min_image_size=min_image_size, max_image_area=max_image_area,
        max_aspect_ratio=max_aspect_ratio, max_image_pixels=max_image_pixels, thread_count=thread_count,
        timeout=float(timeout), total_timeout=total_timeout, retries=retries, max_bytes=max_bytes,
        per_domain_concurrency=per_domain_concurrency, user_agent=user_agent, user_agent_token=user_agent_token,
        disallowed_header_directives=disallowed_header_directives, allow_networks=tuple(allow_networks),
        compute_hash=compute_hash, verify_hash=verify_hash, extract_exif=extract_exif, bbox_col=bbox_col,
        ignore_ssl_certificate=ignore_ssl_certificate, respect_robots_txt=respect_robots_txt,
        output_format=output_format, oom_shard_count=oom_shard_count, url_col=url_col, caption_col=caption_col,
        save_additional_columns=save_additional_columns)
    job = DownloadJob(url_list=str(url_list), output_folder=str(output_folder), spec=spec, input_format=input_format,
                      number_sample_per_shard=number_sample_per_shard, processes_count=processes_count,
                      distributor=distributor, subjob_size=subjob_size, incremental_mode=incremental_mode,
                      max_shard_retry=max_shard_retry, enable_wandb=enable_wandb, wandb_project=wandb_project,
                      max_samples=max_samples, job_id=job_id, disable_progress=disable_progress)
    return download_job(job, say=_log_line)


# --- run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilterResult:
    """What ``run``'s filter did to the whole job: the subset it chose and the shards it resharded."""

    name: str
    subset: str  # the subset .npy (sorted u8,u8 uids), with .criteria.json and .dropped.parquet beside it
    candidates: int  # samples the filter looked at
    kept: int
    threshold: float | None
    removed_by: dict[str, int]  # criterion -> samples it removed, in the order the filter applies them
    shards: str  # the resharded subset: NNNNNNNN.tar shards, open_clip's --train-data
    shard_count: int
    samples_written: int  # one per occurrence of a uid in the subset


@dataclass(frozen=True)
class RunResult:
    """What ``run`` left: the job, each stage's totals, its dead-lettered shards, and what came after."""

    manifest: JobManifest
    totals: list[StageTotals]
    dead_letters: list[DeadLetter]  # shards that failed every attempt in a stage
    filtered: JobFilterResult | None  # None with filter="none", or when a shard was dead-lettered
    training: TrainResult | None = None  # with train_scale
    evaluation: Evaluation | None = None  # with train_scale and eval_data

    @property
    def job_root(self) -> str:
        return self.manifest.job_root


def run(pool: PathLike | None, out: PathLike, *, example: bool = False, shards: str | None = None,
        images_blurred: bool = False, stages: Sequence[str] | None = None,
        stage_options: Sequence[str] | Mapping[str, Any] = (), model_preset: str = "offline", triton_url: str = "", eval_index: str = "",
        clip_models: Sequence[str] = (), filter: str = "basic_filter", threshold: float | None = None,
        fraction: float | None = None, arch: str | None = None, shard_size: int = 10_000, input_format: str = "",
        url_col: str = "url", caption_col: str | None = "text", samples_per_shard: int = 10_000, max_samples: int = 0,
        workers: int = 2, model_threads: int | None = None, blur_at_rest: bool = False,
        blur_faces: bool | None = None, download: DownloadSpec | None = None, train_scale: str = "",
        eval_data: str = "", show_progress: bool = True, say: Say = _log_line) -> RunResult:
    """``winnow run``: curate ``pool`` into the job folder ``out`` in one process, then filter and reshard.

    ``pool`` is a pool file or folder (parquet, csv, tsv, json, jsonl, txt), or None with
    ``example=True`` (the built-in pool, served from 127.0.0.1 while it runs) or with ``shards``
    (img2dataset or DataComp shards one already has, local or ``s3://``, curated in place:
    nothing is downloaded or copied; ``images_blurred`` says their faces are blurred already).
    The options are ``winnow run``'s: ``stages`` (default: every stage; winnow's in pipeline
    order, plugins where they should run), ``stage_options`` (``"STAGE:KEY=VALUE"`` strings, or a
    mapping of stage to its options: ``{"safety": SafetyOptions(nsfw_threshold=0.2)}``,
    ``{"sharpness": {"min_sharpness": "50"}}``), ``clip_models`` (``"KEY=ARCH[:CHECKPOINT]"``, which
    the embed stage needs), ``filter`` (``"none"``, a DataComp baseline or ``"module:function"``,
    with ``threshold``/``fraction``/``arch`` for the clip_score ones). ``download`` is what the
    download stage fetches and writes (default ``DownloadSpec()``: DataComp's settings). With
    ``train_scale`` the subset is trained on, and with ``eval_data`` the model is evaluated.
    Faces: the blur stage records ``face_bboxes`` and the resharder blurs them (``blur_faces=False``:
    it does not); ``blur_at_rest=True`` has the blur stage keep blurred images instead.
    ``model_threads`` caps the CPU threads of each in-process model call while the stages run
    (torch's setting is process-wide and restored after): None caps at 1 where ``workers`` x the
    model stages already fill the CPUs, 0 leaves the libraries' defaults (every core each).
    ``say`` receives the lines ``winnow run`` prints as it goes.
    """
    from winnow.services.downloader.job import DATACOMP_PROFILE, DownloadSpec
    from winnow.services.downloader.options import recorded_options
    from winnow.services.downloader.pool import PoolFormatError, prepare_job
    from winnow.services.filter.apply import BASELINES, FilterConfig
    from winnow.shared.models import cpu_threads
    from winnow.shared.service.embedded import run_pipeline
    from winnow.pipeline import (EXAMPLE_NETWORK, EXAMPLE_SAMPLES_PER_SHARD, build_stages, builtin_stage_classes,
                                 example_pool)

    if (pool is not None) + example + (shards is not None) != 1:
        raise ValueError("give a pool, example=True or shards (one of them)")
    if model_threads is not None and model_threads < 0:
        raise ValueError(f"model_threads must be >= 0 (0: the libraries' defaults), got {model_threads}")
    if filter != "none" and filter not in BASELINES and ":" not in filter:
        raise ValueError(f"--filter must be none, one of {', '.join(BASELINES)}, or module:function; got {filter!r}")
    spec = download or DownloadSpec()
    if example:  # the example server is on loopback: allow exactly it, for this run only
        spec = replace(spec, allow_networks=(*spec.allow_networks, EXAMPLE_NETWORK))
        samples_per_shard = min(samples_per_shard, EXAMPLE_SAMPLES_PER_SHARD)
    spec.stage_options(DATACOMP_PROFILE)  # a value it cannot take is refused before the job is written
    recorded = {item.name: getattr(spec, item.name) for item in fields(spec)}
    recorded.update(input_format=input_format, url_col=url_col, caption_col=caption_col,
                    samples_per_shard=samples_per_shard, max_samples=max_samples, workers=workers,
                    model_threads=model_threads, stages=list(stages or STAGE_NAMES), stage_option=_recorded_stage_options(stage_options),
                    model_preset=model_preset,
                    triton_url=triton_url, eval_index=eval_index, clip_model=list(clip_models), filter=filter,
                    threshold=threshold, fraction=fraction, arch=arch, shard_size=shard_size,
                    train_scale=train_scale, eval_data=eval_data, blur_at_rest=blur_at_rest,
                    blur_faces=blur_faces)
    recorded = {name: list(value) if isinstance(value, tuple) else value for name, value in recorded.items()}
    with example_pool() if example else contextlib.nullcontext(pool) as source:
        if shards is not None:  # curated where they are: the import stage, then the curation stages
            from winnow.services.downloader.shards_import import ShardImportStage
            from winnow.shards_run import shards_job

            manifest, chosen = shards_job(shards, str(out), stages=stages, images_blurred=images_blurred,
                                          clip_models=clip_models, say=say)
            built = [ShardImportStage(), *build_stages(chosen, model_preset=model_preset, triton_url=triton_url,
                                                       eval_index=eval_index, clip_models=clip_models,
                                                       stage_options=stage_options, blur_at_rest=blur_at_rest)]
        else:
            manifest = prepare_job(str(source), str(out), input_format=input_format, url_col=url_col,
                                   caption_col=caption_col or None, samples_per_shard=samples_per_shard,
                                   max_samples=max_samples,
                                   options=recorded_options(argparse.Namespace(**recorded), DATACOMP_PROFILE))
            say(f"job {manifest.job_id}: {manifest.sample_count} samples in {manifest.shard_count} shards "
                f"-> {manifest.job_root}")
            if manifest.sample_count == 0:
                raise PoolFormatError(f"the pool {source} has no rows: nothing to curate")
            chosen = list(stages) if stages is not None else list(STAGE_NAMES)
            built = build_stages(chosen, download=spec, model_preset=model_preset, triton_url=triton_url,
                                 eval_index=eval_index, clip_models=clip_models, stage_options=stage_options,
                                 blur_at_rest=blur_at_rest)
            if "embed" in chosen and not clip_models:
                say("embed skipped: no CLIP model given (--clip_model b32=ViT-B-32:openai, or a checkpoint)")
        with cpu_threads.limit_model_threads(_model_threads(model_threads, workers, built)):
            result = run_pipeline(manifest, built, workers_per_stage=workers, show_progress=show_progress,
                                  known_stages=builtin_stage_classes())
    filtered = training = evaluation = None
    if filter != "none" and not result.dead_letters:
        config = FilterConfig(name=filter, metadata_dir="", threshold=threshold, fraction=fraction, arch=arch)
        filtered = _filter_job(manifest, built[-1].name, config, shard_size=shard_size, blur_faces=blur_faces)
        if train_scale:
            training = train(train_scale, [filtered.shards], f"{manifest.job_root}/training",
                             exp_name=f"{train_scale}_scale", num_checkpoints=2, workers=1)
            if eval_data:
                evaluation = evaluate(training.run_dir, data_dir=eval_data, say=say)
    return RunResult(manifest, result.totals, result.dead_letters, filtered, training, evaluation)


def _model_threads(asked: int | None, workers: int, stages: Sequence[Stage]) -> int | None:
    """The cap on threads per model call (None: none): as asked, or by how many calls run at once."""
    from winnow.services.downloader.stage import STAGE_NAME as DOWNLOAD_STAGE
    from winnow.shared.jobs import SOURCE_STAGE
    from winnow.shared.models.cpu_threads import default_model_threads

    if asked is not None:
        return asked or None
    model_stages = [stage for stage in stages if stage.name not in (DOWNLOAD_STAGE, SOURCE_STAGE)]
    return default_model_threads(workers * len(model_stages)) if model_stages else None


def _recorded_stage_options(stage_options: Sequence[str] | Mapping[str, Any]) -> list | dict:
    """``stage_options`` as ``job.json`` records them (JSON values)."""
    if not isinstance(stage_options, Mapping):
        return list(stage_options)
    return {name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else dict(value)
            for name, value in stage_options.items()}


def _filter_job(manifest: JobManifest, last_stage: str, config, *, shard_size: int,
                blur_faces: bool | None = None) -> JobFilterResult:
    """Apply the filter ``config`` names to the finished job and reshard the subset (``blur_faces``:
    as :class:`ReshardConfig`'s)."""
    from winnow.services.filter.stage import FilterOptions, FilterStage, filter_summary

    stage = FilterStage(FilterOptions(config, shard_size=shard_size, blur_faces=blur_faces))
    if stage.finish_job(manifest.job_root, last_stage, manifest.shard_count) is None:
        raise RuntimeError(f"the job's {last_stage} stage has not finished every shard")
    summary = filter_summary(manifest.job_root)
    ref = stage.result_ref(manifest.job_id, manifest.job_root, summary)
    return JobFilterResult(name=summary["filter"], subset=summary["subset"], candidates=summary["candidates"],
                           kept=summary["kept"], threshold=summary["threshold"],
                           removed_by=dict(summary.get("removed_by") or {}), shards=ref.uri,
                           shard_count=ref.shard_count, samples_written=ref.sample_count)


# --- filter and reshard -----------------------------------------------------------------------------


def _metadata_folder(path: PathLike) -> str:
    """A job folder's furthest curation stage with finished shards; any other folder as it is."""
    from winnow.shared import storage
    from winnow.shared.jobs import JobManifest
    from winnow.shared.topics import CURATION_STAGES

    folder = str(path)
    if not JobManifest.exists(folder):
        return folder
    for stage in reversed(CURATION_STAGES):
        candidate = storage.join(folder, stage)
        if storage.glob(storage.join(candidate, "*_stats.json")):
            return candidate
    raise ValueError(f"the job at {folder} has no finished shards in any stage ({', '.join(CURATION_STAGES)})")


def filter(metadata_dir: PathLike, *, name: str, save_path: PathLike | None = None, threshold: float | None = None,
           fraction: float | None = None, arch: str | None = None, image_based_targets: PathLike | None = None,
           num_clusters: int | None = None, centroids: PathLike | None = None, seed: int = 0,
           synset_ids: PathLike | None = None, wordnet_dir: PathLike | None = None, num_workers: int | None = None,
           language_model: str = "offline") -> FilterResult:
    """``winnow filter``: DataComp's ``baselines.py`` on a folder of shard metadata; the kept uids.

    ``metadata_dir`` is a folder of shard parquets (any fsspec URI), or a winnow job folder (its
    furthest curation stage is read). ``name`` is a baseline (no_filter, basic_filter,
    text_based, image_based, image_based_intersect_clip_score, clip_score, laion2b) or
    ``"module:function"``; the other options are ``winnow filter``'s. With ``save_path`` the
    subset is written there (``.npy`` of sorted ``u8,u8`` uids, as DataComp's) with
    ``.criteria.json`` and ``.dropped.parquet`` beside it. ``num_clusters=None`` is DataComp's.
    """
    from winnow.services.filter.apply import DEFAULT_NUM_CLUSTERS, FilterConfig, apply_filter

    text = lambda value: None if value is None else str(value)  # noqa: E731
    return apply_filter(FilterConfig(
        name=name, metadata_dir=_metadata_folder(metadata_dir), save_path=text(save_path), threshold=threshold,
        fraction=fraction, arch=arch, image_based_targets=text(image_based_targets),
        num_clusters=DEFAULT_NUM_CLUSTERS if num_clusters is None else num_clusters, centroids=text(centroids),
        seed=seed, synset_ids=text(synset_ids), wordnet_dir=text(wordnet_dir), num_workers=num_workers,
        language_model=language_model))


def reshard(input_dir: PathLike, output_dir: PathLike, subset_file: PathLike, *, shard_size: int = 10_000,
            shuffle_buffer: int = 0, seed: int = 0, blur_faces: bool | None = None, blur_quality: int = 95,
            num_workers: int = 1, overwrite: bool = False, dry_run: bool = False) -> ReshardResult:
    """``winnow reshard``: DataComp's ``resharder.py``; the subset's samples as new shards in ``output_dir``.

    ``input_dir`` is a folder of shards (any fsspec URI) or a winnow job folder (its furthest
    curation stage). A uid repeated in the subset is written once per repeat. ``blur_faces``:
    None blurs the ``face_bboxes`` a winnow ledger says are not yet blurred, True also those of
    img2dataset shards, False none. Compare ``samples_written`` with ``expected``: they differ when a
    subset's sample was not found in the input.
    """
    from winnow.services.reshard.resharder import ReshardConfig
    from winnow.services.reshard.resharder import reshard as reshard_shards

    return reshard_shards(ReshardConfig(
        input_dir=_metadata_folder(input_dir), output_dir=str(output_dir), subset_file=str(subset_file),
        shard_size=shard_size, shuffle_buffer=shuffle_buffer, seed=seed, blur_faces=blur_faces,
        blur_quality=blur_quality, num_workers=num_workers, overwrite=overwrite, dry_run=dry_run))


# --- train and evaluate -----------------------------------------------------------------------------


def train(scale: str, data: PathLike | Sequence[PathLike], output_dir: PathLike, *, exp_name: str | None = None,
          data_weights: Sequence[float] | None = None, num_checkpoints: int = 5, workers: int = 4, seed: int = 0,
          precision: str | None = None, device: str | None = None, resume: str | None = "latest",
          accum_freq: int = 1, log_every_n_steps: int = 100, grad_clip_norm: float | None = None,
          save_frequency: int = 1, grad_checkpointing: bool | None = None, report_to: str = "none",
          verbose: bool = False, show_progress: bool = True, download: DownloadSpec | None = None,
          pool_samples_per_shard: int = 10_000, pool_input_format: str = "", pool_url_col: str = "url",
          pool_caption_col: str | None = "text", pool_download_workers: int = 2) -> TrainResult:
    """``winnow train``: DataComp's ``train.py`` (open_clip) at ``scale`` on ``data``; resumes a run.

    ``scale`` is debug, small, medium, large, xlarge, winnow's tiny, or a scale ``.json``.
    ``data`` is one source or several (with ``data_weights``): a shard folder (local or
    ``s3://``), a winnow job folder, a pool file (downloaded first, with ``download``: default
    DataComp's settings), a ``.tar``, a brace pattern or a ``pipe:`` URL. The run lives in
    ``output_dir/exp_name`` (default ``SCALE_scale``); ``resume=None`` starts afresh.
    """
    from winnow.services.downloader.job import DownloadSpec
    from winnow.services.trainer.sources import PoolOptions
    from winnow.services.trainer.train import TrainConfig
    from winnow.services.trainer.train import train as train_clip

    sources = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    pool = PoolOptions(download=(download or DownloadSpec()).stage_options(),
                       samples_per_shard=pool_samples_per_shard, input_format=pool_input_format,
                       url_col=pool_url_col, caption_col=pool_caption_col or None, workers=pool_download_workers)
    return train_clip(TrainConfig(
        scale=scale, data=tuple(str(s) for s in sources), data_weights=data_weights, output_dir=str(output_dir),
        exp_name=exp_name, num_checkpoints=num_checkpoints, workers=workers, seed=seed, precision=precision,
        device=device, resume=None if str(resume).lower() == "none" else resume, accum_freq=accum_freq,
        log_every_n_steps=log_every_n_steps, grad_clip_norm=grad_clip_norm, save_frequency=save_frequency,
        grad_checkpointing=grad_checkpointing, report_to=report_to, pool=pool, verbose=verbose,
        show_progress=show_progress))


@dataclass(frozen=True)
class Evaluation:
    """``evaluate``'s scores and the files it wrote them to."""

    results: Results  # every task (ok, missing or failed) and DataComp's aggregate
    results_file: Path  # eval_results.jsonl: DataComp's tasks, a line each
    local_results_file: Path  # eval_results_local.jsonl: winnow's local sets
    summary_file: Path  # eval_summary.json: every task and the aggregate

    @property
    def scores(self) -> dict[str, float | None]:
        """Each finished task's main metric, by task key."""
        return {task.key: task.score for task in self.results.tasks if task.status == "ok"}

    @property
    def failed(self) -> list[str]:
        return [task.key for task in self.results.tasks if task.status == "failed"]


def evaluate(train_output_dir: PathLike, *, data_dir: PathLike | None = None, output_dir: PathLike | None = None,
             tasks: Sequence[str] | None = None, model: str | None = None, checkpoint: PathLike | None = None,
             batch_size: int = 64, device: str | None = None, overwrite: bool = False,
             say: Say = _log_line) -> Evaluation:
    """``winnow evaluate``: DataComp's ``evaluate.py`` on a training run's final checkpoint.

    ``data_dir`` is the evaluation data root (default ``$WINNOW_EVAL_DATA``; ``winnow eval-data
    build`` writes winnow's local sets). Results go to ``output_dir`` (default: the run's folder);
    a second call skips the tasks already scored unless ``overwrite``. ``tasks`` are task keys or
    names, or ``"datacomp"``/``"local"``. A task that fails is in ``failed``, not raised.
    """
    from winnow.services.evaluator.run import evaluate_run

    results, (results_file, local_file, summary_file) = evaluate_run(
        train_output_dir, data_dir=data_dir, output_dir=output_dir, tasks=list(tasks) if tasks else None,
        model=model, checkpoint=None if checkpoint is None else str(checkpoint), batch_size=batch_size,
        device=device, overwrite=overwrite, say=say)
    return Evaluation(results, results_file, local_file, summary_file)
