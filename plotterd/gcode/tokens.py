"""The one G-code tokeniser: comments, line numbers and checksums, and the words of a line.

Everything that reads a G-code line goes through here: the profile checks, the writer, the
interpreter (``plotterd plot``, the stream guard, ``send``), the drivers' line items and both
simulated boards. The firmware-specific parts are how a line reaches the parser:

- GRBL drops every space and comment character as it receives a line and upper-cases it
  (:func:`grbl_line`), so ``X1 0`` is ``X10`` there;
- Marlin and Klipper keep spaces: a word ends at a space, so ``X1 0`` is ``X1``.

Hand-written: G-code readers on PyPI (gcodeparser, pygcode) neither follow GRBL's receive
filter nor report the malformed words a firmware answers with an error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PARAM = re.compile(r"([A-Z_]+)\s*=\s*(\S+)", re.IGNORECASE)
_NUMBER = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+))")
_LINE_NUMBER = re.compile(r"^\s*N\s*(-?\d+)\s*", re.IGNORECASE)
_CHECKSUM = re.compile(r"\*\s*(\d*)\s*$")
GRBL_REALTIME = "?!~"  # GRBL acts on these bytes wherever they arrive, even inside a line


@dataclass(frozen=True)
class Token:
    """One piece of a line: a letter and its number (``number`` None: the letter has none),
    or a character that starts no word (``letter`` "", the character in ``text``)."""

    letter: str
    number: float | None
    text: str
    glued: bool  # right after a letter or '_' (inside a name such as PEN_G20 or SET_SERVO)

    @property
    def word(self) -> bool:
        return bool(self.letter) and self.number is not None


def _uncommented(text: str):
    """The characters of ``text`` outside '(...)' comments, up to a ';' comment."""
    depth = 0
    for ch in text:
        if ch == ";" and depth == 0:
            return
        if ch == "(":
            depth += 1
        elif ch == ")" and depth:
            depth -= 1
        elif depth == 0:
            yield ch


def strip_comment(s: str) -> str:
    """Remove ';' and '(...)' comments and surrounding whitespace."""
    if ";" not in s and "(" not in s:
        return s.strip()
    return "".join(_uncommented(s)).strip()


def grbl_line(text: str) -> str:
    """The line as GRBL's receive filter leaves it (protocol.c): comments, whitespace,
    control characters, block delete '/' and the real-time bytes gone, letters upper-cased."""
    return "".join(ch for ch in _uncommented(text)
                   if ch > " " and ch != "/" and ch not in GRBL_REALTIME).upper()


@dataclass(frozen=True)
class Framed:
    """A line split into its ``N`` line number, body and ``*`` checksum."""

    number: int | None  # None: no line number
    body: str
    checksum: int | None  # None: no '*'; -1: a '*' that ends no checksum
    signed: str  # the text the checksum covers (everything before the '*')


def frame(line: str) -> Framed:
    """Split ``N123 G1 X1*45`` into 123, ``G1 X1`` and 45 (comments already removed)."""
    m = _LINE_NUMBER.match(line)
    number = int(m.group(1)) if m else None
    star = line.rfind("*")
    start = m.end() if m else 0
    if star < 0:
        return Framed(number, line[start:].strip(), None, line)
    cs = _CHECKSUM.match(line, star)
    if cs is None or not cs.group(1):
        # a '*' that ends no checksum: the body keeps all (what follows may be words)
        return Framed(number, line[start:].strip(), -1, line[:star])
    return Framed(number, line[start:star].strip(), int(cs.group(1)), line[:star])


def command(line: str) -> str:
    """A line's command: comments, line number and checksum removed."""
    return frame(strip_comment(line)).body


def scan(text: str) -> list[Token]:
    """Every token of a command, left to right; spaces between tokens and between a letter
    and its number are skipped (GRBL never sees them; Marlin's words end at them)."""
    out: list[Token] = []
    pos, prev = 0, ""
    while pos < len(text):
        c = text[pos]
        if c.isspace():
            pos, prev = pos + 1, ""
            continue
        glued = prev.isalpha() or prev == "_"
        if c.isascii() and c.isalpha():
            m = _NUMBER.match(text, pos + 1)
            if m:
                out.append(Token(c.upper(), float(m.group(1)), text[pos:m.end()], glued))
                pos, prev = m.end(), text[m.end() - 1]
                continue
            out.append(Token(c.upper(), None, c, glued))
        else:
            out.append(Token("", None, c, glued))
        pos, prev = pos + 1, c
    return out


def gcode_words(line: str) -> list[tuple[str, float]]:
    """The (letter, value) words of a command, found anywhere ("G0X10" too) but not inside
    a name (a Klipper macro PEN_G20 holds no G20 word); what is no word is passed over."""
    return [(t.letter, t.number) for t in scan(line) if t.word and not t.glued]  # type: ignore


def xy_target(line: str) -> tuple[float | None, float | None] | None:
    """(X, Y) of a G0/G1 line that moves X or Y (an axis it does not name is None), else
    None."""
    words = gcode_words(line)
    axes = dict(words)
    if any(k == "G" and v in (0.0, 1.0) for k, v in words) and ("X" in axes or "Y" in axes):
        return axes.get("X"), axes.get("Y")
    return None


def named_params(cmd: str) -> dict[str, str]:
    """The NAME=value parameters of an extended command (Klipper's SET_SERVO SERVO=pen
    ANGLE=90), names upper-cased."""
    return {k.upper(): v for k, v in _PARAM.findall(cmd)}
