"""Column schema of frame rows (stages mine and quality) and the stats.json layout.

Every stage writes every row it saw to `DIR/stages/<stage>/part-<unit>.parquet`:
kept rows have `reject_reason` null; rejected rows name the reason and keep the score that decided it.
"""

from __future__ import annotations

import pyarrow as pa

# Rows produced by `mine`, one per sampled frame (or one per input that failed before any frame).
FRAME_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # stable sample key: <video_id>_f<frame_index:06d>
        ("video", pa.string()),  # input path as given (relative to the input root when a folder)
        ("video_id", pa.string()),  # short stable id of the input: <stem>-<sha1(path)[:8]>
        ("frame_index", pa.int64()),  # index of the frame in the decoded stream; -1 for input-level rows
        ("timestamp", pa.float64()),  # seconds from the start of the video
        ("width", pa.int32()),  # frame width in pixels
        ("height", pa.int32()),  # frame height in pixels
        ("decoder", pa.string()),  # decord | pyav | image
        ("image", pa.binary()),  # JPEG bytes of the full frame (null for input-level rows)
        ("num_faces", pa.int32()),  # faces the detector found
        ("box", pa.list_(pa.float32())),  # [x0, y0, x1, y1] of the largest face, pixels
        ("det_score", pa.float32()),  # detector confidence of that face
        ("landmarks", pa.list_(pa.float32())),  # iBUG-68 of that face, flattened [x0, y0, x1, y1, ...]
        ("track_id", pa.string()),  # face track inside the video: <video_id>_t<n>
        ("reject_reason", pa.string()),  # null when kept
        ("reject_detail", pa.string()),  # free text (exception message, measured value)
    ]
)

# Columns added by `quality` (all rows keep the mine columns).
QUALITY_FIELDS = [
    ("centroid_x", pa.float32()),  # landmark centroid x / width
    ("centroid_y", pa.float32()),  # landmark centroid y / height
    ("face_area", pa.float32()),  # landmark convex-hull area / image area
    ("log_blur", pa.float32()),  # LoG variance of the face crop at the canonical size (hfl.imageops)
    ("quality", pa.float32()),  # perceptual quality in [0, 1] from the configured scorer
    ("quality_backend", pa.string()),  # which scorer produced `quality` (brisque | dover)
]
QUALITY_SCHEMA = pa.schema(list(FRAME_SCHEMA) + [pa.field(n, t) for n, t in QUALITY_FIELDS])

# Rows produced by `pair`: one per candidate pair of frames of the same face track (same video).
# Rejected candidates carry keys and scores but no images (the report fetches them from `quality`).
PAIR_SCHEMA = pa.schema(
    [
        ("key", pa.string()),  # <video_id>_p<src_frame:06d>-<tgt_frame:06d>
        ("video", pa.string()),  # input path of the video
        ("video_id", pa.string()),  # stable id of the video
        ("track_id", pa.string()),  # the face track both frames belong to (after identity linking)
        ("linked_tracks", pa.int16()),  # mined face tracks joined into that track by identity embedding
        ("src_key", pa.string()),  # frame key of the source (earlier) frame
        ("tgt_key", pa.string()),  # frame key of the target (later) frame
        ("src_frame", pa.int64()),  # frame indices in the video
        ("tgt_frame", pa.int64()),
        ("src_timestamp", pa.float64()),  # seconds
        ("tgt_timestamp", pa.float64()),
        ("src_width", pa.int32()),  # image sizes in pixels
        ("src_height", pa.int32()),
        ("tgt_width", pa.int32()),
        ("tgt_height", pa.int32()),
        ("src_image", pa.binary()),  # JPEG of the source frame (kept pairs only)
        ("tgt_image", pa.binary()),  # JPEG of the target frame (kept pairs only)
        ("src_box", pa.list_(pa.float32())),  # face boxes [x0, y0, x1, y1]
        ("tgt_box", pa.list_(pa.float32())),
        ("src_landmarks", pa.list_(pa.float32())),  # iBUG-68, flattened pixel (x, y)
        ("tgt_landmarks", pa.list_(pa.float32())),
        ("src_log_blur", pa.float32()),  # quality scores of the two frames
        ("tgt_log_blur", pa.float32()),
        ("src_quality", pa.float32()),
        ("tgt_quality", pa.float32()),
        ("inner_diff", pa.float32()),  # Eq. 8 terms, per mille of inter-ocular distance (hfl.landmarks)
        ("overall_diff", pa.float32()),
        ("change_score", pa.float32()),  # 0.7 inner_diff + 0.3 overall_diff
        ("semantic_diversity", pa.float32()),  # [0, 1] difference from the semantic backend (null: unchecked)
        ("semantic_backend", pa.string()),  # fer | qwen2.5-vl
        ("reject_reason", pa.string()),
        ("reject_detail", pa.string()),
    ]
)

# Columns added by `identity`.
IDENTITY_FIELDS = [
    ("face_distance", pa.float32()),  # face-embedding distance (dlib: Euclidean of 128-d descriptors)
    ("face_backend", pa.string()),  # which embedder produced face_distance
    ("clip_identity", pa.float32()),  # CLIP image cosine similarity (null when CLIP is not configured)
    ("identity_decider", pa.string()),  # face | clip | both
    ("src_embedding", pa.list_(pa.float32())),  # source face embedding (links videos of one person in split)
]
IDENTITY_SCHEMA = pa.schema(list(PAIR_SCHEMA) + [pa.field(n, t) for n, t in IDENTITY_FIELDS])

# Columns added by `caption`.
CAPTION_FIELDS = [
    ("src_expression", pa.string()),  # neutral | happy | sad | surprised | fearful | disgusted | angry
    ("src_intensity", pa.string()),  # slightly | normally | strongly (null for neutral)
    ("src_expression_conf", pa.float32()),  # captioner probability of src_expression (fer)
    ("tgt_expression", pa.string()),
    ("tgt_intensity", pa.string()),
    ("tgt_expression_conf", pa.float32()),
    ("src_yaw", pa.float32()),  # head pose in degrees (caption.pose_estimator, see pose_backend)
    ("src_pitch", pa.float32()),
    ("src_roll", pa.float32()),
    ("tgt_yaw", pa.float32()),
    ("tgt_pitch", pa.float32()),
    ("tgt_roll", pa.float32()),
    ("yaw_delta", pa.float32()),  # tgt - src, degrees (positive: towards image right)
    ("pitch_delta", pa.float32()),  # tgt - src, degrees (positive: up)
    ("yaw_units", pa.int32()),  # yaw_delta in pose units (30 degrees), rounded
    ("pitch_units", pa.int32()),
    ("pronoun", pa.string()),  # his | her | null (neutral wording)
    ("edit_expression", pa.string()),  # the instructed expression (null: no expression clause)
    ("edit_intensity", pa.string()),
    ("instruction", pa.string()),  # the paper's template, clauses that do not apply omitted
    ("caption_backend", pa.string()),  # fer | qwen2.5-vl
    ("src_expression_2", pa.string()),  # the second expression model's class (backends.expression.second)
    ("tgt_expression_2", pa.string()),
    ("expression_backend_2", pa.string()),  # facex | null (no second opinion)
    ("roll_delta", pa.float32()),  # tgt - src in-plane head tilt, degrees (positive: clockwise)
    ("pose_backend", pa.string()),  # head-pose estimator that gave the angles (3ddfa | pnp)
]
CAPTION_SCHEMA = pa.schema(list(IDENTITY_SCHEMA) + [pa.field(n, t) for n, t in CAPTION_FIELDS])

# Rows produced by `synth`: the pair columns (src_* = the source frame, tgt_* = the edit, with landmarks
# detected on the edit by the configured face backends), the instructed edit in the caption columns
# (edit_expression/edit_intensity/yaw_units/pitch_units/instruction), and these.
SYNTH_FIELDS = [
    ("subset", pa.string()),  # real | synthetic
    ("generator", pa.string()),  # geometric | flux-kontext | step1x-edit | http
    ("edit_kind", pa.string()),  # expression | pose
    ("target_yaw_deg", pa.float32()),  # instructed head turn in degrees (yaw_units x unit)
    ("target_pitch_deg", pa.float32()),
    ("edit_seed", pa.int64()),  # seed handed to the generator
    ("edit_landmarks", pa.list_(pa.float32())),  # geometric: where the editor moved the landmarks
]
SYNTH_SCHEMA = pa.schema(list(CAPTION_SCHEMA) + [pa.field(n, t) for n, t in SYNTH_FIELDS])

# Columns added by `validate` (src/tgt pose and expression go into the caption columns).
VALIDATE_FIELDS = [
    ("pose_error_deg", pa.float32()),  # Eq. 1: |measured (pitch, yaw) change - instructed|, degrees
    ("expression_score", pa.float32()),  # fer: probability of the instructed class on the edit
    ("vlm_score", pa.float32()),  # vlm: edit-vs-instruction score in [0, 1]
    ("validator", pa.string()),  # <validate.pose_estimator>+fer | <validate.pose_estimator>+qwen2.5-vl
]
VALIDATE_SCHEMA = pa.schema(list(SYNTH_SCHEMA) + [pa.field(n, t) for n, t in VALIDATE_FIELDS])

# Columns added by `split`.
SPLIT_FIELDS = [
    ("split", pa.string()),  # train | test
    ("group_id", pa.string()),  # the identity (or video) group: never in both splits
    ("stratum", pa.string()),  # <tgt expression>|<pose bucket> used for stratification
]
SPLIT_SCHEMA = pa.schema(list(VALIDATE_SCHEMA) + [pa.field(n, t) for n, t in SPLIT_FIELDS])

# stats.json (marks a stage done):
# {"stage": str, "rows_in": int, "kept": int, "rejected": {reason: count}, "seconds": float,
#  "config_hash": str, "units": int, "output": str, "finished_at": iso8601}
