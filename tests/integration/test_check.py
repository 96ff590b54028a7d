"""``check`` on real clouds (SQLite, MariaDB): clean is silent, each problem is one exact finding.

Each dialect's cloud (API, cell0, cell1 with a dozen live instances, Placement,
cells mapped as ``nova-manage cell_v2`` maps them) is synced once per module.
Every test provokes one kind of problem, checks the exact findings (code,
severity, count, fix, subject) and the exit code, and, where the fix is a
novadb call or SQL, applies it and checks that the finding is gone.  After
each test the cloud is put back (its undo steps, rows above the start's ids
deleted, shadow tables emptied) and must check clean again, so a test that
leaves something behind fails at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive
from novadb.cells import CELL0_UUID
from novadb.check.check import CheckResult, check
from novadb.check.dialect import read_only
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.errors import BlockerFound
from novadb.findings import Finding
from novadb.online.pending import COUNTERS
from novadb.online.registry import MIGRATIONS
from novadb.online.runner import online_migrate
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.schema.null_uuid import null_instance_uuid_scan
from novadb.schema.sync import sync
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

CELL1 = "11111111-1111-1111-1111-111111111111"
DATABASES = ("api", "cell0", "cell1", "placement")
CLEAN = CloudSpec(instances=12, deleted_fraction=0.0, hosts=2, deleted_hosts=0, seed=3)
DELETED = CloudSpec(
    instances=4, deleted_fraction=1.0, orphan_fraction=0.0, hosts=1, deleted_hosts=0, seed=5
)

Key = tuple[str, str, str, int, str, str]


def keys(result: CheckResult) -> list[Key]:
    """(database, severity, code, count, fix, subject) of every finding, in check's order."""
    return [(f.database, f.severity, f.code, f.count, f.fix, f.subject) for f in result.findings]


def one(result: CheckResult, code: str, subject: str = "") -> Finding:
    found = [
        f for f in result.findings if f.code == code and (not subject or f.subject == subject)
    ]
    assert len(found) == 1, keys(result)
    return found[0]


def statements(fix: str) -> list[str]:
    return [s for s in fix.split("; ") if s]


@dataclass
class World:
    """One dialect's synced cloud and the steps that put it back after a test."""

    dialect: str
    urls: dict[str, str]
    engines: dict[str, Engine]
    settings: Settings
    cell1_id: int
    baseline: dict[str, dict[str, int]] = field(default_factory=dict)
    undo: list[Callable[[], None]] = field(default_factory=list)

    @property
    def mysql(self) -> bool:
        return self.dialect == "mariadb"

    def check(self, **kwargs: Any) -> CheckResult:
        return check(self.settings, **kwargs)

    def sql(self, db: str, statement: str, **params: Any) -> None:
        with self.engines[db].begin() as conn:
            conn.execute(sa.text(statement), params)

    def rows(self, db: str, statement: str, **params: Any) -> list[Any]:
        with self.engines[db].connect() as conn:
            return list(conn.execute(sa.text(statement), params).all())

    def value(self, db: str, statement: str, **params: Any) -> Any:
        return self.rows(db, statement, **params)[0][0]

    def later(self, db: str, statement: str, **params: Any) -> None:
        """Run ``statement`` when the test ends (in reverse order of registration)."""
        self.undo.append(lambda: self.sql(db, statement, **params))

    def insert(self, db: str, table: str, **values: Any) -> None:
        with self.engines[db].begin() as conn:
            conn.execute(sa.insert(sa.Table(table, sa.MetaData(), autoload_with=conn)), values)

    def apply(self, db: str, fix: str) -> None:
        """Run a finding's SQL fix, statement by statement."""
        for statement in statements(fix):
            self.sql(db, statement)

    def add_cell(self, name: str, url: str) -> None:
        self.insert("api", "cell_mappings", uuid=str(uuid.uuid4()), name=name,
                    transport_url="none:///", database_connection=url)  # fmt: skip
        self.later("api", "DELETE FROM cell_mappings WHERE name = :n", n=name)

    def record_baseline(self) -> None:
        for db, engine in self.engines.items():
            with engine.connect() as conn:
                inspector = sa.inspect(conn)
                self.baseline[db] = {}
                for name in inspector.get_table_names():
                    if name.startswith("shadow_"):
                        continue
                    if "id" in {c["name"] for c in inspector.get_columns(name)}:
                        top = conn.execute(sa.text(f"SELECT MAX(id) FROM {name}")).scalar()
                        self.baseline[db][name] = int(top or 0)

    def reset(self) -> None:
        """Undo steps (newest first), then rows above the baseline go and shadows empty."""
        while self.undo:
            self.undo.pop()()
        for db, engine in self.engines.items():
            with engine.begin() as conn:
                counts = []
                for name in sa.inspect(conn).get_table_names():
                    table = sa.table(name, sa.column("id"))
                    if name.startswith("shadow_"):
                        counts.append(
                            sa.select(sa.literal(name), sa.func.count()).select_from(table)
                        )
                    elif name in self.baseline[db]:
                        counts.append(sa.select(sa.literal(name), sa.func.count()).where(
                            table.c.id > self.baseline[db][name]))  # fmt: skip
                dirty = [str(r[0]) for r in conn.execute(sa.union_all(*counts)) if r[1]]
                if self.mysql and dirty:
                    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
                for name in dirty:
                    top = self.baseline[db].get(name, 0)
                    conn.exec_driver_sql(f"DELETE FROM {name} WHERE id > {top}")
                if self.mysql and dirty:
                    conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 1")


def _mysql(base: str) -> pymysql.connections.Connection:
    url = make_url(base)
    return pymysql.connect(host=url.host or "127.0.0.1", port=url.port or 3306,
                           user=url.username or "root", password=url.password or "",
                           autocommit=True, charset="utf8mb4")  # fmt: skip


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    created: list[str] = []
    admin = None
    folder: Path = tmp_path_factory.mktemp("check")
    if request.param == "sqlite":
        urls = {n: f"sqlite:///{folder / n}.sqlite" for n in DATABASES}
    else:
        base = request.getfixturevalue("mysql_url_base")
        admin = _mysql(base)
        urls = {}
        for n in DATABASES:
            name = f"novadb_t_check_{secrets.token_hex(5)}"
            with admin.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            created.append(name)
            urls[n] = make_url(base).set(database=name).render_as_string(hide_password=False)
    engines: dict[str, Engine] = {}
    try:
        settings = load_settings(
            database=urls["cell1"], api_database=urls["api"], placement_database=urls["placement"]
        )
        sync(settings, "api")
        engines["api"] = create_engine(urls["api"])
        with engines["api"].begin() as conn:
            map_cell(conn, "cell0", urls["cell0"], cell_uuid=CELL0_UUID)
            cell1_id = map_cell(conn, "cell1", urls["cell1"], cell_uuid=CELL1)
        sync(settings)
        for n in ("cell0", "cell1", "placement"):
            engines[n] = create_engine(urls[n])
        populate(engines["cell1"], engines["api"], CLEAN, cell_id=cell1_id)
        w = World(request.param, urls, engines, settings, int(cell1_id))
        w.record_baseline()
        yield w
    finally:
        for engine in engines.values():
            engine.dispose()
        if admin is not None:
            with admin.cursor() as cur:
                for name in created:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            admin.close()


@pytest.fixture
def cloud(world: World) -> Iterator[World]:
    """The module's cloud; put back after the test, and checked clean again."""
    try:
        yield world
    finally:
        world.reset()
    after = world.check()
    assert keys(after) == [], "the test left its cloud unclean"


def _live_instances(w: World) -> list[tuple[int, str]]:
    rows = w.rows("cell1", "SELECT id, uuid FROM instances WHERE deleted = 0 ORDER BY id")
    return [(int(i), str(u)) for i, u in rows]


# -- clean, and read-only --------------------------------------------------------------


def test_a_clean_synced_cloud_has_no_findings(cloud: World) -> None:
    result = cloud.check()

    assert keys(result) == []
    assert result.exit_code == 0
    assert [d.name for d in result.databases] == list(DATABASES)
    for facts in result.databases:
        assert facts.reachable
        assert facts.revision == facts.head
        assert facts.pending_revisions == 0
        assert facts.online == {} and facts.archivable == {} and facts.held_back == {}


def _state(w: World) -> dict[str, Any]:
    """Every table's columns and rows (MariaDB: CHECKSUM TABLE), and SQLite files' bytes."""
    out: dict[str, Any] = {}
    for db, engine in w.engines.items():
        with engine.connect() as conn:
            inspector = sa.inspect(conn)
            for name in sorted(inspector.get_table_names()):
                columns = [(c["name"], str(c["type"]), c["nullable"])
                           for c in inspector.get_columns(name)]  # fmt: skip
                if w.mysql:
                    content = conn.exec_driver_sql(f"CHECKSUM TABLE `{name}`").one()[1]
                else:
                    content = conn.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar()
                out[f"{db}.{name}"] = (columns, content)
        if not w.mysql:
            path = make_url(w.urls[db]).database
            assert path is not None
            out[f"{db}.file"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def test_check_changes_nothing_and_its_connections_refuse_writes(cloud: World) -> None:
    # Something to find in every part of the check.
    populate(cloud.engines["cell1"], cloud.engines["api"], DELETED, cell_id=cloud.cell1_id)
    first_id, first_uuid = _live_instances(cloud)[0]
    cloud.sql("api", "UPDATE instance_mappings SET cell_id = NULL WHERE instance_uuid = :u",
              u=first_uuid)  # fmt: skip
    cloud.later("api", "UPDATE instance_mappings SET cell_id = :c WHERE instance_uuid = :u",
                c=cloud.cell1_id, u=first_uuid)  # fmt: skip
    cloud.sql("cell1", "INSERT INTO shadow_instances (id, uuid, deleted) VALUES (:i, :u, :i)",
              i=first_id, u=first_uuid)  # fmt: skip
    cloud.insert("cell1", "instance_metadata", key="k", value="v", deleted=0)
    before = _state(cloud)

    result = cloud.check()

    assert result.exit_code == 2
    assert {f.code for f in result.findings} == {
        "archivable-rows", "shadow-id-duplicate", "null-instance-uuid",
        "instance-mapping-without-cell",
    }  # fmt: skip
    assert _state(cloud) == before
    for db in DATABASES:
        with read_only(cloud.engines[db]) as conn, pytest.raises(OperationalError) as refused:
            conn.execute(sa.text("DELETE FROM alembic_version"))
        reason = refused.value.orig
        assert reason is not None
        if cloud.mysql:  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
            assert reason.args[0] == 1792, reason
        else:  # PRAGMA query_only
            assert str(reason) == "attempt to write a readonly database"
    # The connection goes back to the pool writable, as it came.
    with cloud.engines["cell1"].connect() as conn:
        conn.execute(sa.text("UPDATE instances SET display_name = display_name WHERE id = 0"))
        conn.rollback()


# -- schema revisions ---------------------------------------------------------------


def test_an_unsynced_cell_database(cloud: World, tmp_path: Path) -> None:
    if cloud.mysql:
        admin = _mysql(str(make_url(cloud.urls["api"]).set(database="")))
        name = f"novadb_t_check_{secrets.token_hex(5)}"
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        url = make_url(cloud.urls["api"]).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE `{name}`")
            admin.close()

        cloud.undo.append(drop)
    else:
        path = tmp_path / "cell2.sqlite"
        sqlite3.connect(path).close()  # an empty database file
        url = f"sqlite:///{path}"
    cloud.add_cell("cell2", url)

    result = cloud.check()

    assert keys(result) == [
        ("cell2", "warning", "pending-revisions", 10, "novadb sync --database main", "")
    ]
    assert result.exit_code == 1
    facts = {d.name: d for d in result.databases}
    assert facts["cell2"].revision is None
    assert facts["cell2"].pending_revisions == 10
    assert [d.name for d in result.databases] == ["api", "cell0", "cell1", "cell2", "placement"]


def test_revisions_at_a_release_heads_are_info_part_way_a_warning(cloud: World) -> None:
    cloud.later("cell1", "UPDATE alembic_version SET version_num = 'ab450ba04102'")

    cloud.sql("cell1", "UPDATE alembic_version SET version_num = '2903cd72dc14'")
    at_heads = cloud.check()
    cloud.sql("cell1", "UPDATE alembic_version SET version_num = '1b91788ec3a6'")
    part_way = cloud.check()

    assert keys(at_heads) == [(
        "cell1", "info", "pending-revisions", 1,
        "novadb sync --database main --release <the release you upgrade to>", "",
    )]  # fmt: skip
    assert "2026.1 (gazpacho)" in at_heads.findings[0].summary
    assert at_heads.exit_code == 0
    assert keys(part_way) == [
        ("cell1", "warning", "pending-revisions", 5, "novadb sync --database main --release "
         "2023.2", "")
    ]  # fmt: skip
    assert part_way.exit_code == 1


def test_unknown_revision_and_an_unreachable_cell_are_blockers(cloud: World) -> None:
    cloud.sql("api", "UPDATE alembic_version SET version_num = 'feedfacecafe'")
    cloud.later("api", "UPDATE alembic_version SET version_num = 'cdeec0c85668'")
    if cloud.mysql:
        missing = make_url(cloud.urls["api"]).set(database="novadb_t_check_none")
        url = missing.render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{make_url(cloud.urls['api']).database}.missing"
    cloud.add_cell("cell9", url)

    result = cloud.check()

    assert keys(result) == [
        ("api", "blocker", "unknown-revision", 1,
         "upgrade novadb to a version that knows this revision", ""),
        ("cell9", "blocker", "unreachable", 1,
         "make the database reachable (see the summary), then run `novadb check`", ""),
    ]  # fmt: skip
    assert "feedfacecafe" in result.findings[0].summary
    assert result.exit_code == 2
    facts = {d.name: d for d in result.databases}
    assert facts["cell9"].reachable is False
    assert facts["cell1"].revision == "ab450ba04102"


def test_a_blocked_placement_revision(cloud: World) -> None:
    cloud.sql("placement", "UPDATE alembic_version SET version_num = 'b4ed3a175331'")
    cloud.later("placement", "UPDATE alembic_version SET version_num = 'a082b8bb98d0'")
    cloud.insert("placement", "resource_providers", uuid=str(uuid.uuid4()), name="rp",
                 generation=0)  # fmt: skip

    result = cloud.check()

    fix = "novadb online-migrate --database placement"
    assert keys(result) == [
        ("placement", "warning", "pending-revisions", 4,
         "novadb sync --database placement --release 2021.2", ""),
        ("placement", "blocker", "migration-blocker", 1, fix, "611cd6dffd7b"),
        ("placement", "blocker", "pending-online-migration", 1, fix, "set_root_provider_ids"),
    ]  # fmt: skip
    assert result.exit_code == 2


# -- online migrations ------------------------------------------------------------------


def test_pending_online_migrations_are_what_online_migrate_does(cloud: World) -> None:
    (a, _), (b, _), (c, _) = _live_instances(cloud)[:3]
    nodes = dict(cloud.rows("cell1", "SELECT id, compute_id FROM instances"))
    for ident in (a, b):
        cloud.sql("cell1", "UPDATE instances SET compute_id = NULL WHERE id = :i", i=ident)
        cloud.later("cell1", "UPDATE instances SET compute_id = :n WHERE id = :i",
                    n=nodes[ident], i=ident)  # fmt: skip
    cloud.sql("cell1", "UPDATE instances SET availability_zone = NULL WHERE id = :i", i=c)
    cloud.later("cell1", "UPDATE instances SET availability_zone = 'nova' WHERE id = :i", i=c)
    bdm, bdm_uuid = cloud.rows("cell1", "SELECT id, uuid FROM block_device_mapping")[0]
    cloud.sql("cell1", "UPDATE block_device_mapping SET uuid = NULL WHERE id = :i", i=bdm)
    cloud.later("cell1", "UPDATE block_device_mapping SET uuid = :u WHERE id = :i",
                u=bdm_uuid, i=bdm)  # fmt: skip
    # Never scheduled: no host, no node, no compute_id; online-migrate leaves it as it is.
    stray = str(uuid.uuid4())
    cloud.insert("cell1", "instances", uuid=stray, deleted=0, vm_state="error")
    cloud.insert("api", "instance_mappings", instance_uuid=stray, cell_id=cloud.cell1_id,
                 project_id="p", user_id="u", queued_for_delete=False)  # fmt: skip
    im = cloud.value("api", "SELECT MIN(id) FROM instance_mappings")
    cloud.sql("api", "UPDATE instance_mappings SET queued_for_delete = NULL WHERE id = :i", i=im)
    cloud.later("api", "UPDATE instance_mappings SET queued_for_delete = :f WHERE id = :i",
                f=False, i=im)  # fmt: skip
    cloud.insert("placement", "resource_providers", uuid=str(uuid.uuid4()), name="rp",
                 generation=0)  # fmt: skip

    result = cloud.check()

    main = "novadb online-migrate --database main --all-cells"
    none = "none needed: `novadb online-migrate` lists their ids"
    assert keys(result) == [
        ("api", "blocker", "pending-online-migration", 1, "novadb online-migrate --database api",
         "populate_queued_for_delete"),
        ("cell1", "blocker", "pending-online-migration", 1, main,
         "populate_uuids"),
        ("cell1", "blocker", "pending-online-migration", 1, main,
         "populate_missing_availability_zones"),
        ("cell1", "blocker", "pending-online-migration", 2, main, "populate_instance_compute_id"),
        ("cell1", "info", "unmigratable-rows", 1, none, "populate_instance_compute_id"),
        ("placement", "blocker", "pending-online-migration", 1,
         "novadb online-migrate --database placement", "set_root_provider_ids"),
    ]  # fmt: skip
    assert result.exit_code == 2
    facts = {d.name: d for d in result.databases}
    assert facts["cell1"].online == {
        "populate_uuids": 1,
        "populate_missing_availability_zones": 1,
        "populate_instance_compute_id": 2,
    }

    # The fix does exactly what check counted, and leaves only the info behind.
    done = online_migrate(cloud.settings, all_cells=True)
    assert {m.name: m.done for m in done.migrations if m.done} == {
        "populate_queued_for_delete": 1,
        "populate_uuids": 1,
        "populate_missing_availability_zones": 1,
        "populate_instance_compute_id": 2,
        "set_root_provider_ids": 1,
    }
    after = cloud.check()
    # Left behind, as nova-manage leaves them: the never-scheduled instance, and the VIF
    # walk's marker (a soft-deleted instance 00000000-... with its marker VIF row), which
    # archive would move; it has no compute_id either, but is no instance to report.
    fake = "00000000-0000-0000-0000-000000000000"
    marker = "SELECT deleted != 0 FROM instances WHERE uuid = :u"
    assert cloud.rows("cell1", marker, u=fake) == [(1,)]
    assert keys(after) == [
        ("cell1", "info", "unmigratable-rows", 1, none, "populate_instance_compute_id"),
        ("cell1", "warning", "archivable-rows", 2, "novadb archive --until-complete --all-cells",
         ""),
    ]  # fmt: skip
    assert after.exit_code == 1


def test_virtual_interfaces_missing_from_the_info_cache(cloud: World) -> None:
    (_, a_uuid), (_, b_uuid) = _live_instances(cloud)[:2]
    vifs = {str(u): (int(i), str(addr)) for i, u, addr in cloud.rows(
        "cell1", "SELECT id, instance_uuid, address FROM virtual_interfaces")}  # fmt: skip
    port = str(uuid.uuid4())
    two_ports = (
        f'[{{"id": "{port}", "address": "fa:16:3e:00:00:01"}}, '
        f'{{"id": "{uuid.uuid4()}", "address": "fa:16:3e:00:00:02"}}]'
    )
    for instance, info in ((a_uuid, two_ports), (b_uuid, "not json")):
        cloud.sql("cell1", "UPDATE instance_info_caches SET network_info = :n "
                  "WHERE instance_uuid = :u", n=info, u=instance)  # fmt: skip
        cloud.later("cell1", "UPDATE instance_info_caches SET network_info = '[]' "
                    "WHERE instance_uuid = :u", u=instance)  # fmt: skip
    # The migration soft-deletes a's VIF row (and adds two): put it back afterwards.
    cloud.later("cell1", "UPDATE virtual_interfaces SET deleted = 0, deleted_at = NULL "
                "WHERE id = :i", i=vifs[a_uuid][0])  # fmt: skip

    result = cloud.check()

    assert keys(result) == [
        ("cell1", "blocker", "pending-online-migration", 1,
         "novadb online-migrate --database api", "fill_virtual_interface_list"),
        ("cell1", "info", "unmigratable-rows", 1,
         "none needed: `novadb online-migrate` lists their ids", "fill_virtual_interface_list"),
    ]  # fmt: skip
    done = online_migrate(cloud.settings, database="api")
    assert {m.name: m.done for m in done.migrations if m.done} == {
        "fill_virtual_interface_list": 1
    }
    # The walk's marker is past every live instance now (b too: a later run will not look
    # at it again), and the marker's own instance is no instance: only the soft-deleted
    # rows remain, for archive.
    assert [f.code for f in cloud.check().findings] == ["archivable-rows"]


def test_every_online_migration_has_a_counter() -> None:
    assert list(COUNTERS) == [m.name for m in MIGRATIONS]
    for m in MIGRATIONS:
        scope = COUNTERS[m.name][0]
        assert scope == m.database or (m.name, scope) == ("fill_virtual_interface_list", "main")


# -- archive ----------------------------------------------------------------------------


def test_soft_deleted_instances_are_archivable_rows(cloud: World) -> None:
    populate(cloud.engines["cell1"], cloud.engines["api"], DELETED, cell_id=cloud.cell1_id)
    oldest = cloud.value("cell1", "SELECT MIN(deleted_at) FROM instances WHERE deleted != 0")

    result = cloud.check()

    finding = one(result, "archivable-rows")
    assert keys(result) == [("cell1", "warning", "archivable-rows", finding.count,
                             "novadb archive --until-complete --all-cells", "")]  # fmt: skip
    assert result.exit_code == 1
    assert f"oldest deleted_at {str(oldest)[:10]}" in finding.summary
    facts = {d.name: d for d in result.databases}["cell1"]
    assert facts.archivable["instances"] == 4
    assert str(facts.oldest_deleted["instances"]) == str(oldest)[:19]

    # The fix moves exactly what check counted, table by table.
    moved = archive(cloud.settings, ArchiveOptions(until_complete=True, all_cells=True))
    assert moved.total == finding.count
    assert {k.removeprefix("cell1."): v for k, v in moved.rows.items()
            if not k.startswith("API_DB.")} == facts.archivable  # fmt: skip
    after = cloud.check()
    codes = {f.code for f in after.findings}
    # SQLite hands out the archived (newest) ids again; MariaDB's counter remembers them.
    assert codes == ({"shadow-id-ahead"} if not cloud.mysql else set())


def test_rows_referenced_from_legacy_tables_are_held_back(cloud: World) -> None:
    populate(cloud.engines["cell1"], cloud.engines["api"], DELETED, cell_id=cloud.cell1_id)
    deleted = cloud.rows("cell1", "SELECT id, uuid FROM instances WHERE deleted != 0 ORDER BY id")
    (pinned_id, pinned), (consoled_id, consoled) = deleted[0], deleted[1]
    cloud.insert("cell1", "fixed_ips", address="10.0.0.5", instance_uuid=pinned, allocated=True,
                 leased=True, reserved=False, deleted=0)  # fmt: skip
    cloud.insert("cell1", "consoles", instance_name="vm", instance_uuid=consoled, deleted=0)

    result = cloud.check()

    held = sorted((f for f in result.findings if f.code == "archive-held-back"),
                  key=lambda f: f.subject)  # fmt: skip
    assert [(f.database, f.severity, f.count, f.subject, f.fix, f.examples) for f in held] == [
        ("cell1", "warning", 1, "instances<-consoles.instance_uuid",
         "DELETE FROM consoles WHERE instance_uuid IN (SELECT uuid FROM instances WHERE "
         "deleted != 0)", (str(consoled_id),)),
        ("cell1", "warning", 1, "instances<-fixed_ips.instance_uuid",
         "DELETE FROM fixed_ips WHERE instance_uuid IN (SELECT uuid FROM instances WHERE "
         "deleted != 0)", (str(pinned_id),)),
    ]  # fmt: skip
    assert {f.code for f in result.findings} == {"archivable-rows", "archive-held-back"}
    facts = {d.name: d for d in result.databases}["cell1"]
    assert facts.held_back == {"instances": 2}
    assert facts.archivable["instances"] == 2
    dry = archive(cloud.settings, ArchiveOptions(dry_run=True, all_cells=True))
    assert dry.held_back == {"cell1.instances": 2}
    assert one(result, "archivable-rows").count == dry.total

    for finding in held:
        cloud.apply("cell1", finding.fix)
    after = cloud.check()
    assert [f.code for f in after.findings] == ["archivable-rows"]
    assert {d.name: d for d in after.databases}["cell1"].archivable["instances"] == 4


# -- shadow tables ----------------------------------------------------------------------


def _set_aside_shadow(w: World, table: str) -> str:
    """Rename shadow_<table> out of the way; put it back when the test ends."""
    kept = f"kept_{table}"
    w.sql("cell1", f"ALTER TABLE shadow_{table} RENAME TO {kept}")
    w.later("cell1", f"ALTER TABLE {kept} RENAME TO shadow_{table}")
    w.later("cell1", f"DROP TABLE IF EXISTS shadow_{table}")
    return kept


def test_a_missing_shadow_table(cloud: World) -> None:
    _set_aside_shadow(cloud, "instance_extra")

    result = cloud.check()

    fix = "CREATE TABLE shadow_instance_extra AS SELECT * FROM instance_extra WHERE 1 = 0"
    if cloud.mysql:
        fix += "; ALTER TABLE shadow_instance_extra ADD PRIMARY KEY (id)"
    assert keys(result) == [("cell1", "blocker", "shadow-missing", 1, fix, "instance_extra")]
    assert result.exit_code == 2
    cloud.apply("cell1", fix)
    assert keys(cloud.check()) == []


def test_a_drifted_shadow_table(cloud: World) -> None:
    kept = _set_aside_shadow(cloud, "instance_extra")
    with cloud.engines["cell1"].connect() as conn:
        columns = [c["name"] for c in sa.inspect(conn).get_columns(kept) if c["name"] != "vpmems"]
    cloud.sql("cell1", f"CREATE TABLE shadow_instance_extra AS SELECT {', '.join(columns)} "
              f"FROM {kept} WHERE 1 = 0")  # fmt: skip
    fix = "ALTER TABLE shadow_instance_extra ADD COLUMN vpmems TEXT"
    expected = [("cell1", "blocker", "shadow-drift", 1, fix, "instance_extra")]
    if cloud.mysql:  # MySQL's types come with their collation, as the live column has it
        collation = cloud.value("cell1", "SELECT COLLATION_NAME FROM information_schema.COLUMNS "
                                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'instances' "
                                "AND COLUMN_NAME = 'display_name'")  # fmt: skip
        fix = f"ALTER TABLE shadow_instance_extra ADD COLUMN vpmems text COLLATE {collation}"
        modify = (
            f"ALTER TABLE shadow_instances MODIFY display_name varchar(255) COLLATE {collation}"
        )
        expected = [
            ("cell1", "blocker", "shadow-drift", 1, modify, "instances"),
            ("cell1", "blocker", "shadow-drift", 1, fix, "instance_extra"),
        ]
        cloud.sql("cell1", "ALTER TABLE shadow_instance_extra ADD PRIMARY KEY (id)")
        cloud.sql("cell1", "ALTER TABLE shadow_instances MODIFY display_name VARCHAR(10)")
        cloud.later("cell1", "ALTER TABLE shadow_instances MODIFY display_name VARCHAR(255)")

    result = cloud.check()

    assert keys(result) == expected
    assert "lacks vpmems" in one(result, "shadow-drift", "instance_extra").summary
    assert result.exit_code == 2
    for finding in result.findings:
        cloud.apply("cell1", finding.fix)
    assert keys(cloud.check()) == []


def test_shadow_ids_the_live_table_will_hand_out_again(cloud: World) -> None:
    if cloud.mysql:
        start = int(
            cloud.value(
                "cell1",
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'instances'",
            )
        )
    else:
        start = int(cloud.value("cell1", "SELECT MAX(id) FROM instances")) + 1  # fmt: skip
    cloud.sql("cell1", "INSERT INTO shadow_instances (id, uuid, deleted) VALUES (:i, :u, :i)",
              i=start + 5, u=str(uuid.uuid4()))  # fmt: skip

    result = cloud.check()

    fix = (
        f"ALTER TABLE instances AUTO_INCREMENT = {start + 6}"
        if cloud.mysql
        else f"DELETE FROM shadow_instances WHERE id >= {start}"
    )
    assert keys(result) == [("cell1", "blocker", "shadow-id-ahead", 1, fix, "instances")]
    assert result.exit_code == 2
    cloud.apply("cell1", fix)
    assert keys(cloud.check()) == []


def test_shadow_ids_that_collide_with_live_rows(cloud: World) -> None:
    (first, first_uuid), (second, _) = _live_instances(cloud)[:2]
    for ident in (second, first):
        cloud.sql("cell1", "INSERT INTO shadow_instances (id, uuid, deleted) VALUES (:i, :u, 0)",
                  i=ident, u=first_uuid)  # fmt: skip

    result = cloud.check()

    fix = "DELETE FROM shadow_instances WHERE id IN (SELECT id FROM instances)"
    assert keys(result) == [("cell1", "blocker", "shadow-id-duplicate", 2, fix, "instances")]
    assert result.findings[0].examples == (str(first), str(second))
    assert result.exit_code == 2
    cloud.apply("cell1", fix)
    assert keys(cloud.check()) == []


# -- rows and mappings ------------------------------------------------------------------


def test_null_instance_uuids(cloud: World) -> None:
    for db in ("cell0", "cell1"):
        cloud.insert(db, "instance_metadata", key="k", value="v", deleted=0)
    cloud.insert("cell1", "instance_metadata", key="k2", value="v", deleted=0)

    result = cloud.check()

    fix = "novadb null-instance-uuid-scan --delete"
    assert keys(result) == [
        ("cell0", "warning", "null-instance-uuid", 1, fix, ""),
        ("cell1", "warning", "null-instance-uuid", 2, fix, ""),
    ]
    assert "instance_metadata 2" in result.findings[1].summary
    assert result.exit_code == 1
    # The fix removes exactly the rows check counted.
    assert null_instance_uuid_scan(cloud.settings, delete=True).total == 3
    assert keys(cloud.check()) == []


def test_instance_mappings_without_a_cell(cloud: World) -> None:
    live = _live_instances(cloud)
    chosen = [u for _, u in live[:2]]
    for instance in chosen:
        cloud.sql("api", "UPDATE instance_mappings SET cell_id = NULL WHERE instance_uuid = :u",
                  u=instance)  # fmt: skip
        cloud.later("api", "UPDATE instance_mappings SET cell_id = :c WHERE instance_uuid = :u",
                    c=cloud.cell1_id, u=instance)  # fmt: skip
    stale, building = str(uuid.uuid4()), str(uuid.uuid4())
    marker = str(uuid.uuid4()).replace("-", " ")  # nova-manage map_instances' own marker
    marked = "INSTANCE_MIGRATION_MARKER"
    for instance, project in ((stale, "p"), (building, "p"), (marker, marked)):
        cloud.insert("api", "instance_mappings", instance_uuid=instance, project_id=project,
                     user_id="u", queued_for_delete=False)  # fmt: skip
    cloud.insert("api", "build_requests", instance_uuid=building, project_id="p")

    result = cloud.check()

    ordered = [u for _, u in sorted(
        (cloud.value("api", "SELECT id FROM instance_mappings WHERE instance_uuid = :u", u=u), u)
        for u in chosen)]  # fmt: skip
    assert keys(result) == [
        ("api", "warning", "instance-mapping-without-cell", 2,
         f"UPDATE instance_mappings SET cell_id = {cloud.cell1_id} WHERE cell_id IS NULL AND "
         f"instance_uuid IN ('{ordered[0]}', '{ordered[1]}')", "cell1"),
        ("api", "info", "stale-instance-mapping", 1,
         f"DELETE FROM instance_mappings WHERE cell_id IS NULL AND instance_uuid IN ('{stale}')",
         ""),
    ]  # fmt: skip
    assert result.exit_code == 1
    for finding in result.findings:
        cloud.apply("api", finding.fix)
    assert keys(cloud.check()) == []


def test_live_instances_without_a_mapping(cloud: World) -> None:
    _, instance = _live_instances(cloud)[3]
    row = cloud.rows("api", "SELECT id, instance_uuid, cell_id, project_id, user_id, "
                     "queued_for_delete FROM instance_mappings WHERE instance_uuid = :u",
                     u=instance)[0]  # fmt: skip
    cloud.sql("api", "DELETE FROM instance_mappings WHERE instance_uuid = :u", u=instance)
    cloud.later("api", "INSERT INTO instance_mappings (id, instance_uuid, cell_id, project_id, "
                "user_id, queued_for_delete) VALUES (:i, :u, :c, :p, :us, :q)",
                i=row[0], u=row[1], c=row[2], p=row[3], us=row[4], q=row[5])  # fmt: skip

    result = cloud.check()

    assert keys(result) == [(
        "cell1", "warning", "instance-without-mapping", 1,
        f"nova-manage cell_v2 map_instances --cell_uuid {CELL1} --reset", "cell1",
    )]  # fmt: skip
    assert result.findings[0].examples == (instance,)
    assert result.exit_code == 1


# -- MySQL storage, the Placement hook --------------------------------------------------


def test_tables_a_mysql_cluster_cannot_replicate(cloud: World) -> None:
    cloud.sql("cell1", "CREATE TABLE legacy_notes (id INTEGER, note VARCHAR(10))")
    cloud.later("cell1", "DROP TABLE legacy_notes")
    cloud.sql("cell1", "CREATE TABLE legacy_pairs (a INTEGER, b INTEGER)")
    cloud.later("cell1", "DROP TABLE legacy_pairs")
    if not cloud.mysql:
        assert keys(cloud.check()) == []  # SQLite is never clustered: nothing to report
        return
    cloud.sql("cell1", "ALTER TABLE shadow_certificates ENGINE=MyISAM")
    cloud.later("cell1", "ALTER TABLE shadow_certificates ENGINE=InnoDB")

    result = cloud.check()

    assert keys(result) == [
        ("cell1", "blocker", "non-innodb-table", 1, "ALTER TABLE shadow_certificates "
         "ENGINE=InnoDB", ""),
        ("cell1", "blocker", "table-without-primary-key", 2, "ALTER TABLE legacy_notes ADD "
         "PRIMARY KEY (id); add a primary key to legacy_pairs", ""),
    ]  # fmt: skip
    assert "shadow_certificates (MyISAM)" in result.findings[0].summary
    assert result.exit_code == 2


def test_the_placement_audit_plugs_in(cloud: World) -> None:
    audit = Finding(
        "placement",
        "warning",
        "placement-orphan-allocations",
        "2 allocations of deleted instances",
        2,
        "novadb heal-allocations",
    )
    seen: list[Settings] = []

    def placement(settings: Settings) -> list[Finding]:
        seen.append(settings)
        return [audit]

    def broken(_settings: Settings) -> list[Finding]:
        raise BlockerFound("Placement has no resource providers table", exit_code=1)

    result = cloud.check(placement=placement)
    failed = cloud.check(placement=broken)

    assert result.findings == (audit,)
    assert result.exit_code == 1
    assert seen == [cloud.settings]
    assert keys(failed) == [(
        "placement", "blocker", "placement-audit-failed", 1,
        "see the summary, then run `novadb placement-audit`", "",
    )]  # fmt: skip
    assert failed.exit_code == 2


def test_a_database_that_fails_mid_check_does_not_hide_the_others(
    cloud: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``novadb.check`` is the public function; the module is reached by its own name.
    from novadb.check import check as check_module

    real = check_module.check_cell

    def failing(conn: sa.Connection, database: str, columns: Any) -> Any:
        if database == "cell0":
            conn.execute(sa.text("SELECT no_such_column FROM instances"))
        return real(conn, database, columns)

    monkeypatch.setattr(check_module, "check_cell", failing)
    cloud.insert("cell1", "instance_metadata", key="k", value="v", deleted=0)

    result = cloud.check()

    assert [(f.database, f.code) for f in result.findings] == [
        ("cell0", "check-failed"),
        ("cell1", "null-instance-uuid"),
    ]
    assert "no_such_column" in result.findings[0].summary
    assert result.exit_code == 2
    assert [d.name for d in result.databases] == list(DATABASES)


def test_an_unreachable_api_database_is_reported_once_and_not_audited(
    cloud: World,
) -> None:
    """The API's blocker reaches progress, and the audit (which needs the API) is not run."""
    down = dataclasses.replace(
        cloud.settings, api="mysql+pymysql://nova:secret@127.0.0.1:1/nova_api"
    )
    audited: list[Settings] = []
    events: list[str] = []

    def placement(settings: Settings) -> list[Finding]:
        audited.append(settings)
        return []

    result = check(down, progress=lambda e: events.append(e.message), placement=placement)
    api = [f for f in result.findings if f.database == "api"]
    assert [(f.severity, f.code) for f in api] == [("blocker", "unreachable")]
    assert "secret" not in api[0].summary
    assert any(m.startswith("api: blocker:") for m in events)
    assert audited == []
    assert not [
        f for f in result.findings if f.database == "placement" and f.severity == "blocker"
    ]
