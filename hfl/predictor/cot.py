"""Structured chain of thought for the landmark predictor (paper Sec. 3.3, App. D.2).

Two things live here:

- ``build_prompt``: the predictor's user prompt (``hfl/prompts/predictor.txt``): the source landmarks as
  grouped JSON on the 512 canvas and the instruction; the answer must follow the four steps and end with
  the grouped JSON of the target.
- ``generate_trace``: the rule-guided generator of CoT traces from (source landmarks, instruction, target
  landmarks), the supervision for ``hfl train predictor``. Step 1 states the source pose (PnP), face size
  and mouth/eye openings; Step 2 decomposes the instruction (``edit_spec``) into the rigid turn and the
  expression; Step 3 splits every group's mean shift into the rigid part (the geometric predictor's pure
  turn of the source) and the non-rigid remainder, in canvas units, and states the identity constraint
  with the measured inter-ocular and nose-bridge lengths; Step 4 gives the target as grouped JSON.
"""

from __future__ import annotations

import numpy as np

from hfl.backends.vlm import load_prompt
from hfl.landmarks import head_pose
from hfl.predictor.edit_spec import EditSpec, parse_instruction
from hfl.predictor.geometric import GeometricPredictor
from hfl.predictor.landmark_json import GROUPS, dumps_grouped

_GROUP_NAMES = {
    "JAW": "jawline (points 0-16)",
    "BROWS": "eyebrows (points 17-26)",
    "NOSE": "nose (points 27-35)",
    "EYES": "eyes (points 36-47)",
    "MOUTH": "mouth (points 48-67)",
}


def build_prompt(src: np.ndarray, instruction: str, template: str | None = None) -> str:
    """Predictor user prompt for source landmarks (512 canvas) and an instruction."""
    tpl = template or load_prompt("predictor")
    return tpl.replace("{landmarks}", dumps_grouped(src)).replace("{instruction}", instruction.strip())


def _dist(p: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def _pose_words(yaw: float, pitch: float) -> str:
    side = (
        "frontal" if abs(yaw) < 8 else f"turned {abs(yaw):.0f}° to the image {'right' if yaw > 0 else 'left'}"
    )
    tilt = "level" if abs(pitch) < 8 else f"tilted {abs(pitch):.0f}° {'up' if pitch > 0 else 'down'}"
    return f"{side}, {tilt}"


def _shift(dx: float, dy: float) -> str:
    h = f"{'right (+X)' if dx > 0 else 'left (-X)'} by about {abs(dx):.0f} units" if abs(dx) >= 1 else ""
    v = f"{'down (+Y)' if dy > 0 else 'up (-Y)'} by about {abs(dy):.0f} units" if abs(dy) >= 1 else ""
    return " and ".join(x for x in (h, v) if x) or "essentially unchanged (under 1 unit)"


def _spec_words(spec: EditSpec) -> list[str]:
    acts = []
    if spec.yaw_deg:
        acts.append(
            f"rigid head rotation (yaw) of {abs(spec.yaw_deg):g}° towards image "
            f"{'right' if spec.yaw_deg > 0 else 'left'}"
        )
    if spec.pitch_deg:
        acts.append(
            f"rigid head rotation (pitch) of {abs(spec.pitch_deg):g}° "
            f"{'up' if spec.pitch_deg > 0 else 'down'}"
        )
    if spec.expression:
        inten = f" ({spec.intensity})" if spec.intensity else ""
        acts.append(f"non-rigid expression change to {spec.expression}{inten}")
    return acts or ["no explicit change: keep the geometry"]


def generate_trace(
    src: np.ndarray, instruction: str, tgt: np.ndarray, src_expression: str | None = None, canvas: int = 512
) -> str:
    """The four-step CoT trace ending with the target's grouped JSON (see the module docstring)."""
    src = np.asarray(src, np.float64).reshape(68, 2)
    tgt = np.asarray(tgt, np.float64).reshape(68, 2)
    spec = parse_instruction(instruction)
    yaw, pitch, roll = head_pose(src, canvas, canvas)
    rigid = GeometricPredictor().predict_spec(src, EditSpec(yaw_deg=spec.yaw_deg, pitch_deg=spec.pitch_deg))
    iod, bridge = _dist(src, 36, 45), _dist(src, 27, 30)
    mouth_open, eye_open = _dist(src, 62, 66), (_dist(src, 37, 41) + _dist(src, 44, 46)) / 2
    cx, cy = src.mean(0)
    lines = [
        "Step 1: Initial State Analysis.",
        f"- Current Pose: {_pose_words(yaw, pitch)} (yaw {yaw:.0f}°, pitch {pitch:.0f}°, roll {roll:.0f}°).",
        f"- Current Expression: {src_expression or 'as seen in the image'}; "
        f"mouth opening {mouth_open:.0f} units,"
        f" mean eye opening {eye_open:.0f} units.",
        f"- The face is centred near ({cx:.0f}, {cy:.0f}) on the 512x512 canvas with inter-ocular distance"
        f" {iod:.0f} units and nose bridge length {bridge:.0f} units.",
        "",
        "Step 2: Instruction Decomposition and Kinematic Analysis.",
        f'- Instruction: "{instruction.strip()}".',
        "- Primary Action(s): " + "; ".join(_spec_words(spec)) + ".",
    ]
    affected = [g for g, (a, b) in GROUPS.items() if np.abs(tgt[a:b] - src[a:b]).mean() >= 1.0]
    lines.append(
        "- Key Facial Parts Affected: " + (", ".join(affected) if affected else "none noticeably") + "."
    )
    lines.append(
        "- Kinematic Chain Reasoning: a head rotation moves every group together, points nearer the camera"
        " (nose tip, chin) more than the jaw corners, and foreshortens the side turning away; an expression"
        " moves only the deformable groups (brows, eyelids, lips, jaw opening) relative to the skull."
    )
    lines += ["", "Step 3: Quantitative Transformation Estimation (in the 512x512 space)."]
    for g, (a, b) in GROUPS.items():
        r = (rigid[a:b] - src[a:b]).mean(0)
        nr = tgt[a:b] - rigid[a:b]
        mag = np.linalg.norm(nr, axis=1)
        k = int(mag.argmax())
        local = (
            f"non-rigid part moves point {a + k} {_shift(*nr[k])} (group mean |shift| {mag.mean():.0f})"
            if mag[k] >= 1.0
            else "no non-rigid change"
        )
        lines.append(f"- {_GROUP_NAMES[g]}: rigid part {_shift(*r)}; {local}.")
    lines.append(
        f"- Identity Constraint: inter-ocular distance {iod:.0f} -> {_dist(tgt, 36, 45):.0f} units and nose"
        f" bridge {bridge:.0f} -> {_dist(tgt, 27, 30):.0f} units change only through the rotation's"
        " foreshortening; deformable areas change shape with the expression; it stays the same person."
    )
    lines += ["", "Step 4: Final Landmark Coordinates.", dumps_grouped(tgt)]
    return "\n".join(lines)
