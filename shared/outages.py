"""Errors that say a dependency is down, not that the shard is bad.

A shard that fails because Triton is restarting or the object store is unreachable would succeed
unchanged a little later, so the worker waits for the dependency (a budget in time) instead of
spending the shard's delivery attempts on it. ``is_outage`` also recognises the connection errors
of the libraries underneath (botocore, aiohttp, urllib3) anywhere in an exception's chain.
"""

from __future__ import annotations


class DependencyUnavailable(Exception):
    """A service the stage needs (model server, object store, broker) cannot be reached right now."""


# Connection failures of the storage and HTTP libraries, named so that this module imports none of them.
_OUTAGE_TYPE_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError", "NewConnectionError",
    "MaxRetryError", "ProtocolError",
})


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, means a dependency is down."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (DependencyUnavailable, ConnectionRefusedError, ConnectionResetError)):
            return True
        if type(current).__name__ in _OUTAGE_TYPE_NAMES:
            return True
        current = current.__cause__ or current.__context__
    return False
