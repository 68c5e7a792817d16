"""Static HTML report of a build output directory: funnel, score histograms, contact sheets, shards.

`write_report(DIR)` reads `DIR/stages/<stage>/part-*.parquet` + `stats.json` (layout in `hfl.schema`),
`DIR/config.yaml` and `DIR/shards/*/*.stats.json`, and writes `DIR/report/index.html` with PNG/JPEG
files next to it. Parquet is read column-wise in bounded batches: histograms use fixed bins filled
batch by batch, and contact-sheet rows are chosen from the light columns first, then only their
images are fetched, so memory does not grow with the number of rows.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import yaml

from hfl.storage import Location, RemotePath, dataset, location, parquet_file, rmtree

KEPT = "kept"  # group name of rows with a null reject_reason
BATCH_ROWS = 4096  # rows per batch for the light (no image) passes
IMAGE_BATCH_ROWS = 32  # rows per batch when fetching image bytes
THUMB_H = 128  # thumbnail height in pixels
MAX_THUMB_W = 240  # thumbnails of very wide frames are squeezed to this width
SHEET_MAX_W = 1180  # contact sheets wrap to this width
HIST_BINS = (10, 50)  # bins = 2*sqrt(rows), clipped to this range
# iBUG-68 contours: (first, last, closed) drawn as polylines.
IBUG_CONTOURS = [
    (0, 16, False),
    (17, 21, False),
    (22, 26, False),
    (27, 30, False),
    (30, 35, True),
    (36, 41, True),
    (42, 47, True),
    (48, 59, True),
    (60, 67, True),
]

# Numeric columns that are ids, indices or dimensions rather than scores: no histogram.
SKIP_NUMERIC = {"frame_index", "width", "height", "timestamp", "index", "row", "shard"}
SKIP_SUFFIXES = ("_index", "_idx", "_id", "_width", "_height", "_frame", "_timestamp", "_units")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1200px;padding:0 16px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #ccc;padding-bottom:4px;margin-top:2em}
h3{margin-top:1.4em;margin-bottom:.3em}
.meta{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
tr.total td{font-weight:600;background:#fafafa}
.hists{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:8px}
.hists img{border:1px solid #eee;width:100%}
img.sheet{max-width:100%;border:1px solid #ddd}img.chart{max-width:100%}
ul.reasons{margin:.3em 0}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
.rej{color:#b03030}.kept{color:#2a7a2a}
"""


@dataclass
class _Pick:
    """One row chosen for a contact sheet."""

    group: str
    file_idx: int
    row: int
    key: str
    caption: str
    thumb: np.ndarray | None = None


@dataclass
class _StageScan:
    """What the streaming passes learned about one stage."""

    num_rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    score_cols: list[str] = field(default_factory=list)
    image_cols: list[str] = field(default_factory=list)
    hists: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # col -> {kept, rejected}
    edges: dict[str, np.ndarray] = field(default_factory=dict)
    picks: dict[str, list[_Pick]] = field(default_factory=dict)


# ----------------------------------------------------------------------------- inputs


def _read_json(path: Location) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_config(out_dir: Location) -> dict[str, Any]:
    path = out_dir / "config.yaml"
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def _stage_order(out_dir: Location, config: dict[str, Any]) -> list[str]:
    """Stages in pipeline order: config `stages`, then any other stage folders by finished_at."""
    stages_dir = out_dir / "stages"
    present = sorted(p.name for p in stages_dir.iterdir() if p.is_dir()) if stages_dir.is_dir() else []
    listed = config.get("stages")
    order: list[str] = []
    if isinstance(listed, list):
        order = [str(s) for s in listed if str(s) in present]
    rest = [s for s in present if s not in order]
    rest.sort(key=lambda s: (str(_read_json(stages_dir / s / "stats.json").get("finished_at", "~")), s))
    return order + rest


def _thresholds_from_config(config: dict[str, Any], stage: str, columns: list[str]) -> dict[str, list[float]]:
    """`report_thresholds[stage]` if given, else `min_<col>` / `max_<col>` keys of the stage's section."""
    out: dict[str, list[float]] = {}
    explicit = config.get("report_thresholds")
    if isinstance(explicit, dict) and isinstance(explicit.get(stage), dict):
        for col, val in explicit[stage].items():
            out[str(col)] = _as_floats(val)
        return out
    section = config.get(stage)
    if isinstance(section, dict):
        for k, val in section.items():
            m = re.fullmatch(r"(?:min|max)_(\w+)", str(k))
            if m and m.group(1) in columns and isinstance(val, int | float) and not isinstance(val, bool):
                out.setdefault(m.group(1), []).append(float(val))
    return out


def _as_floats(val: Any) -> list[float]:
    if isinstance(val, list | tuple):
        return [float(v) for v in val]
    return [float(val)]


def _is_numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _is_score_col(name: str, t: pa.DataType) -> bool:
    if not _is_numeric(t) or name in SKIP_NUMERIC:
        return False
    return not name.endswith(SKIP_SUFFIXES)


def _image_columns(schema: pa.Schema) -> list[str]:
    """Binary columns named `image` or `*_image`, `image` first."""
    cols = [
        f.name
        for f in schema
        if (f.name == "image" or f.name.endswith("_image"))
        and (pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type))
    ]
    return sorted(cols, key=lambda c: c != "image")


def _overlay_cols(image_col: str, names: set[str]) -> tuple[str | None, str | None]:
    """Box and landmark columns that belong to an image column (`image`->box, `src_image`->src_box)."""
    prefix = "" if image_col == "image" else image_col[: -len("image")]
    box = f"{prefix}box" if f"{prefix}box" in names else None
    lms = f"{prefix}landmarks" if f"{prefix}landmarks" in names else None
    return box, lms


def _iter_batches(
    files: list[Path], columns: list[str], batch_rows: int, row_groups: dict[int, list[int]] | None = None
) -> Iterator[tuple[int, int, pa.RecordBatch]]:
    """(file index, first row in file, batch) over all part files; absent columns come back as nulls."""
    for fi, path in enumerate(files):
        if row_groups is not None and fi not in row_groups:
            continue
        pf = parquet_file(path)
        have = set(pf.schema_arrow.names)
        cols = [c for c in columns if c in have]
        groups = row_groups[fi] if row_groups is not None else list(range(pf.num_row_groups))
        starts = np.concatenate(
            [[0], np.cumsum([pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])]
        ).astype(int)
        for rg in groups:
            row = int(starts[rg])
            for batch in pf.iter_batches(batch_size=batch_rows, row_groups=[rg], columns=cols):
                for c in columns:
                    if c not in have:
                        batch = batch.append_column(c, pa.nulls(batch.num_rows))
                yield fi, row, batch
                row += batch.num_rows
        del pf


def _groups(batch: pa.RecordBatch) -> np.ndarray:
    """Group name per row: the reject reason, or KEPT."""
    col = batch.column("reject_reason")
    if pa.types.is_null(col.type):
        return np.full(batch.num_rows, KEPT, dtype=object)
    return pc.fill_null(col.cast(pa.string()), KEPT).to_numpy(zero_copy_only=False)


def _finite(batch: pa.RecordBatch, col: str) -> tuple[np.ndarray, np.ndarray]:
    """Float values of a column and the mask of rows where it is finite (nulls -> not finite)."""
    arr = batch.column(col)
    if pa.types.is_null(arr.type):
        vals = np.full(batch.num_rows, np.nan)
    else:
        vals = pc.fill_null(arr.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
    return vals, np.isfinite(vals)


# ----------------------------------------------------------------------------- scanning


def _spread(n: int, k: int) -> set[int]:
    """k ordinals spread evenly over range(n) (deterministic, centred in k equal slices)."""
    if k <= 0 or n <= 0:
        return set()
    k = min(k, n)
    return {int((i + 0.5) * n / k) for i in range(k)}


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "nan"
    if v == int(v) and abs(v) < 1e6:
        return str(int(v))
    return f"{v:.3g}"


def _scan_stage(
    stage_dir: Location,
    max_per_sheet: int,
    caption_cols: list[str],
    extra_range: dict[str, list[float]],
    score_cols: list[str] | None = None,
) -> tuple[_StageScan, list[Path]]:
    """Three passes: counts and ranges; histograms and row choice; images of chosen rows only."""
    scan = _StageScan()
    files = sorted(stage_dir.glob("part-*.parquet"))
    if not files:
        return scan, files
    schema = parquet_file(files[0]).schema_arrow
    for path in files[1:]:
        for f in parquet_file(path).schema_arrow:
            if f.name not in schema.names:
                schema = schema.append(f)
    names = set(schema.names)
    if "reject_reason" not in names:
        schema = schema.append(pa.field("reject_reason", pa.string()))
    scan.score_cols = [
        f.name
        for f in schema
        if _is_score_col(f.name, f.type) and (score_cols is None or f.name in score_cols)
    ]
    scan.image_cols = _image_columns(schema)
    int_cols = {f.name for f in schema if pa.types.is_integer(f.type)}

    # Pass 1: group counts and value ranges.
    lo = {c: math.inf for c in scan.score_cols}
    hi = {c: -math.inf for c in scan.score_cols}
    for _, _, batch in _iter_batches(files, ["reject_reason", *scan.score_cols], BATCH_ROWS):
        scan.num_rows += batch.num_rows
        g, n = np.unique(_groups(batch), return_counts=True)
        for name, cnt in zip(g, n, strict=True):
            scan.counts[str(name)] = scan.counts.get(str(name), 0) + int(cnt)
        for c in scan.score_cols:
            vals, ok = _finite(batch, c)
            if ok.any():
                lo[c] = min(lo[c], float(vals[ok].min()))
                hi[c] = max(hi[c], float(vals[ok].max()))
    for c in scan.score_cols:
        if not math.isfinite(lo[c]):
            continue
        a, b = lo[c], hi[c]
        for t in extra_range.get(c, []):
            a, b = min(a, t), max(b, t)
        if c in int_cols and b - a <= 60:
            scan.edges[c] = np.arange(a - 0.5, b + 1.5, 1.0)
        else:
            if a == b:
                a, b = a - 0.5, b + 0.5
            bins = int(np.clip(2 * math.sqrt(scan.num_rows), *HIST_BINS))
            scan.edges[c] = np.linspace(a, b, bins + 1)
        scan.hists[c] = {
            "kept": np.zeros(len(scan.edges[c]) - 1, np.int64),
            "rejected": np.zeros(len(scan.edges[c]) - 1, np.int64),
        }

    # Pass 2: histograms, and which rows go on the contact sheets.
    targets = {g: _spread(n, max_per_sheet) for g, n in scan.counts.items()}
    seen = dict.fromkeys(scan.counts, 0)
    light = ["reject_reason", "key", "reject_detail", *scan.score_cols]
    if "instruction" in names:
        light.append("instruction")
    for fi, row0, batch in _iter_batches(files, light, BATCH_ROWS):
        groups = _groups(batch)
        kept = groups == KEPT
        for c in scan.edges:
            vals, ok = _finite(batch, c)
            scan.hists[c]["kept"] += np.histogram(vals[ok & kept], scan.edges[c])[0]
            scan.hists[c]["rejected"] += np.histogram(vals[ok & ~kept], scan.edges[c])[0]
        for g in np.unique(groups):
            idx = np.nonzero(groups == g)[0]
            ords = np.arange(seen[g], seen[g] + len(idx))
            seen[g] += len(idx)
            for i, o in zip(idx, ords, strict=True):
                if int(o) in targets[g]:
                    scan.picks.setdefault(str(g), []).append(
                        _make_pick(str(g), fi, row0, int(i), batch, caption_cols)
                    )

    # Pass 3: images of the chosen rows only, row group by row group.
    if scan.image_cols:
        _fetch_thumbs(files, scan, names)
    return scan, files


def _make_pick(
    group: str, fi: int, row0: int, i: int, batch: pa.RecordBatch, caption_cols: list[str]
) -> _Pick:
    key = batch.column("key")[i].as_py()
    detail = batch.column("reject_detail")[i].as_py()
    instruction = batch.column("instruction")[i].as_py() if "instruction" in batch.schema.names else None
    if instruction:
        caption = f"{detail} | {instruction}" if detail else str(instruction)
    elif detail:
        caption = str(detail)
    else:
        parts = []
        for c in caption_cols:
            if c in batch.schema.names:
                v = batch.column(c)[i].as_py()
                if isinstance(v, int | float):
                    parts.append(f"{c}={_fmt(float(v))}")
        caption = " ".join(parts)
    return _Pick(group, fi, row0 + i, "" if key is None else str(key), caption)


def _fetch_thumbs(files: list[Path], scan: _StageScan, names: set[str]) -> None:
    """Decode and draw the chosen rows' images; only row groups holding a chosen row are read.

    Rows that name a frame (`src_key` next to `src_image`) but carry no bytes, such as rejected pair
    candidates, get the frame from the upstream frame stage (quality, else mine).
    """
    wanted: dict[tuple[int, int], _Pick] = {
        (p.file_idx, p.row): p for picks in scan.picks.values() for p in picks
    }
    row_groups: dict[int, list[int]] = {}
    for fi in sorted({f for f, _ in wanted}):
        md = parquet_file(files[fi]).metadata
        starts = np.cumsum([0] + [md.row_group(i).num_rows for i in range(md.num_row_groups)])
        rows = [r for f, r in wanted if f == fi]
        row_groups[fi] = sorted({int(np.searchsorted(starts, r, side="right") - 1) for r in rows})
    cols = list(scan.image_cols)
    for ic in scan.image_cols:
        cols += [c for c in (*_overlay_cols(ic, names), _frame_key_col(ic, names)) if c]
    specs: dict[int, tuple[_Pick, list[list[Any]]]] = {}
    for fi, row0, batch in _iter_batches(files, cols, IMAGE_BATCH_ROWS, row_groups):
        for i in range(batch.num_rows):
            pick = wanted.get((fi, row0 + i))
            if pick is None:
                continue
            tiles = []
            for ic in scan.image_cols:
                box_c, lm_c = _overlay_cols(ic, names)
                key_c = _frame_key_col(ic, names)
                tiles.append(
                    [
                        batch.column(ic)[i].as_py(),
                        batch.column(box_c)[i].as_py() if box_c else None,
                        batch.column(lm_c)[i].as_py() if lm_c else None,
                        batch.column(key_c)[i].as_py() if key_c else None,
                    ]
                )
            specs[id(pick)] = (pick, tiles)
    missing = {t[3] for _, tiles in specs.values() for t in tiles if t[0] is None and t[3]}
    frames = _upstream_frames(files[0].parent.parent, missing) if missing else {}
    for pick, tiles in specs.values():
        thumbs = []
        for data, box, lms, key in tiles:
            thumbs.append(_thumb(data or frames.get(key), box, lms, rejected=pick.group != KEPT))
        gap = np.full((THUMB_H, 3, 3), 255, np.uint8)
        pick.thumb = np.concatenate([t for tile in thumbs for t in (tile, gap)][:-1], axis=1)


def _frame_key_col(image_col: str, names: set[str]) -> str | None:
    """`src_image` -> `src_key` when the stage records which frame the image is."""
    if image_col == "image":
        return None
    col = image_col[: -len("image")] + "key"
    return col if col in names else None


def _upstream_frames(stages_dir: Location, keys: set[str]) -> dict[str, bytes]:
    """JPEG bytes of frames by key from the quality (else mine) stage parts."""
    for stage in ("quality", "mine"):
        parts = sorted((stages_dir / stage).glob("part-*.parquet"))
        if parts:
            table = dataset(parts).to_table(
                columns=["key", "image"], filter=pads.field("key").isin(pa.array(sorted(keys)))
            )
            return dict(zip(table.column("key").to_pylist(), table.column("image").to_pylist(), strict=True))
    return {}


# ----------------------------------------------------------------------------- drawing


def _thumb(
    data: bytes | None, box: list[float] | None, lms: list[float] | None, rejected: bool
) -> np.ndarray:
    """THUMB_H-high BGR thumbnail with the face box and landmarks drawn; grey tile when no image."""
    img = None
    if data:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        tile = np.full((THUMB_H, THUMB_H * 4 // 3, 3), 200, np.uint8)
        cv2.putText(
            tile, "no image", (8, THUMB_H // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (90, 90, 90), 1, cv2.LINE_AA
        )
        return tile
    h, w = img.shape[:2]
    tw = max(1, min(MAX_THUMB_W, round(w * THUMB_H / h)))
    sx, sy = tw / w, THUMB_H / h
    img = cv2.resize(img, (tw, THUMB_H), interpolation=cv2.INTER_AREA)
    if box and len(box) >= 4 and all(v is not None for v in box[:4]):
        color = (60, 60, 230) if rejected else (60, 200, 60)
        p0 = (round(box[0] * sx), round(box[1] * sy))
        p1 = (round(box[2] * sx), round(box[3] * sy))
        cv2.rectangle(img, p0, p1, color, 1, cv2.LINE_AA)
    if lms:
        pts = np.asarray([v if v is not None else np.nan for v in lms], np.float64).reshape(-1, 2)
        pts = pts * (sx, sy)
        if len(pts) == 68 and np.isfinite(pts).all():
            for a, b, closed in IBUG_CONTOURS:
                poly = np.round(pts[a : b + 1]).astype(np.int32)
                cv2.polylines(img, [poly], closed, (0, 220, 255), 1, cv2.LINE_AA)
        else:
            for x, y in pts:
                if math.isfinite(x) and math.isfinite(y):
                    cv2.circle(img, (round(x), round(y)), 1, (0, 220, 255), -1, cv2.LINE_AA)
    return img


def _wrap(text: str, width: int, scale: float, lines: int) -> list[str]:
    """Split text on spaces into at most `lines` lines that fit width pixels (last one cut with '..')."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    # OpenCV's Hershey fonts draw ASCII only ("30°" came out as "30??")
    text = text.replace("°", " deg").encode("ascii", "replace").decode()
    words, out = text.split(), []
    while words and len(out) < lines - 1:
        line = words.pop(0)
        while words and cv2.getTextSize(line + " " + words[0], font, scale, 1)[0][0] <= width:
            line += " " + words.pop(0)
        out.append(_fit_text(line, width, scale))
    if words:
        out.append(_fit_text(" ".join(words), width, scale))
    return out


def _fit_text(text: str, width: int, scale: float) -> str:
    """Longest prefix of text (with '..') that fits in width pixels."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    if cv2.getTextSize(text, font, scale, 1)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "..", font, scale, 1)[0][0] > width:
        text = text[:-1]
    return text + ".."


def _short_key(key: str, width: int, scale: float) -> str:
    """Key shortened in the middle so that its start (video) and end (frame) stay readable."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    if cv2.getTextSize(key, font, scale, 1)[0][0] <= width:
        return key
    head, tail = key[: len(key) // 2], key[len(key) // 2 :]
    while len(head) + len(tail) > 2:
        if len(head) >= len(tail):
            head = head[:-1]
        else:
            tail = tail[1:]
        if cv2.getTextSize(head + ".." + tail, font, scale, 1)[0][0] <= width:
            break
    return head + ".." + tail


def _contact_sheet(picks: list[_Pick], path: Path) -> None:
    """Grid of thumbnails with captions (short key, then up to two lines of deciding score) under each."""
    thumbs = [p.thumb if p.thumb is not None else _thumb(None, None, None, False) for p in picks]
    cell_w = max(max(t.shape[1] for t in thumbs), 150)
    cap_h, pad = 48, 6
    cols = max(1, min(len(thumbs), (SHEET_MAX_W + pad) // (cell_w + pad)))
    rows = math.ceil(len(thumbs) / cols)
    cell_h = THUMB_H + cap_h
    sheet = np.full((rows * (cell_h + pad) + pad, cols * (cell_w + pad) + pad, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.38
    for n, (pick, t) in enumerate(zip(picks, thumbs, strict=True)):
        r, c = divmod(n, cols)
        x, y = pad + c * (cell_w + pad), pad + r * (cell_h + pad)
        x_img = x + (cell_w - t.shape[1]) // 2
        sheet[y : y + THUMB_H, x_img : x_img + t.shape[1]] = t
        cv2.putText(
            sheet,
            _short_key(pick.key, cell_w - 2, scale),
            (x + 1, y + THUMB_H + 13),
            font,
            scale,
            (40, 40, 40),
            1,
            cv2.LINE_AA,
        )
        for ln, text in enumerate(_wrap(pick.caption, cell_w - 2, scale, 2)):
            color = (30, 30, 170) if pick.group != KEPT else (30, 110, 30)
            cv2.putText(sheet, text, (x + 1, y + THUMB_H + 27 + 14 * ln), font, scale, color, 1, cv2.LINE_AA)
    cv2.imwrite(str(path), sheet, [cv2.IMWRITE_JPEG_QUALITY, 88])


def _reason_colors(reasons: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    palette = [cmap(i) for i in (3, 1, 4, 5, 6, 7, 8, 9, 0)]
    out: dict[str, Any] = {KEPT: cmap(2)}
    for i, r in enumerate(reasons):
        out[r] = palette[i % len(palette)]
    return out


def _funnel_chart(rows: list[dict[str, Any]], reasons: list[str], path: Path) -> None:
    """Horizontal stacked bars, one per stage (top = first): kept then each reject reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = _reason_colors(reasons)
    fig, ax = plt.subplots(figsize=(10, 0.8 + 0.6 * len(rows)), dpi=110)
    names = [r["stage"] for r in rows]
    ypos = np.arange(len(rows))[::-1]
    left = np.zeros(len(rows))
    for g in [KEPT, *reasons]:
        vals = np.array([r["kept"] if g == KEPT else r["rejected"].get(g, 0) for r in rows], float)
        if not vals.any():
            continue
        ax.barh(ypos, vals, left=left, color=colors[g], label=g, edgecolor="white", linewidth=0.5)
        for y, v, lft in zip(ypos, vals, left, strict=True):
            if v > 0 and v >= 0.06 * max(r["rows_in"] for r in rows):
                ax.text(lft + v / 2, y, f"{int(v)}", ha="center", va="center", fontsize=8, color="white")
        left += vals
    ax.set_yticks(ypos, names)
    ax.set_xlabel("rows")
    ax.legend(
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=min(7, len(reasons) + 1),
        fontsize=8,
        frameon=False,
    )
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _histogram(
    col: str, edges: np.ndarray, hist: dict[str, np.ndarray], thresholds: list[float], path: Path
) -> None:
    """Kept vs rejected counts of one column over fixed bins, thresholds as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.7), dpi=100)
    for name, color in (("kept", "#2ca02c"), ("rejected", "#d62728")):
        counts = hist[name]
        if counts.any():
            ax.stairs(
                counts, edges, fill=True, alpha=0.45, color=color, label=f"{name} ({int(counts.sum())})"
            )
            ax.stairs(counts, edges, color=color, linewidth=1)
    for t in thresholds:
        ax.axvline(t, color="black", linestyle="--", linewidth=1.2, label=f"threshold {_fmt(t)}")
    ax.set_title(col, fontsize=10, loc="left", fontweight="bold")
    ax.set_ylabel("rows", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(
        fontsize=7,
        frameon=False,
        loc="lower right",
        bbox_to_anchor=(1.0, 1.0),
        ncol=3,
        handlelength=1.2,
        columnspacing=0.8,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- shards


def _shard_rows(out_dir: Location) -> list[dict[str, Any]]:
    """One row per shard from `DIR/shards/<split>/*.stats.json` (sample count, bytes)."""
    rows = []
    for p in sorted((out_dir / "shards").glob("*/*.stats.json")):
        st = _read_json(p)
        samples = next((st[k] for k in ("samples", "num_samples", "count", "n", "rows") if k in st), None)
        tar = p.with_name(p.name[: -len(".stats.json")] + ".tar")
        size = tar.stat().st_size if tar.exists() else st.get("bytes")
        rows.append({"split": p.parent.name, "shard": tar.name, "samples": samples, "bytes": size})
    return rows


def _manifest_counts(out_dir: Location) -> dict[str, int]:
    """Samples per split from manifest.parquet, reading only the split column."""
    path = out_dir / "manifest.parquet"
    if not path.exists():
        return {}
    pf = parquet_file(path)
    if "split" not in pf.schema_arrow.names:
        return {}
    counts: dict[str, int] = {}
    for batch in pf.iter_batches(batch_size=65536, columns=["split"]):
        for v in pc.value_counts(batch.column(0)).to_pylist():
            counts[str(v["values"])] = counts.get(str(v["values"]), 0) + int(v["counts"])
    return counts


def _shards_html(out_dir: Location) -> str:
    rows = _shard_rows(out_dir)
    manifest = _manifest_counts(out_dir)
    if not rows and not manifest:
        return "<p>No shards found.</p>"
    splits = sorted({r["split"] for r in rows} | set(manifest))
    e = html.escape
    out = [
        '<table><tr><th class="l">split</th><th>shards</th><th>samples (shard stats)</th>'
        "<th>samples (manifest)</th><th>size MB</th></tr>"
    ]
    for s in splits:
        rs = [r for r in rows if r["split"] == s]
        samples = sum(int(r["samples"]) for r in rs if r["samples"] is not None)
        size = sum(int(r["bytes"]) for r in rs if r["bytes"] is not None)
        out.append(
            f'<tr><td class="l">{e(s)}</td><td>{len(rs)}</td><td>{samples}</td>'
            f"<td>{manifest.get(s, '')}</td><td>{size / 1e6:.1f}</td></tr>"
        )
    out.append("</table>")
    if rows:
        out.append(
            f"<details><summary>{len(rows)} shards</summary><table>"
            '<tr><th class="l">split</th><th class="l">shard</th><th>samples</th><th>size MB</th></tr>'
        )
        for r in rows:
            size = "" if r["bytes"] is None else f"{int(r['bytes']) / 1e6:.1f}"
            out.append(
                f'<tr><td class="l">{e(r["split"])}</td><td class="l">{e(r["shard"])}</td>'
                f"<td>{'' if r['samples'] is None else r['samples']}</td><td>{size}</td></tr>"
            )
        out.append("</table></details>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- page


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s) or "_"


def _reason_text(reason: str, stage: str) -> str:
    """The stage's human text for a reject reason (its module's `Stage.reasons`), or a generic line."""
    from hfl.stages import reason_text

    text = reason_text(reason, stage)
    if text is not None:
        return text
    return f"rejected by stage {stage} (see the deciding score / detail under each thumbnail)"


def write_report(
    out_dir: Location | str, max_per_sheet: int = 24, thresholds: dict[str, dict[str, float]] | None = None
) -> Path:
    """Write DIR/report/index.html (+ PNG charts, JPEG contact sheets) and return its path.

    thresholds: {stage: {column: value}} drawn on the histograms; default from config.yaml
    (`report_thresholds`, else `min_<col>`/`max_<col>` keys in the stage's section).
    """
    out_dir = location(out_dir)
    if isinstance(out_dir, RemotePath):  # on an object store: written in a local folder, then uploaded
        with tempfile.TemporaryDirectory(prefix="hfl-report-") as tmp:
            index = _write_report(out_dir, Path(tmp) / "report", max_per_sheet, thresholds)
            rmtree(out_dir / "report")
            out_dir.fs.put(str(index.parent) + "/", (out_dir / "report").key, recursive=True)
        return out_dir / "report" / "index.html"
    report = out_dir / "report"
    if report.exists():
        shutil.rmtree(report)
    return _write_report(out_dir, report, max_per_sheet, thresholds)


def _write_report(
    out_dir: Location, report: Path, max_per_sheet: int, thresholds: dict[str, dict[str, float]] | None
) -> Path:
    """write_report into the local folder `report`."""
    report.mkdir(parents=True)
    config = _read_config(out_dir)
    stages = _stage_order(out_dir, config)
    e = html.escape

    funnel: list[dict[str, Any]] = []
    sections: list[str] = []
    upstream: set[str] = set()
    for stage in stages:
        sdir = out_dir / "stages" / stage
        stats = _read_json(sdir / "stats.json")
        files = sorted(sdir.glob("part-*.parquet"))
        schema = parquet_file(files[0]).schema_arrow if files else pa.schema([])
        # histogram only what this stage adds; upstream columns were drawn in their own stage's section
        fields = [f for f in schema if _is_score_col(f.name, f.type) and f.name not in upstream]
        upstream |= set(schema.names)
        cols = [f.name for f in fields]
        float_cols = [f.name for f in fields if pa.types.is_floating(f.type)]
        if thresholds is not None:
            thr = {c: _as_floats(v) for c, v in (thresholds.get(stage) or {}).items()}
        else:
            thr = _thresholds_from_config(config, stage, cols)
        caption_cols = [c for c in thr if c in cols] or float_cols[:2]
        scan, files = _scan_stage(sdir, max_per_sheet, caption_cols, thr, cols)
        rejected_scan = {g: n for g, n in scan.counts.items() if g != KEPT}
        row = {
            "stage": stage,
            "rows_in": int(stats.get("rows_in", scan.num_rows)),
            "kept": int(stats.get("kept", scan.counts.get(KEPT, 0))),
            "rejected": {str(k): int(v) for k, v in (stats.get("rejected") or rejected_scan).items()},
            "seconds": stats.get("seconds"),
        }
        funnel.append(row)
        sections.append(_stage_html(stage, row, stats, scan, thr, report, max_per_sheet))

    reasons: list[str] = []
    for r in funnel:
        reasons += [k for k in r["rejected"] if k not in reasons]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>HFL report: {e(out_dir.name)}</title><style>{CSS}</style></head><body>",
        f"<h1>HFL build report</h1><p class='meta'>{e(str(out_dir.resolve()))} &middot; generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2 id='funnel'>Funnel</h2>",
    ]
    if funnel:
        parts.append(_funnel_table(funnel, reasons))
        _funnel_chart(funnel, reasons, report / "funnel.png")
        parts.append("<img class='chart' src='funnel.png' alt='funnel chart'>")
    else:
        parts.append("<p>No stages found.</p>")
    if (out_dir / "stages" / "mine").is_dir():
        parts.append("<h2 id='videos'>Per-video yield</h2>")
        parts.append(_yield_html(out_dir, config))
    if (out_dir / "shards").is_dir() or (out_dir / "manifest.parquet").exists():
        parts.append("<h2 id='shards'>Shards</h2>")
        parts.append(_shards_html(out_dir))
    parts += sections
    parts.append("</body></html>")
    index = report / "index.html"
    index.write_text("\n".join(parts))
    return index


def _yield_html(out_dir: Location, config: dict[str, Any]) -> str:
    """Per-video table (hfl.yields): which footage gave pairs, and what stopped the rest."""
    from hfl.yields import HEADERS, video_yield, yield_table_rows

    e = html.escape
    rows = yield_table_rows(video_yield(out_dir, config))
    head = "".join(f"<th class='l'>{e(h)}</th>" if h in ("video", "stopped_by") else f"<th>{e(h)}</th>"
                   for h in HEADERS)  # fmt: skip
    out = [f"<table><tr>{head}</tr>"]
    for r in rows:
        cells = "".join(
            f"<td class='l'>{e(str(v))}</td>" if h in ("video", "stopped_by") else f"<td>{e(str(v))}</td>"
            for h, v in zip(HEADERS, r, strict=True)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    out.append(
        "<p class='meta'>stopped_by: the stages, in chain order, that kept under half of the video's rows, "
        "each with its top reason and the median of its measure on those rows (budgets such as "
        "not_selected excluded).</p>"
    )
    return "\n".join(out)


def _funnel_table(funnel: list[dict[str, Any]], reasons: list[str]) -> str:
    e = html.escape
    head = "".join(f"<th>{e(r)}</th>" for r in reasons)
    out = [
        f'<table><tr><th class="l">stage</th><th>rows in</th><th>kept</th><th>kept %</th>'
        f"<th>rejected</th>{head}<th>seconds</th></tr>"
    ]
    for r in funnel:
        rej = sum(r["rejected"].values())
        pct = f"{100 * r['kept'] / r['rows_in']:.1f}" if r["rows_in"] else ""
        cells = "".join(f"<td>{r['rejected'].get(x, '')}</td>" for x in reasons)
        secs = "" if r["seconds"] is None else f"{float(r['seconds']):.1f}"
        out.append(
            f'<tr><td class="l"><a href="#stage-{_slug(r["stage"])}">{e(r["stage"])}</a></td>'
            f"<td>{r['rows_in']}</td><td>{r['kept']}</td><td>{pct}</td><td>{rej}</td>{cells}"
            f"<td>{secs}</td></tr>"
        )
    out.append("</table>")
    return "\n".join(out)


def _stage_html(
    stage: str,
    row: dict[str, Any],
    stats: dict[str, Any],
    scan: _StageScan,
    thr: dict[str, list[float]],
    report: Path,
    max_per_sheet: int,
) -> str:
    """Heading, counts, reasons, histograms and contact sheets of one stage."""
    e = html.escape
    slug = _slug(stage)
    sdir = report / slug
    sdir.mkdir(exist_ok=True)
    meta = [f"rows in {row['rows_in']}", f"kept {row['kept']}", f"rejected {sum(row['rejected'].values())}"]
    for k in ("seconds", "units", "config_hash", "finished_at"):
        if stats.get(k) is not None:
            meta.append(f"{k} {e(str(stats[k]))}")
    out = [f"<h2 id='stage-{slug}'>Stage: {e(stage)}</h2>", f"<p class='meta'>{' &middot; '.join(meta)}</p>"]
    if row["rejected"]:
        out.append("<ul class='reasons'>")
        for reason, n in sorted(row["rejected"].items(), key=lambda kv: -kv[1]):
            out.append(
                f"<li><a href='#{slug}-{_slug(reason)}'><code class='rej'>{e(reason)}</code></a> "
                f"&times; {n}: {e(_reason_text(reason, stage))}</li>"
            )
        out.append("</ul>")
    else:
        out.append("<p>No rows rejected.</p>")

    if scan.edges:
        out.append("<h3>Score histograms</h3><div class='hists'>")
        for c in sorted(scan.edges, key=lambda c: (c not in thr, scan.score_cols.index(c))):
            name = f"hist_{_slug(c)}.png"
            _histogram(c, scan.edges[c], scan.hists[c], thr.get(c, []), sdir / name)
            out.append(f"<img src='{slug}/{name}' alt='histogram of {e(c)}'>")
        out.append("</div>")
        if thr:
            desc = ", ".join(f"{e(c)} {'/'.join(_fmt(v) for v in vs)}" for c, vs in thr.items())
            out.append(f"<p class='meta'>Dashed lines: configured thresholds ({desc}).</p>")

    if scan.image_cols and scan.picks:
        out.append(
            f"<h3>Contact sheets</h3><p class='meta'>Up to {max_per_sheet} rows per group, spread "
            f"evenly over the stage's rows; images: {e(', '.join(scan.image_cols))}. Box green = kept, "
            "red = rejected; yellow lines = 68 landmarks. Caption: key, then the deciding score.</p>"
        )
        groups = [KEPT] + sorted((g for g in scan.picks if g != KEPT), key=lambda g: -scan.counts.get(g, 0))
        for g in groups:
            picks = scan.picks.get(g)
            if not picks:
                continue
            name = f"sheet_{_slug(g)}.jpg"
            _contact_sheet(picks, sdir / name)
            total = scan.counts.get(g, 0)
            if g == KEPT:
                title = f"<span class='kept'>kept</span> ({len(picks)} of {total})"
            else:
                title = (
                    f"rejected: <code class='rej'>{e(g)}</code> ({len(picks)} of {total}) "
                    f"&mdash; <span class='meta'>{e(_reason_text(g, stage))}</span>"
                )
            out.append(f"<h4 id='{slug}-{_slug(g)}'>{title}</h4>")
            out.append(f"<img class='sheet' src='{slug}/{name}' alt='contact sheet {e(g)}'>")
    return "\n".join(out)
