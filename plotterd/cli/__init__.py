"""The ``plotterd`` command line: thin click commands over the library.

This package is the only place that imports click. Each stage's commands live in their own
module and are registered below; a command only parses options, calls one library entry
point and turns its progress callback into a progress bar.
"""

from __future__ import annotations

import importlib
import sys

import click

from plotterd import __version__
from plotterd.errors import PlotterdError

# module -> names of the click commands it defines
_COMMAND_MODULES = {
    "plotterd.cli.draw_cmd": ["draw"],
    "plotterd.cli.weights_cmd": ["weights"],
    "plotterd.cli.gcode_cmd": ["gcode", "profiles"],
    "plotterd.cli.machine_cmd": ["plot", "sim", "machine"],
    "plotterd.cli.pens_cmd": ["pens"],
    "plotterd.cli.service_cmd": [
        "run", "jobs", "job", "pause", "resume", "cancel", "capture", "submit",
        "status", "paper-changed", "pen-continue", "origin", "ctl",
    ],
}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="plotterd")
def cli() -> None:
    """Turn pictures into pen drawings on a pen plotter."""


def _register() -> None:
    for module_name, names in _COMMAND_MODULES.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:  # that stage's commands are not written yet
                continue
            raise
        for name in names:
            command = getattr(module, name.replace("-", "_"), None)
            if command is not None:
                cli.add_command(command, name)


_register()


def main() -> None:
    """Entry point: a PlotterdError becomes one line on stderr and exit status 2."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except PlotterdError as e:
        click.echo(f"plotterd: error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
