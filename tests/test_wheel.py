"""plotterd installs like a Python tool: build the wheel, install it into a fresh virtual
environment outside the source tree, and run the CLI from a folder that is not the repo.

Bundled pipelines and firmware profiles must come from the wheel (plotterd/_bundled/), not
from a checkout, and the web page's files must be in it too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
# what a build reads: copied so that the build's own build/ and egg-info never land in the
# checkout others are working in
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "plotterd", "pipelines",
           "firmware_profiles", "samples")

pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, env: dict | None = None, timeout: float = 120):
    r = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"{args} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "_bundled"))
        else:
            shutil.copy2(path, src / name)
    # no build isolation: the build needs setuptools only, which this venv has (offline)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", tmp / "dist", src], cwd=tmp)
    wheels = list((tmp / "dist").glob("plotterd-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _fresh_venv(tmp: Path) -> Path:
    """A new venv that sees this venv's packages through a .pth file: installing torch and
    the rest again would take minutes and need the network. Its own site-packages comes
    first on sys.path, so the plotterd that runs is the wheel's; a .pth file's folder is
    added without running the .pth files inside it, so this venv's editable-install hook
    for plotterd stays out."""
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                cwd=tmp).stdout.strip()
    Path(site, "main-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("plotterd/_bundled/pipelines/tiny.yaml",
                    "plotterd/_bundled/firmware_profiles/grbl-servo.yaml",
                    "plotterd/service/web/static/index.html",
                    "plotterd/service/web/static/app.js",
                    "plotterd/_bundled/samples/camera.png"):  # the demo's picture
        assert shipped in names, f"{shipped} missing from {wheel.name}"

    env_dir = _fresh_venv(tmp_path)
    py = env_dir / "bin" / "python"
    # --ignore-installed: never touch the editable plotterd this venv sees through the .pth
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel],
         cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PLOTTERD_PIPELINES", "PLOTTERD_PROFILES")}
    env["OMP_NUM_THREADS"] = "1"
    where = _run([py, "-c", "import plotterd, plotterd.pipeline as p; "
                  "print(plotterd.__file__); print(p.PIPELINES_DIR)"], cwd=work, env=env)
    module, pipelines = where.stdout.split()
    assert Path(module).is_relative_to(env_dir), module
    assert Path(pipelines) == Path(module).parent / "_bundled" / "pipelines"

    plotterd = env_dir / "bin" / "plotterd"
    profiles = _run([plotterd, "profiles"], cwd=work, env=env).stdout
    assert "grbl-servo" in profiles and "klipper" in profiles
    shutil.copy(DATA / "camera_small.png", work / "photo.png")
    _run([plotterd, "draw", "photo.png", "-p", "tiny", "--iterations", "3", "--device", "cpu",
          "-o", "out"], cwd=work, env=env)
    for made in ("strokes.json", "drawing.svg", "preview.png"):
        assert (work / "out" / made).stat().st_size > 0, made
    jobs = subprocess.run([plotterd, "jobs", "--url", "http://127.0.0.1:9"], cwd=work,
                          env=env, capture_output=True, text=True, timeout=60)
    # the client is part of a plain install: no daemon answers, said in one line
    assert jobs.returncode == 2 and "no plotterd daemon answers" in jobs.stderr, jobs.stderr
    _daemon_serves_its_page(py, plotterd, work, env)
    # the demo runs from the wheel alone: its picture is package data, its folder ./demo
    demo = _run([py, "-m", "plotterd.demo", "--pipeline", "tiny", "--sim-speed", "instant"],
                cwd=work, env=env, timeout=300)
    assert "job 1 done" in demo.stdout, demo.stdout
    assert (work / "demo" / "plotterd.yaml").is_file()


def _daemon_serves_its_page(py: Path, plotterd: Path, work: Path, env: dict) -> None:
    """The installed daemon starts, serves the web page from the package's files, lists the
    bundled pipelines, and takes a picture from the installed ``plotterd submit``."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = work / "plotterd.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(work / "state"), "pipeline": "tiny",
                                      "api": {"port": port}}))
    with open(work / "daemon.log", "wb") as log:  # the child keeps its own copy
        proc = subprocess.Popen([py, "-m", "plotterd.service", "--config", config], cwd=work,
                                env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=5, trust_env=False) as http:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (work / "daemon.log").read_text()
                try:
                    if http.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the installed daemon did not answer"
                time.sleep(0.2)
            page = http.get("/")
            assert page.status_code == 200 and "/static/app.js" in page.text
            assert http.get("/static/app.js").status_code == 200
            names = [p["name"] for p in http.get("/api/pipelines").json()]
            assert "tiny" in names and "lines-blurmse" in names
            _run([plotterd, "submit", "photo.png", "-p", "tiny", "--url", url], cwd=work,
                 env=env)
            listed = _run([plotterd, "jobs", "--url", url], cwd=work, env=env).stdout
            assert "photo.png" in listed, listed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
