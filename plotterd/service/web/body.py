"""Checks made before a request body is read: the token, then the size.

FastAPI parses a multipart form (and Starlette spools its files to disk) before a route's
dependencies run, so a token check written as a dependency comes after the whole body has
been stored, and so would a size check in the route. This plain ASGI middleware runs first:

* with a token configured, a request that carries a body (POST / PUT / PATCH) without
  ``Authorization: Bearer <token>`` gets a 401 before one byte of it is read;
* a ``Content-Length`` above the limit gets a 413 at once, and a body that goes on past the
  limit (chunked, or a lying length) is cut off by a counter as it streams in: at most the
  limit (plus the form's own fields, ``FORM_SLACK``) is ever read.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from typing import Any

from fastapi import HTTPException

from plotterd.service.web.csrf import ASGIApp

WITH_BODY = {"POST", "PUT", "PATCH"}
FORM_SLACK = 64 * 1024  # multipart boundaries and the small form fields next to the file


def token_ok(authorization: str, token: str | None) -> bool:
    """``authorization`` (the header) is ``Bearer <token>``; anything passes without a token."""
    if not token:
        return True
    scheme, _, value = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(),
                                                              token.encode())


class BodyGate:
    """ASGI middleware: token before body, and the body's size limit (see the module doc)."""

    def __init__(self, app: ASGIApp, token: str | None, max_upload_mb: float):
        self.app = app
        self.token = token
        self.limit = int(max_upload_mb * 1024 * 1024) + FORM_SLACK
        self.max_upload_mb = max_upload_mb

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"].upper() not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if not token_ok(headers.get("authorization", ""), self.token):
            await _answer(send, 401, "missing or wrong token (Authorization: Bearer ...)",
                          [(b"www-authenticate", b"Bearer")])
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            await _answer(send, 413, self._too_large())
            return
        await self.app(scope, self._counted(receive), send)

    def _too_large(self) -> str:
        return f"upload larger than {self.max_upload_mb} MB"

    def _counted(self, receive: Callable) -> Callable:
        """``receive`` that stops the request once more than the limit has come in."""
        seen = 0

        async def counted() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the route's handler turns this into the 413
                    raise HTTPException(413, self._too_large())
            return message

        return counted


async def _answer(send: Callable, status: int, why: str,
                  extra: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": why}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
