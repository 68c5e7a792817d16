"""A stage is one module: its config section, checks, reject reasons and card rows live in its own file.

- hfl.config imports no stage; PipelineConfig's sections follow the registry.
- Every reject reason the code can write has human text declared by a stage, and every declared reason is
  written somewhere (found by reading the source with `ast`, so a new `reject(row, "x", ...)` without a
  declaration, or a declaration nobody writes, fails here).
- Adding a stage = one new file + one registry line: a toy stage added to a copy of the package builds
  with a real (embedded) Ray through `hfl build`, its section loads from YAML and `--set`, its checks run,
  and its reasons appear in the report.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import html
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import hfl
from hfl.stages import STAGES

HFL = Path(hfl.__file__).parent
CONSUMERS = {"report.py", "yields.py", "card.py", "parts.py"}  # read or count reasons, never write them
# calls that write a reject reason, and the index of the argument that holds it
EMITTERS = {"reject": 1, "input_row": 1, "DecodeError": 0}


def test_config_imports_no_stage() -> None:
    tree = ast.parse((HFL / "config.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith(("hfl.stages", "hfl.pipeline"))}, imported
    code = "import sys, hfl.config\nprint(sorted(m for m in sys.modules if m.startswith('hfl.stages')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_pipeline_sections_follow_the_registry() -> None:
    from hfl.config import CoreConfig
    from hfl.pipeline import PipelineConfig

    names = [f.name for f in dataclasses.fields(PipelineConfig)]
    core = [f.name for f in dataclasses.fields(CoreConfig)]
    sections = [n for n in STAGES if STAGES[n].config_class is not None]
    assert names == core + sections
    assert set(sections) >= {"mine", "quality", "pair", "identity", "caption", "synth", "validate", "split"}
    for name in sections:
        cls = STAGES[name].config_class
        assert inspect.getmodule(cls) is inspect.getmodule(STAGES[name]), name  # declared in the stage's file
        assert isinstance(getattr(PipelineConfig(), name), cls)
        # every field carries its one-line comment (the only documentation of a YAML key)
        lines = inspect.getsource(cls).splitlines()
        for f in dataclasses.fields(cls):
            line = next(s for s in lines if s.strip().startswith(f"{f.name}:"))
            assert "  # " in line, (name, f.name)


# ----------------------------------------------------------------------------- reasons in the source


def _assigned(name: str, scope: ast.AST) -> list[ast.AST]:
    """Values assigned to a local name in a function (`=` and `:=`)."""
    out: list[ast.AST] = []
    for n in ast.walk(scope):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
            out.append(n.value)
        if isinstance(n, ast.NamedExpr) and n.target.id == name:
            out.append(n.value)
    return out


def _strings(node: ast.AST | None, scope: ast.AST, funcs: dict[str, ast.FunctionDef]) -> set[str] | None:
    """String values an expression can take (None: cannot tell from the source)."""
    if isinstance(node, ast.Constant):
        return {node.value} if isinstance(node.value, str) else set()
    if isinstance(node, ast.IfExp):
        a, b = _strings(node.body, scope, funcs), _strings(node.orelse, scope, funcs)
        return None if a is None or b is None else a | b
    if isinstance(node, ast.Name):  # a local variable: every value assigned to it in the function
        values = _assigned(node.id, scope)
        if not values and isinstance(scope, ast.FunctionDef):
            params = {a.arg for a in scope.args.args + scope.args.kwonlyargs}
            if node.id in params:
                return set()  # a parameter (reject's, input_row's): its values are read at the call sites
        found: set[str] = set()
        for v in values:
            s = _strings(v, scope, funcs)
            if s is None:
                return None
            found |= s
        return found if values else None
    called = None
    if isinstance(node, ast.Call):
        called = getattr(node.func, "id", getattr(node.func, "attr", None))
    if called in funcs:
        fn = funcs[called]  # a helper (function or method) returning (reason, detail) tuples or a reason
        found = set()
        for r in (n for n in ast.walk(fn) if isinstance(n, ast.Return) and n.value is not None):
            s = _strings(r.value.elts[0] if isinstance(r.value, ast.Tuple) else r.value, fn, funcs)
            if s is None:
                return None
            found |= s
        return found
    return None


def _written_reasons() -> tuple[dict[str, set[str]], list[str]]:
    """{module file: reasons it writes}, and the writes whose reason the source does not show."""
    trees = {p: ast.parse(p.read_text()) for p in HFL.rglob("*.py") if p.name not in CONSUMERS}
    funcs = {n.name: n for t in trees.values() for n in ast.walk(t) if isinstance(n, ast.FunctionDef)}
    out: dict[str, set[str]] = {}
    unknown: list[str] = []
    for path, tree in trees.items():
        rel = str(path.relative_to(HFL))
        scopes = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)] or [tree]
        for scope in scopes:
            exprs: list[ast.AST] = []
            for n in ast.walk(scope):
                if isinstance(n, ast.Call):
                    name = n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
                    if name in EMITTERS:
                        i = EMITTERS[name]
                        if len(n.args) > i and not isinstance(n.args[i], ast.Starred):
                            exprs.append(n.args[i])
                        elif n.args and isinstance(n.args[-1], ast.Starred):  # reject(row, *problem)
                            exprs.append(ast.Subscript(n.args[-1].value, ast.Constant(0)))
                    exprs += [k.value for k in n.keywords if k.arg == "reject_reason"]
                if isinstance(n, ast.Assign):  # row["reject_reason"] = ...
                    subs = [t for t in n.targets if isinstance(t, ast.Subscript)]
                    keys = [getattr(t.slice, "value", None) for t in subs]
                    if "reject_reason" in keys:
                        exprs.append(n.value)
                if isinstance(n, ast.Dict):
                    exprs += [
                        v for k, v in zip(n.keys, n.values, strict=True)
                        if isinstance(k, ast.Constant) and k.value == "reject_reason"
                    ]  # fmt: skip
            for e in exprs:
                if isinstance(e, ast.Subscript):  # first element of a (reason, detail) tuple variable
                    e = e.value
                    if isinstance(e, ast.Name):
                        values = _assigned(e.id, scope)
                        e = values[0] if len(values) == 1 else e
                s = _strings(e, scope, funcs)
                if s is None:
                    unknown.append(f"{rel}: {ast.unparse(e)}")
                else:
                    out.setdefault(rel, set()).update(s)
    return out, unknown


def test_every_written_reason_is_declared_and_every_declared_reason_written() -> None:
    from hfl.stages.rows import REASONS as SHARED

    written, unknown = _written_reasons()
    # the writes whose reason is a DecodeError's (raised with a literal reason in hfl/video.py, counted there)
    assert sorted(set(unknown)) == ["stages/mine.py: exc.reason", "video.py: exc.reason"], unknown
    declared = {name: STAGES[name].reasons for name in STAGES}
    everywhere = set(SHARED).union(*map(set, declared.values()))
    all_written = set().union(*written.values())
    assert all_written - everywhere == set(), "reasons written without human text"
    assert everywhere - all_written == set(), "declared reasons no code writes"
    # a stage's own module writes only reasons that stage (or the shared helpers) declares
    for name in STAGES:
        rel = f"stages/{name}.py"
        assert written.get(rel, set()) <= set(declared[name]) | set(SHARED), name
    # reasons a stage writes through helpers: DecodeError (mine), undescribed_motion (pair, caption)
    assert written["video.py"] <= set(declared["mine"])
    motion = {"ambiguous_turn", "undescribed_tilt"}  # hfl.instructions.undescribed_motion
    assert motion <= written["stages/pair.py"] and motion <= written["stages/caption.py"]
    for name, reasons in declared.items():
        for reason, text in reasons.items():
            assert text and "\n" not in text and len(text) <= 110, (name, reason)
        # a measure (per-video yield table) belongs to a reason of the stage; its bar is a key of its section
        section = STAGES[name].config_class
        keys = {f.name for f in dataclasses.fields(section)} if section is not None else set()
        for reason, (_, bar) in STAGES[name].measures.items():
            assert reason in reasons and (bar is None or bar in keys), (name, reason, bar)


# ----------------------------------------------------------------------------- one file + one line

TOY_STAGE = '''"""Stage `toy`: numbers 0..count-1 in units of `chunk`; multiples of reject_every rejected."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from hfl.engine.stage import Resources, Stage, StageContext, WorkUnit


@dataclass
class ToyConfig:
    """Section `toy` of the pipeline config."""

    count: int = 10  # numbers written
    chunk: int = 4  # numbers per work unit
    reject_every: int = 3  # multiples of this are rejected (toy_multiple)


class ToyStage(Stage):
    name = "toy"
    outputs = ("number", "square")
    description = "numbers and their squares (a stage added by one file and one registry line)"
    config_class = ToyConfig
    reasons = {"toy_multiple": "the number is a multiple of toy.reject_every"}

    @classmethod
    def check(cls, cfg: Any, stages: list[str]) -> list[str]:
        errors = []
        if cfg.toy.count < 1:
            errors.append("toy.count: must be >= 1")
        if cfg.toy.reject_every < 2:
            errors.append("toy.reject_every: must be >= 2")
        return errors

    @classmethod
    def card_rows(cls, cfg: Any) -> dict[str, list[list[Any]]]:
        return {"thresholds": [["toy", "multiples rejected", f"of {cfg.toy.reject_every}"]]}

    def resources(self) -> Resources:
        return Resources(num_cpus=1)

    def config_section(self) -> dict[str, Any]:
        return {"toy": asdict(self.cfg.toy)}

    def thresholds(self) -> dict[str, Any]:
        return {"reject_every": self.cfg.toy.reject_every}

    def plan(self, ctx: StageContext) -> list[WorkUnit]:
        t = self.cfg.toy
        return [
            WorkUnit(f"n{i:04d}", {"numbers": list(range(i, min(i + t.chunk, t.count)))})
            for i in range(0, t.count, t.chunk)
        ]

    def run_unit(self, unit: WorkUnit, ctx: StageContext) -> Iterator[list[dict[str, Any]]]:
        rows = []
        for n in unit.payload["numbers"]:
            row = {"key": f"n{n:04d}", "number": n, "square": float(n * n), "reject_reason": None,
                   "reject_detail": None}
            every = self.cfg.toy.reject_every
            if n % every == 0:
                row.update(reject_reason="toy_multiple", reject_detail=f"{n} % {every} == 0")
            rows.append(row)
        yield rows
'''


def _hfl(pkg_root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pkg_root)}
    env.pop("RAY_ADDRESS", None)
    cmd = [sys.executable, "-m", "hfl.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=pkg_root, timeout=600)


def test_new_stage_is_one_file_and_one_registry_line(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(HFL, root / "hfl", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "hfl" / "stages" / "toy.py").write_text(TOY_STAGE)  # the one new file
    registry = root / "hfl" / "stages" / "__init__.py"
    before = registry.read_text()
    anchor = '    "shard": ("hfl.stages.shard", "ShardStage"),\n'
    registry.write_text(before.replace(anchor, anchor + '    "toy": ("hfl.stages.toy", "ToyStage"),\n'))
    diff = [d for d in difflib.unified_diff(before.splitlines(), registry.read_text().splitlines(), n=0)]
    assert [d for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---")] == [
        '+    "toy": ("hfl.stages.toy", "ToyStage"),'
    ]  # the one registry line; nothing else of the package changed

    proc = _hfl(root, "stages")
    assert proc.returncode == 0, proc.stderr
    assert "toy\n  numbers and their squares" in proc.stdout and "thresholds: reject_every=3" in proc.stdout

    conf = tmp_path / "toy.yaml"
    conf.write_text(yaml.safe_dump({"name": "toy", "stages": ["toy"], "toy": {"count": 10, "chunk": 4},
                                    "ray": {"num_cpus": 1, "object_store_mb": 128}}))  # fmt: skip
    out = tmp_path / "out"
    # its checks and the typed loader speak for the new section
    build = ("build", "-c", str(conf), "-o", str(out))
    bad = _hfl(root, *build, "--set", "toy.count=0", "--set", "toy.reject_every=1")
    assert bad.returncode == 2 and "toy.count: must be >= 1" in bad.stderr, bad.stderr
    assert "toy.reject_every: must be >= 2" in bad.stderr
    typo = _hfl(root, *build, "--set", "toy.cuont=3")
    assert typo.returncode == 2, typo.stderr
    assert "toy.cuont: unknown key (did you mean 'count'?)" in typo.stderr, typo.stderr
    assert not out.exists()

    # a real build (embedded Ray), with an override from the command line
    proc = _hfl(root, *build, "--set", "toy.count=11")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    section = yaml.safe_load((out / "config.yaml").read_text())["toy"]
    assert section == {"count": 11, "chunk": 4, "reject_every": 3}
    stats = json.loads((out / "stages" / "toy" / "stats.json").read_text())
    assert stats["units"] == 3 and stats["rows_in"] == 11
    assert stats["rejected"] == {"toy_multiple": 4} and stats["kept"] == 7  # 0, 3, 6, 9
    page = (out / "report" / "index.html").read_text()
    assert "Stage: toy" in page
    text = html.escape("the number is a multiple of toy.reject_every")
    assert f"toy_multiple</code></a> &times; 4: {text}</li>" in page
    # the stage hash is stable: a second run skips it
    again = _hfl(root, *build, "--set", "toy.count=11", "--no-report")
    assert again.returncode == 0 and "[toy] done already" in again.stdout, again.stdout + again.stderr
