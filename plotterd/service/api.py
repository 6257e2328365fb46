"""The HTTP API (FastAPI, served by uvicorn in the daemon; OpenAPI at /openapi.json).

Bound to 127.0.0.1 by default. With a token configured every endpoint but ``/health``
requires ``Authorization: Bearer <token>``; binding to a non-loopback address without a
token is refused at configuration time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse

from plotterd import __version__
from plotterd.errors import PlotterdError
from plotterd.service.api_docs import install as install_docs
from plotterd.service.api_machine import install as install_machine_api
from plotterd.service.api_machine import pick
from plotterd.service.api_pens import install as install_pens_api
from plotterd.service.camera import CameraError
from plotterd.service.job_options import override_error, pipeline_name_error
from plotterd.service.routing import RoutingError, parse_request, unsatisfiable
from plotterd.service.web import install as install_web
from plotterd.service.web.body import BodyGate, token_ok
from plotterd.service.web.hosts import HostGuard, own_names

if TYPE_CHECKING:
    from plotterd.service.daemon import Daemon


def job_view(job: dict[str, Any], base: str = "") -> dict[str, Any]:
    """The public shape of a job."""
    jid = job["id"]
    return {
        "id": jid, "source": job["source"], "name": job["name"], "kind": job["kind"],
        "pipeline": job["pipeline"], "options": job["options"], "state": job["state"],
        "progress": {"fraction": job["progress"], "stage": job["stage"], "info": job["info"]},
        "created": job["created"], "updated": job["updated"], "finished": job["finished"],
        "error": job["error"],
        "artefacts": {name: f"{base}/jobs/{jid}/artefacts/{name}"
                      for name in sorted(job["artefacts"])},
        "files": {name: str(Path(job["dir"]) / rel) for name, rel in job["artefacts"].items()},
        "stats": job["stats"],
        "plot": {"last_acked_stroke": job["last_acked_stroke"],
                 "last_completed_stroke": job["last_completed_stroke"],
                 "resume_stroke": job["resume_stroke"], "attempts": job["plot_attempts"]},
        "dir": job["dir"], "archive": job["archive"],
        "plotter": job.get("plotter"), "plotter_request": job.get("plotter_request"),
    }


def make_app(daemon: Daemon) -> FastAPI:
    cfg = daemon.cfg
    app = FastAPI(title="plotterd", version=__version__, docs_url=None, redoc_url=None,
                  description="Pictures to pen drawings: jobs, plotter control, camera.")
    install_docs(app)  # /docs with Swagger UI's files served here (no CDN)
    guarded = [Depends(_bearer_auth(cfg.api.token))]

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "dry_run": cfg.dry_run,
                "uptime_s": round(time.time() - daemon.started, 1)}

    # the groups in this order, so the routes and the OpenAPI document keep theirs
    _job_routes(app, daemon, guarded)
    _plot_routes(app, daemon, guarded)
    _device_routes(app, daemon, guarded)
    install_machine_api(app, daemon, guarded)  # /api/status, paper, pen, machine controls
    install_pens_api(app, daemon, guarded, job_view, _save_upload)  # /api/pens: fitted pens
    install_web(app, daemon, guarded, job_view)  # GET /, its endpoints, the CSRF guard
    # before any route reads a body: its token, then its size (streamed, counted)
    app.add_middleware(BodyGate, token=cfg.api.token, max_upload_mb=cfg.api.max_upload_mb)
    # outermost: a foreign Host (DNS rebinding) is refused before anything else runs
    app.add_middleware(HostGuard, names=own_names(cfg.api.bind, cfg.api.hosts))
    return app


def _bearer_auth(token: str | None) -> Callable[[Request], None]:
    """The dependency that refuses a request without ``Authorization: Bearer <token>``
    (every request passes where no token is configured)."""

    def auth(request: Request) -> None:
        if not token_ok(request.headers.get("authorization", ""), token):
            raise HTTPException(401, "missing or wrong token (Authorization: Bearer ...)",
                                headers={"WWW-Authenticate": "Bearer"})

    return auth


def _job_routes(app: FastAPI, daemon: Daemon, guarded: list[Any]) -> None:
    """/jobs: list, one job, its artefacts, upload, cancel, resume, replot."""
    cfg = daemon.cfg

    def get_job(job_id: int) -> dict[str, Any]:
        job = daemon.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        return job

    @app.get("/jobs", dependencies=guarded)
    def list_jobs(state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        states = state.split(",") if state else None
        return [job_view(j) for j in daemon.store.list(states=states, limit=max(1, limit))]

    @app.get("/jobs/{job_id}", dependencies=guarded)
    def one_job(job_id: int) -> dict[str, Any]:
        job = get_job(job_id)
        return {**job_view(job), "events": daemon.store.events(job_id)}

    @app.get("/jobs/{job_id}/artefacts/{name}", dependencies=guarded)
    def artefact(job_id: int, name: str) -> FileResponse:
        job = get_job(job_id)
        rel = job["artefacts"].get(name)
        if rel is None:
            raise HTTPException(404, f"job {job_id} has no artefact {name!r}")
        job_dir = Path(job["dir"]).resolve()
        path = (job_dir / rel).resolve()
        if not path.is_relative_to(job_dir) or not path.is_file():
            raise HTTPException(404, f"artefact {name!r} of job {job_id} is missing")
        return FileResponse(path, filename=path.name)

    @app.post("/jobs", dependencies=guarded, status_code=201)
    async def upload(file: Annotated[UploadFile, File()],
                     pipeline: Annotated[str | None, Form()] = None,
                     options: Annotated[str | None, Form()] = None,
                     plotter: Annotated[str | None, Form()] = None,
                     tags: Annotated[str | None, Form()] = None) -> dict[str, Any]:
        try:  # a plotter by name, or tags (comma-separated) a plotter must have
            request = parse_request(plotter, tags, "upload")
        except RoutingError as e:
            raise HTTPException(400, str(e)) from e
        if why := unsatisfiable(request, cfg):
            raise HTTPException(400, f"plotter request: {why}")
        overrides = _upload_overrides(options)
        if pipeline is not None and (why := pipeline_name_error(pipeline)):
            raise HTTPException(400, why)
        if why := override_error(pipeline or str(cfg.pipeline), overrides, None,
                                 cfg.pipeline_dirs):
            raise HTTPException(400, why)
        name = Path(file.filename or "upload").name or "upload"
        staged = daemon.stage_file(name)
        await _save_upload(file, staged, cfg.api.max_upload_mb)
        job = daemon.submit_file(staged, source="upload", name=name, pipeline=pipeline,
                                 options=overrides, request=request)
        return job_view(job)

    @app.post("/jobs/{job_id}/cancel", dependencies=guarded)
    def cancel_job(job_id: int) -> dict[str, Any]:
        get_job(job_id)
        return {"job": job_id, "result": daemon.cancel_job(job_id)}

    @app.post("/jobs/{job_id}/resume", dependencies=guarded)
    def resume_job(job_id: int) -> dict[str, Any]:
        get_job(job_id)
        try:
            return job_view(daemon.resume_job(job_id))
        except PlotterdError as e:
            raise HTTPException(409, str(e)) from e

    @app.post("/jobs/{job_id}/replot", dependencies=guarded)
    def replot_job(job_id: int) -> dict[str, Any]:
        get_job(job_id)
        try:
            return job_view(daemon.replot_job(job_id))
        except PlotterdError as e:
            raise HTTPException(409, str(e)) from e


def _upload_overrides(options: str | None) -> dict[str, Any]:
    """An upload's ``options`` form field (JSON or YAML) as pipeline overrides."""
    overrides: dict[str, Any] = {}
    if options:
        try:
            overrides = yaml.safe_load(options) or {}
        except yaml.YAMLError as e:
            raise HTTPException(400, f"options: not JSON/YAML: {e}") from e
        if not isinstance(overrides, dict):
            raise HTTPException(400, "options: must be a mapping of pipeline keys")
    return overrides


async def _save_upload(file: UploadFile, staged: Path, max_upload_mb: float) -> None:
    """Copy the upload to its staged file; past the size limit a 413, and no file is left."""
    limit = int(max_upload_mb * 1024 * 1024)
    size = 0
    try:
        with open(staged, "wb") as out:
            while chunk := await file.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"upload larger than {max_upload_mb} MB")
                out.write(chunk)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise


def _plot_routes(app: FastAPI, daemon: Daemon, guarded: list[Any]) -> None:
    """/plot: pause, resume and cancel, for one plotter by name or every plotter."""

    def workers(plotter: str | None) -> list[Any]:
        """The named plotter, or every plotter."""
        if plotter is None:
            return list(daemon.plotters.values())
        return [pick(daemon, plotter)]

    @app.post("/plot/pause", dependencies=guarded)
    def pause(plotter: str | None = None) -> dict[str, Any]:
        """Pause the plotter (``plotter``: by name; without it every plotter)."""
        for w in workers(plotter):
            w.pause()
        return workers(plotter)[0].status()

    @app.post("/plot/resume", dependencies=guarded)
    def resume(plotter: str | None = None) -> dict[str, Any]:
        for w in workers(plotter):
            w.resume()
        return workers(plotter)[0].status()

    @app.post("/plot/cancel", dependencies=guarded)
    def cancel(plotter: str | None = None) -> dict[str, Any]:
        """Cancel the plot of ``plotter``, or the one plot in progress."""
        busy = [w for w in workers(plotter) if w.current is not None]
        if not busy:
            raise HTTPException(409, "nothing is plotting")
        if len(busy) > 1:
            raise HTTPException(400, f"{len(busy)} plotters are plotting "
                                f"({', '.join(w.name for w in busy)}): say which (plotter=NAME)")
        job = busy[0].cancel()
        if job is None:
            raise HTTPException(409, "nothing is plotting")
        return {"job": job, "plotter": busy[0].name, "result": "cancelling"}


def _device_routes(app: FastAPI, daemon: Daemon, guarded: list[Any]) -> None:
    """The plotters' status and the camera."""

    @app.get("/api/plotters", dependencies=guarded)
    def plotters() -> list[dict[str, Any]]:
        """Every plotter: name, tags, page, port, state and message, current job, paper."""
        return [w.status() for w in daemon.plotters.values()]

    @app.post("/camera/capture", dependencies=guarded, status_code=201)
    def capture() -> dict[str, Any]:
        try:
            return job_view(daemon.capture())
        except CameraError as e:
            raise HTTPException(503, str(e)) from e

    @app.get("/plotter", dependencies=guarded)
    def plotter() -> dict[str, Any]:
        return daemon.status()


def make_server(daemon: Daemon):
    import logging

    import uvicorn

    level = daemon.cfg.log_level if daemon.cfg.log_level != "info" else "warning"
    config = uvicorn.Config(make_app(daemon), host=daemon.cfg.api.bind,
                            port=daemon.cfg.api.port, log_level=level, access_log=False,
                            log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    logging.getLogger("uvicorn.error").setLevel(level.upper())
    return server

