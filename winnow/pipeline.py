"""``winnow run``'s stages and example pool; the runner itself is :mod:`winnow.shared.service.embedded`."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from winnow.shared.topics import CURATION_STAGES

if TYPE_CHECKING:  # kept out of `import winnow`, which needs only STAGE_NAMES from here
    from winnow.services.downloader.job import DownloadSpec
    from winnow.shared.stage import Stage


#: ``--stages`` names: the pipeline order, with the downloader called "download" as on the command line.
STAGE_NAMES = ("download", *CURATION_STAGES[1:])


@dataclass(frozen=True)
class StageOptionsSpec:
    """How ``winnow run`` offers a stage's options dataclass: its flags ``--{stage}.{option}``."""

    stage: str
    package: str  # its options dataclass in PACKAGE.options (light: no models), build_stage in PACKAGE.stage
    options_class: str
    names_attr: str = ""  # a mapping in PACKAGE.options: option path -> name, as the service's settings name it
    exclude: tuple[str, ...] = ()  # options set by winnow run's own flags (--eval_index, --blur_at_rest, --clip_model)

    def options_type(self) -> type:
        return getattr(importlib.import_module(f"{self.package}.options"), self.options_class)

    def items(self) -> list:
        from winnow.shared.option_flags import option_items

        module = importlib.import_module(f"{self.package}.options")
        names = getattr(module, self.names_attr) if self.names_attr else None
        return option_items(self.options_type(), names=names, exclude=self.exclude)

    def build_stage(self, options: Any, **models: str) -> Stage:
        return importlib.import_module(f"{self.package}.stage").build_stage(options, **models)


#: winnow's curation stages whose options ``winnow run`` offers as flags.
STAGE_OPTIONS = (
    StageOptionsSpec("safety", "winnow.services.safety", "SafetyOptions"),
    StageOptionsSpec("dedup", "winnow.services.dedup", "DedupOptions", names_attr="POOL_INDEX_NAMES",
                     exclude=("eval_index_dir",)),
    StageOptionsSpec("blur", "winnow.services.blur", "BlurOptions", exclude=("write_blurred_images",)),
    StageOptionsSpec("embed", "winnow.services.embed", "EmbedOptions", exclude=("clip_models",)),
)


def stage_options_of(name: str) -> StageOptionsSpec | None:
    return next((spec for spec in STAGE_OPTIONS if spec.stage == name), None)


def resolve_stage_options(stage_options: Sequence[str] | Mapping[str, Any],
                          bases: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Options by stage from ``"STAGE:KEY=VALUE"`` strings or a mapping of stage to an options
    dataclass or ``{key: value}``: winnow's stages' as their options dataclasses (text read by
    the fields' types on top of ``bases[stage]``, e.g. ``winnow run``'s ``--STAGE.OPTION`` flags;
    unknown keys refused), plugins' as given (``load_stage`` reads them)."""
    from winnow.shared.option_flags import OptionError, options_from_strings
    from winnow.shared.stage_plugins import parse_stage_options

    given = dict(stage_options) if isinstance(stage_options, Mapping) else parse_stage_options(list(stage_options))
    resolved: dict[str, Any] = dict(bases or {})
    for name, value in given.items():
        spec = stage_options_of(name)
        if spec is None or not isinstance(value, Mapping):
            resolved[name] = value
            continue
        try:
            resolved[name] = options_from_strings(spec.options_type(), dict(value), items=spec.items(),
                                                  base=resolved.get(name))
        except OptionError as exc:
            raise OptionError(f"--stage_option {name}: {exc}") from exc
    return resolved


def build_stages(stages: Sequence[str], *, download: DownloadSpec | None = None, model_preset: str = "offline",
                 triton_url: str = "", eval_index: str = "", clip_models: Sequence[str] = (),
                 stage_options: Sequence[str] | Mapping[str, Any] = (), blur_at_rest: bool = False) -> list[Stage]:
    """The stages ``winnow run`` was asked for, in the order given (``--stages``, ``--stage_option``, ...).

    winnow's own stages keep their pipeline order; a stage plugin (entry-point group
    ``winnow.stages``) runs where it is named, e.g. ``--stages download safety sharpness dedup``.
    ``download`` is what the download stage fetches and writes (default: DataComp's settings);
    ``stage_options`` gives any stage its options (:func:`resolve_stage_options`), and
    ``eval_index``, ``blur_at_rest`` and ``clip_models`` (``winnow run``'s own flags) are set on
    top of them where given. Each stage is made by its module's ``build_stage``, as its service makes it.
    """
    from winnow.services.downloader import job as downloader
    from winnow.shared.models.clip import parse_clip_model
    from winnow.shared.stage_plugins import load_stage

    stages = list(stages)
    builtin = [s for s in stages if s in STAGE_NAMES]
    if builtin != [s for s in STAGE_NAMES if s in builtin] or len(set(stages)) != len(stages):
        raise ValueError(f"--stages: each stage once, winnow's own in pipeline order ({' '.join(STAGE_NAMES)}); "
                         f"got {' '.join(stages)}")
    options = resolve_stage_options(stage_options)
    strays = sorted(set(options) - set(stages))
    if strays:
        raise ValueError(f"--stage_option for stage(s) not in --stages: {', '.join(strays)}")
    shortcuts: dict[str, dict[str, Any]] = {"dedup": {"eval_index_dir": eval_index} if eval_index else {},
                                            "blur": {"write_blurred_images": True} if blur_at_rest else {}}
    if clip_models:
        shortcuts["embed"] = {"clip_models": {key: {"arch": arch, **({"pretrained": pretrained} if pretrained else {})}
                                              for key, arch, pretrained in map(parse_clip_model, clip_models)}}
    # An EmbedOptions given whole (the API) names its CLIP models; text options cannot (clip_models is --clip_model's).
    models_given = isinstance(stage_options, Mapping) and dataclasses.is_dataclass(stage_options.get("embed"))
    built = []
    for name in stages:
        spec = stage_options_of(name)
        if name == "download":
            built.append(downloader.build_stage(download or downloader.DownloadSpec()))
        elif spec is not None:
            if name == "embed" and not clip_models and not models_given:
                if stages != list(STAGE_NAMES):
                    raise ValueError("the embed stage needs at least one --clip_model KEY=ARCH[:CHECKPOINT]")
                continue  # every stage by default, and no CLIP given: the run says embed was skipped
            stage_options_value = dataclasses.replace(options.get(name) or spec.options_type()(),
                                                      **shortcuts.get(name, {}))
            built.append(spec.build_stage(stage_options_value, model_preset=model_preset, triton_url=triton_url))
        else:
            built.append(load_stage(name, options.get(name)))
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
