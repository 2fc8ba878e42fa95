"""Who may use the console: a signed session cookie, issued for the operator token, and a
CSRF token on every action.

The session is Starlette's ``SessionMiddleware`` cookie (signed with itsdangerous, ``HttpOnly``,
``SameSite=Strict``, ``Secure`` when the server's base URL is https). Its key is derived from
the operator token, so changing the token signs every console session out.

:class:`ConsoleGuard` is the one check, as middleware: a page without a session redirects to
the sign-in page, any other request without one gets ``401``; every ``POST`` must carry the
session's CSRF token as the ``csrf`` form field (or the ``X-CSRF-Token`` header), else
``403``: the OWASP "synchronizer token pattern", on top of ``SameSite=Strict``. It also sets
the console's security headers (a same-origin Content-Security-Policy, no framing).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import MutableHeaders
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "COOKIE",
    "FORM_MAX_BYTES",
    "SECURITY_HEADERS",
    "ConsoleGuard",
    "session_key",
    "sign_in",
    "signed_in",
]

COOKIE = "edgeserve_console"
FORM_MAX_BYTES = 16 * 1024  # bytes; the console's forms hold a token and a reason
_OPEN = ("/login", "/static/")
# No script, style or frame from anywhere but the console itself; no framing of the console
# (its confirmation pages must not be clickjacked).
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
)


def session_key(operator_token: str) -> str:
    """The session signing key: an HMAC of the operator token (never the token itself)."""
    return hmac.new(
        operator_token.encode(), b"edgeserve console session", hashlib.sha256
    ).hexdigest()


def sign_in(session: MutableMapping[str, Any]) -> None:
    """Start a fresh operator session with a new CSRF token (a new one on every sign-in, so
    a token seen before sign-in is worthless after it)."""
    session.clear()
    session["operator"] = True
    session["csrf"] = secrets.token_urlsafe(32)


def signed_in(session: MutableMapping[str, Any]) -> bool:
    """Whether ``session`` belongs to a signed-in operator."""
    return session.get("operator") is True and isinstance(session.get("csrf"), str)


def _route_path(scope: Scope) -> str:
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class ConsoleGuard:
    """ASGI middleware under ``SessionMiddleware``: session check, then the CSRF check of
    ``POST`` requests (the form body is read, bounded, and handed on unchanged)."""

    def __init__(self, app: ASGIApp, mount: str = "/ui") -> None:
        self.app = app
        self.mount = mount

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = _route_path(scope).startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                if not static:  # pages show live fleet data: never from a cache
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self._guarded(scope, receive, send_with_headers)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _route_path(scope).startswith(_OPEN):
            await self.app(scope, receive, send)
            return
        session = scope["session"]
        method = scope["method"]
        if not signed_in(session):
            await self._refuse(scope, method).__call__(scope, receive, send)
            return
        if method in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > FORM_MAX_BYTES:
                await PlainTextResponse("form too large", 413)(scope, receive, send)
                return
        given = dict(scope["headers"]).get(b"x-csrf-token", b"").decode("latin-1")
        if not given:
            given = (parse_qs(body.decode("utf-8", "replace")).get("csrf") or [""])[0]
        if not hmac.compare_digest(given.encode(), session["csrf"].encode()):
            await PlainTextResponse("missing or wrong CSRF token", 403)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    def _refuse(self, scope: Scope, method: str) -> Response:
        headers = dict(scope["headers"])
        if method == "GET" and b"hx-request" not in headers:
            target = scope["path"] + (
                "?" + scope["query_string"].decode("latin-1") if scope["query_string"] else ""
            )
            return RedirectResponse(f"{self.mount}/login?next={quote(target)}", status_code=303)
        # htmx follows HX-Redirect: a live page whose session ran out goes to the sign-in page
        # instead of silently going stale
        return PlainTextResponse(
            "sign in first", 401, headers={"HX-Redirect": f"{self.mount}/login"}
        )
