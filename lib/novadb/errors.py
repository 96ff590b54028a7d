"""Typed errors: each carries its one-line message and the CLI exit code.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; the charm fails
the action with the same text.  Neither ever parses exception text.
"""

from __future__ import annotations

# Exit codes shared by several operations, named here so that one module says
# what each means (README's exit-code table documents them).
EXIT_PROBLEM = 1  # a schema or data problem that needs the operator
EXIT_BAD_INPUT = 2  # usage, values, dates
EXIT_UNREACHABLE = 3  # cannot connect, credentials or privileges refused
# The database failed under a run (a lost server, conflicts that did not stop)
# for longer than the run's retry budget: nothing is lost or half-done, and
# running the same command again finishes the job.  75 is sysexits' EX_TEMPFAIL.
EXIT_DATABASE_FAULT = 75
# Placement's own database is not configured ([placement_database]/connection
# unset): the Placement operations cannot run.  78 is sysexits' EX_CONFIG.
EXIT_PLACEMENT_NOT_CONFIGURED = 78
EXIT_INTERRUPTED = 130
# Another novadb run holds the database's lock; and (archive) a table failed.
EXIT_LOCK_BUSY = 255
EXIT_TABLE_FAILED = 255
EXIT_UNEXPECTED = 255


class NovaDbError(Exception):
    """Base of every error novadb reports to an operator."""

    exit_code: int = 1

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

    exit_code = EXIT_PLACEMENT_NOT_CONFIGURED

    def __init__(self, message: str = PLACEMENT_NOT_CONFIGURED) -> None:
        super().__init__(message)


class BadInput(NovaDbError):
    """An option value is invalid (a date, a count, a revision, a release)."""

    exit_code = EXIT_BAD_INPUT


class DatabaseUnreachable(NovaDbError):
    """A database cannot be reached or refuses our credentials."""


class SchemaError(NovaDbError):
    """A database's schema is not one we can safely work on."""


class UnknownRevision(SchemaError):
    """A database is stamped with a revision that is not in our chain."""


class SchemaDriftError(SchemaError):
    """A table (or its shadow twin) differs from what Nova's schema says."""


class BlockerFound(NovaDbError):
    """Data would make a pending migration fail; nothing was changed."""


class AccessDenied(DatabaseUnreachable):
    """The database user lacks a privilege the operation needs (nothing was changed)."""

    exit_code = EXIT_UNREACHABLE


class DatabaseFault(NovaDbError):
    """The database kept failing (lost server, endless conflicts) past the retry budget.

    Every batch is one transaction, so nothing is lost or half-done: the
    message says what was done and that a rerun finishes the job.
    """

    exit_code = EXIT_DATABASE_FAULT


class LockLost(DatabaseFault):
    """The run's advisory lock is gone and another run holds it now: stopped between batches."""


class LockTimeout(NovaDbError):
    """Another novadb run holds this database's lock."""

    exit_code = EXIT_LOCK_BUSY
