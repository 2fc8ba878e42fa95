"""gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html) and the error
that ends an RPC with one."""

from __future__ import annotations

import enum

__all__ = ["RpcError", "Status"]


class Status(enum.IntEnum):
    """The codes of the gRPC protocol; ``name`` is what clients print (``StatusCode.NAME``)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class RpcError(Exception):
    """Ends the RPC being served with ``status`` and ``message`` (its trailers)."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
