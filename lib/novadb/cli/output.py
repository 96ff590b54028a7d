"""Where the ``novadb`` command's results and progress go.

Results (tables, or JSON with ``--json``) go to stdout, progress and warnings to
stderr.  Kept apart from :mod:`novadb.cli.main` so every command module can take
an ``Output`` without importing the parser.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console

from novadb.cli.progress import Bars
from novadb.progress import Event
from novadb.render import operations as render


class Output:
    """Where results and progress go: tables or JSON on stdout, progress on stderr."""

    def __init__(self, as_json: bool, options: str = "") -> None:
        self.as_json = as_json
        # The global options the operator gave, masked: repeated in fix commands.
        self.options = options
        no_color = bool(os.environ.get("NO_COLOR"))
        # Not a terminal: a fixed width, wide enough that scripts see nova-manage's lines
        # unwrapped whatever COLUMNS says; results are printed uncropped and unpadded
        # there (see novadb.render.records).
        wide = None if sys.stdout.isatty() else 200
        self.out = Console(no_color=no_color, highlight=False, width=wide)
        self.err = Console(stderr=True, no_color=no_color, highlight=False)
        self.live = sys.stdout.isatty() and not as_json
        self.bars = Bars(self.err) if self.live else None

    def progress(self, event: Event) -> None:
        """Show one progress event: warnings always, bars only on a terminal."""
        if event.kind == "warning":
            self.err.print(f"warning: {event.message}", markup=False, soft_wrap=True)
        elif self.bars is not None:
            self.bars(event)

    def close(self) -> None:
        """Stop the progress bars (before results are printed, and on errors)."""
        if self.bars is not None:
            self.bars.stop()

    def result(self, result: Any, table: Callable[[Any], Any]) -> None:
        """Print ``result``: as JSON with ``--json``, else through ``table``."""
        self.close()
        if self.as_json:
            sys.stdout.write(render.to_json(result) + "\n")
        else:
            # markup=False: a text result may hold "[placement_database]", never rich markup.
            self.out.print(table(result), crop=self.out.is_terminal, markup=False)
