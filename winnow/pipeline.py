"""``winnow run``'s stages and example pool; the runner itself is :mod:`shared.service.embedded`."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from shared.models.clip import parse_clip_model
from shared.stage import Stage
from shared.topics import CURATION_STAGES


#: ``--stages`` names: the pipeline order, with the downloader called "download" as on the command line.
STAGE_NAMES = ("download", *CURATION_STAGES[1:])


def build_stages(args: argparse.Namespace) -> list[Stage]:
    """The stages ``winnow run`` was asked for, in the order given, from its command-line options.

    winnow's own stages keep their pipeline order; a stage plugin (entry-point group
    ``winnow.stages``) runs where it is named, e.g. ``--stages download safety sharpness dedup``.
    """
    from services.blur.stage import BlurOptions, BlurStage
    from services.dedup.stage import DedupOptions, DedupStage
    from services.downloader.cli import download_options
    from services.downloader.stage import DownloadStage
    from services.embed.stage import EmbedStage
    from services.safety.stage import SafetyOptions, SafetyStage
    from shared.models.provider import clip_factory, model_factory
    from shared.models.registry import preset
    from shared.stage_plugins import load_stage, parse_stage_options

    builtin = [s for s in args.stages if s in STAGE_NAMES]
    if builtin != [s for s in STAGE_NAMES if s in builtin] or len(set(args.stages)) != len(args.stages):
        raise ValueError(f"--stages: each stage once, winnow's own in pipeline order ({' '.join(STAGE_NAMES)}); "
                         f"got {' '.join(args.stages)}")
    plugin_options = parse_stage_options(getattr(args, "stage_option", None) or [])
    strays = sorted(set(plugin_options) - set(args.stages))
    if strays:
        raise ValueError(f"--stage_option for stage(s) not in --stages: {', '.join(strays)}")
    stages = []
    model = lambda kind: model_factory(kind, args.model_preset, args.triton_url)  # noqa: E731
    for name in args.stages:
        if name == "download":
            stages.append(DownloadStage(download_options(args)))
        elif name == "safety":
            stages.append(SafetyStage(model("text_toxicity"), model("image_nsfw"), SafetyOptions(
                toxicity_threshold=preset("text_toxicity", args.model_preset).threshold,
                nsfw_threshold=preset("image_nsfw", args.model_preset).threshold)))
        elif name == "dedup":
            stages.append(DedupStage(model("near_duplicate"), DedupOptions(eval_index_dir=args.eval_index)))
        elif name == "blur":
            stages.append(BlurStage(model("face_detector"), BlurOptions(
                write_blurred_images=getattr(args, "blur_at_rest", False))))
        elif name == "embed":
            if not args.clip_model:
                if args.stages != list(STAGE_NAMES):
                    raise ValueError("the embed stage needs at least one --clip_model KEY=ARCH[:CHECKPOINT]")
            else:
                clips = [parse_clip_model(spec) for spec in args.clip_model]
                stages.append(EmbedStage({key: clip_factory(arch, pretrained, args.triton_url, f"clip_{key}")
                                          for key, arch, pretrained in clips}))
        else:
            stages.append(load_stage(name, plugin_options.get(name)))
    return stages


#: What the example pool needs of the download options: its server is on loopback, and it is small.
EXAMPLE_NETWORK = "127.0.0.1/32"
EXAMPLE_SAMPLES_PER_SHARD = 32


@contextlib.contextmanager
def example_pool() -> Iterator[Path]:
    """The built-in example pool, its images served from loopback while the context is open.

    Downloading it needs ``EXAMPLE_NETWORK`` allowed (and at most ``EXAMPLE_SAMPLES_PER_SHARD``
    samples a shard gives it several shards).
    """
    from winnow.example import ExampleServer, build_example_pool

    workdir = Path(tempfile.mkdtemp(prefix="winnow-example-"))
    (workdir / "www").mkdir(parents=True, exist_ok=True)
    server = ExampleServer(workdir / "www")
    pool = build_example_pool(workdir, server.base_url)
    with server:
        yield pool
