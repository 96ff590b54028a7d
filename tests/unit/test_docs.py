"""docs/ shows the program's output as the code produces it, never a stale copy.

tools/docs.py writes every generated block (``tox -e docs``).  Here the fast
blocks (each operation's ``--help``, the exit-code table) are rendered again in
memory and compared with docs/.  The ``juju run`` examples and the demo's
transcript (``docs.UNCOMPARED``) are only required to be there, between their
markers, and not empty: their sample clouds take new random uuids on every
run, so no two runs agree (and they take about 40 s and 10 s).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import docs

FAST = [name for name in docs.generators() if name not in docs.UNCOMPARED]


def _all_blocks() -> dict[str, tuple[Path, str]]:
    found: dict[str, tuple[Path, str]] = {}
    for path in sorted(docs.DOCS.glob("*.md")):
        for name, body in docs.blocks_in(path.read_text()).items():
            assert name not in found, f"block {name} is in {found[name][0].name} and {path.name}"
            found[name] = (path, body)
    return found


def test_every_block_has_its_markers_once() -> None:
    assert sorted(_all_blocks()) == sorted(docs.generators())


@pytest.mark.parametrize("name", FAST)
def test_generated_block_is_current(name: str) -> None:
    path, body = _all_blocks()[name]
    assert body == docs.generators()[name](), (
        f"docs/{path.name}: the generated block {name!r} is stale; run `tox -e docs`"
    )


@pytest.mark.parametrize("name", sorted(docs.UNCOMPARED))
def test_slow_blocks_are_filled(name: str) -> None:
    _, body = _all_blocks()[name]
    assert body.startswith("```text\n$ "), f"block {name!r} is empty; run `tox -e docs`"


def test_help_is_the_same_at_any_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = docs.help_text("archive")
    monkeypatch.setenv("COLUMNS", "250")
    assert docs.help_text("archive") == narrow


def test_fill_replaces_only_the_named_block() -> None:
    text = (
        "a\n<!-- generated: x -->\nold\n<!-- end generated: x -->\n"
        "<!-- generated: y -->\nkeep\n<!-- end generated: y -->\n"
    )
    assert docs.fill(text, {"x": "new\n"}) == text.replace("old", "new")


def test_exit_code_table_lists_every_pair() -> None:
    rows = docs.exit_code_table().splitlines()[2:]
    assert len(rows) == len(docs.exit_codes.TABLE)
    assert "| `archive` | 1 | rows were archived |" in rows


def test_readme_stays_short_with_the_two_commands_first() -> None:
    """The README is what a newcomer reads to the end; the reference lives in docs/."""
    readme = docs.ROOT / "README.md"
    assert readme.stat().st_size < 12_288
    first_screen = "\n".join(readme.read_text().splitlines()[:40])
    assert ".venv/bin/novadb demo" in first_screen
    assert "./run-tests" in first_screen
