"""Regenerate the vpype-gcode samples in this folder with vpype-gcode 0.13.0 itself.

    pip install --no-deps --target /tmp/vgcode vpype-gcode==0.13.0
    PYTHONPATH=/tmp/vgcode .venv/bin/python tests/gcode/data/make_vpype_samples.py

Not run by the tests (vpype-gcode is not a dependency); its output is committed. The two
gwrite profiles are what a GRBL servo-plotter user writes into ~/.vpype.toml, after the
example in vpype-gcode's README: absolute with the feed given once at the top, and
relative (G91, from the gcode_relative bundled profile).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import vpype as vp
import vpype_cli

HERE = Path(__file__).parent
CONFIG = r'''
[gwrite.servo_abs]
unit = "mm"
vertical_flip = true
document_start = "G21\nG17\nG90\nM5\nG4 P0.2\nF3000\n"
layer_start = "(Start Layer {layer_id})\n"
segment_first = "G00 X{x:.4f} Y{y:.4f}\nM3 S30\nG4 P0.2\n"
segment = "G01 X{x:.4f} Y{y:.4f}\n"
line_end = "M5\nG4 P0.2\n"
document_end = "M5\nG00 X0.0000 Y0.0000\nM2\n"

[gwrite.servo_rel]
unit = "mm"
vertical_flip = true
document_start = "G21\nG17\nG91\nM5\n"
segment_first = "G00 X{dx:.4f} Y{dy:.4f}\nM3 S30\nG4 P0.2\n"
segment = "G01 X{dx:.4f} Y{dy:.4f} F2500\n"
line_end = "M5\nG4 P0.2\n"
document_end = "M5\nM2\n"
'''


def document() -> vp.Document:
    """On an A5 landscape page (mm): a rectangle X 20..80 Y 30..70, a circle at (120, 60)
    r 25, a zigzag from (30, 100) to (180, 100..120) - 3 lines."""
    mm = vp.convert_length("1mm")
    zig = np.array([30 + 15 * k + 1j * (100 + 20 * (k % 2)) for k in range(11)])
    lines = vp.LineCollection([
        vp.rect(20 * mm, 30 * mm, 60 * mm, 40 * mm),
        vp.circle(120 * mm, 60 * mm, 25 * mm, 0.5 * mm),
        zig * mm,
    ])
    doc = vp.Document(lines)
    doc.page_size = (210 * mm, 148 * mm)
    return doc


def main() -> None:
    cfg = HERE / "vpype_gcode.toml"
    cfg.write_text(CONFIG)
    vp.config_manager.load_config_file(str(cfg))
    for profile in ("servo_abs", "servo_rel"):
        out = HERE / f"vpype_gcode_{profile}.gcode"
        vpype_cli.execute(f"gwrite -p {profile} {out}", document())
        print(out, len(out.read_text().splitlines()), "lines")


if __name__ == "__main__":
    main()
