"""The operator API's one check: ``Authorization: Bearer <operator token>``.

:class:`BearerAuth` wraps each operator route (route middleware, so it runs only once a
request has matched an API route: an unknown path is still 404, a wrong method 405).
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

__all__ = ["BearerAuth"]


class BearerAuth:
    """Answer ``401`` unless the request carries the operator token as a bearer token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    def authorized(self, header: str) -> bool:
        """True when ``header`` (the Authorization value) is ``Bearer <operator token>``."""
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            header = ""
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    header = value.decode("latin-1")
                    break
            if not self.authorized(header):
                response = error_response(
                    401, "missing or wrong operator token (Authorization: Bearer)"
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
