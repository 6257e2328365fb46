"""The plotter's state and the machine controls over HTTP (part of the daemon's API).

* ``GET /api/status``: ``plotter.state`` (one of PlotterWorker's STATES), ``plotter.message``
  (a line for people), position, connected, the paper; the job counts; `optimising_all`
  (every job optimising now: several with the Ray backend) and `optimiser_backend`.
* ``POST /api/paper/changed``: a fresh sheet is in; the next job may start.
* ``POST /api/pen/continue``: an M0 pen change is done; the job goes on.
* ``POST /api/machine/{pen-up,pen-down,home,jog,origin,motors-off,send}``,
  ``GET /api/machine/ports``: refused (409) while a job plots; a move outside the machine's
  bounds is refused (400) with the machine stage's message.
* ``GET /api/plotters``: every plotter (in api.py).

Each command takes ``?plotter=NAME``. Without it, it goes to the only plotter; with several,
paper-changed and pen-continue go to the one plotter waiting for that, and anything else is
refused (400) asking which. An unknown name is a 404.
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


PLOTTER_KEYS = ("name", "tags", "state", "message", "connected", "position", "position_known",
                "port", "dry_run", "profile", "current_job", "last_error", "stream", "gone")


def pick(daemon: Daemon, name: str | None, waiting: str | None = None) -> Any:
    """The plotter worker a request is for (404 unknown, 400 ambiguous)."""
    from plotterd.service.daemon import AmbiguousPlotter

    try:
        return daemon.pick_plotter(name, waiting=waiting)
    except KeyError as e:
        raise HTTPException(404, e.args[0]) from e
    except AmbiguousPlotter as e:
        raise HTTPException(400, str(e)) from e


def status_view(daemon: Daemon, worker: Any = None) -> dict[str, Any]:
    """``plotter`` and ``paper``: the given plotter's (default the first); ``plotters``:
    every plotter's."""
    st = daemon.status()
    mine = worker.status() if worker is not None else st
    plotter = {k: mine.get(k) for k in PLOTTER_KEYS}
    plotters = [{**{k: p.get(k) for k in PLOTTER_KEYS}, "paper": p["paper"]}
                for p in st["plotters"]]
    return {"version": __version__, "plotter": plotter, "paper": mine["paper"],
            "plotters": plotters, "jobs": st["jobs"], "optimising": st["optimising"],
            "optimising_all": st["optimising_all"], "optimiser_backend": st["optimiser_backend"],
            "camera": st["camera"]}


def machine_router(daemon: Daemon, guarded: list[Any]) -> APIRouter:
    router = APIRouter()

    def run(action: str, plotter: str | None, *args: Any) -> dict[str, Any]:
        worker = pick(daemon, plotter)
        try:
            out = worker.machine(action, *args)
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        except NotConnected as e:
            raise HTTPException(503, str(e)) from e
        except PlotterdError as e:  # out of bounds, refused by the firmware...
            raise HTTPException(400, str(e)) from e
        return {"action": action, "result": out, **status_view(daemon, worker)}

    @router.get("/api/status", dependencies=guarded)
    def status(plotter: str | None = None) -> dict[str, Any]:
        return status_view(daemon, pick(daemon, plotter) if plotter else None)

    @router.post("/api/paper/changed", dependencies=guarded)
    def paper_changed(plotter: str | None = None) -> dict[str, Any]:
        worker = pick(daemon, plotter, waiting="waiting_for_paper")
        try:
            worker.paper_changed(source="api")
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        return status_view(daemon, worker)

    @router.post("/api/pen/continue", dependencies=guarded)
    def pen_continue(plotter: str | None = None) -> dict[str, Any]:
        worker = pick(daemon, plotter, waiting="pen_change")
        try:
            worker.pen_continue()
        except Busy as e:
            raise HTTPException(409, str(e)) from e
        return status_view(daemon, worker)

    @router.get("/api/machine/ports", dependencies=guarded)
    def ports() -> list[dict[str, Any]]:
        from plotterd.service import stages

        return stages.list_ports()

    @router.post("/api/machine/pen-up", dependencies=guarded)
    def pen_up(plotter: str | None = None) -> dict[str, Any]:
        return run("pen_up", plotter)

    @router.post("/api/machine/pen-down", dependencies=guarded)
    def pen_down(plotter: str | None = None) -> dict[str, Any]:
        return run("pen_down", plotter)

    @router.post("/api/machine/home", dependencies=guarded)
    def home(plotter: str | None = None) -> dict[str, Any]:
        return run("home", plotter)

    @router.post("/api/machine/jog", dependencies=guarded)
    def jog(body: Jog, plotter: str | None = None) -> dict[str, Any]:
        return run("jog", plotter, body.dx, body.dy)

    @router.post("/api/machine/origin", dependencies=guarded)
    def origin(plotter: str | None = None) -> dict[str, Any]:
        """The pen is at the origin (0, 0): position re-established; a job interrupted for a
        lost position resumes from its stroke."""
        return run("set_origin", plotter)

    @router.post("/api/machine/motors-off", dependencies=guarded)
    def motors_off(plotter: str | None = None) -> dict[str, Any]:
        return run("motors_off", plotter)

    @router.post("/api/machine/send", dependencies=guarded)
    def send(body: Line, plotter: str | None = None) -> dict[str, Any]:
        return run("send_now", plotter, body.line)

    return router


def install(app: FastAPI, daemon: Daemon, guarded: list[Any]) -> None:
    app.include_router(machine_router(daemon, guarded))
