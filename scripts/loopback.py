"""Loopback services for tests and local trials: an S3-compatible server (moto) and a multi-node Ray cluster,
everything on 127.0.0.1, each bounded in time (it stops by itself after `max_s` even if nobody stops it) and
stopped by process id (never by name: other Ray clusters on the machine are left alone).

    python scripts/loopback.py s3 --port 9000 --max-s 600     # prints the AWS_* variables to export
    python scripts/loopback.py cluster --workers 1 --max-s 600  # prints RAY_ADDRESS, RAY_AUTH_* to export

Used by the test fixtures (tests/test_cluster.py) through `S3Server` and `RayCluster`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WATCHDOG = ROOT / "hfl" / "engine" / "watchdog.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bounded(cmd: list[str], max_s: float, env: dict[str, str] | None = None, log: Path | None = None):
    """Start `cmd` under coreutils `timeout` (ends it after max_s) with a watchdog that ends every process
    it started once `timeout` has exited (by process id and start time)."""
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen(
        ["timeout", "--kill-after=5", str(int(max_s)), *cmd],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    subprocess.Popen(
        [sys.executable, str(WATCHDOG), str(proc.pid)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return proc


def kill_tree(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM a process and all its descendants (by id), SIGKILL what is left after grace_s."""
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    from hfl.engine.watchdog import end_processes

    end_processes([root, *root.children(recursive=True)], grace_s)


class S3Server:
    """moto's standalone S3 server on 127.0.0.1 with a fresh bucket; `env` holds the variables s3fs reads."""

    def __init__(self, max_s: float = 900, bucket: str = "hfl-test") -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.proc = _bounded([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)], max_s)
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start on {self.endpoint}") from None
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, **self._creds()).create_bucket(Bucket=bucket)

    def _creds(self) -> dict[str, str]:
        return {
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "region_name": "us-east-1",
        }

    def stop(self) -> None:
        kill_tree(self.proc.pid)


class RayCluster:
    """A head node and `workers` worker nodes via `ray start --block`, token auth on, each node with its own
    temp dir and ports, all on 127.0.0.1. `env` holds what a driver (or hfl build) needs to connect."""

    def __init__(
        self,
        workers: int = 1,
        cpus: int = 1,
        max_s: float = 900,
        extra_env: dict[str, str] | None = None,
        head_cpus: int | None = None,
    ) -> None:
        self.token = secrets.token_hex(16)
        self.root = Path(tempfile.mkdtemp(prefix="hflr-", dir="/tmp"))  # short: Ray's socket paths
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            **(extra_env or {}),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env.pop("RAY_ADDRESS", None)
        self.max_s = max_s
        self.head = self._node(head=True, cpus=cpus if head_cpus is None else head_cpus, name="head")
        self.workers = [self._node(head=False, cpus=cpus, name=f"w{i}") for i in range(workers)]
        self.wait_nodes(1 + workers)

    def _node(self, head: bool, cpus: int, name: str) -> subprocess.Popen:
        tmp = self.root / name
        tmp.mkdir()
        cmd = [
            str(BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
            "--num-gpus=0", f"--temp-dir={tmp}", "--disable-usage-stats",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--object-store-memory={200 * 1024 * 1024}",
        ]  # fmt: skip
        if head:
            cmd += ["--head", f"--port={self.port}", "--include-dashboard=false"]
        else:
            cmd += [f"--address={self.address}"]
        return _bounded(cmd, self.max_s, self.env, log=self.root / f"{name}.log")

    def node_count(self) -> int:
        code = (
            f"import ray; ray.init(address='{self.address}', logging_level='ERROR');"
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=60
        )
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def wait_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while self.node_count() < n:
            if time.time() > deadline:
                logs = "\n".join(p.read_text()[-1500:] for p in self.root.glob("*.log"))
                self.stop()
                raise RuntimeError(f"the loopback Ray cluster did not reach {n} nodes:\n{logs}")
            time.sleep(1)

    def raylet_pids(self, node: subprocess.Popen) -> list[int]:
        import psutil

        return [
            p.pid for p in psutil.Process(node.pid).children(recursive=True) if p.name().startswith("raylet")
        ]

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            kill_tree(node.pid)
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["s3", "cluster"])
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-s", type=float, default=600)
    args = ap.parse_args()
    if args.what == "s3":
        srv = S3Server(max_s=args.max_s)
        for k, v in srv.env.items():
            print(f"export {k}={v}")
        print(f"# bucket: s3://{srv.bucket}; stops by itself after {args.max_s:g} s (pid {srv.proc.pid})")
    else:
        cl = RayCluster(workers=args.workers, max_s=args.max_s)
        print(f"export RAY_ADDRESS={cl.address} RAY_AUTH_MODE=token RAY_AUTH_TOKEN={cl.token}")
        print(f"# stops by itself after {args.max_s:g} s (head pid {cl.head.pid})")


if __name__ == "__main__":
    main()
