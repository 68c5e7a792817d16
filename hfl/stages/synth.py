"""Stage `synth` (paper Sec. 3.1, "Synthetic data collection"): single-turn edits of real faces by an edit
generator (hfl.backends.generator), one expression or one head-pose change at a time.

Sources: the kept frames of `quality` (one unit per quality part, i.e. per video), or, when `synth.input`
names a folder, the face images in it (one unit per `synth.folder_chunk` images; faces detected with the
configured face backends, the largest face is used). Per video, `synth.edits_per_video` source frames
are chosen by farthest-point sampling over their normalised landmark shapes (starting from the sharpest
frame), so the edits start from different expressions and poses. Each source gets `edits_per_frame`
edits (key <frame key>_e<n>), each drawn by hfl.editing.sample_edit (seeded by `seed`, the frame key
and n). The face backends then detect the face and its 68 landmarks on the edit; an edit without a face
is rejected `edit_no_face`, a generator failure `generator_failed`. Every row keeps both images, so the
report can show rejected edits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit
from hfl.imageops import decode_jpeg, encode_jpeg
from hfl.landmarks import as_points, head_pose
from hfl.schema import SYNTH_SCHEMA
from hfl.stages.rows import reject
from hfl.storage import parquet_file

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig

SOURCE_COLUMNS = [
    "key", "video", "video_id", "track_id", "frame_index", "timestamp", "width", "height", "image", "box",
    "landmarks", "log_blur", "quality", "reject_reason",
]  # fmt: skip


def diverse(shapes: np.ndarray, k: int, first: int = 0) -> list[int]:
    """Farthest-point sampling of k indices over (n, d) shape vectors, starting at `first`."""
    n = len(shapes)
    if n <= k:
        return list(range(n))
    chosen = [first]
    d = np.linalg.norm(shapes - shapes[first], axis=1)
    while len(chosen) < k:
        i = int(np.argmax(d))
        chosen.append(i)
        d = np.minimum(d, np.linalg.norm(shapes - shapes[i], axis=1))
    return sorted(chosen)


def normalised_shape(landmarks: Any) -> np.ndarray:
    from hfl.face3d import face_frame, to_frame

    pts = as_points(landmarks)
    return to_frame(pts, face_frame(pts)).ravel()


@dataclass
class SynthConfig:
    """Section `synth` of the pipeline config (YAML `synth:`, `--set synth.<key>=...`)."""

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


class SynthStage(Stage):
    name = "synth"
    outputs = ("instruction", "generator", "tgt_image", "tgt_landmarks", "target_yaw_deg", "target_pitch_deg")
    schema = SYNTH_SCHEMA
    description = "single-turn expression / head-pose edits of real faces by the configured edit generator"
    config_class = SynthConfig
    reasons = {
        "generator_failed": "the edit generator raised an error (reject_detail holds it)",
        "edit_no_face": "the face detector found no face in the generated edit",
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.backends.face import check_face_weights
        from hfl.backends.generator import check_generator

        errors: list[str] = []
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
        return errors + check_face_weights(cfg.backends.face)

    @classmethod
    def card_rows(cls, cfg: PipelineConfig) -> dict[str, list[list[Any]]]:
        if "synth" not in cfg.stages:
            return {}
        return {"backends": [["edit generator (synth)", cfg.backends.generator.name]]}

    @property
    def inputs(self) -> tuple[str, ...]:  # type: ignore[override]
        if self.cfg.synth.input:
            return ()
        return ("quality", "caption") if self.cfg.synth.sources == "paired" else ("quality",)

    def resources(self) -> Resources:
        g = self.cfg.backends.generator
        if g.name in ("flux-kontext", "step1x-edit") and g.device.startswith("cuda"):
            return Resources(num_cpus=1, num_gpus=1.0, batch_size=8)
        return Resources(num_cpus=1, batch_size=8)

    def config_section(self) -> dict[str, Any]:
        g = asdict(self.cfg.backends.generator)
        g.pop("api_key", None)  # never hashed into stats or shown
        return {
            "synth": asdict(self.cfg.synth),
            "generator": g,
            "face": asdict(self.cfg.backends.face),
            "seed": self.cfg.seed,
            "pose_unit_deg": self.cfg.caption.pose_unit_deg,
        }

    def thresholds(self) -> dict[str, Any]:
        s = self.cfg.synth
        return {"edits_per_video": s.edits_per_video, "max_abs_yaw_deg": s.max_abs_yaw_deg}

    # ------------------------------------------------------------------ plan
    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        s = self.cfg.synth
        if not s.input:
            parts = sorted(ctx.stage_dir("quality").glob("part-*.parquet"))
            if s.sources == "paired":  # only videos whose person is identity-verified by a kept real pair
                from hfl.storage import read_table

                paired = {
                    r["video_id"]
                    for p in sorted(ctx.stage_dir("caption").glob("part-*.parquet"))
                    for r in read_table(p, columns=["video_id", "reject_reason"]).to_pylist()
                    if r["reject_reason"] is None
                }
                from hfl.inputs import video_of_unit  # a part is one video or one time segment of it

                parts = [p for p in parts if video_of_unit(p.stem.removeprefix("part-")) in paired]
            return [WorkUnit(p.stem.removeprefix("part-"), {"path": str(p)}) for p in parts]
        from hfl.config import IMAGE_EXTENSIONS
        from hfl.inputs import video_id_for

        root = Path(s.input)
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        units = []
        for i in range(0, len(files), s.folder_chunk):
            chunk = [str(p.relative_to(root)) for p in files[i : i + s.folder_chunk]]
            ids = [video_id_for(c) for c in chunk]
            units.append(
                WorkUnit(f"images-{i // s.folder_chunk:05d}", {"root": str(root), "files": chunk, "ids": ids})
            )
        return units

    def setup(self) -> None:
        from hfl.backends.face import load_detector, load_landmarker
        from hfl.backends.generator import load_generator

        self.detector = load_detector(self.cfg.backends.face)
        self.landmarker = load_landmarker(self.cfg.backends.face)
        self.generator = load_generator(self.cfg.backends.generator)

    def error_rows(self, unit: WorkUnit, exc: Exception) -> list[dict[str, Any]]:
        row = {"key": f"{unit.id}_synth", "video_id": unit.id, "subset": "synthetic"}
        return [reject(row, "error", f"{type(exc).__name__}: {exc}"[:500])]

    # ------------------------------------------------------------------ sources
    def sources(self, unit: WorkUnit) -> list[dict[str, Any]]:
        if "path" in unit.payload:
            pf = parquet_file(unit.payload["path"])
            cols = [c for c in SOURCE_COLUMNS if c in pf.schema_arrow.names]
            rows = [r for r in pf.read(columns=cols).to_pylist() if r.get("reject_reason") is None]
            return [r for r in rows if r.get("landmarks") is not None and r.get("image") is not None]
        import cv2

        out = []
        for name, vid in zip(unit.payload["files"], unit.payload["ids"], strict=True):
            bgr = cv2.imread(str(Path(unit.payload["root"]) / name))
            if bgr is None:
                continue
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            found = self.detect(rgb)
            if found is None:
                continue
            box, lms = found
            h, w = rgb.shape[:2]
            out.append(
                {
                    "key": f"{vid}_f000000", "video": name, "video_id": vid, "track_id": f"{vid}_t0",
                    "frame_index": 0, "timestamp": 0.0, "width": w, "height": h,
                    "image": encode_jpeg(rgb, self.cfg.synth.jpeg_quality), "box": box,
                    "landmarks": lms.reshape(-1).tolist(), "log_blur": None, "quality": None,
                }
            )  # fmt: skip
        return out

    def detect(self, rgb: np.ndarray) -> tuple[list[float], np.ndarray] | None:
        boxes = self.detector.detect(rgb)
        if not boxes:
            return None
        b = max(boxes, key=lambda x: x.area)
        lms = np.asarray(self.landmarker.landmarks(rgb, b), np.float32).reshape(68, 2)
        return [b.x0, b.y0, b.x1, b.y1], lms

    def choose(self, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        frames = sorted(frames, key=lambda r: (r["frame_index"], r["key"]))
        shapes = np.stack([normalised_shape(r["landmarks"]) for r in frames])
        sharp = [r.get("log_blur") or 0.0 for r in frames]
        idx = diverse(shapes, self.cfg.synth.edits_per_video, int(np.argmax(sharp)))
        return [frames[i] for i in idx]

    # ------------------------------------------------------------------ work
    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        by_video: dict[str, list[dict[str, Any]]] = {}
        for r in self.sources(unit):
            by_video.setdefault(r["video_id"], []).append(r)
        for vid in sorted(by_video):
            batch = []
            for src in self.choose(by_video[vid]):
                for n in range(self.cfg.synth.edits_per_frame):
                    try:
                        batch.append(self.make_edit(src, n))
                    except Exception as exc:  # one bad source frame is a row, not a failed build
                        row = self.base_row(src, None, n)
                        batch.append(reject(row, "error", f"{type(exc).__name__}: {exc}"[:500]))
            yield batch

    def base_row(self, src: dict[str, Any], spec: Any, n: int = 0) -> dict[str, Any]:
        key = f"{src['key']}_e{n:02d}"
        row = {
            "key": key, "video": src["video"], "video_id": src["video_id"], "track_id": src["track_id"],
            "src_key": src["key"], "tgt_key": key,
            "src_frame": src["frame_index"], "tgt_frame": src["frame_index"],
            "src_timestamp": src["timestamp"], "tgt_timestamp": src["timestamp"],
            "src_width": src["width"], "src_height": src["height"], "tgt_width": src["width"],
            "tgt_height": src["height"], "src_box": src["box"], "src_landmarks": src["landmarks"],
            "src_log_blur": src.get("log_blur"), "src_quality": src.get("quality"),
            "subset": "synthetic", "generator": self.cfg.backends.generator.name,
            "reject_reason": None, "reject_detail": None,
        }  # fmt: skip
        if spec is not None:
            row.update(
                edit_kind=spec.kind,
                edit_expression=spec.expression,
                edit_intensity=spec.intensity,
                yaw_units=spec.yaw_units,
                pitch_units=spec.pitch_units,
                target_yaw_deg=spec.yaw_deg,
                target_pitch_deg=spec.pitch_deg,
                instruction=spec.instruction(),
            )
        return row

    def make_edit(self, src: dict[str, Any], n: int = 0) -> dict[str, Any]:
        from hfl.editing import sample_edit, seeded_rng

        s = self.cfg.synth
        w, h = src["width"], src["height"]
        yaw, pitch, _ = head_pose(src["landmarks"], w, h)
        rng = seeded_rng(self.cfg.seed, f"{src['key']}:{n}")
        seed = rng.randrange(2**31)
        spec = sample_edit(
            rng, s.expression_fraction, s.yaw_units, s.pitch_units, s.yaw_fraction, yaw, pitch,
            s.max_abs_yaw_deg, s.max_abs_pitch_deg, self.cfg.caption.pose_unit_deg,
        )  # fmt: skip
        row = self.base_row(src, spec, n)
        row["edit_seed"] = seed
        image = decode_jpeg(src["image"])
        lms = as_points(src["landmarks"])
        row["src_image"] = src["image"]
        try:
            edited = self.generator.edit(image, lms, spec, row["instruction"], seed)
        except Exception as exc:
            return reject(row, "generator_failed", f"{type(exc).__name__}: {exc}"[:500])
        if self.generator.name == "geometric":
            target = self.generator.editor.target_landmarks(lms, w, h, spec)
            row["edit_landmarks"] = target.astype(np.float32).reshape(-1).tolist()
        row["tgt_image"] = encode_jpeg(np.ascontiguousarray(edited), s.jpeg_quality)
        row["reject_detail"] = None
        found = self.detect(edited)
        if found is None:
            return reject(row, "edit_no_face", "the face detector found no face in the edited image")
        row["tgt_box"], tgt = found
        row["tgt_landmarks"] = tgt.reshape(-1).tolist()
        return row
