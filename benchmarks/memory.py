"""Peak memory of `hfl build` (mine + quality) over 40 input videos vs 10.

Each build is a separate `hfl build ... --no-report` process. A watcher thread samples, every --interval
seconds, the RSS summed over that process and all its descendants (embedded Ray's gcs_server, raylet,
agents and worker/actor processes are started below the driver). RSS counts shared pages (libraries, the
object store's shared memory) once per process that maps them, so the sum over-states real use; it is
the same measure for both sizes, which is what the ratio needs.

    python benchmarks/memory.py              # 10 vs 40 copies of the real clip at fps 30 (64 frames each)
    python benchmarks/memory.py --quick      # 2 vs 4 copies, smoke test
"""

from __future__ import annotations

import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    FACE_STACKS,
    bench_config,
    bench_dir,
    bench_parser,
    hfl_command,
    load_note,
    run_hfl,
    stage_stats,
)

MB = 1024 * 1024


def kind_of(p: psutil.Process, root_pid: int) -> str:
    """Short label for a process in the tree: driver, gcs_server, raylet, ray::<actor>, ..."""
    if p.pid == root_pid:
        return "driver (hfl build)"
    try:
        name = p.name()
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    first = cmd[0] if cmd else name
    if first.startswith("ray::"):
        return first.split()[0]
    for key in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor.py", "agent"):
        if key in " ".join(cmd[:3]) or key in name:
            return key
    return name


class Watcher(threading.Thread):
    def __init__(self, pid: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stop = threading.Event()
        self.peak = 0
        self.peak_at = 0.0
        self.peak_parts: dict[str, list[int]] = {}
        self.samples = 0
        self.max_procs = 0

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        t0 = time.perf_counter()
        while not self.stop.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            total, sizes = 0, []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                sizes.append((p, rss))
            self.samples += 1
            self.max_procs = max(self.max_procs, len(procs))
            if total > self.peak:  # label processes only at a new peak (workers retitle themselves)
                parts: dict[str, list[int]] = defaultdict(list)
                for p, rss in sizes:
                    parts[kind_of(p, self.pid)].append(rss)
                self.peak, self.peak_at, self.peak_parts = total, time.perf_counter() - t0, dict(parts)
            self.stop.wait(self.interval)


def measure(config: Path, out: Path, workers: int, interval: float) -> dict[str, Any]:
    watchers: list[Watcher] = []

    def watch(pid: int) -> None:
        watchers.append(Watcher(pid, interval))
        watchers[-1].start()

    try:
        wall, _ = run_hfl(hfl_command(config, out, workers), out.with_suffix(".log"), watch)
    finally:
        for w in watchers:
            w.stop.set()
            w.join()
    w = watchers[0]
    return {
        "wall": wall,
        "peak": w.peak,
        "peak_at": w.peak_at,
        "parts": w.peak_parts,
        "samples": w.samples,
        "procs": w.max_procs,
        "frames": stage_stats(out, "mine")["rows_in"],
    }


def main() -> None:
    ap = bench_parser(__doc__, "2 vs 4 copies")
    ap.add_argument("--small", type=int, default=10, help="input videos, small run")
    ap.add_argument("--large", type=int, default=40, help="input videos, large run")
    ap.add_argument("--workers", type=int, default=0, help="ray.workers (0 = one per CPU)")
    ap.add_argument("--interval", type=float, default=0.2, help="sampling period, seconds")
    ap.add_argument("--stack", choices=sorted(FACE_STACKS), default="dlib", help="face backends")
    a = ap.parse_args()
    if a.quick:
        a.small, a.large = 2, 4
    with bench_dir("hfl-bench-memory-", a.keep) as tmp:
        head = f"memory: {a.small} vs {a.large} videos, fps {a.fps:g}, cap {a.cap}, workers {a.workers}"
        print(f"{head}; {load_note()}")
        res = {}
        for n in (a.small, a.large):
            config = bench_config(tmp, f"-{n}", n, a.fps, a.cap, a.stack)
            r = res[n] = measure(config, tmp / f"build-{n}", a.workers, a.interval)
            print(
                f"{n} videos ({r['frames']} frames): peak RSS {r['peak'] / MB:.0f} MB at {r['peak_at']:.1f}s "
                f"of {r['wall']:.1f}s; {r['samples']} samples, up to {r['procs']} processes"
            )
            for label, rss in sorted(r["parts"].items(), key=lambda kv: -sum(kv[1])):
                print(f"    {label:<48} {len(rss):2d} proc  {sum(rss) / MB:7.0f} MB")
        ratio = res[a.large]["peak"] / res[a.small]["peak"]
        print(
            f"memory ratio: {ratio:.2f} (target <= 1.2; peak {res[a.large]['peak'] / MB:.0f} MB "
            f"vs {res[a.small]['peak'] / MB:.0f} MB)"
        )


if __name__ == "__main__":
    main()
