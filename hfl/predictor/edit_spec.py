"""Instruction -> edit spec (expression, intensity, yaw, pitch): the paper's template and free text.

The template (``hfl.instructions.TEMPLATE_RE``): "Make his facial expression happy strongly and turn his head
30° left and 30° up." Free text is read with word lists: an expression word ("smile", "frown", "shocked"),
an intensity adverb ("slightly", "very"), and head turns "turn ... <N> degrees left/right/up/down",
"look up", "nod down". Directions are as seen in the image: yaw > 0 is right, pitch > 0 is up. A turn
without a number is one pose unit (30°).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hfl.instructions import TEMPLATE_RE

EXPRESSIONS = ("neutral", "happy", "sad", "surprised", "fearful", "disgusted", "angry")
INTENSITIES = ("slightly", "normally", "strongly")

_EXPRESSION_WORDS = {
    "neutral": "neutral|calm|relaxed|expressionless|blank",
    "happy": "happy|smil\\w*|grin\\w*|joy\\w*|laugh\\w*|cheerful",
    "sad": "sad|unhappy|sorrow\\w*|upset|gloomy|cry\\w*",
    "surprised": "surpris\\w*|astonish\\w*|amazed|shock\\w*",
    "fearful": "fear\\w*|scared|afraid|terrified|frightened",
    "disgusted": "disgust\\w*|grossed",
    "angry": "angry|anger|mad|furious|frown\\w*|annoyed",
}
_INTENSITY_WORDS = {
    "slightly": "slightly|a little|a bit|subtly|mildly|lightly|gently",
    "normally": "normally|moderately",
    "strongly": "strongly|very|extremely|broadly|widely|intensely|a lot|big",
}
_DIR = r"(left|right|up|down|upward|downward|upwards|downwards)"
_ANGLE = re.compile(rf"(\d+(?:\.\d+)?)\s*(?:°|deg\w*)\s*(?:to\s+the\s+)?{_DIR}")
_BARE_TURN = re.compile(rf"\b(?:turn\w*|look\w*|rotat\w*|tilt\w*|nod\w*|face)\b[^.,;]*?\b{_DIR}\b")


@dataclass
class EditSpec:
    """What an instruction asks: expression/intensity (None = keep) and a head turn in degrees."""

    expression: str | None = None
    intensity: str | None = None
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0

    @property
    def is_noop(self) -> bool:
        return self.expression is None and self.yaw_deg == 0 and self.pitch_deg == 0


def _sign(direction: str) -> tuple[str, float]:
    d = direction.removesuffix("s").removesuffix("ward")
    return ("yaw" if d in ("left", "right") else "pitch"), (1.0 if d in ("right", "up") else -1.0)


def _first(text: str, table: dict[str, str]) -> str | None:
    best: tuple[int, str] | None = None
    for key, words in table.items():
        m = re.search(rf"\b(?:{words})\b", text)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), key)
    return best[1] if best else None


def parse_instruction(text: str, unit_deg: float = 30.0) -> EditSpec:
    """Read an instruction (template first, then free text); unknown parts stay at "no change"."""
    spec = EditSpec()
    m = TEMPLATE_RE.match(text.strip())
    if m and (m.group("expr") or m.group("angle")):
        spec.expression, spec.intensity = m.group("expr"), m.group("int")
        if spec.expression and spec.expression != "neutral" and spec.intensity is None:
            spec.intensity = "normally"
        for deg, direction in _ANGLE.findall(m.group("angle") or ""):
            axis, s = _sign(direction)
            setattr(spec, f"{axis}_deg", s * float(deg))
        return spec
    low = text.lower().replace("degrees", "deg").replace("degree", "deg")
    spec.expression = _first(low, _EXPRESSION_WORDS)
    if spec.expression and spec.expression != "neutral":
        spec.intensity = _first(low, _INTENSITY_WORDS) or "normally"
    found = False
    for deg, direction in _ANGLE.findall(low):
        axis, s = _sign(direction)
        setattr(spec, f"{axis}_deg", s * float(deg))
        found = True
    if not found:
        for direction in _BARE_TURN.findall(low):
            axis, s = _sign(direction)
            setattr(spec, f"{axis}_deg", s * unit_deg)
    return spec
