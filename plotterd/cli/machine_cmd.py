"""`plotterd plot` (stream a .gcode file to a plotter or a simulator) and `plotterd sim`
(serve a simulated plotter on a pseudo-terminal)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click
from tqdm import tqdm


@click.command()
@click.argument("gcode", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--port", required=True,
              help="Serial device (/dev/ttyUSB0, /dev/serial/by-id/...) or pyserial URL "
                   "(sim://grbl?speed=scaled:20).")
@click.option("--firmware", type=click.Choice(["grbl", "marlin"]), default=None,
              help="Protocol [default: from the G-code header, else grbl].")
@click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True)
@click.option("--render", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With a sim:// port: write what was drawn to this PNG (and an SVG).")
@click.option("--start-stroke", type=click.IntRange(min=0), default=None,
              help="Resume: re-initialise, lift the pen, and draw from this stroke on.")
def plot(gcode: Path, port: str, firmware: str | None, baud: int, render: Path | None,
         start_stroke: int | None) -> None:
    """Stream GCODE to the plotter on PORT. Ctrl-C stops safely (pen up); a second Ctrl-C
    aborts at once."""
    from plotterd.gcode.program import Program
    from plotterd.machine import StreamControl, stream

    program = Program.load(gcode)
    control = StreamControl()
    bars: list[tqdm] = []

    def progress(p) -> None:
        if not bars:
            bars.append(tqdm(total=p.total, unit="line", desc="plot", dynamic_ncols=True))
        bar = bars[0]
        bar.update(int(p.done) - bar.n)
        bar.set_postfix(acked=p.info.get("acked"), stroke=p.info.get("stroke"),
                        state=p.info.get("state"), refresh=False)

    def on_sigint(signum, frame) -> None:
        if control.cancel_requested:
            raise KeyboardInterrupt
        click.echo("\nstopping safely (pen up); Ctrl-C again to abort", err=True)
        control.cancel()

    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = stream(program, port, firmware=firmware, baudrate=baud,
                        start_stroke=start_stroke, progress=progress, control=control,
                        render_to=render)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
        for bar in bars:
            bar.close()
    click.echo(f"{result.status}: {result.lines_executed}/{result.total_lines} lines run, "
               f"{result.lines_acked} acknowledged, last completed stroke "
               f"{result.last_completed_stroke}, {result.elapsed_s:.1f} s"
               + (f", {result.resumes} automatic resume(s)" if result.resumes else ""))
    if result.error:
        click.echo(f"error: {result.error}", err=True)
    if result.resume_stroke is not None and result.status != "done":
        click.echo(f"to resume: plotterd plot {gcode} --port {port} "
                   f"--start-stroke {result.resume_stroke}")
    for path in result.renders:
        click.echo(f"render: {path}")
    if result.status != "done":
        raise SystemExit(1)


@click.command()
@click.option("--firmware", type=click.Choice(["grbl", "marlin"]), default="grbl",
              show_default=True)
@click.option("--speed", default="realtime", show_default=True,
              help="realtime, scaled:<factor> or instant.")
@click.option("--faults", default="", help="Fault injection, e.g. drop_ok@120,reset@800.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--options", default="",
              help="More sim:// URL options, e.g. 'bounds=0,0,300,200&pen=z'.")
@click.option("--render", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="On exit, write what was drawn to this PNG (and an SVG).")
def sim(firmware: str, speed: str, faults: str, seed: int, options: str,
        render: Path | None) -> None:
    """Serve a simulated plotter on a pseudo-terminal and print its path; runs until Ctrl-C."""
    from plotterd.errors import ConfigError
    from plotterd.machine.sim.pty_server import PtyServer

    url = f"sim://{firmware}?speed={speed}&seed={seed}"
    if faults:
        url += f"&faults={faults}"
    if options:
        url += "&" + options.lstrip("&")
    try:
        server = PtyServer(url)
    except ValueError as e:
        raise ConfigError("sim", str(e)) from e
    path = server.start()
    click.echo(path)
    click.echo(f"simulated {firmware} ({speed}) on {path}; Ctrl-C to stop", err=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        click.echo(f"{len(server.sim.segments)} pen-down segments drawn", err=True)
        if render is not None:
            for p in server.sim.render(render):
                click.echo(f"render: {p}", err=True)
