"""GRBL 1.1 error and alarm codes with their meanings (from GRBL's doc/csv/*_codes_en_US.csv)."""

from __future__ import annotations

ERRORS: dict[int, str] = {
    1: "Expected command letter: G-code words consist of a letter and a value; the letter "
       "was not found",
    2: "Bad number format: missing the expected G-code word value or the numeric value "
       "format is not valid",
    3: "Invalid statement: the '$' system command was not recognized or supported",
    4: "Value < 0: negative value received for an expected positive value",
    5: "Setting disabled: homing cycle is not enabled via settings",
    6: "Value < 3 usec: minimum step pulse time must be greater than 3 usec",
    7: "EEPROM read fail: using defaults",
    8: "Not idle: the '$' command cannot be used unless GRBL is IDLE",
    9: "G-code lock: G-code commands are locked out during alarm or jog state",
    10: "Homing not enabled: soft limits cannot be enabled without homing also enabled",
    11: "Line overflow: max characters per line exceeded; the line was not executed",
    12: "Step rate > 30kHz: the '$' setting value causes the step rate to exceed the maximum",
    13: "Check Door: safety door detected as opened and door state initiated",
    14: "Line length exceeded: build info or startup line exceeded EEPROM line length limit",
    15: "Travel exceeded: jog target exceeds machine travel; jog command ignored",
    16: "Invalid jog command: jog command with no '=' or contains prohibited g-code",
    17: "Setting disabled: laser mode requires PWM output",
    20: "Unsupported command: unsupported or invalid g-code command found in block",
    21: "Modal group violation: more than one g-code command from same modal group found in "
        "block",
    22: "Undefined feed rate: feed rate has not yet been set or is undefined",
    23: "Invalid gcode ID:23: G-code command in block requires an integer value",
    24: "Invalid gcode ID:24: more than one g-code command that requires axis words found in "
        "block",
    25: "Invalid gcode ID:25: repeated g-code word found in block",
    26: "Invalid gcode ID:26: no axis words found in block for g-code command or current "
        "modal state which requires them",
    27: "Invalid gcode ID:27: line number value is invalid",
    28: "Invalid gcode ID:28: G-code command is missing a required value word",
    29: "Invalid gcode ID:29: G59.x work coordinate systems are not supported",
    30: "Invalid gcode ID:30: G53 only allowed with G0 and G1 motion modes",
    31: "Invalid gcode ID:31: axis words found in block when no command or current modal state "
        "uses them",
    32: "Invalid gcode ID:32: G2 and G3 arcs require at least one in-plane axis word",
    33: "Invalid gcode ID:33: motion command target is invalid",
    34: "Invalid gcode ID:34: arc radius value is invalid",
    35: "Invalid gcode ID:35: G2 and G3 arcs require at least one in-plane offset word",
    36: "Invalid gcode ID:36: unused value words found in block",
    37: "Invalid gcode ID:37: G43.1 dynamic tool length offset is not assigned to configured "
        "tool length axis",
    38: "Invalid gcode ID:38: tool number greater than max supported value",
}

ALARMS: dict[int, str] = {
    1: "Hard limit: a limit switch was triggered; machine position is likely lost due to the "
       "sudden halt; re-homing is highly recommended",
    2: "Soft limit: G-code motion target exceeds machine travel; machine position retained; "
       "alarm may be safely unlocked",
    3: "Abort during cycle: reset while in motion; machine position is likely lost due to the "
       "sudden halt; re-homing is highly recommended",
    4: "Probe fail: probe is not in the expected initial state before starting the probe "
       "cycle",
    5: "Probe fail: probe did not contact the workpiece within the programmed travel",
    6: "Homing fail: the active homing cycle was reset",
    7: "Homing fail: safety door was opened during the homing cycle",
    8: "Homing fail: pull off travel failed to clear the limit switch; try increasing the "
       "pull-off setting or check wiring",
    9: "Homing fail: could not find the limit switch within search distances; try increasing "
       "max travel, decreasing pull-off distance, or check wiring",
    10: "Homing fail: on dual axis machines, could not find the second limit switch for "
        "self-squaring",
}


def error_text(code: int) -> str:
    return f"error:{code} ({ERRORS.get(code, 'unknown error code')})"


def alarm_text(code: int) -> str:
    return f"ALARM:{code} ({ALARMS.get(code, 'unknown alarm code')})"
