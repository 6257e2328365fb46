"""``python -m plotterd.service [--config FILE] [--dry-run]``: run the daemon (as
``plotterd run``, without needing click)."""

from __future__ import annotations

import argparse
import sys

from plotterd.errors import PlotterdError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plotterd.service")
    ap.add_argument("--config", help="daemon configuration YAML")
    ap.add_argument("--dry-run", action="store_true", help="use the simulated plotter")
    args = ap.parse_args(argv)
    from plotterd.service.config import load_config
    from plotterd.service.daemon import run

    try:
        run(load_config(args.config, dry_run=args.dry_run))
    except PlotterdError as e:
        print(f"plotterd: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
