"""The three Alembic environments novadb ships, and questions about them.

``migrations/`` holds one environment per database kind: ``main`` (cell0 and
every cell), ``api`` and ``placement``.  In a wheel they live inside the
package (``novadb/migrations``); in a source checkout, at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from novadb.errors import ConfigError


@cache
def migrations_root() -> Path:
    """Directory holding the ``main``, ``api`` and ``placement`` environments."""
    package = Path(__file__).resolve().parents[1]  # novadb/, above schema/
    # In a wheel the migrations ship inside the package; in a checkout they sit
    # at the top of the tree, beside lib/.
    for candidate in (package / "migrations", package.parent.parent / "migrations"):
        if (candidate / "main" / "env.py").is_file():
            return candidate
    raise ConfigError("novadb's migrations are missing from the installation; reinstall novadb")


def alembic_config(environment: str) -> Config:
    """An Alembic Config for ``environment`` with no ini file."""
    config = Config()
    config.set_main_option("script_location", str(migrations_root() / environment))
    return config


@cache
def script_directory(environment: str) -> ScriptDirectory:
    """The revision scripts of ``environment``."""
    return ScriptDirectory.from_config(alembic_config(environment))


@cache
def chain(environment: str) -> tuple[str, ...]:
    """Revision ids from the first to the head, in order."""
    script = script_directory(environment)
    revisions = [rev.revision for rev in script.walk_revisions("base", "heads")]
    return tuple(reversed(revisions))


def head(environment: str) -> str:
    """The newest revision of ``environment``."""
    return chain(environment)[-1]


def describe(environment: str, revision: str) -> str:
    """The revision's one-line message (Nova's revision name)."""
    rev = script_directory(environment).get_revision(revision)
    return (rev.doc or "").strip() if rev is not None else ""


def pending(environment: str, current: str | None, target: str) -> list[str]:
    """Revisions after ``current`` up to and including ``target``, in order."""
    revisions = chain(environment)
    start = 0 if current is None else revisions.index(current) + 1
    end = revisions.index(target) + 1
    return list(revisions[start:end])


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in ``alembic_version``, or None."""
    return MigrationContext.configure(connection).get_current_revision()
