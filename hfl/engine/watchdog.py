"""Watchdog of an embedded Ray: when the driver dies (kill -9, OOM kill), end the Ray processes it started.

`start_watchdog()` (called after an embedded ``ray.init``) spawns this file as a small separate process. While
the driver lives, it records every descendant of the driver (gcs_server, raylet, dashboard and runtime-env
agents, workers) by process id and start time, every half second. Once the driver is gone it sends SIGTERM,
then SIGKILL after a grace period, to exactly those recorded processes still alive with the same start time
(so a reused process id is never hit), and exits. On a normal exit Ray's own shutdown has already ended
them and the watchdog just exits.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

POLL_S = 0.5
GRACE_S = 3.0


def start_watchdog() -> int:
    """Start the watchdog of this (driver) process; returns its process id."""
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # not in the driver's process group: a Ctrl-C or group kill spares it
        close_fds=True,
    )
    return proc.pid


def watch(driver_pid: int) -> int:
    """Run until the driver exits; then end its recorded descendants. Returns how many were signalled."""
    import psutil

    me = os.getpid()
    known: dict[int, float] = {}
    try:
        driver = psutil.Process(driver_pid)
        born = driver.create_time()
    except psutil.NoSuchProcess:
        return 0
    while True:
        try:
            if not driver.is_running() or driver.create_time() != born or driver.status() == "zombie":
                break
            for child in driver.children(recursive=True):
                if child.pid != me:
                    try:
                        known.setdefault(child.pid, child.create_time())
                    except psutil.NoSuchProcess:
                        pass
        except psutil.NoSuchProcess:
            break
        time.sleep(POLL_S)
    procs = []
    for pid, created in known.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created:  # the same process, not a reused id
                procs.append(p)
        except psutil.NoSuchProcess:
            continue
    return end_processes(procs, GRACE_S)


def end_processes(procs: list[Any], grace_s: float) -> int:
    """SIGTERM each psutil process, SIGKILL those alive after grace_s; returns how many were signalled."""
    import psutil

    signalled = []
    for p in procs:
        try:
            p.terminate()
            signalled.append(p)
        except psutil.NoSuchProcess:
            pass
    _, still = psutil.wait_procs(signalled, timeout=grace_s)
    for p in still:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return len(signalled)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
