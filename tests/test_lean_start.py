"""Lean start: what a mine/quality worker imports, and the native log line hfl drops from stderr."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hfl.engine.runner import QUIET_NATIVE_LINES, filter_native_lines

ACTOR_LINE = (
    b"[2026-12-02 12:36:20,823 E 2126 2126] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches"
    b"(UnitWorker))' and ID: 'd77a' has constructor arguments in the object store and max_restarts > 0. If "
    b"the arguments in the object store go out of scope or are lost, the actor restart will fail.\n"
)


def test_filter_drops_only_the_actor_restart_line() -> None:
    bar = b"\rmine+quality (2 workers):   0%|          | 0/4 [00:00<?, ?unit/s]"
    real = b"[2026-12-02 12:36:21,001 E 2126 2126] core_worker.cc:99: Task failed: RayOutOfMemoryError\n"
    now, held = filter_native_lines(bar + ACTOR_LINE + real + b"plain text\n", QUIET_NATIVE_LINES)
    assert (now, held) == (bar + real + b"plain text\n", b"")
    # a native line split across two reads is held, then judged whole
    now, held = filter_native_lines(bar + ACTOR_LINE[:30], QUIET_NATIVE_LINES)
    assert now == bar and held == ACTOR_LINE[:30]
    now, held = filter_native_lines(held + ACTOR_LINE[30:], QUIET_NATIVE_LINES)
    assert (now, held) == (b"", b"")


def test_quiet_native_stderr_on_the_real_fd() -> None:
    code = textwrap.dedent(
        f"""
        import os, sys
        from hfl.engine.runner import quiet_native_stderr
        with quiet_native_stderr():
            os.write(2, {ACTOR_LINE!r})
            os.write(2, b"kept native line\\n")
            print("python warning", file=sys.stderr)
        os.write(2, b"after\\n")
        """
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).stderr
    assert err == b"kept native line\npython warning\nafter\n", err


def test_mine_and_quality_workers_do_not_import_torch() -> None:
    # what UnitWorker.__init__ does before setup(): the pipeline config is composed from every registered
    # stage's module (hfl.pipeline), so no stage module may import torch at module level
    code = (
        "import sys\nfrom hfl.stages import STAGES\n"
        "assert 'shard' in STAGES and 'webdataset' not in sys.modules\n"
        "from hfl.engine.runner import UnitWorker\nfrom hfl.pipeline import PipelineConfig\n"
        "assert 'hfl.stages.shard' in sys.modules\n"
        "cfg = PipelineConfig()\nSTAGES['mine'](cfg), STAGES['quality'](cfg)\n"
        "print(sorted(m for m in ('torch', 'webdataset', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
