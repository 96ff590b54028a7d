"""Back up and restore the whole Placement database: step (1) of ``rebuild-placement``.

Rebuilding Placement throws its tables away, so the operator's way back must
exist, and be known to be good, before anything is dropped.  The backup holds
portable rows, not DDL: it restores onto MariaDB/MySQL or SQLite whichever it
was taken from, because the schema is recreated from novadb's own Placement
migrations at the backup's revision and the rows go back with their original
ids.

File format ``novadb-placement-backup`` version 1: gzip'd JSON lines.

1. Header: ``{"format", "version", "dialect", "revision", "created",
   "tables": [{"name", "columns": [[name, kind], ...], "key": [column, ...]}]}``.
   ``kind`` is ``int``, ``float``, ``str`` or ``datetime`` (naive ISO 8601).
2. Rows: ``{"table": name, "rows": [[value, ...], ...]}``, at most
   :data:`CHUNK_ROWS` rows a line, tables in header order, rows in key order.
3. Trailer: ``{"trailer": {"header": hex, "rows": {table: count},
   "sha256": {table: hex}}}``.  ``header`` is the SHA-256 of the header line;
   a table's digest is the SHA-256 of its rows' canonical JSON, one line per
   row, so the file and a database can both be checked against it.

Both directions verify.  A backup is re-read and compared with what the
database returned before it gets its name; a restore checks the whole file
before it touches the database, and re-reads every restored table afterwards.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import math
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from novadb import revisions
from novadb.connections import mask
from novadb.errors import BadInput, NovaDbError, SchemaError
from novadb.locking import database_lock
from novadb.progress import Event, Progress, ignore

FORMAT = "novadb-placement-backup"
FORMAT_VERSION = 1
CHUNK_ROWS = 1000
VERSION_TABLE = "alembic_version"

# Every table Placement's schema has ever had, parents before children: the
# order a restore inserts in (consumer_types exists from 422ece571366 on).
PLACEMENT_TABLES: tuple[str, ...] = (
    "consumer_types", "projects", "users", "resource_classes", "traits",
    "placement_aggregates", "resource_providers", "consumers", "inventories",
    "allocations", "resource_provider_aggregates", "resource_provider_traits",
)  # fmt: skip

_KINDS: dict[type, str] = {int: "int", float: "float", str: "str", dt.datetime: "datetime"}
_BACKUP = "placement-backup"
_RESTORE = "placement-restore"

Row = list[Any]
Fix = Callable[[Any], Any]


@dataclass(frozen=True)
class BackupTable:
    """One table of a backup: its columns as (name, kind), sort key, rows and digest."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    rows: int
    sha256: str

    @property
    def column_names(self) -> tuple[str, ...]:
        """The column names, in the order rows hold their values."""
        return tuple(name for name, _kind in self.columns)


@dataclass(frozen=True)
class BackupManifest:
    """What a verified backup file holds (``--dry-run`` shows it; restore trusts it)."""

    path: Path
    dialect: str
    revision: str
    created: str
    tables: tuple[BackupTable, ...]
    bytes: int
    digest: str

    @property
    def rows(self) -> dict[str, int]:
        """Row count per table."""
        return {t.name: t.rows for t in self.tables}

    @property
    def digests(self) -> dict[str, str]:
        """SHA-256 of each table's canonical rows."""
        return {t.name: t.sha256 for t in self.tables}


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


def placement_tables(bind: Engine | Connection) -> tuple[str, ...]:
    """Placement's tables present in ``bind``'s database, parents first."""
    present = set(sa.inspect(bind).get_table_names())
    return tuple(name for name in PLACEMENT_TABLES if name in present)


# -- Values -----------------------------------------------------------------------------


def _single(value: float) -> float:
    """The shortest decimal that a 32-bit float holds as the same value as ``value``.

    MySQL's FLOAT is 32 bits: Placement's ratio 0.9 is stored as 0.89999997...
    Writing the shortest decimal keeps 0.9 when restored into SQLite's 64-bit
    REAL, and MySQL stores it back as the very same 32 bits.
    """
    try:
        stored = struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # too big for FLOAT: let the database refuse it
        return value
    if not math.isfinite(stored):
        return stored
    for digits in range(1, 10):  # 9 significant digits always round-trip a float32
        candidate = float(f"{stored:.{digits}g}")
        try:
            if struct.unpack("<f", struct.pack("<f", candidate))[0] == stored:
                return candidate
        except OverflowError:
            continue
    return stored


def _whole_seconds(value: dt.datetime) -> dt.datetime:
    return value.replace(microsecond=0)


def _encode(kind: str, value: Any) -> Any:
    """A database value as the backup holds it."""
    if value is None:
        return None
    if kind == "datetime":
        return value.isoformat()
    if kind == "float":
        return float(value)
    if kind == "int":
        return int(value)
    return value


def _decode(kind: str, value: Any) -> Any:
    """A backup value as the database takes it."""
    if kind == "datetime" and value is not None:
        return dt.datetime.fromisoformat(value)
    return value


def _valid(kind: str, value: Any) -> bool:
    if value is None:
        return True
    if kind == "int":
        return type(value) is int
    if kind == "float":
        return type(value) is float
    if kind == "str":
        return type(value) is str
    if type(value) is not str:
        return False
    try:
        return dt.datetime.fromisoformat(value).tzinfo is None
    except ValueError:
        return False


# One encoder for every line: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def _line(obj: object) -> bytes:
    """One JSON line, in the canonical form digests are computed over."""
    return _JSON.encode(obj).encode("utf-8") + b"\n"


class _Tally:
    """Row count and digest of one table, fed rows in key order."""

    def __init__(self) -> None:
        self.rows = 0
        self._hash = hashlib.sha256()

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            self._hash.update(_line(row))
        self.rows += len(rows)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


def _kind(table: str, column: sa.Column[Any]) -> str:
    try:
        python_type: type | None = column.type.python_type
    except NotImplementedError:
        python_type = None
    kind = _KINDS.get(python_type) if python_type is not None else None
    if kind is None:
        raise SchemaError(
            f"column {table}.{column.name} has type {column.type}, which is not in "
            "Placement's schema; the database has drifted; nothing was written"
        )
    return kind


# -- Dialects: the one place MySQL/MariaDB and SQLite differ ----------------------------


class _Dialect:
    """How SQLite is read and loaded; :class:`_MySQL` overrides what MySQL does otherwise."""

    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        """Hold one read transaction, so every table comes from the same moment."""
        # pysqlite opens transactions only before writes; BEGIN makes the reads
        # that follow share one snapshot (writers wait for it to end).
        conn.execute(sa.text("BEGIN"))
        try:
            yield
        finally:
            conn.rollback()

    def read(self, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        """The expression that reads ``column`` without losing precision."""
        return column

    def fix(self, column: sa.Column[Any]) -> Fix | None:
        """What the column makes of a value it cannot hold exactly; None if it holds all."""
        return None

    @contextmanager
    def loading(self, conn: Connection) -> Iterator[None]:
        """Session settings for inserting rows exactly as they were, in any order."""
        # A provider's parent may have a higher id than the provider itself, and
        # a SQLite backup may hold rows that its foreign keys would refuse.
        conn.rollback()
        enforced = conn.execute(sa.text("PRAGMA foreign_keys")).scalar()
        conn.execute(sa.text("PRAGMA foreign_keys = OFF"))
        try:
            yield
        finally:
            conn.rollback()
            if enforced:
                conn.execute(sa.text("PRAGMA foreign_keys = ON"))


class _MySQL(_Dialect):
    @contextmanager
    def snapshot(self, conn: Connection) -> Iterator[None]:
        conn.execution_options(isolation_level="REPEATABLE READ")
        conn.execute(sa.text("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY"))
        try:
            yield
        finally:
            conn.rollback()

    def read(self, column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        if _is_single(column):
            # The server prints a FLOAT with 6 digits (1.2345678 comes back as
            # 1.23457); as a double it comes back exact.
            return sa.type_coerce(column + sa.literal_column("0E0"), sa.Double()).label(
                column.name
            )
        return column

    def fix(self, column: sa.Column[Any]) -> Fix | None:
        if _is_single(column):
            return _single
        if isinstance(column.type, sa.DateTime) and not getattr(column.type, "fsp", None):
            # DATETIME drops fractions of a second (MariaDB truncates, MySQL
            # rounds): truncate here so both store the same.
            return _whole_seconds
        return None

    @contextmanager
    def loading(self, conn: Connection) -> Iterator[None]:
        # NO_AUTO_VALUE_ON_ZERO: resource class VCPU has id 0, which MySQL would
        # otherwise replace with the next AUTO_INCREMENT value.
        conn.rollback()
        mode = conn.execute(sa.text("SELECT @@SESSION.sql_mode")).scalar()
        conn.execute(
            sa.text(
                "SET SESSION sql_mode = "
                "CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'NO_AUTO_VALUE_ON_ZERO')"
            )
        )
        conn.execute(sa.text("SET SESSION foreign_key_checks = 0"))
        try:
            yield
        finally:
            try:
                conn.rollback()
                conn.execute(sa.text("SET SESSION foreign_key_checks = 1"))
                conn.execute(sa.text("SET SESSION sql_mode = :mode"), {"mode": mode})
                conn.rollback()
            except DBAPIError:
                # Never hand a session without foreign key checks back to the pool.
                conn.invalidate()


def _is_single(column: sa.Column[Any]) -> bool:
    """A MySQL FLOAT of 32 bits (FLOAT(p) with p > 24 is a DOUBLE)."""
    return isinstance(column.type, mysql.FLOAT) and (column.type.precision or 0) <= 24


def _dialect_of(engine: Engine) -> _Dialect:
    if engine.dialect.name == "mysql":
        return _MySQL()
    if engine.dialect.name == "sqlite":
        return _Dialect()
    raise BadInput(f"{mask(engine.url)}: novadb backs up MySQL/MariaDB and SQLite databases only")


def _read_rows(
    conn: Connection,
    dialect: _Dialect,
    table: sa.Table,
    columns: tuple[tuple[str, str], ...],
    key: tuple[str, ...],
) -> Iterator[list[Row]]:
    """The table's rows in ``key`` order, encoded, CHUNK_ROWS at a time."""
    cols = [table.c[name] for name, _kind in columns]
    kinds = [kind for _name, kind in columns]
    fixes = [dialect.fix(c) for c in cols]
    stmt = sa.select(*(dialect.read(c) for c in cols)).order_by(*(table.c[k] for k in key))
    result = conn.execute(stmt.execution_options(yield_per=CHUNK_ROWS))
    for part in result.partitions():
        yield [
            [
                _encode(kind, fix(v) if fix is not None and v is not None else v)
                for kind, fix, v in zip(kinds, fixes, row, strict=True)
            ]
            for row in part
        ]


# -- The schema a revision creates ------------------------------------------------------


def _migrate(conn: Connection, revision: str, database_name: str) -> None:
    """Create Placement's schema up to ``revision`` with novadb's own migrations."""
    config = revisions.alembic_config("placement")
    config.attributes.update(connection=conn, database_name=database_name)
    conn.commit()
    command.upgrade(config, revision)
    conn.commit()


@cache
def _schema_at(revision: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """(table, ((column, kind), ...)) of Placement at ``revision``, parents first.

    Found by running the migrations on an in-memory SQLite database, so it can
    never disagree with what a restore will create.
    """
    engine = sa.create_engine("sqlite://")
    try:
        with engine.connect() as conn:
            _migrate(conn, revision, "main")
            meta = sa.MetaData()
            meta.reflect(conn)
    finally:
        engine.dispose()
    names = [VERSION_TABLE, *(t for t in PLACEMENT_TABLES if t in meta.tables)]
    return tuple(
        (name, tuple((c.name, _kind(name, c)) for c in meta.tables[name].columns))
        for name in names
    )


def _drift(
    expected: dict[str, set[tuple[str, str]]], actual: dict[str, set[tuple[str, str]]]
) -> str:
    """How ``actual`` tables/columns differ from ``expected``; empty when they agree."""
    problems = [f"{name} is missing" for name in expected if name not in actual]
    problems += [f"{name} is not expected" for name in actual if name not in expected]
    for name in expected.keys() & actual.keys():
        missing = sorted(f"{c}:{k}" for c, k in expected[name] - actual[name])
        extra = sorted(f"{c}:{k}" for c, k in actual[name] - expected[name])
        if missing or extra:
            problems.append(f"{name} lacks [{', '.join(missing)}], has [{', '.join(extra)}]")
    return "; ".join(sorted(problems))


# -- Reading a backup file --------------------------------------------------------------


class _Corrupt(Exception):
    """Why a file is not a usable backup (becomes a BadInput naming the file)."""


class _Hashing(io.RawIOBase):
    """Reads a file, keeping the SHA-256 and size of every byte read."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def drain(self) -> None:
        while data := self._raw.read(1 << 16):
            self.hash.update(data)
            self.size += len(data)


@dataclass(frozen=True)
class _Layout:
    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]


def _parse_header(line: str) -> tuple[dict[str, Any], tuple[_Layout, ...]]:
    if not line:
        raise _Corrupt("the file is empty")
    try:
        header = json.loads(line)
    except ValueError as exc:
        raise _Corrupt("its first line is not a novadb backup header") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _Corrupt("its first line is not a novadb backup header")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise _Corrupt(
            f"it is format version {version}, this novadb reads version {FORMAT_VERSION}; "
            "restore it with the novadb that wrote it"
        )
    for field in ("dialect", "revision", "created"):
        if not isinstance(header.get(field), str):
            raise _Corrupt(f"its header has no {field}")
    tables = header.get("tables")
    if not isinstance(tables, list) or not tables:
        raise _Corrupt("its header lists no tables")
    layouts: list[_Layout] = []
    for entry in tables:
        layouts.append(_parse_layout(entry))
    names = [t.name for t in layouts]
    if len(set(names)) != len(names):
        raise _Corrupt("its header lists a table twice")
    return header, tuple(layouts)


def _parse_layout(entry: Any) -> _Layout:
    if not isinstance(entry, dict):
        raise _Corrupt("its header's table list is malformed")
    name, columns, key = entry.get("name"), entry.get("columns"), entry.get("key")
    if name not in (VERSION_TABLE, *PLACEMENT_TABLES):
        raise _Corrupt(f"its header names {name!r}, which is not a Placement table")
    if not isinstance(columns, list) or not columns:
        raise _Corrupt(f"its header gives no columns for {name}")
    pairs: list[tuple[str, str]] = []
    for column in columns:
        if (
            not isinstance(column, list)
            or len(column) != 2
            or not isinstance(column[0], str)
            or column[1] not in _KINDS.values()
        ):
            raise _Corrupt(f"its header's columns for {name} are malformed")
        pairs.append((column[0], column[1]))
    names = {c for c, _k in pairs}
    if len(names) != len(pairs):
        raise _Corrupt(f"its header lists a column of {name} twice")
    if not isinstance(key, list) or not key or not all(k in names for k in key):
        raise _Corrupt(f"its header's key for {name} is malformed")
    return _Layout(name, tuple(pairs), tuple(key))


class _Reader:
    """Streams a backup's rows, checking everything; ``manifest`` is set at the end."""

    def __init__(self, path: Path, shown: Path | None = None) -> None:
        self.path = path
        self.shown = shown or path
        self.manifest: BackupManifest | None = None
        self.problem: str | None = None  # why the file was refused

    def chunks(self) -> Iterator[tuple[_Layout, list[Row]]]:
        """Yield (table, rows) line by line; a problem raises BadInput naming the file."""
        try:
            yield from self._chunks()
        except _Corrupt as exc:
            raise self._bad(str(exc)) from exc
        except gzip.BadGzipFile as exc:
            raise self._bad(f"it is not a complete gzip file ({_first_line(exc)})") from exc
        except FileNotFoundError as exc:
            raise BadInput(f"backup file {self.shown} does not exist; check the path") from exc
        except OSError as exc:
            raise BadInput(
                f"cannot read backup file {self.shown}: {exc.strerror or _first_line(exc)}"
            ) from exc
        except (EOFError, zlib.error) as exc:
            raise self._bad(f"it is truncated or damaged ({_first_line(exc)})") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._bad(f"it is damaged or not a backup ({_first_line(exc)})") from exc

    def _bad(self, reason: str) -> BadInput:
        self.problem = reason
        return BadInput(
            f"{self.shown} is not a usable Placement backup: {reason}; "
            "use another backup file; nothing was changed"
        )

    def _chunks(self) -> Iterator[tuple[_Layout, list[Row]]]:
        with self.path.open("rb") as raw:
            hashing = _Hashing(raw)
            with (
                gzip.GzipFile(fileobj=hashing, mode="rb") as unzipped,
                io.TextIOWrapper(unzipped, encoding="utf-8", newline="\n") as lines,
            ):
                first = lines.readline()
                header, layouts = _parse_header(first)
                header_sha256 = hashlib.sha256(first.encode("utf-8")).hexdigest()
                tallies = {t.name: _Tally() for t in layouts}
                order = {t.name: i for i, t in enumerate(layouts)}
                position = 0
                trailer: Any = None
                for line in lines:
                    record = json.loads(line)
                    if not isinstance(record, dict):
                        raise _Corrupt("a line is not a JSON object")
                    if set(record) == {"trailer"}:
                        trailer = record["trailer"]
                        break
                    if set(record) != {"table", "rows"} or record["table"] not in order:
                        raise _Corrupt("a line is neither rows of a listed table nor the trailer")
                    layout = layouts[order[record["table"]]]
                    if order[layout.name] < position:
                        raise _Corrupt(f"rows of {layout.name} come after a later table's")
                    position = order[layout.name]
                    rows = record["rows"]
                    _check_rows(layout, rows)
                    tallies[layout.name].add(rows)
                    yield layout, rows
                if trailer is None:
                    raise _Corrupt("it ends before its trailer (the file is truncated)")
                if lines.read():  # also reads to the end, where gzip checks its CRC
                    raise _Corrupt("there is data after its trailer")
            hashing.drain()
        tables = _check_trailer(trailer, header_sha256, layouts, tallies)
        self.manifest = BackupManifest(
            path=self.shown,
            dialect=header["dialect"],
            revision=header["revision"],
            created=header["created"],
            tables=tables,
            bytes=hashing.size,
            digest=hashing.hash.hexdigest(),
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_rows(layout: _Layout, rows: Any) -> None:
    kinds = [kind for _name, kind in layout.columns]
    if not isinstance(rows, list):
        raise _Corrupt(f"rows of {layout.name} are not a list")
    for row in rows:
        if (
            not isinstance(row, list)
            or len(row) != len(kinds)
            or not all(_valid(kind, value) for kind, value in zip(kinds, row, strict=True))
        ):
            raise _Corrupt(f"a row of {layout.name} does not match its columns")


def _check_trailer(
    trailer: Any, header_sha256: str, layouts: tuple[_Layout, ...], tallies: dict[str, _Tally]
) -> tuple[BackupTable, ...]:
    if not isinstance(trailer, dict):
        raise _Corrupt("its trailer is malformed")
    if trailer.get("header") != header_sha256:
        raise _Corrupt("its header does not match its digest")
    counts, digests = trailer.get("rows"), trailer.get("sha256")
    if not isinstance(counts, dict) or not isinstance(digests, dict):
        raise _Corrupt("its trailer is malformed")
    if set(counts) != set(tallies) or set(digests) != set(tallies):
        raise _Corrupt("its trailer does not list the header's tables")
    tables = []
    for layout in layouts:
        tally = tallies[layout.name]
        if counts[layout.name] != tally.rows:
            raise _Corrupt(
                f"{layout.name} has {tally.rows} rows, its trailer says {counts[layout.name]}"
            )
        if digests[layout.name] != tally.sha256:
            raise _Corrupt(f"the rows of {layout.name} do not match their digest")
        tables.append(
            BackupTable(layout.name, layout.columns, layout.key, tally.rows, tally.sha256)
        )
    return tuple(tables)


def read_backup(path: str | os.PathLike[str]) -> BackupManifest:
    """Read and verify a whole backup file: header, every row, counts and digests.

    A missing, truncated, corrupt or foreign file raises :class:`BadInput`
    with a one-line message naming it.
    """
    reader = _Reader(Path(path))
    for _chunk in reader.chunks():
        pass
    assert reader.manifest is not None
    return reader.manifest


# -- Backup ---------------------------------------------------------------------------


def _exists(path: Path) -> BadInput:
    return BadInput(
        f"backup file {path} already exists; choose a new file name or move the old "
        "backup away; nothing was written"
    )


def _source(
    conn: Connection, where: str, progress: Progress
) -> tuple[str, list[tuple[sa.Table, _Layout]]]:
    """The revision and tables to back up, after checking they are Placement's schema."""
    names = set(sa.inspect(conn).get_table_names())
    if VERSION_TABLE not in names:
        raise SchemaError(
            f"{where} has no alembic_version table, so it is not a Placement database "
            "novadb can back up; check the URL or run `novadb sync --database placement`"
        )
    meta = sa.MetaData()
    meta.reflect(conn, only=[VERSION_TABLE])
    stamped = [str(v) for v in conn.execute(sa.select(meta.tables[VERSION_TABLE].c[0])).scalars()]
    if len(stamped) != 1 or stamped[0] not in revisions.chain("placement"):
        raise SchemaError(
            f"{where} is stamped {', '.join(stamped) or 'with no revision'}, which is not a "
            "Placement revision novadb knows (is it the Nova API database?); check "
            "[placement_database]/connection; nothing was written"
        )
    revision = stamped[0]
    schema = dict(_schema_at(revision))
    present = [name for name in schema if name in names]
    meta.reflect(conn, only=present)
    actual = {
        name: {(c.name, _kind(name, c)) for c in meta.tables[name].columns} for name in present
    }
    drift = _drift({name: set(columns) for name, columns in schema.items()}, actual)
    if drift:
        raise SchemaError(
            f"{where} differs from Placement's schema at {revision}: {drift}; repair the "
            "schema before backing it up; nothing was written"
        )
    others = sorted(names - set(schema))
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
    for name, _columns in schema.items():
        table = meta.tables[name]
        columns = tuple((c.name, _kind(name, c)) for c in table.columns)
        key = tuple(c.name for c in table.primary_key.columns)
        if not key:
            raise SchemaError(f"{where}: table {name} has no primary key; nothing was written")
        tables.append((table, _Layout(name, columns, key)))
    return revision, tables


def _dump(
    conn: Connection, dialect: _Dialect, out: BinaryIO, where: str, progress: Progress
) -> tuple[str, dict[str, _Tally]]:
    """Write the whole database to ``out``; return the revision and what was read."""
    revision, tables = _source(conn, where, progress)
    progress(
        Event(_BACKUP, "database", f"{where}: Placement at {revision}", {"revision": revision})
    )
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dialect": conn.dialect.name,
        "revision": revision,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tables": [
            {"name": t.name, "columns": [list(c) for c in t.columns], "key": list(t.key)}
            for _table, t in tables
        ],
    }
    tallies: dict[str, _Tally] = {}
    total = 0
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as zipped:
        head = _line(header)
        zipped.write(head)
        for table, layout in tables:
            tally = tallies[layout.name] = _Tally()
            for rows in _read_rows(conn, dialect, table, layout.columns, layout.key):
                tally.add(rows)
                zipped.write(_line({"table": layout.name, "rows": rows}))
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
        trailer = {
            "header": hashlib.sha256(head).hexdigest(),
            "rows": {name: t.rows for name, t in tallies.items()},
            "sha256": {name: t.sha256 for name, t in tallies.items()},
        }
        zipped.write(_line({"trailer": trailer}))
    return revision, tallies


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
    dialect = _dialect_of(engine)
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


def _verify_file(tmp: Path, target: Path, tallies: dict[str, _Tally]) -> BackupManifest:
    """Re-read the written file; its rows must be exactly what the database returned."""
    reader = _Reader(tmp, shown=target)
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


def _check_target(conn: Connection, where: str) -> set[str]:
    """Refuse a database that holds anything but Placement; return its tables."""
    names = set(sa.inspect(conn).get_table_names())
    foreign = sorted(names - {VERSION_TABLE, *PLACEMENT_TABLES})
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise SchemaError(
            f"{where} holds tables that are not Placement's ({shown}); is it the Nova API "
            "or a cell database? novadb replaces tables only in Placement's own database "
            "([placement_database]/connection); nothing was changed"
        )
    if VERSION_TABLE in names:
        meta = sa.MetaData()
        meta.reflect(conn, only=[VERSION_TABLE])
        stamped = [
            str(v) for v in conn.execute(sa.select(meta.tables[VERSION_TABLE].c[0])).scalars()
        ]
        unknown = [v for v in stamped if v not in revisions.chain("placement")]
        if unknown:
            raise SchemaError(
                f"{where} is stamped {', '.join(unknown)}, which is not a Placement revision; "
                "novadb replaces tables only in Placement's own database; nothing was changed"
            )
    conn.rollback()
    return names


def _drop(conn: Connection, where: str) -> tuple[str, ...]:
    present = _check_target(conn, where)
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
    dialect: _Dialect,
    manifest: BackupManifest,
    tables: dict[str, sa.Table],
    progress: Progress,
) -> tuple[dict[str, _Tally], dict[str, int]]:
    """Insert every row of the backup; return what the tables should now hold."""
    expected = {t.name: _Tally() for t in manifest.tables}
    adjusted: dict[str, int] = {}
    reader = _Reader(manifest.path)
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
                    item = _decode(kind, row[i])
                    if fix is not None:
                        fixed = fix(item)
                        if fixed != item:
                            adjusted[layout.name] = adjusted.get(layout.name, 0) + 1
                        item = fixed
                    value[i], encoded[i] = item, _encode(kind, item)
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
    dialect: _Dialect,
    manifest: BackupManifest,
    tables: dict[str, sa.Table],
    expected: dict[str, _Tally],
    where: str,
) -> None:
    for layout in manifest.tables:
        tally = _Tally()
        table = tables[layout.name]
        for rows in _read_rows(conn, dialect, table, layout.columns, layout.key):
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
    drift = _drift(
        {name: set(columns) for name, columns in _schema_at(manifest.revision)},
        {t.name: set(t.columns) for t in manifest.tables},
    )
    if drift:
        raise BadInput(
            f"{manifest.path} does not match Placement's schema at {manifest.revision}: "
            f"{drift}; nothing was changed"
        )
    dialect = _dialect_of(engine)
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
        _migrate(conn, manifest.revision, engine.url.database or "")
        meta = sa.MetaData()
        meta.reflect(conn, only=[t.name for t in manifest.tables])
        try:
            expected, adjusted = _load(conn, dialect, manifest, dict(meta.tables), progress)
        except DBAPIError as exc:
            raise NovaDbError(
                f"restore into {where} failed: {_first_line(exc.orig or exc)}; the Placement "
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
