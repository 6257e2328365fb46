"""GRBL 1.1h's own firmware code (grbl-sim, from ../shared/firmware/grbl) served on a
pseudo-terminal, for the tests marked ``firmware``.

It is built once per test run by the shared build script into a cache outside the repository
(keyed by the source's content), and never copied into the repository. Where no C compiler
is found the tests are skipped with a message saying so.
"""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import time
import tty
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO.parent / "shared" / "firmware" / "grbl" / "build.sh"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "plotterd-test" / \
    "grbl-sim"
# the README's fast settings (the defaults make a plotter job take hours)
FAST_SETTINGS = {110: 10000, 111: 10000, 112: 1000, 120: 3000, 121: 3000, 122: 400}


def build() -> Path:
    """The grbl-sim executable; pytest.skip (with the reason) when it cannot be built here."""
    if not BUILD.is_file():
        pytest.skip(f"GRBL firmware tests skipped: {BUILD} not found (the shared firmware "
                    "sources sit beside the repository)")
    if shutil.which("cc") is None or shutil.which("make") is None:
        pytest.skip("GRBL firmware tests skipped: no C compiler (cc) or make found; "
                    "./dev installs gcc where it can")
    proc = subprocess.run(["bash", str(BUILD), str(CACHE)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode != 0:
        pytest.fail(f"building grbl-sim failed: {proc.stderr[-2000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


class GrblSimBoard:
    """grbl-sim on a pty: the test opens ``path`` (the pty's tty side) like a USB serial
    device; ``plan()`` is GRBL's planner log (every block it accepted, in order)."""

    def __init__(self, exe: Path, workdir: Path, pinned: bool = True):
        self.exe = exe
        self.pinned = pinned
        self.workdir = workdir
        self.plan_log = workdir / "plan.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> str:
        master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        cmd = [str(self.exe), "-n", "-t", "20", "-b", "/dev/null", "-s", "/dev/null"]
        taskset = shutil.which("taskset")
        if taskset and self.pinned:  # unpinned, on a busy machine, it loses steps (README)
            cpu = sorted(os.sched_getaffinity(0))[-1]
            cmd = [taskset, "-c", str(cpu), *cmd]
        env = {**os.environ, "GRBL_SIM_PLAN_LOG": str(self.plan_log)}
        self._stderr = open(self.workdir / "grbl-sim.stderr", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdin=master, stdout=master, stderr=self._stderr,
                                     cwd=self.workdir, env=env)
        os.close(master)
        return self.path

    def health(self) -> str:
        """Whether grbl-sim still runs (for failure messages)."""
        if self.proc is None:
            return "not started"
        rc = self.proc.poll()
        if rc is None:
            return "running"
        err = (self.workdir / "grbl-sim.stderr").read_text(errors="replace")[-500:]
        return f"grbl-sim exited with status {rc}: {err!r}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # the process this board started, by its handle
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        os.close(self._slave)
        self._stderr.close()

    def plan(self) -> list[str]:
        return self.plan_log.read_text().splitlines() if self.plan_log.exists() else []

    def planned_moves(self) -> list[tuple[float, float, float]]:
        out = []
        for line in self.plan():
            parts = line.split()
            if parts and parts[0] == "P":
                out.append((float(parts[2]), float(parts[3]), float(parts[4])))
        return out

    def wait_plan(self, pred, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while True:
            lines = self.plan()
            if pred(lines):
                return lines
            if time.monotonic() > deadline:
                raise AssertionError(f"planner log never matched; last lines {lines[-5:]}")
            time.sleep(0.05)


# a machine for long jobs: grbl-sim simulates every tick of a 16 MHz AVR and runs at a
# fraction of real time on a busy machine, so a job of thousands of lines must take seconds of
# machine time (coarse steps keep the step rate, and grbl-sim's work, down)
LONG_JOB_SETTINGS = {100: 20, 101: 20, 102: 20, 110: 60000, 111: 60000, 112: 1000,
                     120: 50000, 121: 50000, 122: 400, 11: 0.5}


def fast_profile(draw: float = 6000, travel: float = 10000, dwell: float = 0.02):
    """grbl-servo with short pen dwells and fast feeds: grbl-sim is CPU bound."""
    import yaml

    from plotterd.gcode.profile import bundled_dir, parse_profile

    data = yaml.safe_load((bundled_dir() / "grbl-servo.yaml").read_text())
    data["pen"].update(down_dwell_s=dwell, up_dwell_s=dwell)
    data["feeds"].update(draw=draw, travel=travel)
    return parse_profile(data, "grbl-servo-fast")


def writer_job(strokes: int = 6, seed: int = 0, layers: int = 1, area=(10.0, 25.0)):
    """A real plotterd job: a few short strokes through plotterd's G-code writer."""
    import vpype as vp

    from plotterd.gcode import write_program

    mm = vp.convert_length("1mm")
    doc = vp.Document(page_size=(60 * mm, 60 * mm))
    rng = np.random.default_rng(seed)
    per = max(1, strokes // layers)
    for layer in range(layers):
        lines = []
        for _ in range(per):
            x, y = rng.uniform(*area, 2)
            lines.append(np.array([complex(x + 3 * k, y + (k % 2) * 2) for k in range(4)]) * mm)
        doc.add(vp.LineCollection(lines), layer_id=layer + 1)
        doc.layers[layer + 1].set_property(vp.METADATA_FIELD_NAME, ["black", "red", "blue"][layer])
    return write_program(doc, fast_profile())


def expected_moves(program) -> list[tuple[float, float]]:
    """The XY target of every G0/G1 line of the program, in order."""
    from plotterd.gcode.interpret import Interpreter, PenModel

    it = Interpreter((0.0, 0.0, 1e9, 1e9), "grbl", PenModel("none"), "test")
    it.state.x = it.state.y = 0.0
    out = []
    for n, ln in enumerate(program.lines, 1):
        if it.run(n, ln.text).moved:
            out.append((it.state.x, it.state.y))
    return out


def drawing_job(profile, image: str = "camera.png", levels=(0.3, 0.5, 0.7),
                size_mm: float = 120.0, pixels: int = 96, keep: float = 0.5):
    """A real drawing's G-code: the iso-lines of a photo (contourpy's, matplotlib's contour
    engine, at a few grey levels), simplified to about ``keep`` mm, through plotterd's own
    writer."""
    import contourpy
    import cv2
    import vpype as vp
    from shapely.geometry import LineString

    from plotterd.gcode import write_program
    from plotterd.light import np_srgb_to_luminance

    rgb = cv2.imread(str(REPO.parent / "shared" / "data" / "images" / image))[..., ::-1]
    grey = cv2.resize(np_srgb_to_luminance(rgb / 255.0).astype(np.float64), (pixels, pixels),
                      interpolation=cv2.INTER_AREA)
    iso = contourpy.contour_generator(z=grey)
    mm = vp.convert_length("1mm")
    scale = size_mm / pixels
    lines = []
    for level in levels:
        for c in iso.lines(level):  # (n, 2) of (column, row)
            if len(c) < 4:
                continue
            line = LineString(c * scale + 10.0).simplify(keep * 0.2)
            lines.append(np.array([complex(x, y) for x, y in line.coords]) * mm)
    doc = vp.Document(page_size=((size_mm + 20) * mm, (size_mm + 20) * mm))
    doc.add(vp.LineCollection(lines), layer_id=1)
    return write_program(doc, profile)
