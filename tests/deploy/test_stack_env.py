"""`winnow up` gives each service the topology's environment, changed only where a local process must differ."""

from __future__ import annotations

import pytest

from winnow.ops.devstack.stack import Stack, StackOptions
from winnow.ops.topology import SERVICES, STATE_ROOT, Endpoints, service_env

LOCAL = Endpoints(kafka_bootstrap="127.0.0.1:9092", triton_grpc="127.0.0.1:8001", s3_endpoint="http://127.0.0.1:8333",
                  job_root="s3://winnow/runs", host="127.0.0.1")
# what a local process must have of its own: its replica's ports, the preset, state folders on this disk
LOCAL_ONLY = {"WINNOW_GRPC_ADDRESS", "WINNOW_METRICS_PORT", "WINNOW_MODEL_PRESET", "WINNOW_CLIP_MODELS", "WINNOW_ARCH"}


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_up_environment_is_the_topology_environment(svc, tmp_path):
    stack = Stack(StackOptions(state_dir=tmp_path, clip_models=("b32=winnow-tiny-ViT:/models/tiny.pt",)))
    stack.endpoints = LOCAL
    env = stack.service_environment(svc, grpc_port=61000, metrics_port=62000)
    expected = service_env(svc, LOCAL)
    for key, value in expected.items():
        if key in LOCAL_ONLY:
            continue
        if STATE_ROOT in value:
            assert env[key] == value.replace(STATE_ROOT, str(tmp_path / "data")), key
        else:
            assert env[key] == value, key
    assert env["WINNOW_GRPC_ADDRESS"] == "127.0.0.1:61000" and env["WINNOW_METRICS_PORT"] == "62000"
