"""Pipeline configuration: one dataclass per section, paper thresholds (App. B.1) as defaults.

YAML files mirror these dataclasses; `--set section.key=value` overrides any leaf. Validation is strict and
happens before any work: unknown keys, wrong types, unreadable inputs and missing weight files are errors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hfl.backends.clip import ClipBackendConfig, check_clip_weights
from hfl.backends.expression import ExpressionBackendConfig, check_expression_backends
from hfl.backends.face import FaceBackendConfig, check_face_weights
from hfl.backends.generator import GeneratorBackendConfig, check_generator
from hfl.backends.quality import QualityBackendConfig, check_quality_weights
from hfl.typedconf import build


class ConfigError(ValueError):
    """The configuration is invalid; the message names every offending key."""


VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclass
class RayConfig:
    address: str = ""  # Ray cluster address; empty = RAY_ADDRESS or an embedded local Ray
    num_cpus: int = 0  # CPUs for an embedded Ray (0 = all cores)
    object_store_mb: int = 512  # object store size of an embedded Ray
    workers: int = 0  # actors per CPU pool (0 = the cluster's CPUs left after the GPU pools)
    num_gpus: int = -1  # GPUs for an embedded Ray (-1 = those detected; >0 declares logical GPUs)
    # per-stage resource overrides, e.g. {caption: {num_gpus: 1}}: keys num_cpus, num_gpus, memory_mb
    stage_resources: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class BackendsConfig:
    face: FaceBackendConfig = field(default_factory=FaceBackendConfig)  # detector, landmarker, embedder
    quality: QualityBackendConfig = field(default_factory=QualityBackendConfig)  # DOVER or BRISQUE
    expression: ExpressionBackendConfig = field(
        default_factory=ExpressionBackendConfig
    )  # captions, semantics
    clip: ClipBackendConfig = field(default_factory=ClipBackendConfig)  # CLIP image embedder (identity)
    generator: GeneratorBackendConfig = field(default_factory=GeneratorBackendConfig)  # synth edit generator


@dataclass
class MineConfig:
    input: str = ""  # folder (searched recursively) or a text file listing one video/image path per line
    fps: float = 2.0  # frames sampled per second of video
    max_frames_per_video: int = 64  # cap per video; beyond it frames are spread evenly over the video
    decoder: str = "auto"  # auto (decord, PyAV where decord fails) | decord | pyav
    jpeg_quality: int = 95  # JPEG quality of stored frames
    track_iou: float = 0.3  # min IoU linking faces of consecutive sampled frames into one track
    include_images: bool = True  # also accept still images (one frame each)
    segment_seconds: float = 0.0  # > 0: a longer (local) video is mined as time segments of this length, one
    # unit each (all cores on one video, resume per segment); pair stitches them per video. 0: one unit/video


@dataclass
class QualityConfig:
    num_faces: int = 1  # exactly this many faces (paper: a single face)
    center_fraction: float = 0.2  # centroid must lie in the central box of this fraction (paper: 20 %)
    center_rule: str = "area"  # area (box with the frame's aspect covering that share of the area) | axis
    min_face_area: float = 0.07  # landmark convex hull / image area (paper: 7 %)
    min_log_blur: float = 50.0  # LoG variance of the face crop at log_size (paper: 50)
    log_size: int = 64  # canonical face-crop side (px) on which LoG is measured
    log_sigma: float = 1.0  # Gaussian sigma (px, at log_size) of the LoG operator
    min_quality: float = 0.5  # quality score in [0,1] (paper: DOVER 0.5)
    quality_clip_frames: int = 1  # frames (this one and its predecessors in the track) scored together
    score_region: str = "auto"  # face (square crop 1.3x the landmark box) | frame | auto (brisque: face,
    # dover: frame, as the paper scores whole videos)


@dataclass
class PairConfig:
    max_frames_per_track: int = 64  # frames of one face track considered (evenly spread beyond it)
    min_change_score: float = 23.0  # Eq. 8 in per mille of inter-ocular distance (paper: >= 23)
    max_change_score: float = 250.0  # above it: implausible (another person, a landmark failure)
    min_semantic_diversity: float = 0.4  # semantic difference in [0, 1] (paper: Qwen2.5-VL >= 0.4)
    max_pairs_per_video: int = 16  # kept pairs per video (per person track of it)
    pairs_per_minute: float = 0.0  # longer videos get more: budget = max(max_pairs_per_video, this x minutes)
    max_uses_per_frame: int = 2  # a frame appears in at most this many kept pairs of its video
    max_semantic_checks: int = 64  # semantic-backend calls per video (bounds VLM cost)
    prefilter_motion: bool = True  # reject candidates whose head motion caption could not describe
    link_tracks: bool = True  # join face tracks of one video that show the same person (identity embedding)
    link_distance: float = 0.5  # mean face-embedding distance under which two tracks are one person
    link_frames: int = 3  # frames per track (spread over it) whose embeddings are averaged for linking


@dataclass
class IdentityConfig:
    decider: str = "face"  # face (embedding distance) | clip (paper: CLIP cosine) | both (both must pass)
    max_face_distance: float = 0.6  # face-embedding distance (dlib: Euclidean, 0.6 is its standard)
    min_clip_identity: float = 0.9  # CLIP image-embedding cosine similarity (paper: >= 0.9)


@dataclass
class CaptionConfig:
    pronoun: str = "auto"  # auto (the captioner's his/her where it gives one, else neutral) | neutral
    pose_unit_deg: float = 30.0  # head-turn unit in degrees (paper: 30)
    expression_clause: str = "changed"  # changed (omit when src and tgt captions agree) | always
    require_agreement: str = "target"  # faces whose two expression models must agree: target | both | none
    pose_estimator: str = "3ddfa-pose"  # head pose: 3ddfa-pose (3DDFA_V2 camera, no BFM) | 3ddfa | pnp
    pose_fallback: str = "pnp"  # used where the estimator cannot tell ("" = reject as caption_failed)
    max_turn_residual_deg: float = 10.0  # |turn - nearest whole unit| above this: ambiguous_turn
    max_roll_change_deg: float = 15.0  # in-plane tilt change above this cannot go unsaid: undescribed_tilt


@dataclass
class SynthConfig:
    input: str = ""  # empty: kept frames of `quality`; else a folder of face images (searched recursively)
    sources: str = "all"  # all (every video's kept frames) | paired (only videos with a kept real pair, whose
    # person is identity-verified, so `split` can group the edits with that person)
    folder_chunk: int = 16  # images per work unit when `input` is a folder
    edits_per_video: int = 6  # source frames per video (or image), chosen spread over landmark shapes
    edits_per_frame: int = 1  # edits drawn per chosen source frame (each its own single-turn edit)
    expression_fraction: float = 0.5  # share of expression edits; the rest are head turns
    yaw_fraction: float = 0.5  # share of yaw (vs pitch) among head turns
    yaw_units: list[int] = field(default_factory=lambda: [-1, 1])  # allowed yaw turns, 30-degree units
    pitch_units: list[int] = field(default_factory=lambda: [-1, 1])  # allowed pitch turns, 30-degree units
    max_abs_yaw_deg: float = 45.0  # no turn that takes the source face beyond this yaw
    max_abs_pitch_deg: float = 35.0  # no turn that takes the source face beyond this pitch
    jpeg_quality: int = 95  # JPEG quality of stored edits


@dataclass
class ValidateConfig:
    max_pose_error_deg: float = 10.0  # Eq. 1: sqrt((dp - tp)^2 + (dy - ty)^2) <= this (paper: 10)
    expression_validator: str = "fer"  # fer (offline FER2013 class must match) | vlm (Qwen2.5-VL score)
    min_vlm_score: float = 0.5  # vlm: edit-vs-instruction score in [0, 1] needed
    require_intensity: bool = False  # fer: also require the instructed intensity (FER's p-rule)
    check_pose_of_expression_edits: bool = True  # Eq. 1 with target 0 on expression edits too
    pose_estimator: str = "3ddfa-pose"  # Eq. 1 angles: 3ddfa-pose (regressed, not the generator's mean face)
    pose_fallback: str = "pnp"  # where the estimator cannot tell ("" = none)


@dataclass
class SplitConfig:
    test_pairs: int = 1007  # test-set size at full scale (paper: 1,007)
    test_fraction: float = 0.0067  # test share when that gives fewer pairs than test_pairs (1007/151007)
    group_by: str = "identity"  # identity (videos linked by face embedding) | video
    link_distance: float = 0.5  # videos whose mean face embeddings are closer than this are one person
    min_test_groups: int = 1  # with >= 2 groups, at least this many (0 or 1) in test, even in small builds
    inputs: list[str] = field(default_factory=list)  # stages whose kept rows are split; empty: caption
    # and validate, those of them in `stages`


@dataclass
class ShardConfig:
    source: str = ""  # stage whose kept rows become samples; empty = the stage before `shard` in `stages`
    samples_per_shard: int = 1000  # samples per tar
    default_split: str = "all"  # split name for rows without a `split` column


@dataclass
class PipelineConfig:
    name: str = "hfl"  # pipeline name (shown in reports)
    stages: list[str] = field(default_factory=lambda: ["mine", "quality", "shard"])  # stage order
    seed: int = 0  # seed for anything random
    ray: RayConfig = field(default_factory=RayConfig)  # execution engine
    backends: BackendsConfig = field(default_factory=BackendsConfig)  # model backends
    mine: MineConfig = field(default_factory=MineConfig)  # frame mining
    quality: QualityConfig = field(default_factory=QualityConfig)  # quality filters
    pair: PairConfig = field(default_factory=PairConfig)  # landmark/semantic diversity pairing
    identity: IdentityConfig = field(default_factory=IdentityConfig)  # cross-frame identity verification
    caption: CaptionConfig = field(default_factory=CaptionConfig)  # captions -> instructions
    synth: SynthConfig = field(default_factory=SynthConfig)  # synthetic edits (generator, sampler)
    validate: ValidateConfig = field(default_factory=ValidateConfig)  # pose (Eq. 1) / expression checks
    split: SplitConfig = field(default_factory=SplitConfig)  # stratified train/test split
    shard: ShardConfig = field(default_factory=ShardConfig)  # WebDataset shards


# -------------------------------------------------------- overrides (dict -> dataclass: hfl.typedconf)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. quality.min_log_blur=40")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML scalars) to a nested dict."""
    for item in overrides:
        keys, value = _parse_override(item)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{k}' is not a section")
        node[keys[-1]] = value
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_hash(obj: Any) -> str:
    """Stable short hash of any JSON-able structure (dataclasses included)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> PipelineConfig:
    """Read YAML, apply overrides, type-check every key; raise ConfigError listing all problems."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        base = p.parent
        # relative input paths in a config file are relative to the file's folder
        mine = data.get("mine")
        if isinstance(mine, dict) and isinstance(mine.get("input"), str) and mine["input"]:
            mine["input"] = _resolve(mine["input"], base)
    data = apply_overrides(data, overrides or [])
    errors: list[str] = []
    cfg = build(PipelineConfig, data, "", errors)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    return cfg


def _resolve(value: str, base: Path) -> str:
    """Expand `pkg:<module>/<relpath>` (a file shipped in an installed package) and relative paths."""
    if value.startswith(("pkg:", "corpus:")) or "://" in value:
        return value  # resolved by hfl.inputs at validation time; URLs (s3://, file://) are absolute
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def check_head_pose(name: str, key: str) -> list[str]:
    """Problems with a head-pose estimator name and its files, without loading it."""
    from hfl.backends.headpose import HEAD_POSE_ESTIMATORS, head_pose_problems

    if name not in HEAD_POSE_ESTIMATORS:
        return [f"{key}: one of {', '.join(HEAD_POSE_ESTIMATORS)}"]
    return [f"{key}: {e}" for e in head_pose_problems(name)]


def validate(cfg: PipelineConfig, stages: list[str]) -> None:
    """Semantic checks before any work: inputs readable, weights present, values in range."""
    from hfl.inputs import resolve_input_path
    from hfl.stages import STAGES

    errors: list[str] = []
    for name in cfg.stages:
        if name not in STAGES:
            errors.append(f"stages: unknown stage '{name}' (known: {', '.join(STAGES)})")
    for name in stages:
        if name not in cfg.stages:
            errors.append(f"--stage {name}: not in this pipeline's stages ({', '.join(cfg.stages)})")
    if "mine" in stages:
        if not cfg.mine.input:
            errors.append("mine.input: required (a folder of videos or a list file)")
        else:
            try:
                resolve_input_path(cfg.mine.input)
            except (FileNotFoundError, PermissionError, ValueError) as exc:
                errors.append(f"mine.input: {exc}")
        if cfg.mine.fps <= 0:
            errors.append("mine.fps: must be > 0")
        if cfg.mine.max_frames_per_video < 1:
            errors.append("mine.max_frames_per_video: must be >= 1")
        seg = cfg.mine.segment_seconds
        if seg < 0 or (seg > 0 and cfg.mine.fps > 0 and seg < 1.0 / cfg.mine.fps):
            errors.append("mine.segment_seconds: 0 (off) or at least one sampling step (1 / mine.fps s)")
        if cfg.mine.decoder not in ("auto", "decord", "pyav"):
            errors.append("mine.decoder: one of auto, decord, pyav")
        if not 1 <= cfg.mine.jpeg_quality <= 100:
            errors.append("mine.jpeg_quality: must be in 1..100")
    if "quality" in stages:
        q = cfg.quality
        if not 0 < q.center_fraction <= 1:
            errors.append("quality.center_fraction: must be in (0, 1]")
        if q.center_rule not in ("area", "axis"):
            errors.append("quality.center_rule: one of area, axis")
        if not 0 <= q.min_face_area <= 1:
            errors.append("quality.min_face_area: must be in [0, 1]")
        if q.log_size < 16:
            errors.append("quality.log_size: must be >= 16")
        if q.score_region not in ("auto", "face", "frame"):
            errors.append("quality.score_region: one of auto, face, frame")
        if q.quality_clip_frames < 1:
            errors.append("quality.quality_clip_frames: must be >= 1")
        errors += check_quality_weights(cfg.backends.quality)
    if "mine" in stages:
        errors += check_face_weights(cfg.backends.face)
    if "pair" in stages:
        p = cfg.pair
        if not 0 <= p.min_change_score < p.max_change_score:
            errors.append("pair.min_change_score/max_change_score: need 0 <= min < max")
        if not 0 <= p.min_semantic_diversity <= 1:
            errors.append("pair.min_semantic_diversity: must be in [0, 1]")
        if p.pairs_per_minute < 0:
            errors.append("pair.pairs_per_minute: must be >= 0")
        if p.link_distance <= 0:
            errors.append("pair.link_distance: must be > 0")
        counts = ("max_frames_per_track", "max_pairs_per_video", "max_uses_per_frame", "max_semantic_checks")
        for k in (*counts, "link_frames"):
            if getattr(p, k) < 1:
                errors.append(f"pair.{k}: must be >= 1")
        errors += check_expression_backends(cfg.backends.expression, {"semantic"})
        if p.link_tracks and "mine" not in stages:
            errors += check_face_weights(cfg.backends.face)
        if p.prefilter_motion:
            key = "caption.pose_estimator (pair.prefilter_motion)"
            errors += check_head_pose(cfg.caption.pose_estimator, key)
    if "identity" in stages:
        if cfg.identity.decider not in ("face", "clip", "both"):
            errors.append("identity.decider: one of face, clip, both")
        if cfg.identity.decider in ("clip", "both") and not cfg.backends.clip.path:
            errors.append("backends.clip.path: required when identity.decider uses clip")
        if cfg.backends.clip.path:
            errors += [f"backends.clip: {e}" for e in check_clip_weights(cfg.backends.clip)]
        if "mine" not in stages:
            errors += check_face_weights(cfg.backends.face)
    if "caption" in stages:
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
        errors += check_expression_backends(cfg.backends.expression, {"captioner"})
    if "synth" in stages:
        sy = cfg.synth
        if sy.input:
            p = Path(sy.input)
            if not p.is_dir():
                errors.append(f"synth.input: {sy.input} is not a folder")
        elif "quality" not in cfg.stages:
            errors.append("synth.input: required when the pipeline has no `quality` stage")
        if sy.sources not in ("all", "paired"):
            errors.append("synth.sources: one of all, paired")
        elif sy.sources == "paired" and not sy.input and "caption" not in cfg.stages:
            errors.append("synth.sources: paired needs `caption` in stages")
        if min(sy.folder_chunk, sy.edits_per_video, sy.edits_per_frame) < 1:
            errors.append("synth.folder_chunk, synth.edits_per_video, synth.edits_per_frame: must be >= 1")
        for k in ("expression_fraction", "yaw_fraction"):
            if not 0 <= getattr(sy, k) <= 1:
                errors.append(f"synth.{k}: must be in [0, 1]")
        if any(u == 0 or abs(u) > 4 for u in sy.yaw_units + sy.pitch_units):
            errors.append("synth.yaw_units/pitch_units: non-zero whole units in -4..4")
        if sy.expression_fraction < 1 and not (sy.yaw_units or sy.pitch_units):
            errors.append("synth.yaw_units/pitch_units: at least one turn when expression_fraction < 1")
        if not 1 <= sy.jpeg_quality <= 100:
            errors.append("synth.jpeg_quality: must be in 1..100")
        if sy.max_abs_yaw_deg <= 0 or sy.max_abs_pitch_deg <= 0:
            errors.append("synth.max_abs_yaw_deg/max_abs_pitch_deg: must be > 0")
        errors += check_generator(cfg.backends.generator)
        errors += check_face_weights(cfg.backends.face)
    if "validate" in stages:
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
    if "split" in stages:
        sp = cfg.split
        for name in sp.inputs:
            if name not in cfg.stages:
                errors.append(f"split.inputs: '{name}' is not one of this pipeline's stages")
        if sp.group_by not in ("identity", "video"):
            errors.append("split.group_by: one of identity, video")
        if sp.min_test_groups not in (0, 1):
            errors.append("split.min_test_groups: 0 or 1")
        if not 0 <= sp.test_fraction < 1 or sp.test_pairs < 0:
            errors.append("split.test_fraction: must be in [0, 1); split.test_pairs: >= 0")
    if "shard" in stages and cfg.shard.source and cfg.shard.source not in cfg.stages:
        errors.append(f"shard.source: '{cfg.shard.source}' is not one of this pipeline's stages")
    if "shard" in stages and cfg.shard.samples_per_shard < 1:
        errors.append("shard.samples_per_shard: must be >= 1")
    errors = list(dict.fromkeys(errors))  # one message per problem, even when two stages share it
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
