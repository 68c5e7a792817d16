"""Stage `mine`: sample frames from videos, detect faces and iBUG-68 landmarks, link faces into tracks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hfl.backends.face import check_face_weights, load_detector, load_landmarker
from hfl.config import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from hfl.engine.stage import Resources, Stage, StageContext, WorkerCrash, WorkUnit
from hfl.imageops import encode_jpeg
from hfl.inputs import InputItem, list_inputs, segment_unit_id
from hfl.schema import FRAME_SCHEMA
from hfl.storage import is_remote, local_copy
from hfl.tracking import Tracker
from hfl.video import DecodeError, open_frames, video_duration

if TYPE_CHECKING:
    from hfl.pipeline import PipelineConfig


@dataclass
class MineConfig:
    """Section `mine` of the pipeline config (YAML `mine:`, `--set mine.<key>=...`)."""

    input: str = ""  # folder (searched recursively) or a text file listing one video/image path per line
    fps: float = 2.0  # frames sampled per second of video
    max_frames_per_video: int = 64  # cap per video; beyond it frames are spread evenly over the video
    decoder: str = "auto"  # auto (decord, PyAV where decord fails) | decord | pyav
    jpeg_quality: int = 95  # JPEG quality of stored frames
    track_iou: float = 0.3  # min IoU linking faces of consecutive sampled frames into one track
    include_images: bool = True  # also accept still images (one frame each)
    segment_seconds: float = 0.0  # > 0: a longer (local) video is mined as time segments of this length, one
    # unit each (all cores on one video, resume per segment); pair stitches them per video. 0: one unit/video


def input_row(item: dict[str, str], reason: str, detail: str, decoder: str = "") -> dict[str, Any]:
    """A row for an input that produced no frame (unreadable, unsupported, ...)."""
    return {
        "key": f"{item.get('unit_id') or item['video_id']}_input",  # a segment's unit id keeps keys unique
        "video": item["name"],
        "video_id": item["video_id"],
        "frame_index": -1,
        "decoder": decoder or None,
        "num_faces": 0,
        "reject_reason": reason,
        "reject_detail": detail,
    }


class MineStage(Stage):
    name = "mine"
    inputs = ()
    outputs = ("image", "box", "det_score", "landmarks", "num_faces", "track_id", "frame_index", "timestamp")
    schema = FRAME_SCHEMA
    description = "decode videos, sample frames, detect faces + 68 landmarks, link faces into tracks"
    config_class = MineConfig
    path_keys = ("input",)
    reasons = {
        "decode_error": "the input or frame could not be decoded (reject_detail holds the error)",
        "decode_error_midstream": "decoding failed part-way through the video (frames before it are kept)",
        "missing_file": "the input path does not exist",
        "empty_file": "the input file has zero bytes",
        "unsupported_extension": "the input's file extension is not an accepted video or image type",
        "no_frames": "the video yielded no frames",
        "no_video_stream": "the container holds no video stream (e.g. audio only)",
        "worker_crash": (
            "the worker process died on this input (native crash or killed); recorded, not retried"
        ),
        "no_face": "the face detector found no face in the frame",
    }

    @classmethod
    def check(cls, cfg: PipelineConfig, stages: list[str]) -> list[str]:
        from hfl.inputs import resolve_input_path

        errors: list[str] = []
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
        return errors + check_face_weights(cfg.backends.face)

    def resources(self) -> Resources:
        return Resources(num_cpus=1, memory_mb=0, batch_size=16)

    def config_section(self) -> dict[str, Any]:
        from dataclasses import asdict

        mine = asdict(self.cfg.mine)
        if not mine["segment_seconds"]:  # off: the hash builds made before the option existed had (no redo)
            del mine["segment_seconds"]
        return {"mine": mine, "face": asdict(self.cfg.backends.face), "limit": self.limit}

    def thresholds(self) -> dict[str, Any]:
        m = self.cfg.mine
        return {"fps": m.fps, "max_frames_per_video": m.max_frames_per_video, "track_iou": m.track_iou}

    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        items = list_inputs(self.cfg.mine.input)
        if self.limit:
            items = items[: self.limit]
        return [unit for it in items for unit in self.units_of(it)]

    def units_of(self, it: InputItem) -> list[WorkUnit]:
        """One unit per video; with mine.segment_seconds S > 0, a local video of 1.5 S or more is
        n = round(duration / S) units, one per time segment `<video_id>_s<k>`: [k*S, (k+1)*S) seconds, the
        last one open-ended. A segment mines the frames of the whole video's sampling grid (fps, and
        max_frames_per_video over the whole video) that fall in it, so the rows are those of the
        unsegmented run; only track ids restart per segment (`<video_id>_s<k>_t<n>` for k >= 1; pair
        stitches them)."""
        payload = {"path": it.path, "name": it.name, "video_id": it.video_id}
        seg = self.cfg.mine.segment_seconds
        if seg <= 0 or is_remote(it.path) or Path(it.path).suffix.lower() not in VIDEO_EXTENSIONS:
            return [WorkUnit(it.video_id, payload)]
        duration = video_duration(it.path)  # header only; None (unreadable): one unit records the reason
        # the last segment takes the remainder: segments of S, the last one S/2 .. 1.5 S (never a sliver)
        n = int(duration / seg + 0.5) if duration else 1
        if n <= 1:
            return [WorkUnit(it.video_id, payload)]
        return [
            WorkUnit(
                segment_unit_id(it.video_id, k),
                {
                    **payload,
                    "unit_id": segment_unit_id(it.video_id, k),
                    "segment": [k, k * seg, None if k == n - 1 else (k + 1) * seg],
                },
            )
            for k in range(n)
        ]

    def setup(self) -> None:
        self.detector = load_detector(self.cfg.backends.face)
        self.landmarker = load_landmarker(self.cfg.backends.face)
        for backend in (self.detector, self.landmarker):
            warm = getattr(backend, "load", None)  # backends that load lazily expose load()
            if callable(warm):
                warm()

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        item = unit.payload
        m = self.cfg.mine
        suffix = Path(item["path"]).suffix.lower()
        allowed = VIDEO_EXTENSIONS + (IMAGE_EXTENSIONS if m.include_images else ())
        if suffix not in allowed:
            yield [
                input_row(
                    item, "unsupported_extension", f"'{suffix or '(none)'}' not in {', '.join(allowed)}"
                )
            ]
            return
        with local_copy(item["path"]) as path:  # an object-store input is read from a temporary copy
            yield from self._decode(item, path, m)

    def _decode(self, item: dict[str, str], path: str, m: Any) -> Iterator[list[dict[str, Any]]]:
        k, start, end = item.get("segment") or (0, 0.0, None)
        segment = (float(start), end) if item.get("segment") else None
        try:
            decoder, frames = open_frames(path, m.fps, m.max_frames_per_video, m.decoder, segment)
        except DecodeError as exc:
            yield [input_row(item, exc.reason, exc.detail)]
            return
        # tracks: `<video_id>_t<n>` in segment 0 (and an unsegmented video), `<video_id>_s<k>_t<n>` in k
        tracker = Tracker(prefix=item["unit_id"] if k else item["video_id"], min_iou=m.track_iou)
        batch: list[dict[str, Any]] = []
        batch_size = self.resources().batch_size
        try:
            for fr in frames:
                batch.append(self._frame_row(item, decoder, fr.index, fr.timestamp, fr.rgb, tracker))
                if len(batch) >= batch_size:
                    yield batch
                    batch = []
        except DecodeError as exc:  # mid-stream failure: frames so far are kept, the failure recorded
            batch.append(input_row(item, "decode_error_midstream", exc.detail, decoder))
        yield batch

    def error_rows(self, unit: WorkUnit, exc: Exception) -> list[dict[str, Any]]:
        reason = "worker_crash" if isinstance(exc, WorkerCrash) else "error"
        return [input_row(unit.payload, reason, f"{type(exc).__name__}: {exc}"[:500])]

    def _frame_row(
        self, item: dict[str, str], decoder: str, index: int, ts: float, rgb: np.ndarray, tracker: Tracker
    ) -> dict[str, Any]:
        h, w = rgb.shape[:2]
        row: dict[str, Any] = {
            "key": f"{item['video_id']}_f{index:06d}",
            "video": item["name"],
            "video_id": item["video_id"],
            "frame_index": index,
            "timestamp": round(ts, 4),
            "width": w,
            "height": h,
            "decoder": decoder,
            "image": encode_jpeg(rgb, self.cfg.mine.jpeg_quality),
            "reject_reason": None,
            "reject_detail": None,
        }
        faces = self.detector.detect(rgb)
        row["num_faces"] = len(faces)
        ids = tracker.update([(f.x0, f.y0, f.x1, f.y1) for f in faces])
        if not faces:
            row["reject_reason"] = "no_face"
            row["reject_detail"] = f"{self.detector.name} found no face"
            return row
        face = faces[0]
        lms = self.landmarker.landmarks(rgb, face)
        row.update(
            box=[face.x0, face.y0, face.x1, face.y1],
            det_score=face.score,
            landmarks=np.asarray(lms, np.float32).reshape(-1).tolist(),
            track_id=ids[0],
        )
        return row
