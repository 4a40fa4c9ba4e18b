"""The platform winnow needs, as local processes: Kafka (KRaft, from Maven Central jars),
an S3 store (SeaweedFS) and Triton (winnow/ops/triton/server.py) — for `winnow up` and the tests."""
