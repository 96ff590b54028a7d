"""Typed errors: each carries its one-line message and the CLI exit code.

The CLI prints ``str(error)`` and exits with ``error.exit_code``; the charm fails
the action with the same text.  Neither ever parses exception text.
"""

from __future__ import annotations


class NovaDbError(Exception):
    """Base of every error novadb reports to an operator."""

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(NovaDbError):
    """The configuration (files, options, cell mappings) is unusable."""


class BadInput(NovaDbError):
    """An option value is invalid (a date, a count, a revision, a release)."""

    exit_code = 2


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


class LockTimeout(NovaDbError):
    """Another novadb run holds this database's lock."""
