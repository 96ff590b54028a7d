"""One thing ``novadb check`` found: where, how bad, how many, and what fixes it.

Kept apart from :mod:`novadb.check.check` so the modules that look at one part of
a database (and the Placement audit plugged into ``check``) can build
findings without importing the whole command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from novadb import exit_codes

Severity = Literal["blocker", "warning", "info"]

BLOCKER: Severity = "blocker"
WARNING: Severity = "warning"
INFO: Severity = "info"

# Exit code of a run whose worst finding has this severity (none at all: 0).
EXIT_CODES: dict[Severity, int] = {
    BLOCKER: exit_codes.CHECK_BLOCKERS,
    WARNING: exit_codes.CHECK_WARNINGS,
    INFO: exit_codes.CHECK_CLEAN,
}


@dataclass(frozen=True)
class Finding:
    """A problem (or a fact worth knowing) in one database.

    ``code`` is a short stable id (``pending-revisions``) that scripts may
    match on; ``summary`` is one line for a person; ``fix`` is the exact
    novadb command that fixes it, or a manual instruction when novadb has
    none.  ``subject`` names the table, migration or cell when a database
    has several findings of one code; ``examples`` holds the first few ids.
    """

    database: str
    severity: Severity
    code: str
    summary: str
    count: int
    fix: str
    subject: str = ""
    examples: tuple[str, ...] = ()
