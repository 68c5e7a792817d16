"""The paper's instruction template (Sec. 3.1):

    "Make his/her facial expression {expression-type} {intensity-level} and turn his/her head {angle-degree}."

A clause that does not apply is left out. Without a pronoun the neutral form "their" is used. Head turns
are in whole pose units (30 degrees), directions as seen in the image: yaw > 0 is "right", pitch > 0
is "up"; a turn on both axes reads "30° left and 30° up".
"""

from __future__ import annotations

import re


def angle_phrase(yaw_units: int, pitch_units: int, unit_deg: float = 30.0) -> str | None:
    """ "30° left", "60° right and 30° up", or None when the head does not turn by a whole unit."""
    parts = []
    if yaw_units:
        parts.append(f"{abs(yaw_units) * unit_deg:g}° {'right' if yaw_units > 0 else 'left'}")
    if pitch_units:
        parts.append(f"{abs(pitch_units) * unit_deg:g}° {'up' if pitch_units > 0 else 'down'}")
    return " and ".join(parts) or None


# the reasons undescribed_motion gives, with their human text (caption and pair's prefilter write them)
MOTION_REASONS = {
    "ambiguous_turn": "the head turns by neither about 0 nor about a whole 30-degree unit (e.g. 10-20 deg)",
    "undescribed_tilt": "the head tilts in the image plane (roll) more than the template can leave unsaid",
}


def undescribed_motion(
    yaw_delta: float,
    pitch_delta: float,
    roll_delta: float,
    unit_deg: float = 30.0,
    max_residual_deg: float = 10.0,
    max_roll_deg: float = 15.0,
) -> tuple[str, str] | None:
    """(reason, detail) when the template cannot describe a measured head motion, else None.

    A turn must be about 0 or about a whole unit (|delta - nearest unit| <= max_residual_deg), else
    `ambiguous_turn`; an in-plane tilt change (roll) beyond max_roll_deg has no words in the template:
    `undescribed_tilt`.
    """
    for axis, delta in (("yaw", yaw_delta), ("pitch", pitch_delta)):
        units = int(round(delta / unit_deg))
        residual = abs(delta - units * unit_deg)
        if residual > max_residual_deg:
            near = units * unit_deg
            return (
                "ambiguous_turn",
                f"{axis} {delta:+.1f}° is {residual:.1f}° from {near:+g}° (> {max_residual_deg:g}°)",
            )
    if abs(roll_delta) > max_roll_deg:
        return "undescribed_tilt", f"roll {roll_delta:+.1f}° (> {max_roll_deg:g}°)"
    return None


def build_instruction(
    expression: str | None,
    intensity: str | None,
    yaw_units: int,
    pitch_units: int,
    pronoun: str | None = None,
    unit_deg: float = 30.0,
) -> str | None:
    """The instruction for an edit, or None when neither clause applies."""
    poss = pronoun if pronoun in ("his", "her") else "their"
    clauses = []
    if expression:
        words = f"{expression} {intensity}" if intensity and expression != "neutral" else expression
        clauses.append(f"make {poss} facial expression {words}")
    angle = angle_phrase(yaw_units, pitch_units, unit_deg)
    if angle:
        clauses.append(f"turn {poss} head {angle}")
    if not clauses:
        return None
    text = " and ".join(clauses)
    return text[0].upper() + text[1:] + "."


TEMPLATE_RE = re.compile(
    r"^(?:Make (?P<p1>his|her|their) facial expression "
    r"(?P<expr>neutral|happy|sad|surprised|fearful|disgusted|angry)"
    r"(?: (?P<int>slightly|normally|strongly))?)?"
    r"(?:(?(expr) and turn|Turn) (?P<p2>his|her|their) head (?P<angle>\d+° (?:left|right|up|down)"
    r"(?: and \d+° (?:up|down))?))?\.$"
)


def matches_template(text: str) -> bool:
    """True when `text` is an instance of the template (used by tests and the dataset card checks)."""
    m = TEMPLATE_RE.match(text)
    return bool(m) and bool(m.group("expr") or m.group("angle"))
