"""`plotterd plot` (stream a .gcode file to a plotter or a simulator), `plotterd sim`
(serve a simulated plotter on a pseudo-terminal) and `plotterd machine ...` (ports, pen,
home, jog, origin, motors off, one line)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click
from tqdm import tqdm

from plotterd.errors import ConfigError


@click.command()
@click.argument("gcode", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--port", required=True,
              help="Serial device (/dev/ttyUSB0, /dev/serial/by-id/...) or pyserial URL "
                   "(sim://grbl?speed=scaled:20).")
@click.option("--firmware", type=click.Choice(["grbl", "marlin", "klipper"]), default=None,
              help="Protocol: grbl (character counting), marlin or klipper (numbered lines "
                   "with checksums; Klipper pen changes pause on the host) [default: from "
                   "the G-code header, else grbl].")
@click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True)
@click.option("--render", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="With a sim:// port: write what was drawn to this PNG (and an SVG).")
@click.option("--start-stroke", type=click.IntRange(min=0), default=None,
              help="Resume: re-initialise, lift the pen, and draw from this stroke on. Needs "
                   "a known position: the machine homes, or --origin-here.")
@click.option("--origin-here", is_flag=True,
              help="The pen is at the origin (0, 0) now: trust the position from here.")
@click.option("--profile", default=None,
              help="The machine's firmware profile (name or YAML file): every move, Z "
                   "included, is checked against its bounds, never against the file's "
                   "header. Required for a real port (or --config).")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False),
              default=None,
              help="The daemon's configuration: the profile of its plotter on PORT (or of "
                   "its only plotter), when --profile is not given.")
def plot(gcode: Path, port: str, firmware: str | None, baud: int, render: Path | None,
         start_stroke: int | None, origin_here: bool, profile: str | None,
         config_path: Path | None) -> None:
    """Stream GCODE to the plotter on PORT. Ctrl-C stops safely (pen up); a second Ctrl-C
    aborts at once. At a pen change it waits for Enter."""
    from plotterd.gcode.program import Program
    from plotterd.machine import Plotter, StreamControl

    prof = _machine_profile(port, profile, config_path)
    if prof is not None and firmware is not None and firmware != prof.firmware:
        raise ConfigError("firmware", f"--firmware {firmware}, but profile {prof.name!r} is "
                                      f"for {prof.firmware}")
    program = Program.load(gcode, profile=prof)
    control = StreamControl()
    bars: list[tqdm] = []
    prompted: list[str] = []

    def ask_for_pen(pen: str) -> None:
        click.echo(f"\npen change: load {pen}, then press Enter", err=True)
        sys.stdin.readline()
        control.continue_after_pen_change()

    def progress(p) -> None:
        if control.pen_change_pending and not prompted:
            prompted.append(control.pen or "next pen")
            threading.Thread(target=ask_for_pen, args=(prompted[0],), daemon=True).start()
        elif not control.pen_change_pending:
            prompted.clear()
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
    plotter = Plotter(port, prof or firmware or program.firmware, baudrate=baud,
                      header=program.header)
    try:
        if origin_here:
            plotter.connect()
            plotter.set_origin()
        result = plotter.stream(program, start_stroke, progress, control, render_to=render)
    finally:
        plotter.close()
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
    if result.resume_stroke is not None and result.status != "done" and result.sent:
        how = " (put the pen at the origin first: --origin-here)" if result.position_lost \
            else ""
        click.echo(f"to resume: plotterd plot {gcode} --port {port} "
                   f"--start-stroke {result.resume_stroke}{how}")
    for path in result.renders:
        click.echo(f"render: {path}")
    if result.status != "done":
        raise SystemExit(1)


def _machine_profile(port: str, profile: str | None, config_path: Path | None):
    """The profile a file is checked against: --profile, else the configuration's plotter
    on ``port`` (or its only one). A real port needs one: a file's own header says what it
    was written for, not what the machine is."""
    from plotterd.gcode.profile import load_profile

    if profile is not None:
        return load_profile(profile)
    if config_path is not None:
        from plotterd.service.config import load_config

        plotters = load_config(config_path).plotters
        mine = [pc for pc in plotters if pc.port == port] or \
            (plotters if len(plotters) == 1 else [])
        if not mine:
            raise ConfigError("plotters", f"{config_path}: no plotter on {port}, and more "
                                          "than one configured: give --profile")
        return load_profile(mine[0].profile)
    if not port.lower().startswith("sim://"):
        raise ConfigError("profile", f"plotting to {port} needs the machine's profile "
                                     "(--profile NAME, or --config with its plotter): every "
                                     "move is checked against it, not the file's header")
    return None


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


# ---- plotterd machine ... ----
_PORT = click.option("--port", required=True,
                     help="Serial device (/dev/serial/by-id/... preferred) or pyserial URL.")
_PROFILE = click.option("--profile", default=None,
                        help="Firmware profile (name or YAML file): bounds and pen commands.")
_FIRMWARE = click.option("--firmware", type=click.Choice(["grbl", "marlin", "klipper"]),
                         default=None, help="Without a profile: the protocol [default grbl].")
_BAUD = click.option("--baud", type=click.IntRange(min=1), default=115200, show_default=True)
_ORIGIN = click.option("--from-origin", is_flag=True,
                       help="The pen is at the origin now: set it here first (otherwise the "
                            "position is known only if the machine homes).")


def _connect(port: str, profile: str | None, firmware: str | None, baud: int):
    from plotterd.machine import Plotter

    plotter = Plotter(port, profile or firmware or "grbl", baudrate=baud)
    plotter.connect()
    return plotter


def _show(plotter) -> None:
    st = plotter.refresh()
    pos = "unknown" if st.position is None else f"X{st.position[0]:g} Y{st.position[1]:g}"
    click.echo(f"{st.state}; position {pos}" + (f"; {st.message}" if st.message else ""))


@click.group()
def machine() -> None:
    """Drive the plotter by hand: ports, pen up/down, home, jog, origin, motors off, one
    line. Every move is bounds-checked against the profile. Each command opens the port
    (which resets most Arduino boards); the daemon's API keeps one connection open."""


@machine.command("ports")
def ports() -> None:
    """List serial ports, with their stable /dev/serial/by-id names."""
    from plotterd.machine import list_ports

    found = list_ports()
    if not found:
        click.echo("no serial ports found")
    for p in found:
        also = f" -> {p.tty}" if p.device != p.tty else ""
        click.echo(f"{p.device}{also}  {p.description}  {p.hwid}".rstrip())


@machine.command("pen")
@click.argument("where", type=click.Choice(["up", "down"]))
@_PORT
@_PROFILE
@_BAUD
def pen(where: str, port: str, profile: str | None, baud: int) -> None:
    """Lift or lower the pen with the profile's pen commands."""
    if profile is None:
        raise ConfigError("profile", "pen up/down needs --profile (its pen commands)")
    plotter = _connect(port, profile, None, baud)
    try:
        plotter.pen_down() if where == "down" else plotter.pen_up()
        click.echo(f"pen {where}")
    finally:
        plotter.close()


@machine.command("home")
@_PORT
@_PROFILE
@_FIRMWARE
@_BAUD
def home(port: str, profile: str | None, firmware: str | None, baud: int) -> None:
    """Home the machine ($H / G28)."""
    plotter = _connect(port, profile, firmware, baud)
    try:
        plotter.home()
        _show(plotter)
    finally:
        plotter.close()


@machine.command("jog")
@click.argument("dx", type=float)
@click.argument("dy", type=float)
@_PORT
@_PROFILE
@_BAUD
@_ORIGIN
@click.option("--feed", type=click.FloatRange(min=1), default=None, help="mm/min.")
def jog(dx: float, dy: float, port: str, profile: str | None, baud: int, from_origin: bool,
        feed: float | None) -> None:
    """Move by DX DY mm, bounds-checked from the known position."""
    plotter = _connect(port, profile, None, baud)
    try:
        if from_origin:
            plotter.set_origin()
        x, y = plotter.jog(dx, dy, feed)
        click.echo(f"moved to X{x:g} Y{y:g}")
    finally:
        plotter.close()


@machine.command("origin")
@_PORT
@_PROFILE
@_FIRMWARE
@_BAUD
def origin(port: str, profile: str | None, firmware: str | None, baud: int) -> None:
    """The pen is at the origin: make this (0, 0)."""
    plotter = _connect(port, profile, firmware, baud)
    try:
        plotter.set_origin()
        _show(plotter)
    finally:
        plotter.close()


@machine.command("motors-off")
@_PORT
@_PROFILE
@_FIRMWARE
@_BAUD
def motors_off(port: str, profile: str | None, firmware: str | None, baud: int) -> None:
    """Release the steppers (the position is lost until homing or origin)."""
    plotter = _connect(port, profile, firmware, baud)
    try:
        plotter.motors_off()
        click.echo("motors off: set the origin or home before drawing")
    finally:
        plotter.close()


@machine.command("send")
@click.argument("line")
@_PORT
@_PROFILE
@_FIRMWARE
@_BAUD
@_ORIGIN
def send(line: str, port: str, profile: str | None, firmware: str | None, baud: int,
         from_origin: bool) -> None:
    """Send one LINE and print the answer. Moves are bounds-checked; G92/G10/G53, inches and
    setting writes are refused."""
    plotter = _connect(port, profile, firmware, baud)
    try:
        if from_origin:
            plotter.set_origin()
        for text in plotter.send_now(line):
            click.echo(text)
        click.echo("ok")
    finally:
        plotter.close()
