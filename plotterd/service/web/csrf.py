"""Refuse state-changing requests that another web site makes a browser send (CSRF).

Any page open in the same browser can POST to the loopback API (a form, or ``fetch`` in
``no-cors`` mode); the browser sends it even though the page cannot read the answer. So
every POST / PUT / PATCH / DELETE that carries the browser's own markers must come from the
daemon's own origin:

* ``Sec-Fetch-Site`` (sent by every current browser) must be ``same-origin`` or ``none``
  (typed by the user);
* ``Origin`` and ``Referer``, where present, must be the request's own scheme, host and port;
* when the API is bound to loopback, the ``Host`` of a browser's request must be a loopback
  name, so a DNS-rebinding page (evil.example resolving to 127.0.0.1, same-origin with
  itself) is refused too;
* a browser that sends no ``Sec-Fetch-Site`` (an old one) must also send
  ``X-Plotterd-Request``: the page always does, and a cross-site page cannot add it without
  a CORS preflight, which this API never grants. (Not asked of browsers that do send
  ``Sec-Fetch-Site: same-origin``, so that the API's own ``/docs`` page works too.)

Clients that are not browsers (the CLI, curl, scripts) send none of these markers and are
not affected: a web page cannot make a browser leave them out. Written as a plain ASGI
middleware rather than Starlette's BaseHTTPMiddleware so that uploads stream through it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi.datastructures import Headers

HEADER = "x-plotterd-request"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


def is_loopback_host(host: str) -> bool:
    """``host`` (without port) is a loopback name or address."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(host_header: str) -> str:
    """The host part of a Host header (``[::1]:8765`` -> ``::1``)."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def refusal(method: str, scheme: str, headers: Headers, loopback_only: bool) -> str | None:
    """Why this request is refused as cross-site, or None if it may go on."""
    if method.upper() not in UNSAFE:
        return None
    site = headers.get("sec-fetch-site")
    origin = headers.get("origin")
    referer = headers.get("referer")
    if site is None and origin is None and referer is None:
        return None  # not a browser: the CLI, curl, a script
    host = headers.get("host", "")
    own = f"{scheme}://{host}".lower()
    if site is not None and site.lower() not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site})"
    if origin is not None and origin.lower() != own:
        return f"cross-site request refused (Origin {origin} is not {own})"
    if referer is not None and origin is None:
        parts = urlsplit(referer)
        if f"{parts.scheme}://{parts.netloc}".lower() != own:
            return "cross-site request refused (Referer from another site)"
    if loopback_only and not is_loopback_host(split_host(host)):
        return f"request refused: Host {host!r} is not a loopback name (DNS rebinding?)"
    if site is None and HEADER not in headers:
        return f"browser request without Sec-Fetch-Site or the {HEADER} header refused"
    return None


class CrossSiteGuard:
    """ASGI middleware: 403 for a cross-site state-changing request (see the module doc)."""

    def __init__(self, app: ASGIApp, loopback_only: bool = True):
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            why = refusal(scope["method"], scope.get("scheme", "http"), Headers(scope=scope),
                          self.loopback_only)
            if why is not None:
                body = json.dumps({"detail": why}).encode()
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
