"""The topology in winnow/ops/topology.py agrees with the services' own settings classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from winnow.shared.topics import CURATION_STAGES
from winnow.ops.topology import PIPELINE, SERVICES, TOPIC_PARTITIONS, Endpoints, service_env, settings_class, topics

ENDPOINTS = Endpoints(kafka_bootstrap="kafka:9092", triton_grpc="triton:8001", s3_endpoint="http://s3:8333",
                      job_root="s3://winnow/runs")


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_settings_defaults_match_the_topology(svc):
    fields = settings_class(svc).model_fields
    assert fields["service_name"].default == svc.name
    assert fields["input_topic"].default == svc.input_topic
    assert fields["output_topic"].default == svc.output_topic


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_every_winnow_variable_is_a_setting_the_service_reads(svc):
    settings = settings_class(svc)
    env = service_env(svc, ENDPOINTS)
    unknown = [key for key in env if key.startswith("WINNOW_")
               and key.removeprefix("WINNOW_").lower() not in settings.model_fields]
    assert not unknown, f"{svc.name} would ignore {unknown}"
    assert ("WINNOW_TRITON_URL" in env) == svc.uses_triton


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_the_environment_parses_into_the_settings(svc, monkeypatch):
    for key, value in service_env(svc, ENDPOINTS).items():
        monkeypatch.setenv(key, value)
    settings = settings_class(svc)()
    assert settings.grpc_address == f"0.0.0.0:{svc.grpc_port}"
    assert settings.metrics_port == svc.metrics_port
    assert settings.kafka_bootstrap_servers == "kafka:9092"
    assert settings.group_id == svc.name


def test_the_stages_form_one_chain():
    for upstream, downstream in zip(SERVICES, SERVICES[1:]):
        assert downstream.input_topic == upstream.output_topic, (upstream.name, downstream.name)
    assert len(set(PIPELINE)) == len(PIPELINE)
    start = PIPELINE.index(CURATION_STAGES[0])  # the order winnow run and the trainer's sources assume
    assert PIPELINE[start:start + len(CURATION_STAGES)] == CURATION_STAGES
    ports = [p for s in SERVICES for p in (s.grpc_port, s.metrics_port)]
    assert len(set(ports)) == len(ports)
    assert all(1 <= s.max_replicas <= TOPIC_PARTITIONS for s in SERVICES)
    assert all(f"{s.input_topic}.dlq" in topics() for s in SERVICES)


def test_the_readme_table_matches_the_topology():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for svc in SERVICES:
        row = (f"| {svc.name} | `{svc.module}` | {svc.grpc_port} | {svc.metrics_port} | `{svc.input_topic}` | "
               f"`{svc.output_topic}` |")
        assert row in readme, f"README's topology table is out of date for {svc.name}"
