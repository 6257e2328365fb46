"""plotterd: pictures to pen drawings on a gantry pen plotter.

Data flows one way, and the sub-packages follow it:

    draw/     image  -> Strokes        (differentiable rasteriser, losses, optimiser)
    vector/   Strokes or SVG -> vpype Document in page millimetres
    gcode/    Document -> Program      (firmware profiles, bounds-checked G-code)
    machine/  Program -> plotter       (pyserial transport, GRBL/Marlin drivers, simulator)
    service/  the daemon tying them together (inbox, camera, job store, HTTP API)

The core library never imports the CLI (``plotterd.cli``).
"""

__version__ = "0.1.0"
