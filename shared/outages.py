"""Errors that say a dependency is down, not that the shard is bad.

A shard that fails because Triton is restarting or the object store is unreachable would succeed
unchanged a little later, so the worker waits for the dependency (a budget in time) instead of
spending the shard's delivery attempts on it. ``is_outage`` also recognises the connection errors
of the libraries underneath (botocore, aiohttp, urllib3) and an object store's server errors (HTTP 5xx)
anywhere in an exception's chain.
"""

from __future__ import annotations

import errno


class DependencyUnavailable(Exception):
    """A service the stage needs (model server, object store, broker) cannot be reached right now."""


# Connection failures of the storage and HTTP libraries, named so that this module imports none of them.
_OUTAGE_TYPE_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ClientConnectorError", "ServerDisconnectedError", "ServerTimeoutError", "NewConnectionError",
    "MaxRetryError", "ProtocolError",
})


# Object-store answers that mean "the server is not well, try again" (HTTP 5xx): AWS says to retry them,
# and a restarting S3 server gives them. s3fs turns them into OSErrors, keeping botocore's error as the cause.
_SERVER_ERROR_CODES = frozenset({"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout", "500", "503"})


def _is_server_error(exc: BaseException) -> bool:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError
        error = response.get("Error") or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
        return error.get("Code") in _SERVER_ERROR_CODES or status >= 500
    return isinstance(exc, OSError) and exc.errno == getattr(errno, "EREMOTEIO", None)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from, means a dependency is down."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (DependencyUnavailable, ConnectionRefusedError, ConnectionResetError)):
            return True
        if type(current).__name__ in _OUTAGE_TYPE_NAMES or _is_server_error(current):
            return True
        current = current.__cause__ or current.__context__
    return False
