"""backup_placement / restore_placement on real databases, SQLite and MariaDB.

Databases are built with novadb's own sync and filled the way Placement fills
them (VCPU has id 0, custom classes start at 10000, nested providers, ratios
MySQL's FLOAT rounds).  Round trips compare every table's full row set, ids
included, read here independently of the module: MySQL FLOATs as exact
doubles, so a rounding error cannot hide.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import os
import struct
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import os_resource_classes as orc
import pytest
import sqlalchemy as sa
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.errors import BadInput, NovaDbError, SchemaError
from novadb.placement.backup import database as placement_backup
from novadb.placement.backup.database import (
    PLACEMENT_TABLES,
    backup_placement,
    drop_placement_tables,
    placement_tables,
    read_backup,
    restore_placement,
)
from novadb.progress import Event
from novadb.schema.sync import sync

NewDb = Callable[[], str]
Dump = dict[str, list[tuple[Any, ...]]]

T0 = dt.datetime(2024, 3, 1, 12, 0, 0)
RATIOS = {1: 16.0, 2: 1.5, 3: 0.9, 4: 1.2345678, 5: 4.0, 6: 1.0, 7: 1.0}
ALLOCATIONS = 2500  # several CHUNK_ROWS chunks
CONSUMERS = 300


def _sqlite_factory(tmp_path: Path) -> NewDb:
    def make() -> str:
        return f"sqlite:///{tmp_path / uuid.uuid4().hex[:8]}.sqlite"

    return make


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A filled SQLite Placement database and its backup, built once, copied by tests."""
    directory = tmp_path_factory.mktemp("template")
    database = directory / "placement.sqlite"
    _fill(_placement(f"sqlite:///{database}"))
    backup = directory / "placement.backup.gz"
    _backup(f"sqlite:///{database}", backup)
    return database, backup


def _copy(template: tuple[Path, Path], tmp_path: Path) -> tuple[str, Path]:
    """A fresh copy of the template database (its URL) and of its backup."""
    database, backup = tmp_path / f"{uuid.uuid4().hex[:8]}.sqlite", tmp_path / "copy.backup.gz"
    database.write_bytes(template[0].read_bytes())
    backup.write_bytes(template[1].read_bytes())
    return f"sqlite:///{database}", backup


def _placement(url: str, revision: str | None = None) -> str:
    sync(load_settings(placement_database=url), "placement", revision=revision)
    return url


def _engine(url: str) -> sa.Engine:
    return create_engine(url, create=True)


def _uuid(kind: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"{kind}-{n}"))


def _fill(url: str) -> None:
    """Rows shaped like a small cloud's Placement, touching every table."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    t = meta.tables
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "mysql":  # what Placement does to insert VCPU as id 0
                conn.execute(sa.text("SET SESSION sql_mode = 'TRADITIONAL,NO_AUTO_VALUE_ON_ZERO'"))
            classes = [
                {"id": i, "name": name, "created_at": T0, "updated_at": None}
                for i, name in enumerate(orc.STANDARDS)
            ]
            classes += [
                {"id": 10000, "name": "CUSTOM_GPU_A100", "created_at": T0, "updated_at": T0},
                {
                    "id": 10001,
                    "name": "CUSTOM_BAREMETAL_GOLD",
                    "created_at": T0,
                    "updated_at": None,
                },
            ]
            conn.execute(t["resource_classes"].insert(), classes)
            traits = [
                "HW_CPU_X86_AVX2",
                "COMPUTE_STATUS_DISABLED",
                "STORAGE_DISK_SSD",
                "CUSTOM_RACK_12",
            ]
            conn.execute(
                t["traits"].insert(),
                [{"id": i, "name": n, "created_at": T0} for i, n in enumerate(traits, 1)],
            )
            conn.execute(
                t["projects"].insert(),
                [
                    {"id": i, "external_id": _uuid("project", i), "created_at": T0}
                    for i in (1, 2, 3)
                ],
            )
            conn.execute(
                t["users"].insert(),
                [{"id": i, "external_id": _uuid("user", i), "created_at": T0} for i in (1, 2)],
            )
            conn.execute(
                t["consumer_types"].insert(),
                [
                    {"id": 1, "name": "INSTANCE", "created_at": T0},
                    {"id": 2, "name": "MIGRATION", "created_at": T0},
                ],
            )
            conn.execute(
                t["placement_aggregates"].insert(),
                [
                    {"id": 1, "uuid": _uuid("agg", 1), "created_at": T0},
                    {"id": 2, "uuid": _uuid("agg", 2), "created_at": T0},
                    {"id": 3, "uuid": None, "created_at": T0},
                ],
            )
            # (id, name, root, parent): a tree under 1, a unicode name, a provider
            # whose parent has a higher id (re-parented), one without name/generation.
            providers = [
                (1, "cmp-01", 1, None),
                (2, "nœud-ø2 計算 🖥", 2, None),
                (3, "cmp-01_pci_0000:81:00.0", 1, 1),
                (4, "cmp-01_pci_0000:81:00.0_vgpu", 1, 3),
                (5, "moved-child", 7, 7),
                (6, None, 6, None),
                (7, "sharing-storage", 7, None),
            ]
            conn.execute(
                t["resource_providers"].insert(),
                [
                    {
                        "id": i,
                        "uuid": _uuid("rp", i),
                        "name": name,
                        "generation": None if name is None else i * 3,
                        "created_at": T0 + dt.timedelta(seconds=i),
                        "updated_at": None if i % 2 else T0 + dt.timedelta(days=i),
                    }
                    for i, name, _root, _parent in providers
                ],
            )
            rp = t["resource_providers"]
            for i, _name, root, parent in providers:  # as Placement does: root set after insert
                conn.execute(
                    rp.update()
                    .where(rp.c.id == i)
                    .values(root_provider_id=root, parent_provider_id=parent)
                )
            inventory = [  # (id, provider, class)
                (1, 1, 0),
                (2, 1, 1),
                (3, 7, 2),
                (4, 4, 10000),
                (5, 2, 0),
                (6, 2, 1),
                (7, 6, 10001),
            ]
            conn.execute(
                t["inventories"].insert(),
                [
                    {
                        "id": i,
                        "resource_provider_id": p,
                        "resource_class_id": c,
                        "total": 64 * i,
                        "reserved": i % 3,
                        "min_unit": 1,
                        "max_unit": 64 * i,
                        "step_size": 1,
                        "allocation_ratio": RATIOS[i],
                        "created_at": T0,
                        "updated_at": None,
                    }
                    for i, p, c in inventory
                ],
            )
            conn.execute(
                t["consumers"].insert(),
                [
                    {
                        "id": i,
                        "uuid": _uuid("consumer", i),
                        "project_id": 1 + i % 3,
                        "user_id": 1 + i % 2,
                        "generation": i % 5,
                        "consumer_type_id": (1, 2, None)[i % 3],
                        "created_at": T0 + dt.timedelta(minutes=i),
                        "updated_at": None if i % 4 else T0,
                    }
                    for i in range(1, CONSUMERS + 1)
                ],
            )
            conn.execute(
                t["allocations"].insert(),
                [
                    {
                        "id": i,
                        "resource_provider_id": (1, 2, 7)[i % 3],
                        "consumer_id": _uuid("consumer", 1 + i % CONSUMERS),
                        "resource_class_id": (0, 1, 2)[i % 3],
                        "used": 1 + i % 7,
                        "created_at": T0 + dt.timedelta(seconds=i),
                        "updated_at": None,
                    }
                    for i in range(1, ALLOCATIONS + 1)
                ],
            )
            conn.execute(
                t["resource_provider_aggregates"].insert(),
                [
                    {"resource_provider_id": p, "aggregate_id": a, "created_at": T0}
                    for p, a in ((1, 1), (2, 1), (7, 2), (1, 3))
                ],
            )
            conn.execute(
                t["resource_provider_traits"].insert(),
                [
                    {"trait_id": tr, "resource_provider_id": p, "created_at": T0}
                    for tr, p in ((1, 1), (1, 2), (3, 3), (2, 2), (4, 4))
                ],
            )
    finally:
        engine.dispose()


def _single(value: float) -> float:
    return struct.unpack("<f", struct.pack("<f", value))[0]


def _dump(url: str, *, single: bool = False) -> Dump:
    """Every table's rows in primary-key order; MySQL floats read as exact doubles.

    ``single`` rounds every float to 32 bits, to compare across dialects.
    """
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    out: Dump = {}
    try:
        with engine.connect() as conn:
            for name, table in meta.tables.items():
                columns = [
                    sa.cast(c, sa.Double)
                    if engine.dialect.name == "mysql" and isinstance(c.type, sa.Float)
                    else c
                    for c in table.columns
                ]
                stmt = sa.select(*columns).order_by(*table.primary_key.columns)
                out[name] = [
                    tuple(_single(v) if single and isinstance(v, float) else v for v in row)
                    for row in conn.execute(stmt)
                ]
    finally:
        engine.dispose()
    return out


def _execute(url: str, *statements: Any) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement) if isinstance(statement, str) else statement)
    finally:
        engine.dispose()


def _table(url: str, name: str) -> sa.Table:
    engine = sa.create_engine(url)
    try:
        return sa.Table(name, sa.MetaData(), autoload_with=engine)
    finally:
        engine.dispose()


def _backup(url: str, path: Path, **kwargs: Any) -> placement_backup.BackupResult:
    engine = _engine(url)
    try:
        return backup_placement(engine, path, **kwargs)
    finally:
        engine.dispose()


def _restore(url: str, path: Path) -> placement_backup.RestoreResult:
    engine = _engine(url)
    try:
        return restore_placement(engine, path)
    finally:
        engine.dispose()


def _filled(new_db: NewDb) -> str:
    url = _placement(new_db())
    _fill(url)
    return url


# -- Round trips ------------------------------------------------------------------------


def test_round_trip_into_empty_database(new_db: NewDb, tmp_path: Path) -> None:
    source = _filled(new_db)
    before = _dump(source)
    path = tmp_path / "placement.backup.gz"

    result = _backup(source, path)

    assert result.path == path
    assert result.rows == {name: len(rows) for name, rows in before.items()}
    assert result.rows["allocations"] == ALLOCATIONS
    assert result.bytes == path.stat().st_size
    assert result.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = read_backup(path)
    assert (manifest.revision, manifest.rows, manifest.digest) == (
        result.revision,
        result.rows,
        result.digest,
    )
    assert manifest.dialect == ("sqlite" if source.startswith("sqlite") else "mysql")
    assert [t.name for t in manifest.tables] == ["alembic_version", *PLACEMENT_TABLES]

    target = new_db()
    restored = _restore(target, path)

    assert _dump(target) == before
    assert restored.rows == result.rows
    assert restored.adjusted == {}
    assert restored.revision == result.revision == before["alembic_version"][0][0]
    engine = _engine(target)
    try:
        assert placement_tables(engine) == PLACEMENT_TABLES
    finally:
        engine.dispose()
    _check_new_ids(target)


def _check_new_ids(url: str) -> None:
    """Rows inserted without an id get one above the restored ids (AUTO_INCREMENT moved)."""
    classes, allocations = _table(url, "resource_classes"), _table(url, "allocations")
    providers = _table(url, "resource_providers")
    _execute(
        url,
        classes.insert().values(name="CUSTOM_NEW"),
        allocations.insert().values(
            resource_provider_id=1, consumer_id=_uuid("c", 0), resource_class_id=0, used=1
        ),
        providers.insert().values(uuid=_uuid("rp", 99), name="new-node"),
    )
    after = _dump(url)
    assert ("VCPU", 0) in {(row[3], row[2]) for row in after["resource_classes"]}
    new_class = next(row[2] for row in after["resource_classes"] if row[3] == "CUSTOM_NEW")
    new_allocation = next(row[2] for row in after["allocations"] if row[4] == _uuid("c", 0))
    new_provider = next(row[2] for row in after["resource_providers"] if row[4] == "new-node")
    assert new_class > 10001
    assert new_allocation > ALLOCATIONS
    assert new_provider > 7


def test_round_trip_at_an_older_revision(tmp_path: Path) -> None:
    """A database from before consumer_types is restored at its own revision."""
    new_db = _sqlite_factory(tmp_path)
    source = _placement(new_db(), revision="b5c396305c25")
    classes = _table(source, "resource_classes")
    _execute(source, classes.insert().values(id=0, name="VCPU", created_at=T0))
    before = _dump(source)
    assert "consumer_types" not in before
    path = tmp_path / "old.backup.gz"

    result = _backup(source, path)
    target = new_db()
    _restore(target, path)

    assert result.revision == "b5c396305c25"
    assert _dump(target) == before


@pytest.mark.parametrize("direction", ["mariadb-to-sqlite", "sqlite-to-mariadb"])
def test_cross_dialect(direction: str, mysql_dbs: NewDb, tmp_path: Path) -> None:
    sqlite_db = _sqlite_factory(tmp_path)
    source_db, target_db = (
        (mysql_dbs, sqlite_db) if direction == "mariadb-to-sqlite" else (sqlite_db, mysql_dbs)
    )
    source = _filled(source_db)
    expected = _dump(source, single=True)
    if direction == "sqlite-to-mariadb":
        # Values SQLite holds and MySQL cannot: a fraction of a second, a double.
        fine = T0.replace(microsecond=654321)
        rp, inv = _table(source, "resource_providers"), _table(source, "inventories")
        _execute(
            source,
            rp.update().where(rp.c.id == 2).values(created_at=fine),
            inv.update().where(inv.c.id == 5).values(allocation_ratio=0.1 + 0.2),
        )
        row = next(i for i, r in enumerate(expected["resource_providers"]) if r[2] == 2)
        expected["resource_providers"][row] = (T0, *expected["resource_providers"][row][1:])
        row = next(i for i, r in enumerate(expected["inventories"]) if r[2] == 5)
        expected["inventories"][row] = (*expected["inventories"][row][:-1], _single(0.3))
    path = tmp_path / "cross.backup.gz"

    _backup(source, path)
    target = target_db()
    restored = _restore(target, path)

    assert _dump(target, single=True) == expected
    if direction == "sqlite-to-mariadb":
        assert restored.adjusted == {"resource_providers": 1, "inventories": 1}
    else:
        assert restored.adjusted == {}
        # MariaDB stored 32-bit floats; SQLite gets back the ratios Placement was given.
        ratios = {row[2]: row[-1] for row in _dump(target)["inventories"]}
        assert ratios == RATIOS


def test_restore_over_a_modified_database(new_db: NewDb, tmp_path: Path) -> None:
    url = _filled(new_db)
    before = _dump(url)
    path = tmp_path / "placement.backup.gz"
    _backup(url, path)
    alloc, inv = _table(url, "allocations"), _table(url, "inventories")
    rp, rc = _table(url, "resource_providers"), _table(url, "resource_classes")
    rpt = _table(url, "resource_provider_traits")
    _execute(
        url,
        alloc.delete().where(alloc.c.id > 1000),
        inv.update().where(inv.c.id == 3).values(allocation_ratio=2.5),
        rp.update().where(rp.c.id == 1).values(name="renamed", generation=99),
        rp.insert().values(id=8, uuid=_uuid("rp", 8), name="extra", root_provider_id=8),
        rc.insert().values(id=10002, name="CUSTOM_EXTRA"),
        rpt.delete(),
    )
    assert _dump(url) != before

    restored = _restore(url, path)

    assert _dump(url) == before
    assert restored.rows["allocations"] == ALLOCATIONS


# -- Refusals -------------------------------------------------------------------------


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "flip":
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :])
    elif how == "truncate":
        path.write_bytes(data[: len(data) * 2 // 3])
    elif how == "edited-row":  # still valid gzip and JSON: only the digest can tell
        text = gzip.decompress(data).replace(b'"CUSTOM_GPU_A100"', b'"CUSTOM_GPU_H100"', 1)
        assert text != gzip.decompress(data)
        path.write_bytes(gzip.compress(text))
    elif how == "edited-header":  # a column renamed: valid gzip and JSON again
        text = gzip.decompress(data).replace(b'["used","int"]', b'["usage","int"]', 1)
        assert text != gzip.decompress(data)
        path.write_bytes(gzip.compress(text))
    elif how == "lost-trailer":  # cut at a line boundary, then re-zipped
        lines = gzip.decompress(data).splitlines(keepends=True)
        path.write_bytes(gzip.compress(b"".join(lines[:-1])))
    elif how == "foreign":
        path.write_bytes(gzip.compress(b'{"hello": "world"}\n'))
    elif how == "not-gzip":
        path.write_bytes(b"CREATE TABLE allocations (id INTEGER);\n")
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize(
    "how",
    [
        "flip",
        "truncate",
        "edited-row",
        "edited-header",
        "lost-trailer",
        "foreign",
        "not-gzip",
        "empty",
    ],
)
def test_damaged_backup_is_refused_and_nothing_is_touched(
    how: str, template: tuple[Path, Path], tmp_path: Path
) -> None:
    target, path = _copy(template, tmp_path)
    _damage(path, how)
    _execute(target, "DELETE FROM allocations WHERE id > 10")
    before = _dump(target)

    with pytest.raises(BadInput) as read_error:
        read_backup(path)
    with pytest.raises(BadInput) as restore_error:
        _restore(target, path)

    for error in (read_error.value, restore_error.value):
        assert str(path) in str(error)
        assert "\n" not in str(error)
        assert error.exit_code == 2
    assert _dump(target) == before


def test_missing_backup_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        read_backup(tmp_path / "nope.gz")


def test_backup_never_overwrites_a_file(template: tuple[Path, Path], tmp_path: Path) -> None:
    source, _backup_copy = _copy(template, tmp_path)
    path = tmp_path / "placement.backup.gz"
    path.write_text("an older backup")

    events: list[Event] = []

    with pytest.raises(BadInput, match="already exists") as error:
        _backup(source, path, progress=events.append)

    assert "\n" not in str(error.value)
    assert events == []  # refused before reading the database
    assert path.read_text() == "an older backup"
    assert list(tmp_path.glob(".*.partial")) == []


def test_backup_never_overwrites_a_file_that_appears_meanwhile(
    template: tuple[Path, Path], tmp_path: Path
) -> None:
    source, _backup_copy = _copy(template, tmp_path)
    path = tmp_path / "placement.backup.gz"

    def another_writer(event: Event) -> None:
        if event.kind == "database":
            path.write_text("someone else's file")

    with pytest.raises(BadInput, match="already exists"):
        _backup(source, path, progress=another_writer)

    assert path.read_text() == "someone else's file"
    assert list(tmp_path.glob(".*.partial")) == []


def test_backup_into_a_missing_directory_is_refused(
    template: tuple[Path, Path], tmp_path: Path
) -> None:
    source, _backup_copy = _copy(template, tmp_path)
    with pytest.raises(BadInput, match="does not exist"):
        _backup(source, tmp_path / "no-such-dir" / "b.gz")


def test_restore_refuses_a_database_with_other_tables(
    new_db: NewDb, template: tuple[Path, Path], tmp_path: Path
) -> None:
    _source, path = _copy(template, tmp_path)  # backups are portable: a SQLite one serves
    api = new_db()
    sync(load_settings(api_database=api), "api")
    extra = _placement(new_db())
    _execute(extra, _table(extra, "traits").insert().values(id=1, name="HW_CPU_X86_AVX2"))
    _execute(extra, "CREATE TABLE instances (id INTEGER PRIMARY KEY)")

    for url in (api, extra):
        before = _dump(url)
        with pytest.raises(SchemaError, match="not Placement's") as error:
            _restore(url, path)
        assert "\n" not in str(error.value)
        assert _dump(url) == before


def test_drop_placement_tables_drops_only_placement(new_db: NewDb) -> None:
    url = _placement(new_db())
    api = new_db()
    sync(load_settings(api_database=api), "api")
    engine, api_engine = _engine(url), _engine(api)
    try:
        dropped = drop_placement_tables(engine)
        assert dropped == ("alembic_version", *PLACEMENT_TABLES)
        assert sa.inspect(engine).get_table_names() == []
        api_tables = sa.inspect(api_engine).get_table_names()
        with pytest.raises(SchemaError, match="not Placement's"):
            drop_placement_tables(api_engine)
        assert sa.inspect(api_engine).get_table_names() == api_tables
    finally:
        engine.dispose()
        api_engine.dispose()


def test_backup_refuses_a_database_that_is_not_placement(new_db: NewDb, tmp_path: Path) -> None:
    api = new_db()
    sync(load_settings(api_database=api), "api")
    path = tmp_path / "api.backup.gz"

    with pytest.raises(SchemaError, match="not a Placement revision"):
        _backup(api, path)

    assert list(tmp_path.glob("*.gz")) == []
    assert list(tmp_path.glob(".*.partial")) == []


def test_backup_refuses_a_drifted_schema(template: tuple[Path, Path], tmp_path: Path) -> None:
    url, _backup_copy = _copy(template, tmp_path)
    _execute(url, "ALTER TABLE traits ADD COLUMN colour VARCHAR(20)")

    with pytest.raises(SchemaError, match="traits"):
        _backup(url, tmp_path / "b.gz")

    assert not (tmp_path / "b.gz").exists()


def test_a_backup_that_reads_back_wrong_is_removed(
    template: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk returns other bytes than were written: verification catches it."""
    source, _backup_copy = _copy(template, tmp_path)
    path = tmp_path / "placement.backup.gz"
    real_fsync = os.fsync
    calls: list[int] = []

    def fsync_and_damage(fd: int) -> None:
        if not calls:  # the first fsync is the backup file's
            size = os.fstat(fd).st_size
            os.pwrite(fd, b"\x00" * 16, size // 2)
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_and_damage)
    with pytest.raises(NovaDbError, match="failed verification") as error:
        _backup(source, path)

    assert not isinstance(error.value, BadInput)
    assert calls
    assert not path.exists()
    assert list(tmp_path.glob(".*.partial")) == []


def test_a_restore_that_reads_back_wrong_fails(
    template: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row lost between loading and checking is reported, not returned as success."""
    target, path = _copy(template, tmp_path)
    real_load = placement_backup._load

    def load_then_lose_a_row(conn: sa.Connection, *args: Any) -> Any:
        loaded = real_load(conn, *args)
        conn.execute(sa.text("DELETE FROM allocations WHERE id = 7"))
        conn.commit()
        return loaded

    monkeypatch.setattr(placement_backup, "_load", load_then_lose_a_row)
    with pytest.raises(NovaDbError, match="restored allocations .* does not match"):
        _restore(target, path)


def test_backup_reads_one_snapshot(mysql_dbs: NewDb, tmp_path: Path) -> None:
    """Rows committed while the backup runs are not in it, in no table."""
    url = _filled(mysql_dbs)
    allocations, classes = _table(url, "allocations"), _table(url, "resource_classes")
    wrote: list[str] = []

    def write_meanwhile(event: Event) -> None:
        if event.kind == "table" and not wrote:  # after alembic_version, before the rest
            _execute(
                url,
                allocations.insert().values(
                    resource_provider_id=1, consumer_id=_uuid("c", 0), resource_class_id=0, used=1
                ),
                classes.insert().values(id=10005, name="CUSTOM_LATE"),
            )
            wrote.append(event.message)

    # As on a server set to READ-COMMITTED (common with Galera): the backup must
    # still ask for its own snapshot.
    engine = _engine(url).execution_options(isolation_level="READ COMMITTED")
    try:
        result = backup_placement(engine, tmp_path / "b.gz", progress=write_meanwhile)
    finally:
        engine.dispose()

    assert wrote
    assert result.rows["allocations"] == ALLOCATIONS
    assert result.rows["resource_classes"] == len(orc.STANDARDS) + 2
    assert len(_dump(url)["allocations"]) == ALLOCATIONS + 1
