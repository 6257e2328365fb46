"""Refuse every request whose ``Host`` is not one of the daemon's own names (DNS rebinding).

A page on evil.example can make its name resolve to 127.0.0.1 after it has loaded; the
browser then treats the daemon as same-origin with the page and lets it *read* the answers
(the job list, photos, camera frames, the camera URL). The browser still sends
``Host: evil.example``, so checking Host on every method, reads included, closes that.

Allowed: loopback names and addresses, any IP address literal (a rebinding needs a name),
the address the API is bound to, this machine's own host names, and ``api.hosts``.
Starlette's TrustedHostMiddleware has no notion of "any IP literal" or ``*.localhost``,
which is why the check is written here; it is a plain ASGI middleware so uploads stream.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable, Iterable
from typing import Any

from plotterd.service.web.csrf import ASGIApp, is_loopback_host, split_host


def own_names(bind: str, extra: Iterable[str] = ()) -> set[str]:
    """The names (lower case, no port) the daemon answers to besides loopback and IPs."""
    names = {bind, *extra}
    if not is_loopback_host(bind):  # reachable from the network: its own host names too
        hostname = socket.gethostname()
        names |= {hostname, socket.getfqdn(), f"{hostname}.local"}
    return {n.lower().rstrip(".") for n in names if n}


def host_allowed(host_header: str, names: set[str]) -> bool:
    """``host_header`` (``name[:port]``) names this daemon."""
    host = split_host(host_header).strip("[]").lower().rstrip(".")
    if not host:
        return False
    if is_loopback_host(host) or host in names:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class HostGuard:
    """ASGI middleware: 400 for any HTTP or WebSocket request with a foreign ``Host``."""

    def __init__(self, app: ASGIApp, names: set[str]):
        self.app = app
        self.names = names

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket"):
            host = _header(scope, b"host")
            if not host_allowed(host, self.names):
                await _refuse(scope, send, f"Host {host!r} is not a name of this daemon "
                                           "(add it to api.hosts if it is)")
                return
        await self.app(scope, receive, send)


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


async def _refuse(scope: dict[str, Any], send: Callable, why: str) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"detail": why}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
