"""The Placement backup file: how rows are written to it, and read back only if intact.

A backup is the operator's way back from a rebuild, so it must restore onto
whichever of MariaDB/MySQL or SQLite it is given, and a damaged one must be
refused before the database is touched.  It therefore holds portable rows, not
DDL, and carries a digest of every table that a reader checks, and that a
database's rows can be checked against too.  Nothing here talks to a database.

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
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from novadb.errors import BadInput

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

# The kind a header gives a column, by the Python type of its values.
KINDS: dict[type, str] = {int: "int", float: "float", str: "str", dt.datetime: "datetime"}

Row = list[Any]


@dataclass(frozen=True)
class Layout:
    """One table as a header lists it: columns as (name, kind), and the key rows sort by."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]


@dataclass(frozen=True)
class BackupTable:
    """One table of a backup: its columns as (name, kind), sort key, rows and digest."""

    name: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    rows: int
    sha256: str


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


# -- Values -----------------------------------------------------------------------------


def encode(kind: str, value: Any) -> Any:
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


def decode(kind: str, value: Any) -> Any:
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


class Tally:
    """Row count and digest of one table, fed rows in key order.

    The same tally is kept of the rows read from a database, written to a
    file, read back from it and re-read after a restore, so each can be
    compared with the others.
    """

    def __init__(self) -> None:
        self.rows = 0
        self._hash = hashlib.sha256()

    def add(self, rows: list[Row]) -> None:
        """Count ``rows`` and add their canonical lines to the digest."""
        for row in rows:
            self._hash.update(_line(row))
        self.rows += len(rows)

    @property
    def sha256(self) -> str:
        """The digest of every row added so far."""
        return self._hash.hexdigest()


# -- Writing a backup file --------------------------------------------------------------


class Writer:
    """Writes rows to a backup a line at a time, tallying each table for the trailer."""

    def __init__(self, zipped: gzip.GzipFile, layouts: Sequence[Layout]) -> None:
        self._zipped = zipped
        self.tallies = {layout.name: Tally() for layout in layouts}

    def write(self, table: str, rows: list[Row]) -> None:
        """Write one line of ``table``'s rows, which come in key order."""
        self.tallies[table].add(rows)
        self._zipped.write(_line({"table": table, "rows": rows}))


@contextmanager
def writing(
    out: BinaryIO, dialect: str, revision: str, layouts: Sequence[Layout]
) -> Iterator[Writer]:
    """Write the header to ``out``, yield a :class:`Writer`, then write the trailer.

    The trailer is written only if the rows were: a backup cut short has none,
    and no reader will take it.
    """
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "dialect": dialect,
        "revision": revision,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tables": [
            {"name": t.name, "columns": [list(c) for c in t.columns], "key": list(t.key)}
            for t in layouts
        ],
    }
    with gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=0) as zipped:
        head = _line(header)
        zipped.write(head)
        writer = Writer(zipped, layouts)
        yield writer
        trailer = {
            "header": hashlib.sha256(head).hexdigest(),
            "rows": {name: t.rows for name, t in writer.tallies.items()},
            "sha256": {name: t.sha256 for name, t in writer.tallies.items()},
        }
        zipped.write(_line({"trailer": trailer}))


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


def _parse_header(line: str) -> tuple[dict[str, Any], tuple[Layout, ...]]:
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
    layouts: list[Layout] = []
    for entry in tables:
        layouts.append(_parse_layout(entry))
    names = [t.name for t in layouts]
    if len(set(names)) != len(names):
        raise _Corrupt("its header lists a table twice")
    return header, tuple(layouts)


def _parse_layout(entry: Any) -> Layout:
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
            or column[1] not in KINDS.values()
        ):
            raise _Corrupt(f"its header's columns for {name} are malformed")
        pairs.append((column[0], column[1]))
    names = {c for c, _k in pairs}
    if len(names) != len(pairs):
        raise _Corrupt(f"its header lists a column of {name} twice")
    if not isinstance(key, list) or not key or not all(k in names for k in key):
        raise _Corrupt(f"its header's key for {name} is malformed")
    return Layout(name, tuple(pairs), tuple(key))


class Reader:
    """Streams a backup's rows, checking everything; ``manifest`` is set at the end."""

    def __init__(self, path: Path, shown: Path | None = None) -> None:
        self.path = path
        self.shown = shown or path
        self.manifest: BackupManifest | None = None
        self.problem: str | None = None  # why the file was refused

    def chunks(self) -> Iterator[tuple[Layout, list[Row]]]:
        """Yield (table, rows) line by line; a problem raises BadInput naming the file."""
        try:
            yield from self._chunks()
        except _Corrupt as exc:
            raise self._bad(str(exc)) from exc
        except gzip.BadGzipFile as exc:
            raise self._bad(f"it is not a complete gzip file ({first_line(exc)})") from exc
        except FileNotFoundError as exc:
            raise BadInput(f"backup file {self.shown} does not exist; check the path") from exc
        except OSError as exc:
            raise BadInput(
                f"cannot read backup file {self.shown}: {exc.strerror or first_line(exc)}"
            ) from exc
        except (EOFError, zlib.error) as exc:
            raise self._bad(f"it is truncated or damaged ({first_line(exc)})") from exc
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._bad(f"it is damaged or not a backup ({first_line(exc)})") from exc

    def _bad(self, reason: str) -> BadInput:
        self.problem = reason
        return BadInput(
            f"{self.shown} is not a usable Placement backup: {reason}; "
            "use another backup file; nothing was changed"
        )

    def _chunks(self) -> Iterator[tuple[Layout, list[Row]]]:
        with self.path.open("rb") as raw:
            hashing = _Hashing(raw)
            with (
                gzip.GzipFile(fileobj=hashing, mode="rb") as unzipped,
                io.TextIOWrapper(unzipped, encoding="utf-8", newline="\n") as lines,
            ):
                first = lines.readline()
                header, layouts = _parse_header(first)
                header_sha256 = hashlib.sha256(first.encode("utf-8")).hexdigest()
                tallies = {t.name: Tally() for t in layouts}
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


def first_line(exc: BaseException) -> str:
    """The first line of an error's text, so a message naming it stays on one line."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _check_rows(layout: Layout, rows: Any) -> None:
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
    trailer: Any, header_sha256: str, layouts: tuple[Layout, ...], tallies: dict[str, Tally]
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
    reader = Reader(Path(path))
    for _chunk in reader.chunks():
        pass
    assert reader.manifest is not None
    return reader.manifest
