"""Stages of your own, found through the ``winnow.stages`` entry-point group.

A plugin package declares, in its ``pyproject.toml``::

    [project.entry-points."winnow.stages"]
    sharpness = "winnow_sharpness:SharpnessStage"

The entry point names a factory (usually the stage class) that takes the stage's options and
returns a ``winnow.shared.curation.SampleStage`` whose ``name`` is the entry point's name and which
declares its contract: ``input_columns``, ``output_columns`` and ``drop_reasons`` (checked on every
shard). It then runs in ``winnow run --stages ...`` and as a service (``python -m
winnow.services.plugin``) exactly as winnow's own stages do.

Options are given as ``KEY=VALUE`` text (``winnow run --stage_option sharpness:min_sharpness=50``,
or the service's ``WINNOW_STAGE_OPTIONS`` JSON). A factory with an ``options_type`` attribute, a
frozen dataclass as winnow's own stages have, receives an instance of it: the text is read by
its fields' types, and an unknown key or a bad value is refused with the options it takes
(:func:`winnow.shared.option_flags.options_from_strings`). A factory without one receives the
``dict`` of strings as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from winnow.shared.curation import SampleStage
from winnow.shared.option_flags import OptionError, options_from_strings

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


def load_stage(name: str, options: Mapping[str, str] | Any = None) -> SampleStage:
    """Build the plugin stage ``name`` with ``options`` (``KEY=VALUE`` text by key, or an instance
    of the plugin's ``options_type``) and check that it declares the contract."""
    plugins = available()
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none installed"
        raise StagePluginError(f"no stage plugin named {name!r} in entry-point group {GROUP} ({known})")
    try:
        factory = plugins[name].load()
    except Exception as exc:  # a plugin's import error is the plugin's, reported as such
        raise StagePluginError(f"stage plugin {name!r} ({plugins[name].value}) failed to load: {exc}") from exc
    given = options if options is not None else {}
    options_type = getattr(factory, "options_type", None)
    if options_type is not None and not isinstance(given, options_type):
        try:
            given = options_from_strings(options_type, dict(given))
        except OptionError as exc:
            raise StagePluginError(f"stage plugin {name!r}: {exc}") from exc
    elif options_type is None:
        given = dict(given)
    try:
        stage = factory(given)
    except (TypeError, ValueError) as exc:
        raise StagePluginError(f"stage plugin {name!r} refused its options {given}: {exc}") from exc
    if not isinstance(stage, SampleStage):
        raise StagePluginError(f"stage plugin {name!r} made a {type(stage).__name__}, not a winnow.shared.curation.SampleStage")
    if stage.name != name:
        raise StagePluginError(f"stage plugin {name!r} names its stage {stage.name!r}; they must agree (the name is "
                               f"its folder in the job and its topic)")
    undeclared = [a for a in ("input_columns", "output_columns", "drop_reasons") if getattr(stage, a) is None]
    if undeclared:
        raise StagePluginError(f"stage plugin {name!r} does not declare {', '.join(undeclared)}")
    return stage
