"""Stage `caption` (paper Sec. 3.1, App. B.2): expression type + intensity of both faces, head-pose change,
and the instruction from the paper's template (hfl.instructions).

Head pose: yaw/pitch/roll of each face from its 68 landmarks by PnP against insightface's 3-D mean face
(hfl.landmarks.head_pose); the deltas are rounded to whole 30-degree units. The paper measures the
turn with optical-flow angles instead; the landmark pose is used here because it is per image, so the
same numbers describe synthetic pairs too.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.instructions import build_instruction
from hfl.landmarks import head_pose, pose_units
from hfl.schema import CAPTION_SCHEMA
from hfl.stages.rows import judged_safely, kept_batches, reject


class CaptionStage(Stage):
    name = "caption"
    inputs = ("identity",)
    outputs = ("src_expression", "tgt_expression", "yaw_delta", "pitch_delta", "instruction")
    schema = CAPTION_SCHEMA
    description = "expression + intensity of both faces, 30-degree head-turn units, template instruction"
    unit_aligned = True

    def resources(self) -> Resources:
        from hfl.stages.models import vlm_resources

        return vlm_resources(self.cfg.backends.expression, "captioner", 32)

    def config_section(self) -> dict[str, Any]:
        e = self.cfg.backends.expression
        backend = asdict(e.vlm) if e.captioner == "vlm" else {"crop_margin": e.crop_margin}
        return {
            "caption": asdict(self.cfg.caption),
            "captioner": e.captioner,
            "captioner_backend": backend,
            "intensity_bounds": e.intensity_bounds,
        }

    def thresholds(self) -> dict[str, Any]:
        return {"pose_unit_deg": self.cfg.caption.pose_unit_deg}

    def setup(self) -> None:
        from hfl.stages.models import load_captioner

        self.captioner = load_captioner(self.cfg.backends.expression)

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            yield [judged_safely(self.judge, r) for r in rows]

    def judge(self, row: dict[str, Any]) -> dict[str, Any]:
        c = self.cfg.caption
        row["caption_backend"] = self.captioner.name
        caps = {}
        for prefix in ("src", "tgt"):
            image = decode_jpeg(row[f"{prefix}_image"])
            cap = self.captioner.caption(image, row[f"{prefix}_box"])
            if cap is None:
                return reject(row, "caption_failed", f"the captioner gave no usable answer for {prefix}")
            caps[prefix] = cap
            row[f"{prefix}_expression"] = cap.expression
            row[f"{prefix}_intensity"] = cap.intensity
            row[f"{prefix}_expression_conf"] = cap.confidence
            yaw, pitch, roll = head_pose(
                row[f"{prefix}_landmarks"], row[f"{prefix}_width"], row[f"{prefix}_height"]
            )
            row.update({f"{prefix}_yaw": yaw, f"{prefix}_pitch": pitch, f"{prefix}_roll": roll})
        row["yaw_delta"] = row["tgt_yaw"] - row["src_yaw"]
        row["pitch_delta"] = row["tgt_pitch"] - row["src_pitch"]
        row["yaw_units"] = pose_units(row["yaw_delta"], c.pose_unit_deg)
        row["pitch_units"] = pose_units(row["pitch_delta"], c.pose_unit_deg)
        src, tgt = caps["src"], caps["tgt"]
        changed = (src.expression, src.intensity) != (tgt.expression, tgt.intensity)
        if changed or c.expression_clause == "always":
            row["edit_expression"], row["edit_intensity"] = tgt.expression, tgt.intensity
        pronoun = (src.pronoun or tgt.pronoun) if c.pronoun == "auto" else None
        row["pronoun"] = pronoun
        row["instruction"] = build_instruction(
            row.get("edit_expression"),
            row.get("edit_intensity"),
            row["yaw_units"],
            row["pitch_units"],
            pronoun,
            c.pose_unit_deg,
        )
        if row["instruction"] is None:
            return reject(
                row,
                "no_describable_edit",
                f"same caption ({tgt.expression} {tgt.intensity or ''}) and head turn under one unit "
                f"(yaw {row['yaw_delta']:+.0f}°, pitch {row['pitch_delta']:+.0f}°)",
            )
        return row
