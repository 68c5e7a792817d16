"""Cost projection: hours and cost to build N pairs (default 150 K, HFL-150K's size) on a cluster of a
stated shape, from per-stage rates measured in a finished build (its stats.json files) or given.

    python benchmarks/projection.py --build demo-out --nodes 8 --cpus-per-node 32 --node-cost 1.60
    python benchmarks/projection.py --build demo-out --nodes 4 --cpus-per-node 16 --gpus-per-node 1 \\
        --gpu-rate caption=0.5 --node-cost 3.10       # caption on a GPU at 0.5 s per video (a given rate)
    python benchmarks/projection.py --rate mine=40 --rate quality=4 --pairs-per-video 6 --nodes 2

Rates are resource-seconds per input video: CPU-core seconds (actors x CPUs per actor x the run's seconds
/ videos) or GPU seconds. For stages that ran as one streaming run (several pools at once), the run's
seconds are shared: each pool's resource-seconds count in full (they were held that long). Every
assumption is printed with the result.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from hfl.storage import location

PAIR_STAGES = ("caption", "identity", "pair")  # the last of these in a build counts its kept pairs


def measured(build: str) -> tuple[dict[str, float], dict[str, float], float, float, list[str]]:
    """(cpu core-s per video, gpu-s per video, pairs per video, startup seconds, notes) from a build."""
    out = location(build)
    cpu: dict[str, float] = {}
    gpu: dict[str, float] = {}
    notes: list[str] = []
    stats: dict[str, dict[str, Any]] = {}
    for d in sorted((out / "stages").iterdir()):
        try:
            stats[d.name] = json.loads((d / "stats.json").read_text())
        except FileNotFoundError:
            continue
    if "mine" not in stats:
        raise SystemExit(f"{build}: no finished mine stage")
    videos = max(int(stats["mine"]["units"]), 1)
    counted: set[tuple[str, ...]] = set()
    for name, st in stats.items():
        pools = st.get("pools") or [
            {"stages": st.get("fused_with") or [name], "actors": 1, "num_cpus": 1.0, "num_gpus": 0.0}
        ]
        run = tuple(s for p in pools for s in p["stages"])
        if run in counted:
            continue  # one streaming run: its pools were recorded in each stage's stats
        counted.add(run)
        for p in pools:
            key = "+".join(p["stages"])
            if p.get("started") is not None and p.get("ended") is not None:
                secs = float(p["ended"]) - float(p["started"])
                basis = "pool busy span"
            else:
                secs = float(st["seconds"])
                basis = "run seconds"
            if p.get("num_gpus", 0) > 0:
                gpu[key] = secs * p["actors"] * p["num_gpus"] / videos
                notes.append(
                    f"{key}: {p['actors']} GPU actor(s) x {p['num_gpus']:g} GPU, {secs:.1f} s ({basis})"
                )
            else:
                cpu[key] = secs * p["actors"] * p["num_cpus"] / videos
                notes.append(f"{key}: {p['actors']} actor(s) x {p['num_cpus']:g} CPU, {secs:.1f} s ({basis})")
    final = next((s for s in PAIR_STAGES if s in stats), None)
    if final is None:
        raise SystemExit(f"{build}: no pair stage finished (need pair, identity or caption)")
    pairs = float(stats[final]["kept"]) / videos
    notes.append(f"pairs per video: {stats[final]['kept']} kept by {final} / {videos} input videos")
    return cpu, gpu, pairs, 0.0, notes


def project(
    cpu: dict[str, float],
    gpu: dict[str, float],
    pairs_per_video: float,
    target_pairs: int,
    nodes: int,
    cpus_per_node: int,
    gpus_per_node: int,
    node_cost: float,
    efficiency: float,
    startup_s: float,
) -> dict[str, float]:
    """Hours: the busier resource (all CPU work over all cores, all GPU work over all GPUs) at the given
    parallel efficiency, plus start-up. Streaming pools overlap, so the slower resource sets the time."""
    videos = math.ceil(target_pairs / max(pairs_per_video, 1e-9))
    cpu_s = videos * sum(cpu.values()) / (nodes * cpus_per_node * efficiency)
    if gpu and gpus_per_node == 0:
        raise SystemExit("GPU rates given but --gpus-per-node is 0")
    gpu_s = videos * sum(gpu.values()) / (nodes * gpus_per_node * efficiency) if gpu else 0.0
    hours = (max(cpu_s, gpu_s) + startup_s) / 3600
    return {
        "videos": videos,
        "cpu_hours_wall": cpu_s / 3600,
        "gpu_hours_wall": gpu_s / 3600,
        "hours": hours,
        "cost": hours * nodes * node_cost,
        "bound": "GPU" if gpu_s > cpu_s else "CPU",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", help="a finished build (folder or s3://...) to read the rates from")
    ap.add_argument("--rate", action="append", default=[], help="stage=CPU core-seconds per video (given)")
    ap.add_argument("--gpu-rate", action="append", default=[], help="stage=GPU seconds per video (given)")
    ap.add_argument("--pairs-per-video", type=float, help="kept pairs per input video (given)")
    ap.add_argument("--target-pairs", type=int, default=150_000)
    ap.add_argument("--nodes", type=int, default=1)
    ap.add_argument("--cpus-per-node", type=int, default=32)
    ap.add_argument("--gpus-per-node", type=int, default=0)
    ap.add_argument("--node-cost", type=float, default=1.0, help="price of one node-hour (any currency)")
    ap.add_argument(
        "--efficiency", type=float, default=0.85, help="parallel efficiency (measured: see README)"
    )
    ap.add_argument("--startup-s", type=float, default=60.0, help="cluster + actor-pool start-up seconds")
    args = ap.parse_args()

    notes: list[str] = []
    cpu: dict[str, float] = {}
    gpu: dict[str, float] = {}
    ppv = None
    if args.build:
        cpu, gpu, ppv, _, notes = measured(args.build)
    for item in args.rate:
        k, v = item.split("=")
        cpu[k] = float(v)
        notes.append(f"{k}: {v} CPU core-s per video (given)")
    for item in args.gpu_rate:
        k, v = item.split("=")
        gpu[k] = float(v)
        if k in cpu:  # the stage ran alone on CPUs: its rate moves to the GPU
            del cpu[k]
            notes.append(f"{k}: {v} GPU-s per video (given; its measured CPU rate dropped)")
        else:  # measured fused with other stages: its CPU share cannot be separated, so it stays counted
            notes.append(f"{k}: {v} GPU-s per video (given; its CPU share in a fused run stays counted)")
    if args.pairs_per_video is not None:
        ppv = args.pairs_per_video
        notes.append(f"pairs per video: {ppv:g} (given)")
    if ppv is None:
        raise SystemExit("need --build or --pairs-per-video")
    res = project(
        cpu, gpu, ppv, args.target_pairs, args.nodes, args.cpus_per_node, args.gpus_per_node,
        args.node_cost, args.efficiency, args.startup_s,
    )  # fmt: skip
    print("Assumptions")
    for n in notes:
        print(f"  - {n}")
    print(f"  - rates scale linearly with cores; parallel efficiency {args.efficiency:g}")
    print("  - CPU and GPU pools stream (overlap): the busier resource sets the time")
    print(f"  - start-up {args.startup_s:g} s once; input videos like the measured ones (length, faces)")
    print(f"  - cluster: {args.nodes} node(s) x {args.cpus_per_node} CPU, {args.gpus_per_node} GPU; "
          f"{args.node_cost:g} per node-hour")  # fmt: skip
    print("Rates per input video")
    for k, v in cpu.items():
        print(f"  {k:32s} {v:8.3f} CPU core-s")
    for k, v in gpu.items():
        print(f"  {k:32s} {v:8.3f} GPU-s")
    print(f"Projection for {args.target_pairs} pairs ({ppv:.2f} pairs per video)")
    print(f"  videos          {res['videos']}")
    print(f"  CPU-bound time  {res['cpu_hours_wall']:.2f} h   GPU-bound time {res['gpu_hours_wall']:.2f} h")
    print(f"  wall time       {res['hours']:.2f} h ({res['bound']}-bound)")
    print(
        f"  cost            {res['cost']:.2f} "
        f"({args.nodes} nodes x {res['hours']:.2f} h x {args.node_cost:g})"
    )


if __name__ == "__main__":
    main()
