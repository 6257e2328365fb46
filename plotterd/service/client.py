"""A small client of the daemon's HTTP API (used by the CLI and the demo)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from plotterd.errors import PlotterdError


class DaemonError(PlotterdError):
    pass


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        token = token or os.environ.get("PLOTTERD_TOKEN") or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  trust_env=False)

    @classmethod
    def from_config(cls, config: str | Path | None = None, url: str | None = None,
                    token: str | None = None) -> Client:
        """URL and token from the options, else the environment, else the config file."""
        url = url or os.environ.get("PLOTTERD_URL")
        if config is not None or url is None:
            from plotterd.service.config import load_config

            cfg = load_config(config) if config is not None else None
            if cfg is not None:
                url = url or cfg.api.url
                token = token or cfg.api.token
            url = url or "http://127.0.0.1:8765"
        return cls(url, token)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.ConnectError as e:
            raise DaemonError(
                f"no plotterd daemon answers at {self.url} (is it running? `plotterd run`)"
            ) from e
        except httpx.HTTPError as e:
            raise DaemonError(f"{self.url}: {e}") from e
        if r.status_code == 401:
            raise DaemonError(f"{self.url}: token missing or rejected (set PLOTTERD_TOKEN)")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise DaemonError(f"{method} {path}: {r.status_code}: {detail}")
        return r

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw).json()

    def submit(self, path: str | Path, pipeline: str | None = None,
               options: str | None = None, plotter: str | None = None,
               tags: list[str] | tuple[str, ...] = ()) -> dict:
        """Upload a file as a job; ``plotter`` (a name) or ``tags`` route it."""
        path = Path(path)
        data = {k: v for k, v in (("pipeline", pipeline), ("options", options),
                                  ("plotter", plotter), ("tags", ",".join(tags))) if v}
        with open(path, "rb") as f:
            return self.post("/jobs", files={"file": (path.name, f)}, data=data)

    # -- the plotter ------------------------------------------------------------------------
    MACHINE_ACTIONS = ("pen-up", "pen-down", "home", "jog", "origin", "motors-off", "send")

    @staticmethod
    def _which(plotter: str | None) -> dict[str, Any]:
        return {"params": {"plotter": plotter}} if plotter else {}

    def status(self, plotter: str | None = None) -> dict:
        """``plotter.state`` (idle, plotting, paused, waiting_for_paper, waiting_for_plotter,
        pen_change, alarm, disconnected, interrupted), ``plotter.message``, the paper (of
        ``plotter``, default the first); ``plotters``: every plotter."""
        return self.get("/api/status", **self._which(plotter))

    def plotters(self) -> list[dict]:
        return self.get("/api/plotters")

    def paper_changed(self, plotter: str | None = None) -> dict:
        return self.post("/api/paper/changed", **self._which(plotter))

    def pen_continue(self, plotter: str | None = None) -> dict:
        return self.post("/api/pen/continue", **self._which(plotter))

    def machine(self, action: str, plotter: str | None = None, **body: Any) -> dict:
        """One machine command between jobs: pen-up, pen-down, home, jog (dx, dy), origin,
        motors-off, send (line), to ``plotter`` (needed when there are several). A
        DaemonError says why it was refused (409 while a job plots, 400 out of bounds or
        ambiguous, 503 no plotter)."""
        if action not in self.MACHINE_ACTIONS:
            raise ValueError(f"unknown machine action {action!r}")
        return self.post(f"/api/machine/{action}", **({"json": body} if body else {}),
                         **self._which(plotter))

    def ports(self) -> list[dict]:
        return self.get("/api/machine/ports")

    def close(self) -> None:
        self._http.close()
