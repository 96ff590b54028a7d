"""Exit codes live in one module: results and errors carry them, nobody writes a number.

novadb.exit_codes names every code; result types compute ``exit_code`` from
those names, error classes carry theirs as class defaults, and the CLI, the
charm and the demo only read them.  docs/operations.md's hand-written table ("In detail",
under "Exit codes") documents the same pairs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from novadb import errors, exit_codes
from novadb.archive.archive import ArchiveResult, ShadowConflict
from novadb.archive.purge import PurgeResult
from novadb.check.check import CheckResult
from novadb.findings import Finding, Severity
from novadb.online.runner import OnlineResult
from novadb.placement.audit import UnknownProvider
from novadb.placement.rebuild import RebuildStopped
from novadb.placement.resources import UnsupportedFlavor
from novadb.schema.null_uuid import NullUuidDatabase, NullUuidResult

ROOT = Path(__file__).resolve().parents[2]
CODES_MODULE = ROOT / "lib" / "novadb" / "exit_codes.py"


def _sources() -> list[Path]:
    files = sorted((ROOT / "lib" / "novadb").rglob("*.py")) + sorted((ROOT / "src").glob("*.py"))
    return [p for p in files if p != CODES_MODULE]


def _int(node: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int)
        and not isinstance(node.value, bool)
    )


def _literal_codes(tree: ast.AST, cli: bool) -> list[tuple[int, str]]:
    """Lines where a number is used as an exit code rather than a name from exit_codes."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "exit_code" and _int(node.value):
            found.append((node.value.lineno, "exit_code=<number>"))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if _int(node.value) and any(n == "exit_code" or n.startswith("EXIT_") for n in names):
                found.append((node.lineno, f"{names[0]} = <number>"))
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            reads_code = any(isinstance(s, ast.Attribute) and s.attr == "exit_code" for s in sides)
            if reads_code and any(_int(s) for s in sides):
                found.append((node.lineno, "exit_code compared with a number"))
        elif cli and isinstance(node, ast.Return) and _int(node.value):
            found.append((node.lineno, "return <number> in a command"))
        elif isinstance(node, ast.FunctionDef):
            returns_code = node.name == "exit_code"
            for inner in ast.walk(node) if returns_code else ():
                if isinstance(inner, ast.Return) and _int(inner.value):
                    found.append((inner.lineno, "exit_code property returns a number"))
    return found


def test_no_exit_code_literal_outside_the_codes_module() -> None:
    offenders = []
    for path in _sources():
        cli = "cli" in path.parts or path.parent.name == "src"
        tree = ast.parse(path.read_text(), str(path))
        for line, what in _literal_codes(tree, cli):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert offenders == []


def test_the_literal_finder_finds_each_shape() -> None:
    source = (
        "raise E('x', exit_code=3)\n"
        "class E:\n    exit_code = 8\n"
        "EXIT_X = 4\n"
        "if r.exit_code == 2: pass\n"
        "def _cmd():\n    return 1\n"
        "class R:\n    @property\n    def exit_code(self):\n        return 5\n"
    )
    lines = sorted(line for line, _ in _literal_codes(ast.parse(source), cli=True))
    assert lines == [1, 3, 4, 5, 7, 11, 11]


def _documented_pairs() -> set[tuple[str, int]]:
    """The pairs of the hand-written table; the generated one above it is TABLE by construction."""
    text = (ROOT / "docs" / "operations.md").read_text()
    table = text.split("\n## Exit codes\n", 1)[1].split("\n### In detail\n", 1)[1]
    table = table.split("\n## ", 1)[0]
    pairs = set()
    for line in table.splitlines():
        m = re.match(r"^\| (`?[a-z -]+`?) \| ([0-9 /]+) \|", line)
        if m:
            operation = m.group(1).strip("`")
            pairs |= {(operation, int(code)) for code in m.group(2).split("/")}
    return pairs


def test_documented_table_lists_the_module_codes() -> None:
    module = {(row.operation, row.code) for row in exit_codes.TABLE}
    assert _documented_pairs() == module


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.NovaDbError, 1),
        (errors.ConfigError, 1),
        (errors.SchemaError, 1),
        (errors.UnknownRevision, 1),
        (errors.BlockerFound, 1),
        (errors.BadInput, 2),
        (errors.BadArgument, 127),
        (errors.DatabaseUnreachable, 3),
        (errors.AccessDenied, 3),
        (errors.DatabaseFault, 75),
        (errors.LockLost, 75),
        (errors.LockTimeout, 255),
        (ShadowConflict, 255),
        (UnknownProvider, 127),
        (UnsupportedFlavor, 8),
        (RebuildStopped, 130),
    ],
)
def test_each_error_class_carries_its_code(error: type[errors.NovaDbError], code: int) -> None:
    assert error("x").exit_code == code
    assert error("x", exit_code=4).exit_code == 4  # an operation's own number still wins


def _archive(
    total: int, *, dry_run: bool = False, failures: tuple[str, ...] = ()
) -> ArchiveResult:
    return ArchiveResult(
        rows={"instances": total} if total else {},
        total=total,
        batches=1,
        complete=True,
        elapsed=0.0,
        dry_run=dry_run,
        stopped=None,
        held_back={},
        failures=list(failures),
        cells=[],
    )


def test_archive_result_codes_are_nova_manages() -> None:
    assert _archive(0).exit_code == 0
    assert _archive(17528).exit_code == 1
    assert _archive(17528, dry_run=True).exit_code == 0
    assert _archive(5, failures=("shadow_instances: missing",)).exit_code == 255
    assert _archive(0, failures=("shadow_instances: missing",)).exit_code == 255


def _purge(total: int, *, dry_run: bool = False) -> PurgeResult:
    return PurgeResult(
        rows={}, total=total, elapsed=0.0, dry_run=dry_run, stopped=None, messages=[], cells=[]
    )


def test_purge_result_codes_are_nova_manages() -> None:
    assert _purge(12).exit_code == 0
    assert _purge(0).exit_code == 3
    assert _purge(12, dry_run=True).exit_code == 0


def _online(*, failed: bool, done: int, max_count: int | None) -> OnlineResult:
    return OnlineResult(
        migrations=[],
        batches=1,
        elapsed=0.0,
        complete=not failed,
        failed=failed,
        done=done,
        max_count=max_count,
    )


def test_online_result_codes_are_nova_manages() -> None:
    assert _online(failed=False, done=10, max_count=None).exit_code == 0
    assert _online(failed=False, done=10, max_count=5).exit_code == 1
    assert _online(failed=False, done=0, max_count=5).exit_code == 0
    assert _online(failed=True, done=0, max_count=None).exit_code == 2
    assert _online(failed=True, done=3, max_count=5).exit_code == 1


def test_check_and_null_uuid_codes() -> None:
    def finding(severity: Severity) -> Finding:
        return Finding("cell1", severity, "c", "s", 1, "fix")

    def checked(*severities: Severity) -> CheckResult:
        return CheckResult(tuple(finding(s) for s in severities), (), 0.0)

    assert checked().exit_code == 0
    assert checked("info").exit_code == 0
    assert checked("info", "warning").exit_code == 1
    assert checked("warning", "blocker", "info").exit_code == 2
    found = (NullUuidDatabase("cell1", "sqlite://", {"instances": 2}),)
    assert NullUuidResult(found, deleted=False).exit_code == 1
    assert NullUuidResult(found, deleted=True).exit_code == 0
    assert NullUuidResult((), deleted=False).exit_code == 0
