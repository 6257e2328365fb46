"""The plotter's state and the machine controls over HTTP (part of the daemon's API).

* ``GET /api/status``: ``plotter.state`` (one of PlotterWorker's STATES), ``plotter.message``
  (a line for people), position, connected, the paper; the job counts.
* ``POST /api/paper/changed``: a fresh sheet is in; the next job may start.
* ``POST /api/pen/continue``: an M0 pen change is done; the job goes on.
* ``POST /api/machine/{pen-up,pen-down,home,jog,origin,motors-off,send}``,
  ``GET /api/machine/ports``: refused (409) while a job plots; a move outside the machine's
  bounds is refused (400) with the machine stage's message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI, HTTPException
from pydantic import BaseModel, Field

from plotterd import __version__
from plotterd.errors import PlotterdError
from plotterd.service.plotter_worker import Busy, NotConnected

if TYPE_CHECKING:
    from plotterd.service.daemon import Daemon


class Jog(BaseModel):
    dx: float = Field(0.0, allow_inf_nan=False, description="mm, + is right")
    dy: float = Field(0.0, allow_inf_nan=False, description="mm, + is away from the origin")


class Line(BaseModel):
    line: str = Field(..., min_length=1, max_length=200, description="one G-code line")


def status_view(daemon: Daemon) -> dict[str, Any]:
    st = daemon.status()
    plotter = {k: st[k] for k in ("state", "message", "connected", "position",
                                  "position_known", "port", "dry_run", "profile",
                                  "current_job", "last_error", "stream")}
    return {"version": __version__, "plotter": plotter, "paper": st["paper"],
            "jobs": st["jobs"], "optimising": st["optimising"], "camera": st["camera"]}


def machine_router(daemon: Daemon, guarded: list[Any]) -> APIRouter:
    router = APIRouter()
    worker = daemon.plotter

    def run(action: str, *args: Any) -> dict[str, Any]:
        try:
            out = worker.machine(action, *args)
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        except NotConnected as e:
            raise HTTPException(503, str(e)) from e
        except PlotterdError as e:  # out of bounds, refused by the firmware...
            raise HTTPException(400, str(e)) from e
        return {"action": action, "result": out, **status_view(daemon)}

    @router.get("/api/status", dependencies=guarded)
    def status() -> dict[str, Any]:
        return status_view(daemon)

    @router.post("/api/paper/changed", dependencies=guarded)
    def paper_changed() -> dict[str, Any]:
        try:
            worker.paper_changed(source="api")
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        return status_view(daemon)

    @router.post("/api/pen/continue", dependencies=guarded)
    def pen_continue() -> dict[str, Any]:
        try:
            worker.pen_continue()
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        return status_view(daemon)

    @router.get("/api/machine/ports", dependencies=guarded)
    def ports() -> list[dict[str, Any]]:
        from plotterd.service import stages

        return stages.list_ports()

    @router.post("/api/machine/pen-up", dependencies=guarded)
    def pen_up() -> dict[str, Any]:
        return run("pen_up")

    @router.post("/api/machine/pen-down", dependencies=guarded)
    def pen_down() -> dict[str, Any]:
        return run("pen_down")

    @router.post("/api/machine/home", dependencies=guarded)
    def home() -> dict[str, Any]:
        return run("home")

    @router.post("/api/machine/jog", dependencies=guarded)
    def jog(body: Jog) -> dict[str, Any]:
        return run("jog", body.dx, body.dy)

    @router.post("/api/machine/origin", dependencies=guarded)
    def origin() -> dict[str, Any]:
        """The pen is at the origin (0, 0): position re-established; a job interrupted for a
        lost position resumes from its stroke."""
        return run("set_origin")

    @router.post("/api/machine/motors-off", dependencies=guarded)
    def motors_off() -> dict[str, Any]:
        return run("motors_off")

    @router.post("/api/machine/send", dependencies=guarded)
    def send(body: Line) -> dict[str, Any]:
        return run("send_now", body.line)

    return router


def install(app: FastAPI, daemon: Daemon, guarded: list[Any]) -> None:
    app.include_router(machine_router(daemon, guarded))
