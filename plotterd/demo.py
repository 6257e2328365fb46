"""``python -m plotterd.demo``: the daemon in dry-run on a fresh demo state, one picture.

It makes ``./demo/`` (state, inbox, config; gitignored), copies the sample picture
(``samples/inbox/camera.png`` of a checkout; a wheel carries it in ``plotterd/_bundled/``)
into the inbox, starts the real daemon (``python -m plotterd.service``) against the
simulated GRBL plotter, and follows the job through the HTTP API: inbox -> optimising ->
plotting -> done, printing where to look (job folder, preview, the simulated plot's
render, the API). By default it stops the daemon and returns once the job is done;
``--keep`` leaves the daemon running for more files (Ctrl-C stops it).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
MARK = ".plotterd-demo"


def sample_picture() -> Path:
    """The demo's picture: the wheel's copy, else the checkout's samples/."""
    installed = PACKAGE / "_bundled" / "samples" / "camera.png"
    return installed if installed.is_file() else PACKAGE.parent / "samples" / "inbox" / "camera.png"


def _port(preferred: int = 8765) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError("no free port")


def prepare(root: Path, port: int, pipeline: Path | str, sim_speed: str) -> Path:
    """A fresh demo folder; only a folder this demo made is ever removed."""
    if root.exists():
        if not (root / MARK).exists():
            raise SystemExit(f"{root} exists and was not made by the demo: move it away first")
        shutil.rmtree(root)
    (root / "inbox").mkdir(parents=True)
    (root / MARK).write_text("made by python -m plotterd.demo; safe to delete\n")
    shutil.copy(sample_picture(), root / "inbox" / "camera.png")
    config = root / "plotterd.yaml"
    config.write_text(
        "# written by python -m plotterd.demo\n"
        "state_dir: state\n"
        "inbox: inbox\n"
        f"pipeline: {pipeline}\n"
        "plotter: {port: null, paper: auto, sim_speed: '" + sim_speed + "'}\n"
        "optimiser: {threads: 2, checkpoint_every: 25}\n"
        "intake: {stable_s: 0.5, scan_interval_s: 0.5}\n"
        f"api: {{bind: 127.0.0.1, port: {port}}}\n"
    )
    return config


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plotterd.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--keep", action="store_true",
                    help="keep the daemon running after the job (Ctrl-C stops it)")
    ap.add_argument("--once", action="store_true", help="return when the job ends (default)")
    ap.add_argument("--dir", default="demo", help="demo folder (default ./demo)")
    ap.add_argument("--pipeline", default="paper",
                    help="pipeline name or file [default: paper, the daemon's default]")
    ap.add_argument("--sim-speed", default="scaled:100",
                    help="simulated plotter speed: instant | scaled:<factor> | realtime")
    args = ap.parse_args(argv)
    keep = args.keep and not args.once

    from plotterd.service.client import Client, DaemonError

    root = Path(args.dir).absolute()
    port = _port()
    pipeline = Path(args.pipeline)
    config = prepare(root, port, pipeline.absolute() if pipeline.is_file() else args.pipeline,
                     args.sim_speed)
    log_path = root / "daemon.log"
    url = f"http://127.0.0.1:{port}"
    print(f"plotterd demo: state in {root}/state, inbox {root}/inbox, daemon log {log_path}")
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "plotterd.service", "--config", str(config), "--dry-run"],
            stdout=logf, stderr=logf, stdin=subprocess.DEVNULL,
        )
    client = Client(url)
    rc = 1
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                print(f"the daemon exited ({proc.returncode}); see {log_path}:")
                print(log_path.read_text()[-2000:])
                return 1
            try:
                client.get("/health")
                break
            except DaemonError:
                if time.monotonic() > deadline:
                    print(f"the daemon did not answer at {url}; see {log_path}")
                    return 1
                time.sleep(0.3)
        print(f"daemon up: API {url}  (try: curl {url}/jobs ; OpenAPI at {url}/docs)")
        print(f"dropped the sample picture camera.png into {root / 'inbox'}")
        rc = follow(client, url)
        if keep:
            print(f"\nthe daemon keeps running: drop more pictures into {root / 'inbox'} "
                  f"(plotterd jobs --url {url}); Ctrl-C stops it")
            proc.wait()
    except KeyboardInterrupt:
        print("\nstopping")
        rc = 130
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        client.close()
    return rc


def follow(client, url: str) -> int:
    """Print the first job's progress until it ends; 0 if done."""
    jid = None
    state = None
    t0 = time.monotonic()
    while True:
        jobs = client.get("/jobs")
        if jobs:
            job = client.get(f"/jobs/{jid or jobs[-1]['id']}")
            jid = job["id"]
            p = job["progress"]
            info = p.get("info") or {}
            line = (f"job {jid}: {job['state']:<11} {p['stage'] or '':<9} "
                    f"{100 * p['fraction']:5.1f}%")
            if isinstance(info.get("loss"), (int, float)):
                line += f"  loss {info['loss']:.4f}"
            if isinstance(info.get("eta_s"), (int, float)):
                line += f"  eta {info['eta_s']:.0f}s"
            if job["state"] != state and state is not None:
                sys.stdout.write("\n")
            state = job["state"]
            sys.stdout.write("\r" + line + " " * 10)
            sys.stdout.flush()
            if state in ("done", "failed", "cancelled", "interrupted"):
                break
        time.sleep(0.5)
    print()
    job = client.get(f"/jobs/{jid}")
    print(f"job {jid} {job['state']} after {time.monotonic() - t0:.0f}s"
          + (f": {job['error']}" if job["error"] else ""))
    print(f"  job folder   {job['dir']}")
    files = job["files"]
    for name, label in (("preview", "preview"), ("svg", "drawing"), ("gcode", "G-code"),
                        ("render", "plot render")):
        if name in files:
            print(f"  {label:<12} {files[name]}")
    print(f"  API          {url}/jobs/{jid}")
    return 0 if job["state"] == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
