"""Write docs/'s generated blocks: whatever the docs show of the program's output.

A block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->``
in a file of docs/; this module owns what goes between them and nobody edits
it by hand, so the docs cannot drift from the code.  The blocks:

- ``help-OPERATION``: ``novadb OPERATION --help``, formatted 100 columns wide
  whatever the terminal;
- ``exit-codes``: the table of ``novadb.exit_codes.TABLE``;
- ``actions``: a ``juju run`` example per charm action (tools/action_examples.py,
  about 40 s), temporary paths and elapsed seconds normalised;
- ``demo``: ``novadb demo``'s transcript through a pipe (about 10 s), its
  temporary directory, seconds and the cut lines normalised.

``python -m tools.docs`` (``tox -e docs``) rewrites every block;
``python -m tools.docs --check`` only says which are stale (exit 1).
tests/unit/test_docs.py regenerates the help and exit-code blocks in memory
and compares.  The actions and demo blocks (``UNCOMPARED``) are rewritten but
never compared, there or by --check: the sample clouds they run on give
compute nodes and providers new random uuids (and names) on every run, and
those decide which instances the Placement examples show.  Their markers are
checked, and tests/charm/test_juju_contract.py validates the examples.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from novadb import exit_codes
from novadb.cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
WIDTH = "100"
_RUN_CLI = "import sys; from novadb.cli.main import main; sys.exit(main(sys.argv[1:]))"
BLOCK = re.compile(
    r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end generated: (?P=name) -->)",
    re.S,
)


@contextlib.contextmanager
def _columns() -> Iterator[None]:
    """argparse wraps to $COLUMNS: pin it so the output is the terminal's no matter."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def _fence(text: str) -> str:
    lines = "\n".join(line.rstrip() for line in text.rstrip().splitlines())
    return f"```text\n{lines}\n```\n"


def operations() -> list[str]:
    """The CLI's operations, in the parser's order."""
    parser = build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse has no public accessor
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return list(action.choices)
    raise AssertionError("the parser has no operations")


def help_text(operation: str) -> str:
    """``novadb OPERATION --help`` at a fixed width."""
    with _columns():
        parser = build_parser()
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                return _fence(action.choices[operation].format_help())
    raise AssertionError(operation)


def exit_code_table() -> str:
    """The (operation, code, meaning) rows of ``novadb.exit_codes.TABLE``."""
    lines = ["| Operation | Code | Meaning |", "|---|---|---|"]
    for row in exit_codes.TABLE:
        operation = row.operation if row.operation == exit_codes.EVERY else f"`{row.operation}`"
        lines.append(f"| {operation} | {row.code} | {row.meaning} |")
    return "\n".join(lines) + "\n"


def action_examples() -> str:
    """tools/action_examples.py's transcript, temporary paths and seconds normalised."""
    path = os.pathsep.join(str(ROOT / d) for d in ("lib", "src", ""))
    env = {**os.environ, "PYTHONPATH": path, "COLUMNS": WIDTH}
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tools.action_examples"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    temp = re.escape(tempfile.gettempdir())
    text = re.sub(temp + r"/novadb-actions-\w+", "/tmp/novadb-actions", done.stdout)
    text = re.sub(r"^(\s*elapsed: )'[0-9.]+'$", r"\1'0.1'", text, flags=re.M)
    return _fence(text)


def demo_transcript() -> str:
    """``novadb demo`` through a pipe, in a directory of its own, normalised."""
    with tempfile.TemporaryDirectory(prefix="novadb-docs-") as tmp:
        env = {**os.environ, "COLUMNS": WIDTH, "NO_COLOR": "1"}
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-c", _RUN_CLI, "demo", "--dir", "novadb-demo"],
            cwd=tmp,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        # Same-width stand-ins (the random suffix, the seconds) keep rich's tables aligned.
        prefix = len(tmp) - len(Path(tmp).name) + len("novadb-docs-")
        text = "$ novadb demo --dir novadb-demo\n" + done.stdout.replace(
            tmp, tmp[:prefix] + "x" * (len(tmp) - prefix)
        )
    return _fence(re.sub(r"\b\d+\.\d+(?= s\b)", lambda m: "0.1".rjust(len(m[0])), text))


# Rewritten by `tox -e docs` but not compared: their sample clouds are not reproducible.
UNCOMPARED = frozenset({"actions", "demo"})


def generators() -> dict[str, Callable[[], str]]:
    """Every block's name and the function that writes it."""
    blocks: dict[str, Callable[[], str]] = {
        f"help-{op}": (lambda op=op: help_text(op)) for op in operations()
    }
    blocks["exit-codes"] = exit_code_table
    blocks["actions"] = action_examples
    blocks["demo"] = demo_transcript
    return blocks


def blocks_in(text: str) -> dict[str, str]:
    """The generated blocks of one file, by name."""
    return {m["name"]: m["body"] for m in BLOCK.finditer(text)}


def fill(text: str, rendered: dict[str, str]) -> str:
    """The file with each block named in ``rendered`` replaced by its new body."""

    def sub(m: re.Match[str]) -> str:
        body = rendered.get(m["name"], m["body"])
        return f"{m.group(1)}{body}{m.group(4)}"

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or, with --check, compare) every generated block of docs/."""
    parser = argparse.ArgumentParser(prog="python -m tools.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="say what is stale, change nothing")
    parser.add_argument("names", nargs="*", help="only these blocks (default: all)")
    args = parser.parse_args(argv)
    gens = generators()
    names = args.names or [n for n in gens if not (args.check and n in UNCOMPARED)]
    rendered = {name: gens[name]() for name in names}
    stale = []
    for path in sorted(DOCS.glob("*.md")):
        text = path.read_text()
        new = fill(text, rendered)
        if new != text:
            stale += [n for n, body in blocks_in(text).items() if rendered.get(n, body) != body]
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"stale in docs/: {', '.join(stale)}; run `tox -e docs`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
