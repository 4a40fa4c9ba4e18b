"""gRPC status codes for the access checks of ``winnow.shared.access``: refusals never reach a stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from winnow.shared.access import AccessDenied, InvalidReference


@contextlib.contextmanager
def refusals_as_status(context: grpc.ServicerContext) -> Iterator[None]:
    """Abort the call with PERMISSION_DENIED or INVALID_ARGUMENT when a check in the block refuses."""
    try:
        yield
    except AccessDenied as exc:
        context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    except InvalidReference as exc:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
