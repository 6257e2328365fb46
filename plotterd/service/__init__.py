"""The daemon: inbox and webcam intake, the SQLite job store, the optimiser process and the
plotter worker, the HTTP API. See docs/daemon.md.

Entry points::

    cfg = load_config("plotterd.yaml", dry_run=False)   # validated Config (ConfigError(key))
    Daemon(cfg).run_forever()                            # what `plotterd run` does
    Client.from_config(...).get("/jobs")                 # talk to a running daemon

Modules: config, store (JobStore), intake (Inbox, claims), camera, stages (the only calls
into draw / gcode / machine), optimise_worker (the job process), workers, api, daemon,
client, logs, notify.
"""

from __future__ import annotations

from plotterd.service.config import Config, load_config

__all__ = ["Config", "load_config"]
