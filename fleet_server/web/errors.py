"""Errors as JSON: ``{"error": "<one line>"}``, the status chosen by the error's type."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from edgeserve.errors import BundleError, EdgeServeError

__all__ = ["APP_HANDLERS", "ROUTE_HANDLERS", "error_response"]

log = logging.getLogger(__name__)

# well-formed request, unacceptable bundle (VerificationError is a BundleError)
BUNDLE_STATUS = 422


def error_response(status: int, message: str) -> JSONResponse:
    """``{"error": message}`` on one line, with ``status``."""
    return JSONResponse({"error": " ".join(message.split())}, status_code=status)


async def edgeserve_error(request: Request, exc: Exception) -> Response:
    """An error of ours: the status its type carries (e.g. 404, 409, 400)."""
    status = exc.http_status if isinstance(exc, EdgeServeError) else 500
    return error_response(status, str(exc))


async def bundle_error(request: Request, exc: Exception) -> Response:
    """A bundle that is malformed or fails verification."""
    return error_response(BUNDLE_STATUS, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown path (404) or method (405), in the same shape as everything else."""
    code = getattr(exc, "status_code", 500)
    what = "no route" if code == 404 else "method not allowed:"
    return error_response(code, f"{what} {request.method} {request.url.path}")


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: log it, answer one line."""
    log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}")


# Per route (an ExceptionMiddleware around each JSON route): our errors, and a bug as one
# line. Handled there, before the response starts, so a bug is answered and logged once
# (a catch-all on the application would answer, then re-raise it to the server).
ROUTE_HANDLERS = {
    EdgeServeError: edgeserve_error,
    BundleError: bundle_error,
    Exception: internal_error,
}
# On the application: requests that match no route or no method.
APP_HANDLERS = {404: http_error, 405: http_error}
