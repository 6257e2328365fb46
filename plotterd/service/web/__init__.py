"""The daemon's web page (``GET /``) and the API's cross-site request guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from plotterd.service.web.csrf import CrossSiteGuard
from plotterd.service.web.routes import web_router

__all__ = ["CrossSiteGuard", "install", "web_router"]


def install(app: Any, daemon: Any, guarded: list[Any], view: Callable) -> None:
    """Serve the page on ``app`` and guard every state-changing request against other
    web sites (the guard covers the whole API, not only the page's routes)."""
    app.add_middleware(CrossSiteGuard, loopback_only=daemon.cfg.api.is_loopback)
    app.include_router(web_router(daemon, guarded, view))
