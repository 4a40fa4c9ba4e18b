"""Stages of your own, found through the ``winnow.stages`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."winnow.stages"]
    sharpness = "winnow_sharpness:SharpnessStage"

The entry point names a factory (usually the stage class) that takes the stage's options, a
``dict`` of strings (``winnow run --stage_option sharpness:min_sharpness=50``, or the service's
``WINNOW_STAGE_OPTIONS`` JSON), and returns a ``winnow.shared.curation.SampleStage`` whose ``name`` is the
entry point's name and which declares its contract: ``input_columns``, ``output_columns`` and
``drop_reasons`` (checked on every shard). It then runs in ``winnow run --stages ...`` and as a
service (``python -m winnow.services.plugin``) exactly as winnow's own stages do.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points

from winnow.shared.curation import SampleStage

GROUP = "winnow.stages"


class StagePluginError(ValueError):
    """A stage plugin is missing, fails to load, or does not declare the stage contract."""


def available() -> dict[str, EntryPoint]:
    """Installed stage plugins by name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def parse_stage_options(specs: list[str]) -> dict[str, dict[str, str]]:
    """``NAME:KEY=VALUE`` items -> {stage name: {key: value}}."""
    options: dict[str, dict[str, str]] = {}
    for spec in specs:
        stage, sep, pair = spec.partition(":")
        key, eq, value = pair.partition("=")
        if not sep or not eq or not stage or not key:
            raise StagePluginError(f"--stage_option takes STAGE:KEY=VALUE, got {spec!r}")
        options.setdefault(stage, {})[key] = value
    return options


def load_stage(name: str, options: Mapping[str, str] | None = None) -> SampleStage:
    """Build the plugin stage ``name`` with ``options`` and check that it declares the contract."""
    plugins = available()
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none installed"
        raise StagePluginError(f"no stage plugin named {name!r} in entry-point group {GROUP} ({known})")
    try:
        factory = plugins[name].load()
    except Exception as exc:  # a plugin's import error is the plugin's, reported as such
        raise StagePluginError(f"stage plugin {name!r} ({plugins[name].value}) failed to load: {exc}") from exc
    try:
        stage = factory(dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise StagePluginError(f"stage plugin {name!r} refused its options {dict(options or {})}: {exc}") from exc
    if not isinstance(stage, SampleStage):
        raise StagePluginError(f"stage plugin {name!r} made a {type(stage).__name__}, not a winnow.shared.curation.SampleStage")
    if stage.name != name:
        raise StagePluginError(f"stage plugin {name!r} names its stage {stage.name!r}; they must agree (the name is "
                               f"its folder in the job and its topic)")
    undeclared = [a for a in ("input_columns", "output_columns", "drop_reasons") if getattr(stage, a) is None]
    if undeclared:
        raise StagePluginError(f"stage plugin {name!r} does not declare {', '.join(undeclared)}")
    return stage
