"""``plotterd run`` (the daemon) and the commands that talk to a running daemon."""

from __future__ import annotations

import time

import click

_client_opts = [
    click.option("--url", envvar="PLOTTERD_URL", help="daemon API URL (default: from config)"),
    click.option("--token", envvar="PLOTTERD_TOKEN", help="API token (env PLOTTERD_TOKEN)"),
    click.option("--config", "config", type=click.Path(dir_okay=False),
                 help="daemon config, for its API address and token"),
]


def client_options(f):
    for opt in reversed(_client_opts):
        f = opt(f)
    return f


_plotter_opt = click.option("--plotter", "plotter", metavar="NAME",
                            help="which plotter (needed when the daemon has several)")


def _client(url, token, config):
    from plotterd.service.client import Client

    return Client.from_config(config, url=url, token=token)


@click.command()
@click.option("--config", "config", type=click.Path(dir_okay=False), help="config YAML")
@click.option("--dry-run", is_flag=True, help="use the simulated plotter whatever the config")
def run(config, dry_run):
    """Run the daemon (inbox, camera, optimiser, plotter, HTTP API) until stopped."""
    from plotterd.service.config import load_config
    from plotterd.service.daemon import run as run_daemon

    run_daemon(load_config(config, dry_run=dry_run))


def _fmt_job(j: dict) -> str:
    p = j["progress"]
    pct = f"{100 * (p['fraction'] or 0):3.0f}%"
    stage = p["stage"] or ""
    err = f"  {j['error']}" if j.get("error") else ""
    on = f"  (on {j['plotter']})" if j.get("plotter") else ""
    return f"{j['id']:>5}  {j['state']:<12} {stage:<10} {pct}  {j['name']}{on}{err}"


def _plotter_line(st: dict) -> str:
    """``plotter: STATE: MESSAGE`` (one plotter), or one such line per plotter, named."""
    many = st.get("plotters") or []
    if len(many) > 1 and "action" not in st:
        return "\n".join(f"plotter {p['name']}: {p['state']}: {p['message']}" for p in many)
    p = st["plotter"]
    name = f" {p['name']}" if len(many) > 1 else ""
    return f"plotter{name}: {p['state']}: {p['message']}"


@click.command()
@click.option("--state", help="only these states (comma-separated)")
@click.option("--limit", default=50, show_default=True)
@client_options
def jobs(state, limit, url, token, config):
    """List the daemon's jobs, newest first (after a line saying what the plotter does)."""
    c = _client(url, token, config)
    params = {"limit": limit, **({"state": state} if state else {})}
    click.echo(_plotter_line(c.status()))
    rows = c.get("/jobs", params=params)
    if not rows:
        click.echo("no jobs")
    for j in rows:
        click.echo(_fmt_job(j))


@click.command()
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="follow the job with a progress bar until it ends")
@click.option("--replot", is_flag=True, help="plot the job again from its first stroke")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON")
@client_options
def job(job_id, wait, replot, as_json, url, token, config):
    """Show one job (progress, artefacts, plot checkpoint)."""
    import json

    c = _client(url, token, config)
    if replot:
        c.post(f"/jobs/{job_id}/replot")
    if wait:
        _follow(c, job_id)
    j = c.get(f"/jobs/{job_id}")
    if as_json:
        click.echo(json.dumps(j, indent=1))
        return
    click.echo(_fmt_job(j))
    click.echo(f"  pipeline: {j['pipeline']}  source: {j['source']}  dir: {j['dir']}")
    plot = j["plot"]
    if plot["last_completed_stroke"] is not None or plot["resume_stroke"] is not None:
        click.echo(f"  plot: last completed stroke {plot['last_completed_stroke']}, "
                   f"resume from {plot['resume_stroke']}")
    for name, link in j["artefacts"].items():
        click.echo(f"  {name:<10} {c.url}{link}")


def _follow(c, job_id: int) -> None:
    ended = ("done", "failed", "cancelled", "interrupted")
    with click.progressbar(length=1000, label=f"job {job_id}", show_eta=False) as bar:
        shown = 0
        stage = None
        while True:
            j = c.get(f"/jobs/{job_id}")
            p = j["progress"]
            if p["stage"] != stage:
                stage = p["stage"]
                bar.label = f"job {job_id} {j['state']} {stage or ''}"
                bar.update(-shown)
                shown = 0
            want = int(1000 * (p["fraction"] or 0))
            bar.update(want - shown)
            shown = want
            if j["state"] in ended:
                break
            time.sleep(0.5)


def _params(plotter):
    return {"params": {"plotter": plotter}} if plotter else {}


@click.command()
@_plotter_opt
@client_options
def pause(plotter, url, token, config):
    """Pause the plotter (the pen lifts; the next job waits); every plotter unless
    --plotter names one."""
    s = _client(url, token, config).post("/plot/pause", **_params(plotter))
    click.echo(f"plotter {plotter + ' ' if plotter else ''}{s['state']}")


@click.command()
@click.argument("job_id", type=int, required=False)
@_plotter_opt
@client_options
def resume(job_id, plotter, url, token, config):
    """Resume the paused plotter(s), or with JOB_ID an interrupted job from its last stroke."""
    c = _client(url, token, config)
    if job_id is None:
        s = c.post("/plot/resume", **_params(plotter))
        click.echo(f"plotter {plotter + ' ' if plotter else ''}{s['state']}")
    else:
        j = c.post(f"/jobs/{job_id}/resume")
        click.echo(f"job {job_id}: resumes from stroke {j['plot']['resume_stroke']}")


@click.command()
@click.argument("job_id", type=int, required=False)
@_plotter_opt
@client_options
def cancel(job_id, plotter, url, token, config):
    """Cancel the current plot (of --plotter), or with JOB_ID any job that has not ended."""
    c = _client(url, token, config)
    r = c.post("/plot/cancel", **_params(plotter)) if job_id is None \
        else c.post(f"/jobs/{job_id}/cancel")
    click.echo(f"job {r['job']}: {r['result']}")


@click.command()
@client_options
def capture(url, token, config):
    """Take a webcam picture and queue it as a job."""
    j = _client(url, token, config).post("/camera/capture")
    click.echo(f"job {j['id']}: queued {j['name']}")


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("-p", "--pipeline", help="pipeline name or path (default: the daemon's)")
@click.option("--options", "options", help="pipeline overrides, YAML/JSON (e.g. 'iterations: 50')")
@click.option("--wait", is_flag=True, help="follow the job with a progress bar until it ends")
@click.option("--plotter", metavar="NAME", help="draw it on this plotter")
@click.option("--tag", "tags", multiple=True, metavar="TAG",
              help="draw it on a plotter with this tag (repeatable: all of them)")
@client_options
def submit(image, pipeline, options, wait, plotter, tags, url, token, config):
    """Send a picture (or an SVG) to the running daemon as a new job."""
    c = _client(url, token, config)
    j = c.submit(image, pipeline=pipeline, options=options, plotter=plotter, tags=tags)
    click.echo(f"job {j['id']}: queued {j['name']}")
    if wait:
        _follow(c, j["id"])
        click.echo(_fmt_job(c.get(f"/jobs/{j['id']}")))


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the status as JSON")
@_plotter_opt
@client_options
def status(as_json, plotter, url, token, config):
    """What each plotter does or waits for (paper, plotter, pen change, origin), and the jobs."""
    import json

    st = _client(url, token, config).status(plotter)
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    many = st.get("plotters") or [{**st["plotter"], "paper": st["paper"]}]
    for p in ([{**st["plotter"], "paper": st["paper"]}] if plotter else many):
        name = f" {p['name']}" if len(many) > 1 else ""
        click.echo(f"plotter{name}: {p['state']}: {p['message']}")
        pos = p["position"]
        where = "unknown" if pos is None else ", ".join(f"{v:g}" for v in pos)
        tags = f", tags {', '.join(p['tags'])}" if p.get("tags") else ""
        click.echo(f"  port {p['port']} ({'connected' if p['connected'] else 'not connected'}), "
                   f"position {where}{'' if p['position_known'] else ' (not known)'}{tags}")
        paper = p["paper"]
        sheet = "fresh sheet" if paper["ready"] else f"sheet used by job {paper['job']}"
        click.echo(f"  paper: {paper['mode']}, {sheet}")
    click.echo("jobs: " + (", ".join(f"{n} {k}" for k, n in sorted(st["jobs"].items()))
                           or "none"))


@click.command("paper-changed")
@_plotter_opt
@client_options
def paper_changed(plotter, url, token, config):
    """Confirm that a fresh sheet is in: the next job may start."""
    st = _client(url, token, config).paper_changed(plotter)
    click.echo(_one_plotter_line(st))


@click.command("pen-continue")
@_plotter_opt
@client_options
def pen_continue(plotter, url, token, config):
    """The pen is changed: the job waiting at its pen change (M0) goes on."""
    st = _client(url, token, config).pen_continue(plotter)
    click.echo(_one_plotter_line(st))


def _one_plotter_line(st: dict) -> str:
    """The line of the plotter a command went to."""
    return _plotter_line({**st, "action": True})


def _machine(url, token, config, action: str, plotter=None, **body) -> None:
    r = _client(url, token, config).machine(action, plotter=plotter, **body)
    resumed = (r.get("result") or {}).get("resumed") if isinstance(r.get("result"), dict) \
        else None
    if resumed:
        click.echo(f"job(s) {', '.join(map(str, resumed))} resume from their stroke")
    click.echo(_one_plotter_line(r))


@click.command()
@_plotter_opt
@client_options
def origin(plotter, url, token, config):
    """Confirm that the pen is at the origin (0, 0); a job interrupted because the position
    was lost resumes from its stroke."""
    _machine(url, token, config, "origin", plotter)


@click.group()
def ctl():
    """The daemon's plotter, between jobs (refused while a job plots; moves bounds-checked).
    The same commands as `plotterd machine`, through the running daemon instead of a port."""


def _ctl_command(name: str, action: str, doc: str):
    @_plotter_opt
    @client_options
    def cmd(plotter, url, token, config):
        _machine(url, token, config, action, plotter)

    cmd.__doc__ = doc
    ctl.command(name)(cmd)


for _name, _doc in (("home", "Home the machine (re-establishes the position)."),
                    ("origin", "Confirm that the pen is at the origin (0, 0)."),
                    ("motors-off", "Switch the stepper motors off (move the head by hand).")):
    _ctl_command(_name, _name, _doc)


@ctl.command()
@click.argument("where", type=click.Choice(["up", "down"]))
@_plotter_opt
@client_options
def pen(where, plotter, url, token, config):
    """Lift (up) or lower (down) the pen, as the profile does."""
    _machine(url, token, config, f"pen-{where}", plotter)


@ctl.command()
@click.argument("dx", type=float)
@click.argument("dy", type=float)
@_plotter_opt
@client_options
def jog(dx, dy, plotter, url, token, config):
    """Move the head by DX, DY mm (refused beyond the machine's bounds)."""
    _machine(url, token, config, "jog", plotter, dx=dx, dy=dy)


@ctl.command()
@click.argument("line")
@_plotter_opt
@client_options
def send(line, plotter, url, token, config):
    """Send one G-code line (moves bounds-checked)."""
    _machine(url, token, config, "send", plotter, line=line)


@ctl.command()
@client_options
def ports(url, token, config):
    """The serial ports the daemon's machine sees."""
    rows = _client(url, token, config).ports()
    if not rows:
        click.echo("no serial ports")
    for p in rows:
        by_id = p.get("by_id")
        click.echo(f"{p.get('device')}  {p.get('description') or ''}"
                   + (f"  ({by_id})" if by_id else ""))
