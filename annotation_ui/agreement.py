"""Agreement: per-item majority and quorum, Fleiss' kappa, Krippendorff's alpha, per-annotator figures.

Per-item rule (documented in README.md):
- the item's expression is the one chosen by the most raters; the item is KEPT when it holds all its
  configured labels (default 5) and that count reaches the project's quorum (default 3 of the 5).
  With a quorum above half the raters the kept label is unique; a tied top count is never kept.
- its intensity is judged only among the raters who chose that expression: the median of their
  intensities on the ordinal scale slightly < normally < strongly (the lower median for an even count).
  A neutral face takes no intensity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from annotation_ui.labels import EXPRESSIONS, INTENSITIES


@dataclass(frozen=True)
class Vote:
    item_id: int
    annotator: str
    expression: str
    intensity: str | None
    duration_ms: int = 0


@dataclass
class ItemResult:
    item_id: int
    n_labels: int
    votes: dict[str, int]
    expression: str | None  # the plurality expression (None when the top count is tied)
    n_agree: int
    kept: bool
    intensity: str | None
    intensity_votes: dict[str, int] = field(default_factory=dict)


def item_result(item_id: int, votes: Sequence[Vote], quorum: int, raters: int | None = None) -> ItemResult:
    """The item's majority; kept only with `raters` labels (when given) of which `quorum` agree."""
    counts = Counter(v.expression for v in votes)
    ranked = counts.most_common()
    top: str | None = None
    n_agree = 0
    if ranked:
        n_agree = ranked[0][1]
        tied = len(ranked) > 1 and ranked[1][1] == n_agree
        top = None if tied else ranked[0][0]
    complete = raters is None or len(votes) >= raters
    kept = complete and top is not None and n_agree >= quorum
    intensities = sorted(
        INTENSITIES.index(v.intensity) for v in votes if v.expression == top and v.intensity is not None
    )
    intensity = INTENSITIES[intensities[(len(intensities) - 1) // 2]] if intensities else None
    return ItemResult(
        item_id=item_id,
        n_labels=len(votes),
        votes=dict(counts),
        expression=top,
        n_agree=n_agree,
        kept=kept,
        intensity=intensity,
        intensity_votes=dict(Counter(INTENSITIES[i] for i in intensities)),
    )


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa for an items x categories count table with the same number of raters per item."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] == 0:
        return None
    n = counts.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings per item")
    m = n[0]
    p_i = ((counts**2).sum(axis=1) - m) / (m * (m - 1))
    p_bar = p_i.mean()
    p_j = counts.sum(axis=0) / counts.sum()
    p_e = float((p_j**2).sum())
    if math.isclose(p_e, 1.0):
        return None
    return float((p_bar - p_e) / (1 - p_e))


def krippendorff_alpha(matrix: np.ndarray, level: str) -> float | None:
    """Krippendorff's alpha (the `krippendorff` package) for raters x items, NaN where missing."""
    import krippendorff

    values = matrix[~np.isnan(matrix)]
    if values.size == 0 or np.unique(values).size < 2:
        return None  # alpha is undefined with a single value in the whole data
    pairable = (np.sum(~np.isnan(matrix), axis=0) >= 2).sum()
    if pairable == 0:
        return None
    return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def _by_item(votes: Iterable[Vote]) -> dict[int, list[Vote]]:
    out: dict[int, list[Vote]] = {}
    for v in votes:
        out.setdefault(v.item_id, []).append(v)
    return out


def reliability_matrix(votes: Sequence[Vote], what: str) -> np.ndarray:
    """raters x items codes (expression index, or intensity rank), NaN where a rater gave none."""
    raters = sorted({v.annotator for v in votes})
    items = sorted({v.item_id for v in votes})
    ri = {r: i for i, r in enumerate(raters)}
    ii = {it: i for i, it in enumerate(items)}
    m = np.full((len(raters), len(items)), np.nan)
    for v in votes:
        code = (
            EXPRESSIONS.index(v.expression)
            if what == "expression"
            else (INTENSITIES.index(v.intensity) if v.intensity is not None else np.nan)
        )
        m[ri[v.annotator], ii[v.item_id]] = code
    return m


def confusion(votes: Sequence[Vote], results: dict[int, ItemResult]) -> np.ndarray:
    """7 x 7 counts: rows the kept majority expression, columns what each rater chose."""
    m = np.zeros((len(EXPRESSIONS), len(EXPRESSIONS)), dtype=int)
    for v in votes:
        r = results.get(v.item_id)
        if r is not None and r.kept and r.expression is not None:
            m[EXPRESSIONS.index(r.expression), EXPRESSIONS.index(v.expression)] += 1
    return m


@dataclass
class VoteColumns:
    """Votes as columns (what the database hands over fastest): codes instead of strings."""

    item_ids: np.ndarray  # int
    raters: list[str]  # one name per vote
    expression: np.ndarray  # index into EXPRESSIONS
    intensity: np.ndarray  # index into INTENSITIES, -1 for none (neutral)
    duration_ms: np.ndarray  # float

    @classmethod
    def from_votes(cls, votes: Sequence[Vote]) -> VoteColumns:
        e_code = {e: i for i, e in enumerate(EXPRESSIONS)}
        i_code = {x: i for i, x in enumerate(INTENSITIES)}
        return cls(
            item_ids=np.fromiter((v.item_id for v in votes), dtype=np.int64, count=len(votes)),
            raters=[v.annotator for v in votes],
            expression=np.fromiter((e_code[v.expression] for v in votes), dtype=np.int64, count=len(votes)),
            intensity=np.fromiter(
                (-1 if v.intensity is None else i_code[v.intensity] for v in votes),
                dtype=np.int64,
                count=len(votes),
            ),
            duration_ms=np.fromiter((v.duration_ms for v in votes), dtype=float, count=len(votes)),
        )


def project_agreement(
    votes: Sequence[Vote] | VoteColumns, raters_per_item: int, quorum: int, with_items: bool = True
) -> dict:
    """Every figure the dashboard and the export report, from the non-gold votes of one project.

    Vectorised (numpy) over all votes at once: at the paper's 91 K labels this takes a fraction of a
    second; `item_result` states the same per-item rule one item at a time (tested to agree)."""
    cols = votes if isinstance(votes, VoteColumns) else VoteColumns.from_votes(votes)
    n_e, n_i = len(EXPRESSIONS), len(INTENSITIES)
    item_ids, inverse = np.unique(cols.item_ids, return_inverse=True)
    names, ridx = np.unique(np.asarray(cols.raters, dtype=object).astype(str), return_inverse=True)
    expr, inten = cols.expression, cols.intensity
    n_items = len(item_ids)
    counts = np.bincount(inverse * n_e + expr, minlength=n_items * n_e).reshape(n_items, n_e)
    n_labels = counts.sum(axis=1)
    n_agree = counts.max(axis=1, initial=0)
    tied = (counts == n_agree[:, None]).sum(axis=1) > 1
    top = np.where(tied, -1, counts.argmax(axis=1))
    complete = n_labels == raters_per_item
    kept = (n_labels >= raters_per_item) & ~tied & (n_agree >= quorum)
    # intensity: the lower median among the raters who chose the item's expression
    chose = (expr == top[inverse]) & (inten >= 0)
    icounts = np.bincount(inverse[chose] * n_i + inten[chose], minlength=n_items * n_i).reshape(n_items, n_i)
    n_int = icounts.sum(axis=1)
    median = np.argmax(icounts.cumsum(axis=1) > ((n_int - 1) // 2)[:, None], axis=1)
    median = np.where(n_int > 0, median, -1)
    kappa = fleiss_kappa(counts[complete]) if complete.any() and raters_per_item >= 2 else None
    exp_m = np.full((len(names), n_items), np.nan)
    exp_m[ridx, inverse] = expr
    int_m = np.full((len(names), n_items), np.nan)
    has_int = inten >= 0
    int_m[ridx[has_int], inverse[has_int]] = inten[has_int]
    on_kept = kept[inverse]
    agree = on_kept & (expr == top[inverse])
    exact = agree & (inten == median[inverse])
    per = {k: np.bincount(ridx, weights=w, minlength=len(names)) for k, w in
           (("labels", None), ("on_kept", on_kept), ("agree", agree), ("exact", exact))}  # fmt: skip
    order = np.argsort(ridx, kind="stable")
    bounds = np.cumsum(per["labels"]).astype(int)
    secs = cols.duration_ms / 1000
    annotators: dict[str, dict] = {}
    for r, name in enumerate(names):
        mine = secs[order[bounds[r] - int(per["labels"][r]) : bounds[r]]]
        n_kept = int(per["on_kept"][r])
        annotators[str(name)] = {
            "labels": int(per["labels"][r]),
            "on_kept_items": n_kept,
            "expression_agreement": per["agree"][r] / n_kept if n_kept else None,
            "exact_agreement": per["exact"][r] / n_kept if n_kept else None,
            "median_seconds": float(np.median(mine)) if mine.size else None,
        }
    conf = np.zeros((n_e, n_e), dtype=int)
    np.add.at(conf, (top[inverse][on_kept], expr[on_kept]), 1)
    timing = (
        {q: float(np.percentile(secs, int(q[1:]))) for q in ("p50", "p95", "p99")} | {"n": int(secs.size)}
        if secs.size
        else None
    )
    report = {
        "labels": int(len(expr)),
        "items_labelled": n_items,
        "items_complete": int(complete.sum()),
        "items_kept": int(kept.sum()),
        "kept_rate_of_complete": float(kept[complete].mean()) if complete.any() else None,
        "fleiss_kappa_expression": kappa,
        "krippendorff_alpha_expression_nominal": krippendorff_alpha(exp_m, "nominal"),
        "krippendorff_alpha_intensity_ordinal": krippendorff_alpha(int_m, "ordinal"),
        "kept_expressions": {
            EXPRESSIONS[int(e)]: int(c)
            for e, c in zip(*np.unique(top[kept], return_counts=True), strict=True)
        },
        "annotators": annotators,
        "confusion": conf.tolist(),
        "seconds_per_item": timing,  # served -> submit, what a lease has to cover
    }
    if with_items:
        report["items"] = {
            int(item_ids[k]): ItemResult(
                item_id=int(item_ids[k]),
                n_labels=int(n_labels[k]),
                votes={EXPRESSIONS[e]: int(counts[k, e]) for e in np.flatnonzero(counts[k])},
                expression=None if top[k] < 0 else EXPRESSIONS[int(top[k])],
                n_agree=int(n_agree[k]),
                kept=bool(kept[k]),
                intensity=None if median[k] < 0 else INTENSITIES[int(median[k])],
                intensity_votes={INTENSITIES[i]: int(icounts[k, i]) for i in np.flatnonzero(icounts[k])},
            )
            for k in range(n_items)
        }
    return report


def gold_accuracy(rows: Iterable[tuple[str, str, str | None, str, str | None]]) -> dict[str, dict]:
    """Per annotator: rows of (annotator, expression, intensity, gold_expression, gold_intensity)."""
    out: dict[str, dict] = {}
    for name, e, i, ge, gi in rows:
        d = out.setdefault(name, {"gold_labels": 0, "expression_correct": 0, "exact_correct": 0})
        d["gold_labels"] += 1
        d["expression_correct"] += e == ge
        d["exact_correct"] += e == ge and i == gi
    for d in out.values():
        d["expression_accuracy"] = d["expression_correct"] / d["gold_labels"]
        d["exact_accuracy"] = d["exact_correct"] / d["gold_labels"]
    return out


def confusion_png(matrix: Sequence[Sequence[int]], title: str = "Rater label vs kept majority") -> bytes:
    """The confusion matrix as a PNG (matplotlib, Agg)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EXPRESSIONS)), EXPRESSIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EXPRESSIONS)), EXPRESSIONS)
    ax.set_xlabel("rater's expression")
    ax.set_ylabel("kept majority expression")
    ax.set_title(title)
    for r in range(m.shape[0]):
        for c in range(m.shape[1]):
            if m[r, c]:
                ax.text(
                    c,
                    r,
                    int(m[r, c]),
                    ha="center",
                    va="center",
                    color="white" if norm[r, c] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of the row")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
