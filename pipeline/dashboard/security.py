"""What keeps the dashboard safe: where it may bind, who may act, what every response says.

- Reading (pages, ``GET /api/...``, images) is open to whoever reaches the server: bind it to
  loopback (the default) or put it behind your own access control.
- Acting (upload, retry, discard) is a ``POST`` carrying ``X-Plantpipe-Token``. With
  ``PLANTPIPE_DASHBOARD_TOKEN`` set, the header must be that token (the page asks for it
  once and keeps it in the browser). Without one — allowed on loopback only, or where the app
  is mounted in your service — the header must repeat the ``plantpipe_dashboard`` cookie the
  pages set (double submit): another site can neither read the cookie nor send the header
  (that needs a CORS preflight, which is never granted), so no cross-site request can act.
- On loopback the ``Host`` header must name loopback too, so a DNS-rebinding page cannot
  read the dashboard as its own origin.
- Every response carries a Content-Security-Policy (scripts, styles and connections from the
  dashboard itself only; images also from the object store's origin), ``nosniff``, no
  framing and no referrer.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Iterable
from typing import Any

from pipeline.errors import ConfigurationError

TOKEN_HEADER = "x-plantpipe-token"
COOKIE = "plantpipe_dashboard"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class ActionRefused(Exception):
    """An action without its token (403)."""


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError:
        return False
    addresses = {str(info[4][0]).split("%", 1)[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve beyond loopback without a token (raises ConfigurationError)."""
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without a token: anyone who reaches "
            "it could upload, retry and discard. Set PLANTPIPE_DASHBOARD_TOKEN (16+ "
            "characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)"
            " or bind 127.0.0.1",
            code="dashboard_needs_token",
        )


def new_cookie_value() -> str:
    return secrets.token_urlsafe(24)


def check_action(headers: Any, cookies: dict[str, str], token: str | None) -> None:
    """Raise :class:`ActionRefused` unless the request carries the right token header."""
    given = headers.get(TOKEN_HEADER) or ""
    if token is not None:
        if not given:
            raise ActionRefused(
                "this action needs the dashboard token (PLANTPIPE_DASHBOARD_TOKEN) in the "
                "X-Plantpipe-Token header"
            )
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise ActionRefused("wrong dashboard token (X-Plantpipe-Token)")
        return
    expected = cookies.get(COOKIE) or ""
    if len(expected) < 16 or not secrets.compare_digest(given.encode(), expected.encode()):
        raise ActionRefused(
            "this action must come from the dashboard's own pages: the X-Plantpipe-Token "
            f"header must repeat the {COOKIE} cookie (reload the page)"
        )


def content_security_policy(image_origins: Iterable[str] = ()) -> str:
    images = " ".join(["'self'", "data:", "blob:", *image_origins])
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "font-src 'self'",
            "manifest-src 'self'",
            "base-uri 'self'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    )


def host_allowed(host_header: str, allowed: frozenset[str]) -> bool:
    """``Host`` (with or without a port, IPv6 in brackets) is one of ``allowed`` names."""
    value = host_header.strip().lower()
    if value.startswith("["):
        name = value[1:].split("]", 1)[0]
    else:
        name = value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return name in allowed


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", *LOOPBACK_NAMES})


class SecurityMiddleware:
    """Pure ASGI: refuses foreign ``Host`` headers (when ``allowed_hosts`` is given) and adds
    the security headers to every HTTP response (streamed ones included)."""

    def __init__(self, app: Any, *, csp: Any, allowed_hosts: frozenset[str] | None) -> None:
        self.app = app
        self.csp = csp  # a callable: the policy once the store's origin is known
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed_hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
            if not host_allowed(host, self.allowed_hosts):
                body = (
                    b"refused: this dashboard answers on loopback names only (Host header "
                    b"127.0.0.1, localhost or [::1])\n"
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 421,
                        "headers": [
                            (b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", self.csp().encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
