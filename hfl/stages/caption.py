"""Stage `caption` (paper Sec. 3.1, App. B.2): expression type + intensity of both faces, head-pose change,
and the instruction from the paper's template (hfl.instructions).

Head pose: yaw/pitch/roll of each face by `caption.pose_estimator` (default 3DDFA_V2, a network that does
not share the offline geometric generator's 3-D mean face), falling back to PnP of the 68 landmarks on
insightface's mean face (hfl.landmarks.head_pose) where it cannot tell; the deltas are rounded to whole
30-degree units. The paper measures the turn with optical-flow angles instead; a per-image pose is used
here so that the same numbers describe synthetic pairs too.

An instruction must describe every visible change, so a pair is rejected when
* the two expression models (captioner + `backends.expression.second`) disagree on the target face, whose
  expression the instruction names (`caption.require_agreement: target`; `both` asks it of the source
  too, `none` turns it off): `uncertain_expression`;
* a turn is neither about 0 nor about a whole unit (|delta - nearest unit| > max_turn_residual_deg,
  e.g. 10-20 degrees): `ambiguous_turn`;
* the in-plane tilt changes by more than max_roll_change_deg (the template has no words for roll):
  `undescribed_tilt`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.instructions import MOTION_REASONS, build_instruction, undescribed_motion
from hfl.landmarks import pose_delta, pose_units
from hfl.schema import CAPTION_SCHEMA
from hfl.stages.rows import judged_safely, kept_batches, reject

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class CaptionConfig:
    """Section `caption` of the pipeline config (YAML `caption:`, `--set caption.<key>=...`)."""

    pronoun: str = "auto"  # auto (the captioner's his/her where it gives one, else neutral) | neutral
    pose_unit_deg: float = 30.0  # head-turn unit in degrees (paper: 30)
    expression_clause: str = "changed"  # changed (omit when src and tgt captions agree) | always
    require_agreement: str = "target"  # faces whose two expression models must agree: target | both | none
    pose_estimator: str = "3ddfa-pose"  # head pose: 3ddfa-pose (3DDFA_V2 camera, no BFM) | 3ddfa | pnp
    pose_fallback: str = "pnp"  # used where the estimator cannot tell ("" = reject as caption_failed)
    max_turn_residual_deg: float = 10.0  # |turn - nearest whole unit| above this: ambiguous_turn
    max_roll_change_deg: float = 15.0  # in-plane tilt change above this cannot go unsaid: undescribed_tilt

log = logging.getLogger("hfl")


class CaptionStage(Stage):
    name = "caption"
    inputs = ("identity",)
    outputs = ("src_expression", "tgt_expression", "yaw_delta", "pitch_delta", "instruction")
    schema = CAPTION_SCHEMA
    description = "expression + intensity of both faces, 30-degree head-turn units, template instruction"
    unit_aligned = True
    config_class = CaptionConfig
    reasons = {
        "caption_failed": "the captioner gave no usable answer",
        "uncertain_expression": "the two expression models name different expressions for a face of the pair",
        **MOTION_REASONS,
        "no_describable_edit": (
            "same expression caption and head turn under one 30-degree unit: no instruction"
        ),
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.backends.expression import check_expression_backends
        from hfl.config import check_head_pose

        errors: list[str] = []
        if cfg.caption.pronoun not in ("auto", "neutral"):
            errors.append("caption.pronoun: one of auto, neutral")
        if cfg.caption.expression_clause not in ("changed", "always"):
            errors.append("caption.expression_clause: one of changed, always")
        if cfg.caption.pose_unit_deg <= 0:
            errors.append("caption.pose_unit_deg: must be > 0")
        c = cfg.caption
        if not 0 < c.max_turn_residual_deg <= c.pose_unit_deg / 2:
            errors.append("caption.max_turn_residual_deg: must be in (0, pose_unit_deg / 2]")
        if c.max_roll_change_deg <= 0:
            errors.append("caption.max_roll_change_deg: must be > 0")
        if c.require_agreement not in ("target", "both", "none"):
            errors.append("caption.require_agreement: one of target, both, none")
        errors += check_head_pose(c.pose_estimator, "caption.pose_estimator")
        if c.pose_fallback:
            errors += check_head_pose(c.pose_fallback, "caption.pose_fallback")
        return errors + check_expression_backends(cfg.backends.expression, {"captioner"})

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        return {"thresholds": [["caption", "head-turn unit", f"{cfg.caption.pose_unit_deg:g}°"]]}

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
            "second": e.second,
            "facex_margin": e.facex_margin,
        }

    def thresholds(self) -> dict[str, Any]:
        c = self.cfg.caption
        return {
            "pose_unit_deg": c.pose_unit_deg,
            "max_turn_residual_deg": c.max_turn_residual_deg,
            "max_roll_change_deg": c.max_roll_change_deg,
            "require_agreement": c.require_agreement,
        }

    def setup(self) -> None:
        from hfl.backends.expression import load_second_opinion
        from hfl.backends.headpose import PoseChain
        from hfl.stages.models import load_captioner

        c = self.cfg.caption
        self.captioner = load_captioner(self.cfg.backends.expression)
        self.second = load_second_opinion(self.cfg.backends.expression)
        self.poses = PoseChain([c.pose_estimator, c.pose_fallback])

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            yield self.judge_rows(rows, units=1)

    def run_units(self, units: list[WorkUnit], ctx: StageContext) -> list[list[dict[str, Any]] | Exception]:
        """Several units (a GPU pool's call): their kept rows go to the captioner in calls of batch_size
        rows that may span units; each unit gets back its own rows, in order, as run_unit gives them."""
        size = self.resources().batch_size
        out: list[list[dict[str, Any]] | Exception] = []
        flat: list[tuple[list[dict[str, Any]], dict[str, Any]]] = []  # (its unit's output, row), all units
        for unit in units:
            try:
                rows = [r for batch in kept_batches(unit.payload["path"], size) for r in batch]
            except Exception as exc:  # an unreadable part fails its unit only
                out.append(exc)
                continue
            judged: list[dict[str, Any]] = []
            out.append(judged)
            flat += [(judged, r) for r in rows]
        for start in range(0, len(flat), size):
            chunk = flat[start : start + size]
            n_units = len({id(dest) for dest, _ in chunk})
            for (dest, _), row in zip(chunk, self.judge_rows([r for _, r in chunk], n_units), strict=True):
                dest.append(row)
        return out

    def judge_rows(self, rows: list[dict[str, Any]], units: int) -> list[dict[str, Any]]:
        """Judge rows with one captioner call for all their faces (caption_many: one engine call for a VLM);
        rows whose images do not decode, or all rows when that call fails, fall back to judge's own calls,
        so that a failure is recorded on the row that caused it."""
        faces: list[tuple[int, str, Any, Any]] = []  # (row index, prefix, image, box)
        for k, row in enumerate(rows):
            try:
                decoded = [(k, p, decode_jpeg(row[f"{p}_image"]), row[f"{p}_box"]) for p in ("src", "tgt")]
            except Exception:
                continue
            faces += decoded
        pre: dict[int, dict[str, tuple[Any, Any]]] = {}
        if faces:
            try:
                caps = self.captioner.caption_many([f[2] for f in faces], [f[3] for f in faces])
            except Exception as exc:
                log.warning("[caption] batched captioner call failed (%r); captioning face by face", exc)
                caps = []
            if len(caps) == len(faces):  # else every row asks judge's own call
                for (k, prefix, image, _), cap in zip(faces, caps, strict=True):
                    pre.setdefault(k, {})[prefix] = (image, cap)
        self.model_calls.append((units, len(rows)))
        return [judged_safely(lambda r, k=k: self.judge(r, pre.get(k)), row) for k, row in enumerate(rows)]

    def judge(self, row: dict[str, Any], pre: dict[str, tuple[Any, Any]] | None = None) -> dict[str, Any]:
        """Caption one pair row; pre = {prefix: (decoded image, caption)} from a batched captioner call."""
        c = self.cfg.caption
        row["caption_backend"] = self.captioner.name
        caps = {}
        backends = []
        for prefix in ("src", "tgt"):
            if pre and prefix in pre:
                image, cap = pre[prefix]
            else:
                image = decode_jpeg(row[f"{prefix}_image"])
                cap = self.captioner.caption(image, row[f"{prefix}_box"])
            if cap is None:
                return reject(row, "caption_failed", f"the captioner gave no usable answer for {prefix}")
            caps[prefix] = cap
            row[f"{prefix}_expression"] = cap.expression
            row[f"{prefix}_intensity"] = cap.intensity
            row[f"{prefix}_expression_conf"] = cap.confidence
            if self.second is not None:
                row[f"{prefix}_expression_2"] = self.second.expression(image, row[f"{prefix}_box"])[0]
                row["expression_backend_2"] = self.second.name
            (yaw, pitch, roll), backend = self.poses.require(
                image, row[f"{prefix}_box"], row[f"{prefix}_landmarks"]
            )
            backends.append(backend)
            row.update({f"{prefix}_yaw": yaw, f"{prefix}_pitch": pitch, f"{prefix}_roll": roll})
        row["pose_backend"] = "+".join(dict.fromkeys(backends))
        row["yaw_delta"], row["pitch_delta"], row["roll_delta"] = pose_delta(
            *((row[f"{p}_yaw"], row[f"{p}_pitch"], row[f"{p}_roll"]) for p in ("src", "tgt"))
        )
        row["yaw_units"] = pose_units(row["yaw_delta"], c.pose_unit_deg)
        row["pitch_units"] = pose_units(row["pitch_delta"], c.pose_unit_deg)
        src, tgt = caps["src"], caps["tgt"]
        if self.second is not None and c.require_agreement != "none":
            for prefix in ("src", "tgt") if c.require_agreement == "both" else ("tgt",):
                a, b = row[f"{prefix}_expression"], row[f"{prefix}_expression_2"]
                if a != b:
                    detail = f"{prefix}: {self.captioner.name} {a} vs {self.second.name} {b}"
                    return reject(row, "uncertain_expression", detail)
        problem = undescribed_motion(
            row["yaw_delta"], row["pitch_delta"], row["roll_delta"],
            c.pose_unit_deg, c.max_turn_residual_deg, c.max_roll_change_deg,
        )  # fmt: skip
        if problem is not None:
            return reject(row, *problem)
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
