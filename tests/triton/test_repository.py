"""The model repository generator: configs Triton's own ModelConfig parser accepts, spec validation."""

from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from winnow.shared.triton import contract
from winnow.shared.triton.contract import ModelKind
from winnow.ops.triton.repository import MODEL_PY, ModelSpec, clip_model_specs, render_config, write_model_repository


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    """Parse with Triton's own ModelConfig message, as the server does."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_config_is_a_valid_triton_model_config():
    spec = ModelSpec("descriptor", "pkg.mod:Factory", ModelKind.NEAR_DUPLICATE, max_batch_size=32,
                     max_queue_delay_us=500, instances=2, dim=256, threshold=0.604169,
                     factory_kwargs={"path": 'C:\\weights "v1"', "name": "café"})
    config = parse_config(render_config(spec))
    assert config.name == "descriptor" and config.backend == "python"
    assert config.max_batch_size == 32
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert [(i.name, i.data_type, list(i.dims), i.allow_ragged_batch) for i in config.input] == [
        ("IMAGE", model_config_pb2.TYPE_UINT8, [-1], True),
        ("IMAGE_LENGTH", model_config_pb2.TYPE_INT32, [1], True),
    ]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("DESCRIPTOR", model_config_pb2.TYPE_FP32, [256]),
    ]
    params = {key: value.string_value for key, value in config.parameters.items()}
    assert params[contract.PARAM_KIND] == "near_duplicate"
    assert params[contract.PARAM_FACTORY] == "pkg.mod:Factory"
    assert float(params[contract.PARAM_THRESHOLD]) == 0.604169
    assert params[contract.PARAM_DIM] == "256"
    # quotes, backslashes and non-ASCII survive the text format
    assert json.loads(params[contract.PARAM_FACTORY_KWARGS]) == {"path": 'C:\\weights "v1"', "name": "café"}


@pytest.mark.parametrize("kind", list(ModelKind))
def test_every_kind_renders_its_signature(kind):
    spec = ModelSpec(f"m_{kind.value}", "pkg.mod:make", kind, dim=8, threshold=0.5)
    config = parse_config(render_config(spec))
    signature = contract.SIGNATURES[kind]
    assert [i.name for i in config.input] == [signature.item, f"{signature.item}_LENGTH"]
    assert [o.name for o in config.output] == [o.name for o in signature.outputs]


def test_write_model_repository_layout(tmp_path):
    specs = [ModelSpec("a", "pkg.mod:A", "text_toxicity"), ModelSpec("b", "pkg.mod:B", "image_nsfw")]
    (tmp_path / "a" / "1").mkdir(parents=True)
    (tmp_path / "a" / "1" / "stale.py").write_text("old")
    write_model_repository(tmp_path, specs)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "a/1/model.py", "a/config.pbtxt", "b/1/model.py", "b/config.pbtxt",
    ]
    assert (tmp_path / "b" / "1" / "model.py").read_text() == MODEL_PY
    compile(MODEL_PY, "model.py", "exec")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "bad name"}, "model name"),
        ({"factory": "no_colon"}, "package.module:function"),
        ({"kind": "near_duplicate", "threshold": 0.5}, "needs dim"),
        ({"kind": "near_duplicate", "dim": 8}, "needs threshold"),
        ({"kind": "clip_text"}, "needs dim"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"factory_kwargs": {"x": object()}}, "not JSON serializable"),
        ({"kind": "sentiment"}, "not a valid ModelKind"),
        ({"kind": "clip_text", "dim": 8, "image_fit": 224}, "image models only"),
        ({"kind": "image_nsfw", "image_fit": 0}, "image models only"),
    ],
)
def test_model_spec_rejects_bad_fields(kwargs, message):
    fields = {"name": "m", "factory": "pkg.mod:make", "kind": "text_toxicity", **kwargs}
    with pytest.raises((ValueError, TypeError), match=message):
        ModelSpec(**fields)


def test_duplicate_names_are_refused(tmp_path):
    spec = ModelSpec("same", "pkg.mod:make", "text_toxicity")
    with pytest.raises(ValueError, match="repeated: same"):
        write_model_repository(tmp_path, [spec, spec])


def test_clip_specs_name_the_two_towers():
    image, text = clip_model_specs("clip_b32", "pkg.mod:Clip", dim=512, max_batch_size=16)
    assert (image.name, image.kind, image.dim) == ("clip_b32_image", ModelKind.CLIP_IMAGE, 512)
    assert (text.name, text.kind, text.max_batch_size) == ("clip_b32_text", ModelKind.CLIP_TEXT, 16)


def test_clip_image_fit_is_declared_by_the_image_tower_only():
    image, text = (parse_config(render_config(spec))
                   for spec in clip_model_specs("clip_b32", "pkg.mod:Clip", dim=512, image_fit=224))
    assert image.parameters[contract.PARAM_IMAGE_FIT].string_value == "224"
    assert contract.PARAM_IMAGE_FIT not in text.parameters
    (image, _) = clip_model_specs("clip_b32", "pkg.mod:Clip", dim=512)
    assert contract.PARAM_IMAGE_FIT not in parse_config(render_config(image)).parameters
