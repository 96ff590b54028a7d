"""Back up and restore the whole Placement database: step (1) of ``rebuild-placement``.

Rebuilding Placement throws its tables away, so the operator's way back must
exist, and be known to be good, before anything is dropped.  The backup holds
portable rows, not DDL: it restores onto MariaDB/MySQL or SQLite whichever it
was taken from, because the schema is recreated from novadb's own Placement
migrations at the backup's revision and the rows go back with their original
ids.

Both directions verify.  A backup is re-read and compared with what the
database returned before it gets its name; a restore checks the whole file
before it touches the database, and re-reads every restored table afterwards.

This module is the database side of both; the file format is
:mod:`novadb.placement.backup.file`, the schema and ownership checks
:mod:`novadb.placement.backup.schema`, and what MySQL and SQLite do differently
:mod:`novadb.placement.backup.dialect`.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from novadb import exit_codes
from novadb.connections import mask
from novadb.errors import BadInput, NovaDbError, SchemaError
from novadb.locking import database_lock
from novadb.placement.backup.dialect import Dialect, dialect_of
from novadb.placement.backup.file import (
    CHUNK_ROWS,
    FORMAT,
    FORMAT_VERSION,
    PLACEMENT_TABLES,
    VERSION_TABLE,
    BackupManifest,
    BackupTable,
    Layout,
    Reader,
    Row,
    Tally,
    decode,
    encode,
    first_line,
    read_backup,
    writing,
)
from novadb.placement.backup.schema import (
    check_source,
    check_target,
    column_kind,
    drift,
    migrate,
    placement_tables,
    schema_at,
)
from novadb.progress import Event, Progress, ignore
from novadb.schema import revisions

# What other modules import from here, wherever it is defined.
__all__ = [
    "CHUNK_ROWS",
    "FORMAT",
    "FORMAT_VERSION",
    "PLACEMENT_TABLES",
    "VERSION_TABLE",
    "BackupManifest",
    "BackupResult",
    "BackupTable",
    "RestoreResult",
    "backup_placement",
    "drop_placement_tables",
    "placement_tables",
    "read_backup",
    "restore_placement",
]

_BACKUP = "placement-backup"
_RESTORE = "placement-restore"


@dataclass(frozen=True)
class BackupResult:
    """A written and verified backup: ``digest`` is the SHA-256 of the file's bytes."""

    path: Path
    revision: str
    rows: dict[str, int]
    bytes: int
    digest: str
    elapsed: float


@dataclass(frozen=True)
class RestoreResult:
    """A restored and verified database.

    ``adjusted`` counts, per table, values the target could not hold exactly
    and stored rounded: sub-second times in a MySQL DATETIME and doubles in a
    MySQL FLOAT, when restoring a SQLite backup onto MySQL.
    """

    path: Path
    revision: str
    rows: dict[str, int]
    adjusted: dict[str, int]
    elapsed: float

    @property
    def exit_code(self) -> int:
        """A restore either finishes verified or raises: it has no partial outcome."""
        return exit_codes.REBUILD_DONE


# -- Backup ---------------------------------------------------------------------------


def _exists(path: Path) -> BadInput:
    return BadInput(
        f"backup file {path} already exists; choose a new file name or move the old "
        "backup away; nothing was written"
    )


def _source(
    conn: Connection, where: str, progress: Progress
) -> tuple[str, list[tuple[sa.Table, Layout]]]:
    """The revision and tables to back up, after checking they are Placement's schema."""
    revision, schema, others = check_source(conn, where)
    if others:
        progress(
            Event(
                _BACKUP,
                "warning",
                f"{where}: not Placement's, not backed up: {', '.join(others)} "
                "(a restore into this database will refuse while they exist)",
                {"tables": others},
            )
        )
    tables = []
    for table in schema:
        columns = tuple((c.name, column_kind(table.name, c)) for c in table.columns)
        key = tuple(c.name for c in table.primary_key.columns)
        if not key:
            raise SchemaError(
                f"{where}: table {table.name} has no primary key; nothing was written"
            )
        tables.append((table, Layout(table.name, columns, key)))
    return revision, tables


def _dump(
    conn: Connection, dialect: Dialect, out: BinaryIO, where: str, progress: Progress
) -> tuple[str, dict[str, Tally]]:
    """Write the whole database to ``out``; return the revision and what was read."""
    revision, tables = _source(conn, where, progress)
    progress(
        Event(_BACKUP, "database", f"{where}: Placement at {revision}", {"revision": revision})
    )
    total = 0
    layouts = [layout for _table, layout in tables]
    with writing(out, conn.dialect.name, revision, layouts) as writer:
        for table, layout in tables:
            tally = writer.tallies[layout.name]
            for rows in dialect.rows(conn, table, layout.columns, layout.key):
                writer.write(layout.name, rows)
                total += len(rows)
                progress(
                    Event(_BACKUP, "batch", f"{layout.name}: {tally.rows} rows", {"total": total})
                )
            progress(
                Event(
                    _BACKUP,
                    "table",
                    f"{layout.name}: {tally.rows} rows",
                    {"table": layout.name, "rows": tally.rows},
                )
            )
    return revision, writer.tallies


def _publish(tmp: Path, path: Path) -> None:
    """Give the verified file its name, never replacing a file that appeared meanwhile."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError:  # a file system without hard links
        if path.exists():
            raise _exists(path) from None
        os.rename(tmp, path)
    else:
        tmp.unlink()
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def backup_placement(
    engine: Engine, path: str | os.PathLike[str], *, progress: Progress = ignore
) -> BackupResult:
    """Write the whole Placement database to a new file at ``path``, then verify it.

    Every table is read in one snapshot.  The file is written next to ``path``
    under a temporary name, re-read and compared with what the database
    returned, and only then renamed; on any failure nothing is left behind.
    """
    started = time.monotonic()
    target = Path(path)
    if target.exists() or target.is_symlink():
        raise _exists(target)
    if not target.parent.is_dir():
        raise BadInput(
            f"cannot write backup {target}: directory {target.parent} does not exist; "
            "create it or choose another path"
        )
    dialect = dialect_of(engine)
    where = mask(engine.url)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            with engine.connect() as conn, dialect.snapshot(conn):
                revision, tallies = _dump(conn, dialect, out, where, progress)
            out.flush()
            os.fsync(out.fileno())
        manifest = _verify_file(tmp, target, tallies)
        _publish(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress(
        Event(
            _BACKUP,
            "backup",
            f"wrote {target} ({manifest.bytes} bytes) and verified it",
            {"bytes": manifest.bytes, "digest": manifest.digest},
        )
    )
    return BackupResult(
        path=target,
        revision=revision,
        rows=manifest.rows,
        bytes=manifest.bytes,
        digest=manifest.digest,
        elapsed=time.monotonic() - started,
    )


def _verify_file(tmp: Path, target: Path, tallies: dict[str, Tally]) -> BackupManifest:
    """Re-read the written file; its rows must be exactly what the database returned."""
    reader = Reader(tmp, shown=target)
    try:
        for _chunk in reader.chunks():
            pass
    except BadInput as exc:
        raise NovaDbError(
            f"backup {target} failed verification: {reader.problem or exc}; the file was "
            "removed; check the disk and retry"
        ) from exc
    assert reader.manifest is not None
    read = {name: (t.rows, t.sha256) for name, t in tallies.items()}
    written = {t.name: (t.rows, t.sha256) for t in reader.manifest.tables}
    if read != written:
        differ = sorted(n for n in read.keys() | written.keys() if read.get(n) != written.get(n))
        raise NovaDbError(
            f"backup {target} failed verification: {', '.join(differ)} in the file differ "
            "from the database; the file was removed; check the disk and retry"
        )
    return reader.manifest


# -- Restore --------------------------------------------------------------------------


def _drop(conn: Connection, where: str) -> tuple[str, ...]:
    present = check_target(conn, where)
    meta = sa.MetaData()
    meta.reflect(conn, only=sorted(present))
    meta.drop_all(conn)  # children first
    conn.commit()
    return tuple(name for name in (VERSION_TABLE, *PLACEMENT_TABLES) if name in present)


def drop_placement_tables(engine: Engine) -> tuple[str, ...]:
    """Drop Placement's tables and ``alembic_version``, and nothing else; return their names.

    A database holding any other table, or stamped with a revision that is
    not Placement's, is not Placement's own (the Nova API database, say):
    it is refused with a SchemaError and nothing is dropped.  The caller
    holds whatever lock keeps Placement's users away.
    """
    with engine.connect() as conn:
        return _drop(conn, mask(engine.url))


def _load(
    conn: Connection,
    dialect: Dialect,
    manifest: BackupManifest,
    tables: dict[str, sa.Table],
    progress: Progress,
) -> tuple[dict[str, Tally], dict[str, int]]:
    """Insert every row of the backup; return what the tables should now hold."""
    expected = {t.name: Tally() for t in manifest.tables}
    adjusted: dict[str, int] = {}
    reader = Reader(manifest.path)
    total = 0
    with dialect.loading(conn):
        for layout, rows in reader.chunks():
            table = tables[layout.name]
            # Only datetimes need decoding, and only some columns rounding: the
            # rest of a backup's values are already what the database takes.
            special = [
                (i, kind, dialect.fix(table.c[name]))
                for i, (name, kind) in enumerate(layout.columns)
                if kind == "datetime" or dialect.fix(table.c[name]) is not None
            ]
            values: list[Row] = []
            stored: list[Row] = []  # as the table will give them back, encoded
            for row in rows:
                value, encoded = list(row), list(row)
                for i, kind, fix in special:
                    if row[i] is None:
                        continue
                    item = decode(kind, row[i])
                    if fix is not None:
                        fixed = fix(item)
                        if fixed != item:
                            adjusted[layout.name] = adjusted.get(layout.name, 0) + 1
                        item = fixed
                    value[i], encoded[i] = item, encode(kind, item)
                values.append(value)
                stored.append(encoded)
            expected[layout.name].add(stored)
            if layout.name == VERSION_TABLE:
                continue  # the migrations stamped it
            names = [name for name, _kind in layout.columns]
            conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in values])
            conn.commit()  # one bounded transaction per chunk (Galera write-set limits)
            total += len(values)
            progress(
                Event(_RESTORE, "batch", f"{layout.name}: {len(values)} rows", {"total": total})
            )
    assert reader.manifest is not None
    if reader.manifest.digests != manifest.digests:
        raise NovaDbError(
            f"backup {manifest.path} changed while it was being restored; "
            "the Placement database is incomplete; run the restore again"
        )
    return expected, adjusted


def _verify_restored(
    conn: Connection,
    dialect: Dialect,
    manifest: BackupManifest,
    tables: dict[str, sa.Table],
    expected: dict[str, Tally],
    where: str,
) -> None:
    for layout in manifest.tables:
        tally = Tally()
        table = tables[layout.name]
        for rows in dialect.rows(conn, table, layout.columns, layout.key):
            tally.add(rows)
        want = expected[layout.name]
        if (tally.rows, tally.sha256) != (want.rows, want.sha256):
            raise NovaDbError(
                f"restored {layout.name} in {where} does not match the backup "
                f"({tally.rows} rows, expected {want.rows}); the Placement database is "
                "incomplete; run the restore again"
            )
    conn.rollback()


def restore_placement(
    engine: Engine, path: str | os.PathLike[str], *, progress: Progress = ignore
) -> RestoreResult:
    """Replace Placement's tables in ``engine``'s database with the backup at ``path``.

    The file is verified first and the database checked to hold nothing but
    Placement; only then are Placement's tables dropped, recreated at the
    backup's revision by novadb's migrations, loaded with their original ids
    and re-read to check that they match the backup.  If loading fails part
    way, the database is incomplete: running the restore again starts over.
    """
    started = time.monotonic()
    manifest = read_backup(path)
    if manifest.revision not in revisions.chain("placement"):
        raise BadInput(
            f"{manifest.path} is at Placement revision {manifest.revision}, which this novadb "
            "does not know; restore it with the novadb that wrote it; nothing was changed"
        )
    problems = drift(
        {name: set(columns) for name, columns in schema_at(manifest.revision)},
        {t.name: set(t.columns) for t in manifest.tables},
    )
    if problems:
        raise BadInput(
            f"{manifest.path} does not match Placement's schema at {manifest.revision}: "
            f"{problems}; nothing was changed"
        )
    dialect = dialect_of(engine)
    where = mask(engine.url)
    with database_lock(engine, "schema"), engine.connect() as conn:
        _drop(conn, where)
        progress(
            Event(
                _RESTORE,
                "database",
                f"{where}: dropped Placement's tables; recreating them at {manifest.revision} "
                f"and loading {manifest.path}",
                {"revision": manifest.revision},
            )
        )
        migrate(conn, manifest.revision, engine.url.database or "")
        meta = sa.MetaData()
        meta.reflect(conn, only=[t.name for t in manifest.tables])
        try:
            expected, adjusted = _load(conn, dialect, manifest, dict(meta.tables), progress)
        except DBAPIError as exc:
            raise NovaDbError(
                f"restore into {where} failed: {first_line(exc.orig or exc)}; the Placement "
                "database is incomplete: fix the cause and run the restore again"
            ) from exc
        _verify_restored(conn, dialect, manifest, dict(meta.tables), expected, where)
    for name, count in adjusted.items():
        progress(
            Event(
                _RESTORE,
                "warning",
                f"{name}: {count} values rounded to what {engine.dialect.name} can hold",
                {"table": name, "values": count},
            )
        )
    progress(Event(_RESTORE, "restore", f"restored {where} from {manifest.path} and verified it"))
    return RestoreResult(
        path=manifest.path,
        revision=manifest.revision,
        rows=manifest.rows,
        adjusted=adjusted,
        elapsed=time.monotonic() - started,
    )
