"""End-to-end on a "real" port: the daemon process, `plotterd sim` serving GRBL on a
pseudo-terminal behind a /dev/serial/by-id-like link that appears and disappears, and the
CLI. Jobs wait for the plotter, then for paper; machine commands go through the daemon."""

from __future__ import annotations

import subprocess

from .daemon_proc import DaemonProc, drop
from .helpers import PLOTTERD, SimPort, wait_for

SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="60mm" height="40mm"
 viewBox="0 0 60 40"><path d="M5 5 L55 5 L55 35 Z" fill="none" stroke="black"/></svg>
"""

def test_waits_for_plotter_then_paper_and_machine_commands(tmp_path):
    port = SimPort(tmp_path / "usb-GRBL_sim-if00")
    d = DaemonProc(tmp_path, plotter={"port": str(port.link), "reconnect_s": 0.2,
                                      "paper": "manual"})
    d.start()

    def cli(*args):
        return subprocess.run([PLOTTERD, *args, "--url", d.url], capture_output=True,
                              text=True, timeout=60)

    def plotter():
        return d.http.get("/api/status").json()["plotter"]

    try:
        assert plotter()["state"] == "disconnected"
        (tmp_path / "a.svg").write_text(SVG)
        drop(tmp_path / "a.svg", d.inbox)
        [first] = wait_for(lambda: [j for j in d.jobs() if j["state"] == "vectorised"], 90,
                           what="the first job's G-code")
        wait_for(lambda: plotter()["state"] == "waiting_for_plotter", 10)
        out = cli("jobs")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("plotter: waiting_for_plotter: waiting for plotter "
                                     f"{port.link}"), out.stdout
        port.plug()
        d.wait_job(first["id"], ["done"], timeout=60)
        assert plotter()["state"] == "waiting_for_paper"
        (tmp_path / "b.svg").write_text(SVG)
        drop(tmp_path / "b.svg", d.inbox)
        second = wait_for(lambda: [j for j in d.jobs() if j["name"] == "b.svg"
                                   and j["state"] == "vectorised"], 90)[0]
        assert "waiting_for_paper" in cli("status").stdout
        assert d.job(second["id"])["state"] == "vectorised"
        out = cli("paper-changed")
        assert out.returncode == 0, out.stderr
        d.wait_job(second["id"], ["done"], timeout=60)
        # machine commands through the daemon, between jobs
        assert cli("origin").returncode == 0
        ok = cli("ctl", "jog", "10", "5")
        assert ok.returncode == 0, ok.stderr
        assert plotter()["position"] == [10, 5]
        far = cli("ctl", "jog", "1000", "0")
        assert far.returncode == 2 and "400" in far.stderr, far.stderr
        assert cli("ctl", "pen", "down").returncode == 0
        assert cli("ctl", "pen", "up").returncode == 0
        assert cli("ctl", "ports").returncode == 0
        idle = cli("pen-continue")
        assert idle.returncode == 2 and "no pen change is waiting" in idle.stderr
        # unplugged: the daemon notices and says so
        port.unplug()
        wait_for(lambda: plotter()["state"] == "disconnected", 20)
    finally:
        port.unplug()
        d.stop()
    # the used sheet is remembered across a restart
    d.start()
    try:
        paper = d.http.get("/api/status").json()["paper"]
        assert paper["ready"] is False and paper["job"] == second["id"], paper
    finally:
        d.stop()
