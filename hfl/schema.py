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

# stats.json (marks a stage done):
# {"stage": str, "rows_in": int, "kept": int, "rejected": {reason: count}, "seconds": float,
#  "config_hash": str, "units": int, "output": str, "finished_at": iso8601}
