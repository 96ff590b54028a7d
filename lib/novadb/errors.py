"""Typed errors: each carries its one-line message and the CLI exit code.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; the charm fails
the action with the same text.  Neither ever parses exception text.  Each
class's default code is the one it is really raised with (the codes are named
in ``novadb.exit_codes``); a raiser passes ``exit_code`` only where the
operation it mirrors has its own number for the same fault (archive's bad date
is 4, nova-manage's bad count 127).
"""

from __future__ import annotations

from novadb import exit_codes


class NovaDbError(Exception):
    """Base of every error novadb reports to an operator."""

    exit_code: int = exit_codes.PROBLEM

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(NovaDbError):
    """The configuration (files, options, cell mappings) is unusable."""


PLACEMENT_NOT_CONFIGURED = (
    "[placement_database]/connection is not set; Placement checks need the Placement "
    "service's database: pass --placement-database URL"
)


class PlacementNotConfigured(ConfigError):
    """``[placement_database]/connection`` is absent, so Placement's database is unknown.

    nova.conf's fallback to ``[api_database]`` is where Placement lived before it
    left Nova; a Placement service of its own (the usual case) has its database
    elsewhere, so novadb never guesses: it says what to pass.
    """

    exit_code = exit_codes.PLACEMENT_NOT_CONFIGURED

    def __init__(self, message: str = PLACEMENT_NOT_CONFIGURED) -> None:
        super().__init__(message)


class BadInput(NovaDbError):
    """An option value is invalid (a date, a count, a revision, a release)."""

    exit_code = exit_codes.BAD_INPUT


class BadArgument(BadInput):
    """An option value nova-manage refuses with its argument-parsing code, 127.

    Raised where novadb mirrors nova-manage (online-migrate, heal-allocations,
    placement-audit) so that scripts written for nova-manage keep working.
    """

    exit_code = exit_codes.NOVA_MANAGE_BAD_INPUT


class DatabaseUnreachable(NovaDbError):
    """A database cannot be reached or refuses our credentials."""

    exit_code = exit_codes.UNREACHABLE


class SchemaError(NovaDbError):
    """A database's schema is not one we can safely work on."""


class UnknownRevision(SchemaError):
    """A database is stamped with a revision that is not in our chain."""


class BlockerFound(NovaDbError):
    """Data would make a pending migration fail; nothing was changed."""


class AccessDenied(DatabaseUnreachable):
    """The database user lacks a privilege the operation needs (nothing was changed)."""


class Interrupted(NovaDbError):
    """The caller's stop event was set where the operation has no safe point to stop at.

    Raised before such an operation begins (nothing was done), and by
    operations that stop at a safe point whose message says what is left.
    """

    exit_code = exit_codes.INTERRUPTED


class DatabaseFault(NovaDbError):
    """The database kept failing (lost server, endless conflicts) past the retry budget.

    Every batch is one transaction, so nothing is lost or half-done: the
    message says what was done and that a rerun finishes the job.
    """

    exit_code = exit_codes.DATABASE_FAULT


class LockLost(DatabaseFault):
    """The run's advisory lock is gone and another run holds it now: stopped between batches."""


class LockTimeout(NovaDbError):
    """Another novadb run holds this database's lock."""

    exit_code = exit_codes.LOCK_BUSY
