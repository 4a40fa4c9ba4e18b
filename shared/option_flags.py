"""One options dataclass, three ways to set it: settings, command-line flags and ``KEY=VALUE`` strings.

A stage's frozen options dataclass owns its options' names, types, defaults and help (a field's
``metadata``: ``help``, and where the type alone does not say how to read a value, ``parse`` or
``choices``). :func:`option_items` lists them, flattening a nested options dataclass into
``{outer}_{inner}`` (or a name given for its dotted path); the service's pydantic settings
(:func:`winnow.shared.config.option_fields`), the command-line flags (:func:`add_option_flags`,
:func:`options_from_args`) and ``winnow run --stage_option STAGE:KEY=VALUE``
(:func:`options_from_strings`) are all made from that list, so no option is declared twice.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import json
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

_MISSING = dataclasses.MISSING


@dataclass(frozen=True)
class OptionItem:
    """One settable option: its flat ``name``, its ``path`` in the dataclass, its type and default."""

    name: str
    path: tuple[str, ...]  # ("batch_size",), or ("pool_index", "flat_limit") in a nested dataclass
    hint: Any
    default: Any = _MISSING
    default_factory: Callable[[], Any] | None = None
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default

    @property
    def help(self) -> str:
        return self.metadata.get("help", "")


def option(default: Any = _MISSING, *, help: str = "", default_factory: Callable[[], Any] | None = None,
           **metadata: Any) -> Any:
    """A dataclass field with its help (and ``parse``, ``choices`` or ``metavar`` where the type
    alone does not say how a flag reads it): ``image_size: int = option(512, help="...")``."""
    metadata = {"help": help, **metadata}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _field_default(item: dataclasses.Field) -> Any:
    if item.default_factory is not _MISSING:
        return item.default_factory()
    if item.default is _MISSING:
        raise TypeError(f"option {item.name} has no default: a setting or flag needs one")
    return item.default


def option_items(options_type: type, *, names: Mapping[str, str] | None = None,
                 exclude: Collection[str] = ()) -> list[OptionItem]:
    """The options of the frozen dataclass ``options_type`` that may be set, in declaration order.

    An option that is itself a dataclass gives one item per option of it, named
    ``{option}_{inner}`` unless ``names`` maps the dotted path (``"pool_index.flat_limit"``) to
    another; ``names`` may rename top-level options too. ``exclude`` names options (dotted paths
    too) that are not offered. A name in ``names`` that is no option is a ``ValueError``.
    """
    names = dict(names or {})
    items: list[OptionItem] = []
    hints = typing.get_type_hints(options_type)
    for item in dataclasses.fields(options_type):
        if item.name in exclude:
            continue
        if dataclasses.is_dataclass(hints[item.name]):
            default = _field_default(item)
            inner_hints = typing.get_type_hints(hints[item.name])
            for inner in dataclasses.fields(default):
                path = f"{item.name}.{inner.name}"
                if path not in exclude:
                    items.append(OptionItem(names.pop(path, f"{item.name}_{inner.name}"), (item.name, inner.name),
                                            inner_hints[inner.name], getattr(default, inner.name),
                                            metadata=inner.metadata))
            continue
        factory = item.default_factory if item.default_factory is not _MISSING else None
        if factory is None and item.default is _MISSING:
            raise TypeError(f"option {item.name} of {options_type.__name__} has no default: a setting or flag needs one")
        items.append(OptionItem(names.pop(item.name, item.name), (item.name,), hints[item.name],
                                item.default, factory, item.metadata))
    if names:
        raise ValueError(f"{options_type.__name__} has no option(s) {sorted(names)}")
    return items


def build_options(options_type: type, values: Mapping[tuple[str, ...], Any], base: Any = None) -> Any:
    """``options_type`` with ``values`` (by option path) on top of ``base`` (default: its defaults)."""
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            top[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1]] = value
    base = base if base is not None else options_type(**{})
    for name, inner in nested.items():
        top[name] = dataclasses.replace(getattr(base, name), **inner)
    return dataclasses.replace(base, **top)


# --- reading a value from text -----------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    """``True``/``False`` (img2dataset's spellings) and the usual ones."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "y", "on"):
        return True
    if lowered in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True or False), got {text!r}")


def is_none(text: str) -> bool:
    return str(text).strip() in ("None", "none", "null")


def _optional_of(hint: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, True) or (``hint``, False)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def parse_list(text: str) -> list[str] | None:
    """A list as img2dataset's command line (python-fire) takes it: ``'["a","b"]'``, ``[a,b]``,
    ``a,b``, ``a``; ``None`` is no list and ``[]`` an empty one."""
    stripped = str(text).strip()
    if is_none(stripped):
        return None
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            try:
                value = ast.literal_eval(stripped)
            except (ValueError, SyntaxError):
                value = [part.strip().strip("'\"") for part in stripped[1:-1].split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise argparse.ArgumentTypeError(f"expected a list of names, got {text!r}")
        return value
    return [part.strip() for part in stripped.split(",") if part.strip()]


def value_parser(item: OptionItem) -> Callable[[str], Any]:
    """How a text becomes this option's value: its ``parse`` metadata, or one made from its type.

    ``None``/``none``/``null`` is None for an optional option; booleans take ``True``/``False``
    and the usual spellings; tuples a JSON list or ``a,b``; dicts JSON; enums a member's value.
    A value that does not fit raises ``argparse.ArgumentTypeError`` saying what was expected.
    """
    if "parse" in item.metadata:
        return item.metadata["parse"]
    inner, optional = _optional_of(item.hint)
    origin = typing.get_origin(inner) or inner

    def read(text: str) -> Any:
        if optional and is_none(text):
            return None
        try:
            if inner is bool:
                return parse_bool(text)
            if origin is tuple:
                items = parse_list(text)
                if items is None:
                    raise ValueError("None is not allowed here")
                return tuple(items)
            if origin is dict:
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise ValueError("expected a JSON object")
                return value
            if isinstance(inner, type) and issubclass(inner, enum.Enum):
                return inner(text)
            if inner in (int, float, str):
                return inner(text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"expected {type_name(item.hint)}, got {text!r}") from exc
        raise TypeError(f"option {item.name}: no reader for {type_name(item.hint)}; give it a parse in its metadata")

    read.__name__ = type_name(item.hint)  # argparse names the type in its error message
    return read


def type_name(hint: Any) -> str:
    """``float | None``, ``int``, ``tuple[str, ...]``: a type as a user reads it."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")


# --- command-line flags ----------------------------------------------------------------------------


def flag_name(item: OptionItem, prefix: str = "") -> str:
    return f"--{prefix}{item.name}"


def add_option_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, items: list[OptionItem], *,
                     prefix: str = "", defaults: Mapping[str, Any] | None = None) -> None:
    """A flag per option, ``--{prefix}{name}``, with its type, default and help.

    ``defaults`` overrides the dataclass's defaults by option name (a second set of defaults, such
    as img2dataset's for ``winnow download``). A boolean flag alone means True (``--exact``) and
    also takes a value (``--exact False``); a non-optional tuple takes its items as separate words.
    Defaults are given to argparse as JSON values (lists, not tuples), as ``job.json`` records them.
    """
    defaults = defaults or {}
    for item in items:
        default = defaults[item.name] if item.name in defaults else item.default_value()
        if isinstance(default, tuple):
            default = list(default)
        kwargs: dict[str, Any] = {"default": default, "help": item.help or None}
        inner, optional = _optional_of(item.hint)
        if "choices" in item.metadata:
            kwargs["choices"] = list(item.metadata["choices"])
            if "parse" in item.metadata:
                kwargs["type"] = item.metadata["parse"]
        elif inner is bool and "parse" not in item.metadata:
            kwargs.update(type=parse_bool, nargs="?", const=True)
        elif (typing.get_origin(inner) is tuple and not optional and "parse" not in item.metadata
              and typing.get_args(inner)[-1:] == (Ellipsis,)):
            kwargs["nargs"] = "*"
        else:
            kwargs["type"] = value_parser(item)
        if "metavar" in item.metadata:
            kwargs["metavar"] = item.metadata["metavar"]
        elif prefix and "choices" not in kwargs and kwargs.get("nargs") != "?":
            kwargs["metavar"] = item.name.upper()  # not argparse's PREFIX.NAME
        parser.add_argument(flag_name(item, prefix), dest=f"{prefix}{item.name}", **kwargs)


def flag_values(args: argparse.Namespace, items: list[OptionItem], *, prefix: str = "") -> dict[tuple[str, ...], Any]:
    """The values of these options' flags in ``args``, by option path (lists become tuples)."""
    values = {}
    for item in items:
        dest = f"{prefix}{item.name}"
        if hasattr(args, dest):
            value = getattr(args, dest)
            values[item.path] = tuple(value) if isinstance(value, list) else value
    return values


def options_from_args(args: argparse.Namespace, options_type: type, items: list[OptionItem], *, prefix: str = "",
                      base: Any = None) -> Any:
    """``options_type`` from its flags in ``args`` (options without a flag keep ``base``'s values)."""
    return build_options(options_type, flag_values(args, items, prefix=prefix), base)


# --- KEY=VALUE strings (winnow run --stage_option, WINNOW_STAGE_OPTIONS) ---------------------------------


class OptionError(ValueError):
    """An option that the options dataclass does not have, or a value it cannot take."""


def describe_options(items: list[OptionItem]) -> str:
    """``name (type, default D)`` for each option, for messages and ``--help``."""
    return ", ".join(f"{i.name} ({type_name(i.hint)}, default {i.default_value()!r})" for i in items)


def options_from_strings(options_type: type, values: Mapping[str, str], *, items: list[OptionItem] | None = None,
                         base: Any = None) -> Any:
    """``options_type`` from ``{name: text}``; an unknown name or a bad value is an ``OptionError``
    that lists what the options are. Values that are not text are taken as they are."""
    items = items if items is not None else option_items(options_type)
    by_name = {item.name: item for item in items}
    unknown = sorted(set(values) - set(by_name))
    if unknown:
        raise OptionError(f"unknown option(s) {unknown}; {options_type.__name__} takes {describe_options(items)}")
    parsed = {}
    for name, text in values.items():
        item = by_name[name]
        try:
            parsed[item.path] = value_parser(item)(text) if isinstance(text, str) else text
        except argparse.ArgumentTypeError as exc:
            raise OptionError(f"{name}: {exc}") from exc
    try:
        return build_options(options_type, parsed, base)
    except (TypeError, ValueError) as exc:
        raise OptionError(f"{options_type.__name__}: {exc}") from exc
