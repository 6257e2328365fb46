(DrawingBotV3 GCode Export - written by hand in its style for plotterd's tests)
(Units: mm, Origin: top-left, Y inverted for a GRBL machine homed at the top)
(Start GCode)
G21 (millimetres)
G90 (absolute)
G0 Z2.5 (pen up)
G0 F5000
G1 F2000
(Layer: 1 - Black - Pen 1)
G0 X30.000 Y-30.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X90.000 Y-30.000
X90.000 Y-90.000
X30.000 Y-90.000
X30.000 Y-30.000
G0 Z2.5 (pen up)
G0 X110.000 Y-40.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X160.000 Y-40.000
X135.000 Y-80.000
X110.000 Y-40.000
G0 Z2.5 (pen up)
(Layer: 2 - Red - Pen 2)
G0 X200.000 Y-60.000
G1 Z0.5 F800 (pen down)
G4 P0.05
G2 X240.000 Y-60.000 I20.000 J0.000 F1500
G2 X200.000 Y-60.000 I-20.000 J0.000
G0 Z2.5 (pen up)
G0 X120.000 Y-180.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X130.000 Y-180.000
X130.000 Y-190.000
G0 Z2.5 (pen up)
G0 X80.000 Y-140.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X90.000 Y-140.000
X90.000 Y-150.000
G0 Z2.5 (pen up)
G0 X40.000 Y-180.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X50.000 Y-180.000
X50.000 Y-190.000
G0 Z2.5 (pen up)
G0 X80.000 Y-220.000
G1 Z0.5 F800 (pen down)
G4 P0.05
X90.000 Y-220.000
X90.000 Y-230.000
G0 Z2.5 (pen up)
(End GCode)
G0 Z2.5
G0 X0 Y0
M2
