"""One options dataclass, its flags, its settings and its KEY=VALUE text: each stage declares its
options once, and the command lines, the services and ``--stage_option`` agree with it."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import pytest

from winnow.shared.option_flags import (OptionError, add_option_flags, option, option_items, options_from_args,
                                        options_from_strings)


@dataclass(frozen=True)
class Index:
    limit: int = option(10, help="how many")
    kind: str = option("flat", choices=("flat", "ivf"))


@dataclass(frozen=True)
class Options:
    threshold: float | None = option(None, help="a cut")
    exact: bool = option(True)
    names: tuple[str, ...] = option(("a",))
    columns: tuple[str, ...] | None = option(None)
    models: dict[str, str] = option(default_factory=lambda: {"b32": "ViT-B-32"})
    index: Index = Index(limit=20)


def parse(argv: list[str], prefix: str = "", **kwargs) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_option_flags(parser, option_items(Options, **kwargs), prefix=prefix)
    return parser, parser.parse_args(argv)


def test_the_flags_default_to_the_options():
    _, args = parse([])
    assert options_from_args(args, Options, option_items(Options)) == Options()


def test_each_kind_of_option_is_read_from_its_flag():
    items = option_items(Options, names={"index.limit": "index_flat_limit"})
    _, args = parse(["--threshold", "0.25", "--exact", "False", "--names", "x", "y", "--columns", '["u","v"]',
                     "--models", '{"l14": "L"}', "--index_flat_limit", "5", "--index_kind", "ivf"],
                    names={"index.limit": "index_flat_limit"})
    assert options_from_args(args, Options, items) == Options(
        threshold=0.25, exact=False, names=("x", "y"), columns=("u", "v"), models={"l14": "L"},
        index=Index(limit=5, kind="ivf"))
    _, args = parse(["--exact", "--threshold", "None"])
    assert options_from_args(args, Options, option_items(Options)) == Options(exact=True, threshold=None)


def test_a_prefix_names_the_stage_and_leaves_the_others_alone():
    _, args = parse(["--safety.threshold", "0.5"], prefix="safety.")
    assert options_from_args(args, Options, option_items(Options), prefix="safety.") == Options(threshold=0.5)


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "high"], "argument --threshold: expected float | None, got 'high'"),
    (["--exact", "maybe"], "expected a boolean"),
    (["--index_kind", "hnsw"], "invalid choice: 'hnsw'"),
])
def test_a_bad_flag_value_says_what_was_expected(argv, message):
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_option_flags(parser, option_items(Options))
    with pytest.raises(argparse.ArgumentError, match=message.replace("|", r"\|")):
        parser.parse_args(argv)


def test_key_value_text_is_read_by_the_fields_types_on_top_of_a_base():
    base = Options(threshold=0.1)
    got = options_from_strings(Options, {"exact": "false", "index_limit": "3"}, base=base)
    assert got == dataclasses.replace(base, exact=False, index=Index(limit=3))


def test_unknown_keys_and_bad_values_are_refused_with_the_options_there_are():
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['colour'\]; Options takes threshold "
                                          r"\(float \| None, default None\)"):
        options_from_strings(Options, {"colour": "red"})
    with pytest.raises(OptionError, match="threshold: expected float | None, got 'x'".replace("|", r"\|")):
        options_from_strings(Options, {"threshold": "x"})


def test_an_option_without_a_default_is_not_offered():
    @dataclass(frozen=True)
    class Required:
        path: str

    with pytest.raises(TypeError, match="has no default"):
        option_items(Required)
    assert option_items(Required, exclude=("path",)) == []


# --- winnow's own stages: declared once, offered everywhere --------------------------------------------


def test_every_stage_option_is_a_winnow_run_flag_and_a_setting_of_its_service():
    """The flags of ``winnow run`` and the service's settings are both made from the dataclass."""
    from winnow.services.blur.__main__ import BlurSettings
    from winnow.services.dedup.__main__ import DedupSettings
    from winnow.services.embed.__main__ import EmbedSettings
    from winnow.services.safety.__main__ import SafetySettings
    from winnow.cli import build_parser
    from winnow.pipeline import STAGE_OPTIONS

    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions}
    settings = {"safety": SafetySettings, "dedup": DedupSettings, "blur": BlurSettings, "embed": EmbedSettings}
    for spec in STAGE_OPTIONS:
        names = {item.name for item in spec.items()}
        assert names and {f"{spec.stage}.{n}" for n in names} <= flags, spec.stage
        assert names <= set(settings[spec.stage].model_fields), spec.stage
        for item in spec.items():  # one default, wherever the option is set
            assert settings[spec.stage].model_fields[item.name].default == item.default_value() or \
                settings[spec.stage].model_fields[item.name].default_factory is not None


def test_winnow_run_flags_and_stage_option_text_become_the_stages_options():
    from winnow.cli import build_parser, stage_options_from_args
    from winnow.services.dedup.options import DedupOptions, PoolIndexConfig
    from winnow.services.safety.options import SafetyOptions

    args = build_parser().parse_args(["run", "--example", "--out", "x", "--safety.nsfw_threshold", "0.3",
                                      "--stage_option", "safety:batch_size=8", "--dedup.pool_binary_backend", "flat",
                                      "--dedup.exact", "false", "--stage_option", "sharpness:min_sharpness=50"])
    assert stage_options_from_args(args) == {
        "safety": SafetyOptions(nsfw_threshold=0.3, batch_size=8),
        "dedup": DedupOptions(exact=False, pool_index=PoolIndexConfig(binary_backend="flat")),
        "sharpness": {"min_sharpness": "50"},  # a plugin's text, read by the plugin's options_type
    }
    args = build_parser().parse_args(["run", "--example", "--out", "x", "--stage_option", "safety:colour=red"])
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['colour'\]; SafetyOptions takes"):
        stage_options_from_args(args)


def test_build_stages_gives_each_stage_its_options(tmp_path):
    from winnow.pipeline import build_stages
    from winnow.services.blur.options import BlurOptions
    from winnow.services.safety.options import SafetyOptions

    safety, blur = build_stages(["safety", "blur"], blur_at_rest=True, stage_options={
        "safety": SafetyOptions(nsfw_threshold=0.3), "blur": BlurOptions(jpeg_quality=80)})
    assert safety.options.nsfw_threshold == 0.3 and safety.options.toxicity_threshold is not None  # preset's
    assert blur.options == BlurOptions(jpeg_quality=80, write_blurred_images=True)  # --blur_at_rest on top
    with pytest.raises(ValueError, match="--stage_option for stage.*not in --stages: dedup"):
        build_stages(["safety"], stage_options=["dedup:exact=false"])


def test_every_download_option_is_a_flag_of_download_and_run_and_a_setting_of_the_service(monkeypatch):
    """``DownloadSpec`` declares the download options once; ``winnow download`` (img2dataset's
    defaults), ``winnow run`` (DataComp's) and the service (``WINNOW_*``) are made from it."""
    from winnow.cli import build_parser
    from winnow.services.downloader.flags import LAYOUT_OPTIONS
    from winnow.services.downloader.job import DATACOMP_PROFILE, DownloadJob, DownloadSpec
    from winnow.services.downloader.options import IMG2DATASET
    from winnow.services.downloader.settings import NOT_SETTINGS, DownloaderSettings

    spec_fields = {f.name for f in dataclasses.fields(DownloadSpec)}
    job_fields = {f.name for f in dataclasses.fields(DownloadJob)} - {"spec"}
    commands = build_parser()._subparsers._group_actions[0].choices
    download = commands["download"].parse_args(["--url_list", "pool.parquet"])
    run = commands["run"].parse_args(["--example", "--out", "x"])
    assert spec_fields | job_fields <= set(vars(download))
    assert spec_fields - set(LAYOUT_OPTIONS) <= set(vars(run))
    assert DownloadJob.from_namespace(download) == DownloadJob("pool.parquet")  # img2dataset's defaults
    assert DownloadJob.from_namespace(download).spec == DownloadSpec.with_defaults(IMG2DATASET)
    # DataComp's (run's --url_col and --caption_col are its pool's columns, not img2dataset's layout)
    assert dataclasses.replace(DownloadSpec.from_namespace(run), url_col="url", caption_col=None) == DownloadSpec()
    assert spec_fields - set(NOT_SETTINGS) <= set(DownloaderSettings.model_fields)
    assert DownloaderSettings().options() == DownloadSpec()

    for key, value in {"WINNOW_IMAGE_SIZE": "256", "WINNOW_RESIZE_MODE": "center_crop",
                       "WINNOW_DISABLE_ALL_REENCODING": "true", "WINNOW_DISALLOWED_HEADER_DIRECTIVES": "[]",
                       "WINNOW_VERIFY_HASH": '["sha256", "sha256"]'}.items():
        monkeypatch.setenv(key, value)
    settings = DownloaderSettings()
    flags = commands["run"].parse_args(["--example", "--out", "x", "--image_size", "256", "--resize_mode",
                                        "center_crop", "--disable_all_reencoding", "--disallowed_header_directives",
                                        "[]", "--verify_hash", '["sha256","sha256"]'])
    assert settings.options() == dataclasses.replace(DownloadSpec.from_namespace(flags), caption_col=None)
    options = settings.download_options()
    assert (options.resize.image_size, options.resize.disable_all_reencoding, options.verify_hash) == \
        (256, True, ("sha256", "sha256"))
    assert settings.options().stage_options(DATACOMP_PROFILE) == options


@pytest.mark.parametrize("text", ['["x","y"]', "[x,y]", "['x', 'y']", "x,y", " x , y "])
def test_a_list_is_read_as_img2dataset_command_lines_write_it(text):
    """python-fire's spellings, which img2dataset's documented command lines use, for every list option."""
    assert options_from_strings(Options, {"names": text, "columns": text}) == \
        Options(names=("x", "y"), columns=("x", "y"))


def test_none_is_no_list_where_the_option_allows_it_and_an_error_where_not():
    assert options_from_strings(Options, {"columns": "None", "names": "[]"}) == Options(columns=None, names=())
    with pytest.raises(OptionError, match="names"):
        options_from_strings(Options, {"names": "None"})
    with pytest.raises(OptionError, match="expected a list of names"):
        options_from_strings(Options, {"names": "[1, 2]"})
