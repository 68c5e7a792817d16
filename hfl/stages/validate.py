"""Stage `validate` (paper Sec. 3.1): keep a synthetic edit only when a validator confirms it.

* Pose (paper Eq. 1): yaw and pitch of the source and of the edit by `validate.pose_estimator` —
  default 3DDFA_V2's regressed camera (`3ddfa-pose`, Euler angles regressed from the pixels as in the
  paper), which does not share the offline geometric generator's 3-D mean face, so the check is not
  circular; PnP of the 68 landmarks on that mean face (`pnp`) is the fallback where it cannot tell. With
  the measured change (dp, dy) = edit - source and the instructed rotation (tp, ty),
      d_theta = sqrt((dp - tp)^2 + (dy - ty)^2)  <=  validate.max_pose_error_deg (paper: 10 degrees),
  else `pose_mismatch`. Expression edits are instructed (0, 0): their head must stay put too
  (`check_pose_of_expression_edits`).
* Expression (expression edits only): offline `fer` — the FER2013 model's top class on the edit must be
  the instructed expression, else `expression_mismatch` (`require_intensity` also demands the intensity
  of FER's probability rule, off by default: a class probability is not an intensity); `vlm` — Qwen2.5-VL
  scores source + edit against the instruction (prompt hfl/prompts/validate_edit.txt), kept at
  >= min_vlm_score, else `expression_mismatch`; no parsable answer: `validator_failed`.
Measured angles, d_theta and scores are written on every row, kept or rejected, and the source face's
identity embedding (`src_embedding`), so `split` groups an edit with its person across videos. Both faces
also get the caption columns (expression, intensity, yaw/pitch/roll), like real pairs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg
from hfl.labels import EXPRESSIONS
from hfl.schema import VALIDATE_SCHEMA
from hfl.stages.identity import face_vector
from hfl.stages.rows import judged_safely, kept_batches, reject

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class ValidateConfig:
    """Section `validate` of the pipeline config (YAML `validate:`, `--set validate.<key>=...`)."""

    max_pose_error_deg: float = 10.0  # Eq. 1: sqrt((dp - tp)^2 + (dy - ty)^2) <= this (paper: 10)
    expression_validator: str = "fer"  # fer (offline FER2013 class must match) | vlm (Qwen2.5-VL score)
    min_vlm_score: float = 0.5  # vlm: edit-vs-instruction score in [0, 1] needed
    require_intensity: bool = False  # fer: also require the instructed intensity (FER's p-rule)
    check_pose_of_expression_edits: bool = True  # Eq. 1 with target 0 on expression edits too
    pose_estimator: str = "3ddfa-pose"  # Eq. 1 angles: 3ddfa-pose (regressed, not the generator's mean face)
    pose_fallback: str = "pnp"  # where the estimator cannot tell ("" = none)


def pose_error(d_pitch: float, d_yaw: float, t_pitch: float, t_yaw: float) -> float:
    """Paper Eq. 1: Euclidean distance of the measured from the instructed (pitch, yaw) rotation."""
    return math.hypot(d_pitch - t_pitch, d_yaw - t_yaw)


def pose_ok(d_pitch: float, d_yaw: float, t_pitch: float, t_yaw: float, max_deg: float = 10.0) -> bool:
    return pose_error(d_pitch, d_yaw, t_pitch, t_yaw) <= max_deg


class VlmEditJudge:
    """Qwen2.5-VL: does Image 2 show `instruction` applied to Image 1? -> score in [0, 1] or None."""

    name = "qwen2.5-vl"

    def __init__(self, vlm: Any) -> None:
        from hfl.backends.vlm import load_prompt

        self.vlm = vlm
        self.template = load_prompt("validate_edit")

    def requests(self, src: np.ndarray, edit: np.ndarray, instruction: str) -> list[Any]:
        from hfl.backends.vlm import VlmRequest, difference_parts

        prompt = self.template.replace("{instruction}", instruction)
        return [VlmRequest(difference_parts(prompt), [src, edit])]

    def score(self, src: np.ndarray, edit: np.ndarray, instruction: str) -> float | None:
        from hfl.backends.vlm import parse_difference

        (answer,) = self.vlm.generate(self.requests(src, edit, instruction))
        return parse_difference(answer)


class ValidateStage(Stage):
    name = "validate"
    inputs = ("synth",)
    outputs = ("pose_error_deg", "expression_score", "vlm_score", "yaw_delta", "pitch_delta")
    schema = VALIDATE_SCHEMA
    description = (
        "keep synthetic edits whose measured pose change (Eq. 1) and expression match the instruction"
    )
    unit_aligned = True
    config_class = ValidateConfig
    reasons = {
        "pose_mismatch": (
            "measured head-pose change differs from the instructed one by more than the Eq. 1 limit"
        ),
        "expression_mismatch": "the expression validator does not see the instructed expression in the edit",
        "validator_failed": "the expression validator (VLM) gave no usable answer",
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.backends.expression import ExpressionBackendConfig, check_expression_backends
        from hfl.config import check_head_pose

        errors: list[str] = []
        v = cfg.validate
        if "synth" not in cfg.stages:
            errors.append("validate: needs `synth` in stages")
        if v.max_pose_error_deg <= 0:
            errors.append("validate.max_pose_error_deg: must be > 0")
        errors += check_head_pose(v.pose_estimator, "validate.pose_estimator")
        if v.pose_fallback:
            errors += check_head_pose(v.pose_fallback, "validate.pose_fallback")
        if v.expression_validator not in ("fer", "vlm"):
            errors.append("validate.expression_validator: one of fer, vlm")
        if not 0 <= v.min_vlm_score <= 1:
            errors.append("validate.min_vlm_score: must be in [0, 1]")
        if v.expression_validator == "vlm":
            from hfl.backends.vlm import check_vlm_weights

            errors += [
                f"backends.expression.vlm: {e}" for e in check_vlm_weights(cfg.backends.expression.vlm)
            ]
        else:
            errors += [
                e.replace("backends.expression.captioner", "validate.expression_validator")
                for e in check_expression_backends(
                    ExpressionBackendConfig(captioner="fer", semantic="fer"), {"captioner"}
                )
            ]
        return errors

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        v = cfg.validate
        rows: dict[str, list[list[Any]]] = {}
        if "validate" in cfg.stages:
            rows["thresholds"] = [
                ["validate", "pose error d_theta (Eq. 1)", f"<= {v.max_pose_error_deg:g}°"],
                ["validate", f"expression ({v.expression_validator})", "instructed class"
                 if v.expression_validator == "fer" else f">= {v.min_vlm_score:g}"],
            ]  # fmt: skip
        if "synth" in cfg.stages:
            pose = f"{v.pose_estimator}, fallback {v.pose_fallback or 'none'} (Eq. 1)"
            rows["backends"] = [
                ["pose validator (validate)", pose],
                ["expression validator (validate)", v.expression_validator],
            ]
        return rows

    def resources(self) -> Resources:
        vlm = self.cfg.backends.expression.vlm
        if self.cfg.validate.expression_validator == "vlm" and (
            vlm.engine == "vllm" or vlm.device.startswith("cuda")
        ):
            return Resources(num_cpus=1, num_gpus=float(vlm.tensor_parallel_size), batch_size=16)
        return Resources(num_cpus=1, batch_size=32)

    def config_section(self) -> dict[str, Any]:
        e = self.cfg.backends.expression
        v = self.cfg.validate
        backend = asdict(e.vlm) if v.expression_validator == "vlm" else {"crop_margin": e.crop_margin}
        return {
            "validate": asdict(v),
            "backend": backend,
            "intensity_bounds": e.intensity_bounds,
            "pose": [self.cfg.validate.pose_estimator, self.cfg.validate.pose_fallback],
            "embedder": self.cfg.backends.face.embedder,
        }

    def thresholds(self) -> dict[str, Any]:
        v = self.cfg.validate
        out: dict[str, Any] = {"pose_error_deg": v.max_pose_error_deg}
        if v.expression_validator == "vlm":
            out["vlm_score"] = v.min_vlm_score
        return out

    def setup(self) -> None:
        from hfl.backends.expression import load_fer
        from hfl.backends.face import load_embedder
        from hfl.backends.headpose import PoseChain

        self.poses = PoseChain([self.cfg.validate.pose_estimator, self.cfg.validate.pose_fallback])
        # the source face's identity embedding, so that `split` links an edit to its person across videos
        self.embedder = load_embedder(self.cfg.backends.face)

        self.fer = load_fer(self.cfg.backends.expression)
        self.fer.load()
        self.judge_vlm: VlmEditJudge | None = None
        if self.cfg.validate.expression_validator == "vlm":
            from hfl.backends.vlm import load_vlm

            self.judge_vlm = VlmEditJudge(load_vlm(self.cfg.backends.expression.vlm))

    @property
    def validator_name(self) -> str:
        pose = self.cfg.validate.pose_estimator
        return f"{pose}+{'qwen2.5-vl' if self.cfg.validate.expression_validator == 'vlm' else 'fer'}"

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        for rows in kept_batches(unit.payload["path"], self.resources().batch_size):
            yield [judged_safely(self.judge, r) for r in rows]

    def judge(self, row: dict[str, Any]) -> dict[str, Any]:
        v = self.cfg.validate
        row["validator"] = self.validator_name
        images = {}
        for prefix in ("src", "tgt"):
            images[prefix] = decode_jpeg(row[f"{prefix}_image"])
            if prefix == "src":
                vec = face_vector(self.embedder, images["src"], row["src_box"], row["src_landmarks"])
                row["src_embedding"] = vec.tolist()
            yaw, pitch, roll = self.poses.require(
                images[prefix], row[f"{prefix}_box"], row[f"{prefix}_landmarks"]
            )[0]
            row.update({f"{prefix}_yaw": yaw, f"{prefix}_pitch": pitch, f"{prefix}_roll": roll})
            cap = self.fer.caption(images[prefix], row[f"{prefix}_box"])
            row[f"{prefix}_expression"], row[f"{prefix}_intensity"] = cap.expression, cap.intensity
            row[f"{prefix}_expression_conf"] = cap.confidence
            if prefix == "tgt":
                probs = self.fer.probabilities(images[prefix], row["tgt_box"])
        row["caption_backend"] = "fer"
        row["yaw_delta"] = row["tgt_yaw"] - row["src_yaw"]
        row["pitch_delta"] = row["tgt_pitch"] - row["src_pitch"]
        t_pitch, t_yaw = row.get("target_pitch_deg") or 0.0, row.get("target_yaw_deg") or 0.0
        err = pose_error(row["pitch_delta"], row["yaw_delta"], t_pitch, t_yaw)
        row["pose_error_deg"] = err
        is_expr = row.get("edit_kind") == "expression"
        if is_expr:
            row["expression_score"] = float(probs[EXPRESSIONS.index(row["edit_expression"])])
        if (not is_expr or v.check_pose_of_expression_edits) and err > v.max_pose_error_deg:
            return reject(
                row,
                "pose_mismatch",
                f"d_theta={err:.1f}° > {v.max_pose_error_deg:g}° (measured yaw {row['yaw_delta']:+.1f}°, "
                f"pitch {row['pitch_delta']:+.1f}°; instructed yaw {t_yaw:+.0f}°, pitch {t_pitch:+.0f}°)",
            )
        if not is_expr:
            return row
        want, want_int = row["edit_expression"], row.get("edit_intensity")
        if self.judge_vlm is not None:
            score = self.judge_vlm.score(images["src"], images["tgt"], row["instruction"])
            if score is None:
                return reject(row, "validator_failed", "the VLM gave no usable score")
            row["vlm_score"] = score
            if score < v.min_vlm_score:
                return reject(row, "expression_mismatch", f"vlm_score={score:.2f} < {v.min_vlm_score:g}")
            return row
        got, got_int = row["tgt_expression"], row["tgt_intensity"]
        if got != want or (v.require_intensity and want_int and got_int != want_int):
            return reject(
                row,
                "expression_mismatch",
                f"fer reads {got} {got_int or ''} (p={row['tgt_expression_conf']:.2f}); instructed {want} "
                f"{want_int or ''} (p={row['expression_score']:.2f})",
            )
        return row
