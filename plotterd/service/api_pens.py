"""Fitted pens and their calibration over HTTP (part of the daemon's API).

* ``GET /api/pens``: every fitted pen profile in the daemon's pens folder (``pens_dir``):
  name, fitted_at, nib_mm, darkness, colour, nominal_nib_mm, residual, photo (its file name)
  and the plotters it is mounted on (their ``pen:``).
* ``GET /api/pens/{name}``: one of them (404 for an unknown name). Pens are named, never
  given by path.
* ``POST /api/pens/sheet`` (JSON: ``pens`` names, ``nib_mm``, ``plotter``): a calibration
  sheet for the plotter's paper and firmware, queued as a plot job (its G-code), with
  ``sheet.json`` (the layout a photo is fitted against) and ``sheet.svg`` in the job's
  folder. A named pen with a profile is drawn at its fitted nib; one without, at ``nib_mm``
  (the pen's nominal nib); no names: one row at ``nib_mm``, else at the plotter's pen.
* ``POST /api/pens/fit`` (multipart: ``job``, ``name``, ``row``, and a ``photo`` upload or
  ``capture=true`` for a frame from the configured camera): fits the pen from the photo of
  that job's sheet and saves it as profile ``name`` (201). A photo that cannot be measured
  is a 422 with the reason, and nothing is saved.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, FastAPI, File, Form, HTTPException, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from plotterd.errors import ConfigError, InputError, PlotterdError
from plotterd.pen import (
    FittedPen,
    PenModel,
    RoundNib,
    list_pen_profiles,
    load_pen_profile,
    save_pen_profile,
)
from plotterd.service import stages
from plotterd.service.api_machine import pick
from plotterd.service.camera import CameraError

if TYPE_CHECKING:
    from plotterd.service.daemon import Daemon

SHEET_NAME = "calibration-sheet.gcode"
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp")


class SheetRequest(BaseModel):
    pens: list[str] = Field(default_factory=list, description="pen names, one row each")
    nib_mm: float | None = Field(None, gt=0, allow_inf_nan=False,
                                 description="nominal nib of the pens without a profile")
    plotter: str | None = Field(None, description="the plotter (default: the only one)")


def pen_view(pen: FittedPen, daemon: Daemon) -> dict[str, Any]:
    """The public shape of a fitted pen: its figures, never its folder."""
    return {"name": pen.name, "fitted_at": pen.fitted_at, "nib_mm": pen.nib_mm,
            "darkness": pen.darkness, "colour": pen.colour,
            "nominal_nib_mm": pen.nominal_nib_mm, "residual": pen.residual,
            "photo": Path(pen.photo).name if pen.photo else "",
            "plotters": [pc.name for pc in daemon.cfg.plotters
                         if isinstance(pc.pen, FittedPen) and pc.pen.name == pen.name]}


def sheet_pens(body: SheetRequest, mounted: PenModel | None, folder: Path
               ) -> tuple[list[PenModel], list[str]]:
    """The pens and row names of a sheet request (see the module's docstring)."""
    if not body.pens:
        if body.nib_mm is not None:
            return [RoundNib(body.nib_mm)], ["pen1"]
        if mounted is None:
            raise HTTPException(400, "say which pens (pens: [NAME, ...]) or their nominal "
                                     "nib (nib_mm): this plotter has no pen: configured")
        return [mounted], [getattr(mounted, "name", "pen1")]
    try:  # the names become profile names: check them before anything is drawn
        for name in body.pens:
            FittedPen(name, 0.3, 1.0)
    except ConfigError as e:
        raise HTTPException(400, str(e)) from None
    known = {p.name: p for p in list_pen_profiles(folder)}
    pens: list[PenModel] = []
    for name in body.pens:
        if name in known:
            pens.append(known[name])
        elif body.nib_mm is not None:
            pens.append(RoundNib(body.nib_mm))
        else:
            raise HTTPException(400, f"pen {name!r} has no profile yet: give its nominal "
                                     "nib (nib_mm) to draw its sheet")
    return pens, list(body.pens)


SaveUpload = Callable[[UploadFile, Path, float], Awaitable[None]]


def pens_router(daemon: Daemon, guarded: list[Any], view: Callable,
                save_upload: SaveUpload) -> APIRouter:
    """The routes; ``view`` is the API's job view, ``save_upload`` its size-limited copy
    of an upload."""
    router = APIRouter()
    cfg = daemon.cfg

    @router.get("/api/pens", dependencies=guarded)
    def pens() -> list[dict[str, Any]]:
        return [pen_view(p, daemon) for p in list_pen_profiles(cfg.pens_dir)]

    @router.get("/api/pens/{name}", dependencies=guarded)
    def one_pen(name: str) -> dict[str, Any]:
        try:
            return pen_view(load_pen_profile(name, cfg.pens_dir), daemon)
        except ConfigError:
            raise HTTPException(404, f"no pen profile {name!r}") from None

    @router.post("/api/pens/sheet", dependencies=guarded, status_code=201)
    def sheet(body: SheetRequest) -> dict[str, Any]:
        return make_sheet_job(daemon, body, view)

    @router.post("/api/pens/fit", dependencies=guarded, status_code=201)
    async def fit(job: Annotated[int, Form()], name: Annotated[str, Form()],
                  row: Annotated[int, Form()] = 0,
                  photo: Annotated[UploadFile | None, File()] = None,
                  capture: Annotated[bool, Form()] = False) -> dict[str, Any]:
        job_dir = sheet_job_dir(daemon, job)
        if (photo is None) == (not capture):
            raise HTTPException(400, "give a photo of the sheet, or capture=true (not both)")
        try:
            FittedPen(name, 0.3, 1.0)  # a bad name is refused before any work
        except ConfigError as e:
            raise HTTPException(400, str(e)) from None
        path = await save_photo(daemon, job_dir, photo, save_upload)
        shown = Path(photo.filename or "").name if photo is not None else "the camera's frame"
        # the fit takes seconds in a child process: off the event loop
        return await run_in_threadpool(fit_and_save, daemon, job, job_dir, path, name, row,
                                       shown or path.name)

    return router


def make_sheet_job(daemon: Daemon, body: SheetRequest, view: Callable) -> dict[str, Any]:
    """Draw the sheet's files in a staging folder and queue its G-code as a plot job bound
    to the plotter; the layout goes into the job's folder."""
    worker = pick(daemon, body.plotter)
    pc = worker.pc
    pens, names = sheet_pens(body, pc.pen, daemon.cfg.pens_dir)
    page = daemon.cfg.page_of(pc)
    staging = daemon.stage_file("sheet")  # a fresh folder name in the staging area
    try:
        made = stages.calibration_sheet(
            pens, names, {"paper": page.paper, "orientation": page.orientation,
                          "margin_mm": page.margin_mm}, pc.profile, staging)
    except PlotterdError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise HTTPException(400, str(e)) from None
    job = daemon.submit_file(made["gcode"], source="upload", name=SHEET_NAME,
                             request={"plotter": pc.name})
    job_dir = Path(job["dir"])
    for key in ("json", "svg"):
        made[key].replace(job_dir / made[key].name)
    shutil.rmtree(staging, ignore_errors=True)  # the G-code's own previews
    rows = [{"row": r["row"], "pen": r["pen"], "nib_mm": r["nib_mm"]}
            for r in made["layout"]["rows"]]
    return {**view(job), "sheet": {"rows": rows, "sheet_mm": made["layout"]["sheet_mm"],
                                       "paper_mm": made["layout"]["paper_mm"]}}


def sheet_job_dir(daemon: Daemon, job_id: int) -> Path:
    """The folder of calibration job ``job_id`` (404 unknown, 400 not a calibration sheet)."""
    job = daemon.store.get(job_id)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    job_dir = Path(job["dir"])
    if not (job_dir / "sheet.json").is_file():
        raise HTTPException(400, f"job {job_id} is not a calibration sheet (POST "
                                 "/api/pens/sheet makes one)")
    return job_dir


async def save_photo(daemon: Daemon, job_dir: Path, photo: UploadFile | None,
                     save_upload: SaveUpload) -> Path:
    """The photo into the job's folder: the upload, or a full camera frame (no crop, no
    contrast normalisation: the fit measures the ink's true tone)."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if photo is None:
        try:
            frame = daemon.camera.grab(raw=True)
        except CameraError as e:
            raise HTTPException(503, str(e)) from e
        return daemon.camera.save(frame, job_dir / f"photo-{stamp}.png")
    suffix = Path(photo.filename or "").suffix.lower()
    if suffix not in PHOTO_SUFFIXES:
        raise HTTPException(422, f"the photo must be an image ({', '.join(PHOTO_SUFFIXES)})")
    path = job_dir / f"photo-{stamp}{suffix}"
    await save_upload(photo, path, daemon.cfg.api.max_upload_mb)
    return path


def fit_and_save(daemon: Daemon, job_id: int, job_dir: Path, photo: Path, name: str,
                 row: int, shown: str) -> dict[str, Any]:
    """Fit the pen, keep the evidence beside the photo, save the profile (only if the fit
    succeeded). ``shown``: the photo's name in messages."""
    try:
        fit = stages.fit_pen_photo(photo, job_dir / "sheet.json", name, row,
                                   record=f"job {job_id}: {photo.name}")
    except InputError as e:  # the photo by its name: the API never shows folders
        raise HTTPException(422, str(e).replace(str(photo), shown)) from None
    except PlotterdError as e:
        raise HTTPException(500, str(e)) from None
    fields = {k: fit[k] for k in ("nib_mm", "darkness", "colour", "nominal_nib_mm",
                                  "fitted_at", "photo", "residual")}
    pen = FittedPen(name=name, **fields)
    (job_dir / f"{photo.stem}.fit.json").write_text(json.dumps(fit, indent=1))
    save_pen_profile(pen, daemon.cfg.pens_dir)
    return {**pen_view(pen, daemon), "fit": {k: fit.get(k) for k in (
        "residual", "blur_mm", "clipped", "registration_px")}}


def install(app: FastAPI, daemon: Daemon, guarded: list[Any], view: Callable,
            save_upload: SaveUpload) -> None:
    app.include_router(pens_router(daemon, guarded, view, save_upload))
