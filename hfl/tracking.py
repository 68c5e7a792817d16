"""Link face boxes across the sampled frames of one video into tracks (greedy IoU matching), and the
union-find that joins tracks (pair) and videos (split) of one person."""

from __future__ import annotations

from dataclasses import dataclass, field


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Tracker:
    """Greedy IoU tracker: a face continues the track whose last box overlaps it most (IoU >= min_iou),
    seen at most `max_gap` sampled frames ago; otherwise it starts a new track."""

    prefix: str
    min_iou: float = 0.3
    max_gap: int = 2
    _tracks: dict[int, tuple[tuple[float, float, float, float], int]] = field(default_factory=dict)
    _step: int = 0
    _next: int = 0

    def update(self, boxes: list[tuple[float, float, float, float]]) -> list[str]:
        """Track ids for the boxes of the next sampled frame (in the given order)."""
        self._step += 1
        live = {t: v for t, v in self._tracks.items() if self._step - v[1] <= self.max_gap + 1}
        pairs = sorted(
            ((iou(b, tb), i, t) for i, b in enumerate(boxes) for t, (tb, _) in live.items()), reverse=True
        )
        assigned: dict[int, int] = {}
        used: set[int] = set()
        for score, i, t in pairs:
            if score < self.min_iou:
                break
            if i in assigned or t in used:
                continue
            assigned[i] = t
            used.add(t)
        ids = []
        for i, b in enumerate(boxes):
            t = assigned.get(i)
            if t is None:
                t = self._next
                self._next += 1
            live[t] = (b, self._step)
            ids.append(f"{self.prefix}_t{t}")
        self._tracks = live
        return ids


class UnionFind:
    """Disjoint sets over 0..n-1 whose root is always the smallest member (joins are order-independent)."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]  # path halving
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
