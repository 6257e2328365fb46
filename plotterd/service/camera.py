"""Webcam intake: grab a frame with OpenCV, crop and contrast-normalise it, queue it.

The source is a device index or anything ``cv2.VideoCapture`` opens (a stream URL, a video
file). A camera that cannot be opened or read is reported in the status and retried after
``retry_s``; it never stops the daemon.

OpenCV's open and read have no time limit of their own for every source (a network camera
that accepts the connection and never sends a frame blocks them for good), so each runs on a
short-lived helper thread and is given up after ``timeout_s``; while that call is still
stuck the camera reports itself hung instead of piling up more threads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from plotterd import atomic
from plotterd.errors import PlotterdError
from plotterd.service.config import CameraConfig

log = logging.getLogger("plotterd.camera")


class CameraError(PlotterdError):
    pass


def shown_source(source: int | str | None) -> int | str | None:
    """The camera source as the status shows it: a stream URL's password replaced by ***."""
    if not isinstance(source, str) or "@" not in source:
        return source
    parts = urlsplit(source)
    if parts.password is None:
        return source
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def process_frame(frame: np.ndarray, cfg: CameraConfig) -> np.ndarray:
    """Crop (fractions of the frame), convert to grey and equalise contrast (CLAHE)."""
    import cv2

    h, w = frame.shape[:2]
    if cfg.crop is not None:
        x, y, cw, ch = cfg.crop
        x0, y0 = int(round(x * w)), int(round(y * h))
        x1, y1 = min(w, int(round((x + cw) * w))), min(h, int(round((y + ch) * h)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise CameraError(f"camera.crop leaves an empty image of a {w}x{h} frame")
        frame = frame[y0:y1, x0:x1]
    if cfg.grey and frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    if cfg.clahe is not None:
        clahe = cv2.createCLAHE(clipLimit=float(cfg.clahe.clip_limit),
                                tileGridSize=(cfg.clahe.tile, cfg.clahe.tile))
        if frame.ndim == 2:
            frame = clahe.apply(frame)
        else:  # equalise lightness only, so colours do not shift
            lab = cv2.cvtColor(frame, cv2.COLOR_BGR2LAB)
            lab[..., 0] = clahe.apply(lab[..., 0])
            frame = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    return np.ascontiguousarray(frame)


class Camera:
    """Keeps the capture open between shots; reopens it after a failure."""

    def __init__(self, cfg: CameraConfig):
        self.cfg = cfg
        self._cap: Any = None
        self._lock = threading.Lock()
        self.state = "off" if cfg.source is None else "closed"
        self.error: str | None = None
        self.last_capture: float | None = None
        self.next_retry = 0.0
        self.captures = 0
        self._stuck: threading.Thread | None = None  # an open or read given up on
        self.shown = shown_source(cfg.source)  # in messages, logs and the status
        self._closing = threading.Event()  # the daemon stops: no waiting on the camera

    @property
    def enabled(self) -> bool:
        return self.cfg.source is not None

    def status(self) -> dict[str, Any]:
        return {"source": self.shown, "state": self.state, "error": self.error,
                "captures": self.captures, "last_capture": self.last_capture}

    def _open(self) -> None:
        import cv2

        src = self.cfg.source

        def open_capture() -> Any:
            cap = cv2.VideoCapture(src)
            if not cap.isOpened():
                cap.release()
                raise CameraError(f"cannot open camera {self.shown!r}")
            return cap

        self._cap = self._bounded(open_capture, "opening it",
                                  lambda cap: cap.release())

    def _bounded(self, call: Callable[[], Any], what: str,
                 abandoned: Callable[[Any], None]) -> Any:
        """``call()`` on a helper thread, waited for at most ``timeout_s``; a call that
        finishes after it was given up on hands its result to ``abandoned`` (a release)."""
        if self._stuck is not None and self._stuck.is_alive():
            raise CameraError(f"camera {self.shown!r} is hung (an earlier call has not "
                              "returned)")
        box: dict[str, Any] = {}
        given_up = threading.Event()

        def run() -> None:
            try:
                box["value"] = call()
            except BaseException as e:  # handed to the waiting thread below
                box["error"] = e
            if given_up.is_set() and "value" in box:
                try:
                    abandoned(box["value"])
                except Exception:  # a late release of a broken capture must not raise
                    pass

        worker = threading.Thread(target=run, name="camera-io", daemon=True)
        worker.start()
        deadline = time.monotonic() + self.cfg.timeout_s
        while worker.is_alive() and time.monotonic() < deadline and not self._closing.is_set():
            worker.join(0.05)
        if worker.is_alive():
            given_up.set()
            self._stuck = worker
            raise CameraError(f"camera {self.shown!r}: {what} took more than "
                              f"{self.cfg.timeout_s:g} s (camera.timeout_s)")
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _fail(self, msg: str) -> CameraError:
        # a camera left unplugged fails every retry_s for months: warn when it changes
        level = logging.DEBUG if self.state == "error" and self.error == msg else logging.WARNING
        self.state, self.error = "error", msg
        self.next_retry = time.monotonic() + self.cfg.retry_s
        self.close()
        log.log(level, "camera: %s (retry in %gs)", msg, self.cfg.retry_s)
        return CameraError(msg)

    def grab(self, raw: bool = False) -> np.ndarray:
        """One processed frame (``raw``: as the camera gave it, for measuring). Raises
        CameraError (and records it) on any failure."""
        if not self.enabled:
            raise CameraError("no camera configured (camera.source)")
        with self._lock:
            try:
                if self._cap is None:
                    self._open()
                frame = self._read()
                if frame is None and self._is_file():
                    # a video file ran out: start it again
                    self.close()
                    self._open()
                    frame = self._read()
                if frame is None:
                    raise CameraError(f"camera {self.shown!r} gave no frame")
                out = frame if raw else process_frame(frame, self.cfg)
            except CameraError as e:
                raise self._fail(str(e)) from None
            except Exception as e:  # OpenCV raises cv2.error and others; never fatal
                raise self._fail(f"camera {self.shown!r}: {e}") from None
            self.state, self.error = "ok", None
            self.last_capture = time.time()
            self.captures += 1
            return out

    def _is_file(self) -> bool:
        return isinstance(self.cfg.source, str) and os.path.isfile(self.cfg.source)

    def _read(self) -> np.ndarray | None:
        cap, drop = self._cap, self.cfg.warmup_frames

        def read() -> np.ndarray | None:
            # drop buffered frames so the one kept is current (webcams queue a few)
            for _ in range(drop):
                if not cap.grab():
                    return None
            ok, frame = cap.read()
            return frame if ok and frame is not None and frame.size else None

        try:
            return self._bounded(read, "reading a frame", lambda _frame: cap.release())
        except CameraError:
            self._cap = None  # still in use by the stuck read: released when it returns
            raise

    def save(self, frame: np.ndarray, path: Path) -> Path:
        import cv2

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(path, suffix=".png") as tmp:  # imwrite picks PNG by suffix
            if not cv2.imwrite(str(tmp), frame):
                raise CameraError(f"cannot write the captured frame to {path}")
        return path

    def try_open(self) -> bool:
        """Open the camera if it is due for a retry; update the status. Never raises."""
        if not self.enabled or self._cap is not None or time.monotonic() < self.next_retry:
            return self._cap is not None
        with self._lock:
            try:
                self._open()
            except Exception as e:
                self._fail(str(e))
                return False
            self.state, self.error = "ok", None
            log.info("camera %r open", self.shown)
            return True

    def shut(self) -> None:
        """The daemon is stopping: a call waiting on the camera gives up at once."""
        self._closing.set()

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            except Exception:  # releasing a broken capture must not raise
                pass
            self._cap = None
            if self.state == "ok":
                self.state = "closed"
