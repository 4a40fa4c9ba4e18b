"""``winnow run``'s stages and example pool; the runner itself is :mod:`winnow.shared.service.embedded`."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from winnow.shared.topics import CURATION_STAGES

if TYPE_CHECKING:  # kept out of `import winnow`, which needs only STAGE_NAMES from here
    from winnow.services.downloader.stage import DownloadOptions
    from winnow.shared.stage import Stage


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
    from winnow.services.blur import stage as blur
    from winnow.services.dedup import stage as dedup
    from winnow.services.downloader.job import DownloadSpec
    from winnow.services.downloader.stage import DownloadStage
    from winnow.services.embed import stage as embed
    from winnow.services.safety import stage as safety
    from winnow.shared.models.clip import parse_clip_model
    from winnow.shared.stage_plugins import load_stage, parse_stage_options

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
    models = {"model_preset": model_preset, "triton_url": triton_url}
    for name in stages:
        if name == "download":
            built.append(DownloadStage(download or DownloadSpec().stage_options()))
        elif name == "safety":
            built.append(safety.build_stage(safety.SafetyOptions(), **models))
        elif name == "dedup":
            built.append(dedup.build_stage(dedup.DedupOptions(eval_index_dir=eval_index), **models))
        elif name == "blur":
            built.append(blur.build_stage(blur.BlurOptions(write_blurred_images=blur_at_rest), **models))
        elif name == "embed":
            if not clip_models:
                if stages != list(STAGE_NAMES):
                    raise ValueError("the embed stage needs at least one --clip_model KEY=ARCH[:CHECKPOINT]")
            else:
                specs = {key: {"arch": arch, **({"pretrained": pretrained} if pretrained else {})}
                         for key, arch, pretrained in map(parse_clip_model, clip_models)}
                built.append(embed.build_stage(embed.EmbedOptions(clip_models=specs), **models))
        else:
            built.append(load_stage(name, plugin_options.get(name)))
    return built


def builtin_stage_classes() -> list[type[Stage]]:
    """winnow's own per-shard stages, whose declared columns name the stage a run lacks when a
    stage reads a column nobody before it writes (``winnow.shared.stage.check_chain``)."""
    from winnow.services.blur.stage import BlurStage
    from winnow.services.dedup.stage import DedupStage
    from winnow.services.downloader.stage import DownloadStage
    from winnow.services.embed.stage import EmbedStage
    from winnow.services.safety.stage import SafetyStage

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
