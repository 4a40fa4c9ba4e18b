"""winnow's application layer: the ``winnow`` command, the embedded runner, the example and the report.

The library lives in ``shared`` (shard format, storage, bus, service shell, model interfaces and
clients) and the stages in ``services``; :mod:`winnow.ops` holds the operations tooling (deployment
rendering and checks, the local stack of ``winnow up``, the Triton launcher and model repository).
"""
