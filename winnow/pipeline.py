"""``winnow run``'s stages and example pool; the runner itself is :mod:`shared.service.embedded`."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from shared.topics import CURATION_STAGES

if TYPE_CHECKING:  # kept out of `import winnow`, which needs only STAGE_NAMES from here
    from services.downloader.stage import DownloadOptions
    from shared.stage import Stage


#: ``--stages`` names: the pipeline order, with the downloader called "download" as on the command line.
STAGE_NAMES = ("download", *CURATION_STAGES[1:])


def build_stages(stages: Sequence[str], *, download: DownloadOptions | None = None, model_preset: str = "offline",
                 triton_url: str = "", eval_index: str = "", clip_models: Sequence[str] = (),
                 stage_options: Sequence[str] = (), blur_at_rest: bool = False) -> list[Stage]:
    """The stages ``winnow run`` was asked for, in the order given (``--stages``, ``--stage_option``, ...).

    winnow's own stages keep their pipeline order; a stage plugin (entry-point group
    ``winnow.stages``) runs where it is named, e.g. ``--stages download safety sharpness dedup``.
    ``download`` is the download stage's options (default: DataComp's); ``blur_at_rest`` makes the
    blur stage keep blurred images (``BlurOptions.write_blurred_images``).
    """
    from services.blur.stage import BlurOptions, BlurStage
    from services.dedup.stage import DedupOptions, DedupStage
    from services.downloader.job import DownloadSpec
    from services.downloader.stage import DownloadStage
    from services.embed.stage import EmbedStage
    from services.safety.stage import SafetyOptions, SafetyStage
    from shared.models.clip import parse_clip_model
    from shared.models.provider import clip_factory, model_factory
    from shared.models.registry import preset
    from shared.stage_plugins import load_stage, parse_stage_options

    stages = list(stages)
    builtin = [s for s in stages if s in STAGE_NAMES]
    if builtin != [s for s in STAGE_NAMES if s in builtin] or len(set(stages)) != len(stages):
        raise ValueError(f"--stages: each stage once, winnow's own in pipeline order ({' '.join(STAGE_NAMES)}); "
                         f"got {' '.join(stages)}")
    plugin_options = parse_stage_options(list(stage_options))
    strays = sorted(set(plugin_options) - set(stages))
    if strays:
        raise ValueError(f"--stage_option for stage(s) not in --stages: {', '.join(strays)}")
    built = []
    model = lambda kind: model_factory(kind, model_preset, triton_url)  # noqa: E731
    for name in stages:
        if name == "download":
            built.append(DownloadStage(download or DownloadSpec().stage_options()))
        elif name == "safety":
            built.append(SafetyStage(model("text_toxicity"), model("image_nsfw"), SafetyOptions(
                toxicity_threshold=preset("text_toxicity", model_preset).threshold,
                nsfw_threshold=preset("image_nsfw", model_preset).threshold)))
        elif name == "dedup":
            built.append(DedupStage(model("near_duplicate"), DedupOptions(eval_index_dir=eval_index)))
        elif name == "blur":
            built.append(BlurStage(model("face_detector"), BlurOptions(write_blurred_images=blur_at_rest)))
        elif name == "embed":
            if not clip_models:
                if stages != list(STAGE_NAMES):
                    raise ValueError("the embed stage needs at least one --clip_model KEY=ARCH[:CHECKPOINT]")
            else:
                clips = [parse_clip_model(spec) for spec in clip_models]
                built.append(EmbedStage({key: clip_factory(arch, pretrained, triton_url, f"clip_{key}")
                                         for key, arch, pretrained in clips}))
        else:
            built.append(load_stage(name, plugin_options.get(name)))
    return built


def builtin_stage_classes() -> list[type[Stage]]:
    """winnow's own per-shard stages, whose declared columns name the stage a run lacks when a
    stage reads a column nobody before it writes (``shared.stage.check_chain``)."""
    from services.blur.stage import BlurStage
    from services.dedup.stage import DedupStage
    from services.downloader.stage import DownloadStage
    from services.embed.stage import EmbedStage
    from services.safety.stage import SafetyStage

    return [DownloadStage, SafetyStage, DedupStage, BlurStage, EmbedStage]


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
