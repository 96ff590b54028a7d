"""Tables that never cut what operators copy: revision ids, URLs, uuids.

A :class:`Records` is rows of plain strings with a title.  Printed on a rich
console it picks its shape from the room it has:

- on a terminal wide enough for every cell in full: a table;
- on a terminal too narrow for that: one ``key: value`` block per row, so a
  long value wraps on its own line instead of being squeezed into "cdeec0c856…";
- off a terminal (a pipe, a file): plain lines, columns two spaces apart and
  nothing after the last character, whatever width the console claims;
- no rows: the ``empty`` sentence.

Cells are never read as rich markup: ``[placement_database]`` stays text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.table import Table
from rich.text import Text

GAP = "  "  # between columns in plain lines


@dataclass(frozen=True)
class Records:
    """A titled list of rows, rendered as a table, ``key: value`` blocks, or plain lines."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[tuple[str, ...]] = field(default_factory=tuple)
    empty: str = "nothing to show."
    right: frozenset[str] = frozenset()  # columns aligned right (counts)

    def table_width(self) -> int:
        """Columns a rich table of every cell in full needs (its box included)."""
        widths = self._widths()
        return sum(widths) + 3 * len(widths) + 1

    def _widths(self) -> list[int]:
        return [
            max(len(self.columns[i]), *(len(row[i]) for row in self.rows))
            for i in range(len(self.columns))
        ]

    def plain_lines(self) -> Iterator[str]:
        """The title, the header and one line per row, columns aligned, nothing trailing."""
        yield self.title
        widths = self._widths()

        def line(cells: Iterable[str]) -> str:
            out = []
            for column, cell, width in zip(self.columns, cells, widths, strict=True):
                out.append(cell.rjust(width) if column in self.right else cell.ljust(width))
            return GAP.join(out).rstrip()

        yield line(self.columns)
        for row in self.rows:
            yield line(row)

    def record_lines(self) -> Iterator[str]:
        """The title, then one ``key: value`` block per row, blocks a blank line apart."""
        yield self.title
        label = max(len(c) for c in self.columns) + 1
        for index, row in enumerate(self.rows):
            if index:
                yield ""
            for column, cell in zip(self.columns, row, strict=True):
                yield f"{column + ':':<{label}} {cell}"

    def table(self) -> Table:
        """A rich table of the rows, every cell as text (no markup), never truncated."""
        table = Table(title=self.title, box=box.SQUARE, title_justify="left")
        for column in self.columns:
            table.add_column(
                column,
                justify="right" if column in self.right else "left",
                no_wrap=True,
                overflow="fold",
            )
        for row in self.rows:
            table.add_row(*(Text(cell) for cell in row))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Pick the shape for this console: see the module's docstring."""
        if not self.rows:
            yield Text(self.empty)
        elif not console.is_terminal:
            yield Text("\n".join(self.plain_lines()), no_wrap=True, overflow="ignore")
        elif self.table_width() <= options.max_width:
            yield self.table()
        else:
            yield Text("\n".join(self.record_lines()))
