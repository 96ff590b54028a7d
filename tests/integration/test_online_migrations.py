"""Online data migrations on real schemas (SQLite, MariaDB): called directly, and by the runner.

Each dialect's databases (two cells, API, Placement) are created once per
module by ``sync`` and emptied of the tables these tests write before every
test.  Every migration is checked for its exact column values, for doing
nothing on a second run, for honouring ``limit`` across batches, and for
reporting rows it cannot migrate once without stopping at them.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from novadb.cells import CELL0_UUID
from novadb.cli import main as cli
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.errors import BadInput, ConfigError
from novadb.online import api_cells, cell_uuids, compute, instances, placement, quotas, vifs
from novadb.online.base import Context, Func, Outcome, Unmigratable
from novadb.online.common import FAKE_UUID, chunked
from novadb.online.registry import MIGRATIONS
from novadb.online.runner import OnlineResult, online_migrate
from novadb.progress import Event
from novadb.schema.sync import sync
from sqlalchemy.engine import Engine, make_url

CELL1 = "11111111-1111-1111-1111-111111111111"
CELL2 = "22222222-2222-2222-2222-222222222222"
CELL3 = "33333333-3333-3333-3333-333333333333"
T0 = datetime(2024, 1, 1, 12, 0, 0)

# Tables the tests and the migrations write, children first.
WIPE = {
    "main": (
        "virtual_interfaces",
        "instance_info_caches",
        "block_device_mapping",
        "migrations",
        "pci_devices",
        "instances",
        "compute_nodes",
        "quotas",
        "project_user_quotas",
        "quota_classes",
    ),
    "api": (
        "instance_mappings",
        "cell_mappings",
        "aggregate_metadata",
        "aggregate_hosts",
        "aggregates",
        "quotas",
        "project_user_quotas",
        "quota_classes",
    ),
    "placement": ("allocations", "consumers", "projects", "users", "resource_providers"),
}
WIPE["cell2"] = WIPE["main"]

DEFAULTS: dict[str, dict[str, Any]] = {
    "instances": {"deleted": 0},
    "compute_nodes": {
        "vcpus": 8,
        "memory_mb": 4096,
        "local_gb": 100,
        "vcpus_used": 0,
        "memory_mb_used": 0,
        "local_gb_used": 0,
        "hypervisor_type": "QEMU",
        "hypervisor_version": 1,
        "cpu_info": "{}",
        "deleted": 0,
    },
    "pci_devices": {
        "address": "0000:00:00.0",
        "product_id": "p",
        "vendor_id": "v",
        "dev_type": "type-PCI",
        "label": "label",
        "status": "available",
        "deleted": 0,
    },
    "virtual_interfaces": {"deleted": 0},
    "instance_info_caches": {"deleted": 0},
    "block_device_mapping": {"deleted": 0},
    "migrations": {"deleted": 0},
    "quotas": {"deleted": 0},
    "project_user_quotas": {"deleted": 0},
    "quota_classes": {"deleted": 0},
}


@dataclass
class Cloud:
    """One dialect's databases: ``main`` (cell1), ``cell2``, ``api``, ``placement``."""

    dialect: str
    urls: dict[str, str]
    engines: dict[str, Engine]
    _tables: dict[tuple[str, str], sa.Table] = field(default_factory=dict)

    def settings(self, **options: str) -> Settings:
        """Settings for the runner; ``options`` as ``section__name="value"``."""
        base = load_settings(
            database=self.urls["main"],
            api_database=self.urls["api"],
            placement_database=self.urls["placement"],
        )
        parsed: dict[tuple[str, str], str] = {}
        for key, value in options.items():
            section, name = key.split("__", 1)
            parsed[(section.lower(), name)] = value
        return replace(base, options=parsed)

    def ctx(self, **options: str) -> Context:
        """A Context on cell1 (``main``) with both cells for the API migrations."""
        return Context(
            self.settings(**options),
            main=self.engines["main"],
            api=self.engines["api"],
            placement=self.engines["placement"],
            cell_name="cell1",
            cells=[
                ("cell1", CELL1, self.engines["main"]),
                ("cell2", CELL2, self.engines["cell2"]),
            ],
        )

    def table(self, db: str, name: str) -> sa.Table:
        key = (db, name)
        if key not in self._tables:
            self._tables[key] = sa.Table(name, sa.MetaData(), autoload_with=self.engines[db])
        return self._tables[key]

    def put(self, db: str, table_name: str, /, **values: Any) -> None:
        """Insert one row, with the table's NOT NULL columns defaulted."""
        table = self.table(db, table_name)
        defaults = {k: v for k, v in DEFAULTS.get(table_name, {}).items() if k in table.c}
        with self.engines[db].begin() as conn:
            conn.execute(table.insert().values({**defaults, **values}))

    def rows(self, db: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engines[db].connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def run(self, db: str, sql: str, **params: Any) -> None:
        with self.engines[db].begin() as conn:
            conn.execute(sa.text(sql), params)

    def map_cells(self) -> None:
        """cell_mappings for cell1 and cell2 (ids 1 and 2) pointing at their databases."""
        for ident, cell_uuid, name, db in (
            (1, CELL1, "cell1", "main"),
            (2, CELL2, "cell2", "cell2"),
        ):
            self.put(
                "api",
                "cell_mappings",
                id=ident,
                uuid=cell_uuid,
                name=name,
                transport_url="none:///",
                database_connection=self.urls[db],
            )


def _mysql_connect(base: str) -> pymysql.connections.Connection:
    url = make_url(base)
    return pymysql.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        autocommit=True,
        charset="utf8mb4",
    )


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]
)
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """Synced databases for the module, per dialect (``sync`` takes seconds: done once)."""
    created: list[str] = []
    conn = None
    if request.param == "sqlite":
        folder: Path = tmp_path_factory.mktemp("online")
        urls = {n: f"sqlite:///{folder / n}.sqlite" for n in WIPE}
    else:
        base = request.getfixturevalue("mysql_url_base")
        conn = _mysql_connect(base)
        urls = {}
        for n in WIPE:
            name = f"novadb_t_online_{secrets.token_hex(5)}"
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
            created.append(name)
            urls[n] = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        sync(
            load_settings(
                database=urls["main"],
                api_database=urls["api"],
                placement_database=urls["placement"],
            )
        )
        sync(
            load_settings(
                database=urls["cell2"],
                api_database=urls["api"],
                placement_database=urls["placement"],
            ),
            "main",
            local_cell=True,
        )
        engines = {n: create_engine(u) for n, u in urls.items()}
        yield Cloud(request.param, urls, engines)
        for engine in engines.values():
            engine.dispose()
    finally:
        if conn is not None:
            with conn.cursor() as cur:
                for name in created:
                    cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
            conn.close()


@pytest.fixture
def cloud(databases: Cloud) -> Cloud:
    """The module's databases with every table the tests write emptied."""
    for db, tables in WIPE.items():
        with databases.engines[db].begin() as conn:
            if databases.dialect == "mariadb":
                conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
            for name in tables:
                conn.execute(sa.text(f"DELETE FROM {name}"))
            if databases.dialect == "mariadb":
                conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))
    return databases


def drain(
    func: Func, ctx: Context, limit: int
) -> tuple[list[tuple[int, int]], list[Unmigratable]]:
    """Call ``func`` like the runner does until a call looks at nothing: (found, done) per call."""
    state: dict[str, Any] = {}
    calls: list[tuple[int, int]] = []
    bad: list[Unmigratable] = []
    while True:
        outcome = func(ctx, limit, state)
        assert outcome.seen <= limit and outcome.done <= outcome.found
        if not outcome.seen:
            assert outcome.done == 0 and not outcome.unmigratable
            return calls, bad
        calls.append((outcome.found, outcome.done))
        bad += outcome.unmigratable
        assert len(calls) < 100, "migration never finishes"


def nothing_left(func: Func, ctx: Context) -> Outcome:
    """A fresh run's single call (a new cursor), with a large limit."""
    return func(ctx, 1000, {})


def _when(value: Any) -> datetime | None:
    """A DATETIME column's value (SQLite's raw rows hold strings)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def u(n: int, prefix: str = "aaaaaaaa") -> str:
    """A readable fixed uuid: ``aaaaaaaa-0000-0000-0000-00000000000n``."""
    return f"{prefix}-0000-0000-0000-{n:012d}"


# ---------------------------------------------------------------- quotas


def test_quota_limits_move_to_api_db(cloud: Cloud) -> None:
    for ident, project, resource, limit in (
        (1, "p1", "cores", 10),
        (2, "p1", "ram", 2048),
        (3, "p2", "cores", 5),  # the API DB already has p2/cores = 7: kept
        (4, "p3", "instances", 3),
    ):
        cloud.put(
            "main", "quotas", id=ident, project_id=project, resource=resource, hard_limit=limit
        )
    cloud.put(
        "main", "quotas", id=5, project_id="p1", resource="instances", hard_limit=9, deleted=5
    )
    for ident, user, project, resource, limit in (
        (1, "u1", "p1", "cores", 2),
        (2, "u1", "p1", "floating_ips", 4),  # a per-project resource: becomes p1's limit
        (3, "u2", "p1", "cores", 1),
        (4, "u1", "p2", "ram", 512),
    ):
        cloud.put(
            "main",
            "project_user_quotas",
            id=ident,
            user_id=user,
            project_id=project,
            resource=resource,
            hard_limit=limit,
        )
    cloud.put("api", "quotas", project_id="p2", resource="cores", hard_limit=7)
    ctx = cloud.ctx()

    # Per-project rows first; per-user ones fill what is left of a call's limit.
    calls, bad = drain(quotas.migrate_quota_limits_to_api_db, ctx, 3)
    assert calls == [(3, 3), (3, 3), (2, 2)]
    assert bad == []
    api_quotas = (
        "SELECT project_id, resource, hard_limit FROM quotas ORDER BY project_id, resource"
    )
    expected_quotas = [
        ("p1", "cores", 10),
        ("p1", "floating_ips", 4),
        ("p1", "ram", 2048),
        ("p2", "cores", 7),
        ("p3", "instances", 3),
    ]
    assert cloud.rows("api", api_quotas) == expected_quotas
    api_users = (
        "SELECT user_id, project_id, resource, hard_limit FROM project_user_quotas "
        "ORDER BY user_id, project_id, resource"
    )
    expected_users = [("u1", "p1", "cores", 2), ("u1", "p2", "ram", 512), ("u2", "p1", "cores", 1)]
    assert cloud.rows("api", api_users) == expected_users
    # Created now, as Nova's models do (the row that was there already has none).
    no_time = "SELECT project_id, resource FROM quotas WHERE created_at IS NULL"
    assert cloud.rows("api", no_time) == [("p2", "cores")]
    # Soft-deleted in the cell, as oslo.db does it; the already deleted row untouched.
    assert cloud.rows(
        "main", "SELECT id, deleted, deleted_at IS NULL FROM quotas ORDER BY id"
    ) == [
        (1, 1, 0),
        (2, 2, 0),
        (3, 3, 0),
        (4, 4, 0),
        (5, 5, 1),
    ]
    assert cloud.rows(
        "main",
        "SELECT count(*) FROM project_user_quotas WHERE deleted = id AND deleted_at IS NOT NULL",
    ) == [(4,)]

    # Idempotent: nothing found, nothing changed.
    assert nothing_left(quotas.migrate_quota_limits_to_api_db, ctx) == Outcome()
    assert cloud.rows("api", api_quotas) == expected_quotas
    assert cloud.rows("api", api_users) == expected_users


def test_quota_classes_move_to_api_db(cloud: Cloud) -> None:
    cells = [
        ("default", "cores", 20),  # API has default/cores = 40: kept
        ("default", "ram", 51200),
        ("gold", "ram", 100),
        ("gold", "ram", 200),  # a duplicate in the cell: the first wins
        ("silver", None, 2),  # API has silver/NULL: NULL-safe match, kept
        ("gold", "cores", 64),
        ("gold", "instances", 20),
        ("bronze", "cores", 4),
        ("bronze", "ram", 4096),
        ("bronze", "instances", None),
    ]
    for ident, (name, resource, limit) in enumerate(cells, start=1):
        cloud.put(
            "main", "quota_classes", id=ident, class_name=name, resource=resource, hard_limit=limit
        )
    cloud.put("main", "quota_classes", id=11, class_name="old", resource="cores", deleted=11)
    cloud.put("api", "quota_classes", class_name="default", resource="cores", hard_limit=40)
    cloud.put("api", "quota_classes", class_name="silver", resource=None, hard_limit=1)
    ctx = cloud.ctx()

    calls, bad = drain(quotas.migrate_quota_classes_to_api_db, ctx, 3)
    assert calls == [(3, 3), (3, 3), (3, 3), (1, 1)]
    assert bad == []
    listing = (
        "SELECT class_name, resource, hard_limit FROM quota_classes "
        "ORDER BY class_name, resource, hard_limit"
    )
    expected = sorted(
        [
            ("bronze", "cores", 4),
            ("bronze", "instances", None),
            ("bronze", "ram", 4096),
            ("default", "cores", 40),
            ("default", "ram", 51200),
            ("gold", "cores", 64),
            ("gold", "instances", 20),
            ("gold", "ram", 100),
            ("silver", None, 1),
        ],
        key=lambda r: (r[0], r[1] or "", r[2] or 0),
    )
    got = sorted(cloud.rows("api", listing), key=lambda r: (r[0], r[1] or "", r[2] or 0))
    assert got == expected
    assert cloud.rows("main", "SELECT count(*) FROM quota_classes WHERE deleted = id") == [(11,)]
    assert nothing_left(quotas.migrate_quota_classes_to_api_db, ctx) == Outcome()
    assert sorted(cloud.rows("api", listing), key=lambda r: (r[0], r[1] or "", r[2] or 0)) == got


# ---------------------------------------------------------------- availability zones


def test_missing_availability_zones_come_from_aggregates(cloud: Cloud) -> None:
    for ident, name in ((1, "agg1"), (2, "agg2"), (3, "agg3")):
        cloud.put("api", "aggregates", id=ident, uuid=u(ident, "bbbbbbbb"), name=name)
    cloud.put("api", "aggregate_metadata", aggregate_id=1, key="availability_zone", value="az-one")
    cloud.put("api", "aggregate_metadata", aggregate_id=2, key="availability_zone", value="az-two")
    cloud.put("api", "aggregate_metadata", aggregate_id=3, key="ssd", value="true")
    for agg, host in ((1, "host-a"), (1, "host-b"), (2, "host-a"), (3, "host-c")):
        cloud.put("api", "aggregate_hosts", aggregate_id=agg, host=host)
    hosts: list[tuple[str | None, str | None, int]] = [
        ("host-a", None, 0),  # 1: in agg1 and agg2: the lowest aggregate id wins
        ("", None, 0),  # 2: empty host: reported
        (None, None, 0),  # 3: never scheduled: not a candidate
        ("host-b", None, 4),  # 4: deleted instances too
        ("host-c", None, 0),  # 5: aggregate without a zone: the default
        ("host-d", None, 0),  # 6: no aggregate: the default
        ("host-a", "preset", 0),  # 7: has a zone: not a candidate
        ("HOST-A", None, 0),  # 8: MySQL compares hosts case-insensitively, as Nova's query
        ("host-b", None, 0),  # 9
        ("host-c", None, 0),  # 10
    ]
    for ident, (host, zone, deleted) in enumerate(hosts, start=1):
        cloud.put(
            "main",
            "instances",
            id=ident,
            uuid=u(ident),
            host=host,
            availability_zone=zone,
            deleted=deleted,
        )
    ctx = cloud.ctx(DEFAULT__default_availability_zone="zone-default")

    calls, bad = drain(instances.populate_missing_availability_zones, ctx, 3)
    assert calls == [(3, 2), (3, 3), (2, 2)]
    assert bad == [Unmigratable("instances", "2", "host is an empty string")]
    upper = "az-one" if cloud.dialect == "mariadb" else "zone-default"
    assert cloud.rows("main", "SELECT id, availability_zone FROM instances ORDER BY id") == [
        (1, "az-one"),
        (2, None),
        (3, None),
        (4, "az-one"),
        (5, "zone-default"),
        (6, "zone-default"),
        (7, "preset"),
        (8, upper),
        (9, "az-one"),
        (10, "zone-default"),
    ]
    # Idempotent; the empty host is found again by a new run (and reported again).
    again = nothing_left(instances.populate_missing_availability_zones, ctx)
    assert (again.found, again.done, len(again.unmigratable)) == (1, 0, 1)

    # Without the option, Nova's default zone.
    cloud.put("main", "instances", id=11, uuid=u(11), host="host-z")
    assert instances.populate_missing_availability_zones(cloud.ctx(), 10, {"after": 10}).done == 1
    assert cloud.rows("main", "SELECT availability_zone FROM instances WHERE id = 11") == [
        ("nova",)
    ]


# ---------------------------------------------------------------- instance mappings


def _mapped_instances(cloud: Cloud) -> None:
    """Instances in both cells, cell mappings 1 and 2, and a cell3 with no database in the run."""
    cloud.map_cells()
    cloud.put(
        "api",
        "cell_mappings",
        id=3,
        uuid=CELL3,
        name="cell3",
        transport_url="none:///",
        database_connection="sqlite:////nonexistent/cell3.sqlite",
    )
    for ident, user, deleted, vm_state in (
        (1, "alice", 0, "active"),
        (2, "bob", 2, "deleted"),
        (3, "carol", 0, "soft-delete"),
    ):
        cloud.put(
            "main",
            "instances",
            id=ident,
            uuid=u(ident),
            user_id=user,
            project_id="p1",
            deleted=deleted,
            vm_state=vm_state,
        )
    for ident, user, deleted in ((1, "dave", 0), (2, None, 2)):
        cloud.put(
            "cell2",
            "instances",
            id=ident,
            uuid=u(ident, "cccccccc"),
            user_id=user,
            project_id="p1",
            deleted=deleted,
        )


def _mapping(cloud: Cloud, ident: int, instance: str, cell: int | None, **values: Any) -> None:
    row = {"project_id": "p1", **values}
    cloud.put("api", "instance_mappings", id=ident, instance_uuid=instance, cell_id=cell, **row)


def test_queued_for_delete_follows_the_cells(cloud: Cloud) -> None:
    _mapped_instances(cloud)
    _mapping(cloud, 1, u(1), 1)  # live: False
    _mapping(cloud, 2, u(90), None)  # no cell: reported
    _mapping(cloud, 3, u(2), 1)  # deleted: True
    _mapping(cloud, 4, u(1, "cccccccc"), 2)  # live in cell2: False
    _mapping(cloud, 5, u(91), 3)  # cell3 has no database here: reported
    _mapping(cloud, 6, u(3), 1)  # soft-deleted: True
    _mapping(cloud, 7, u(92), 1)  # instance gone from its cell: False, as Nova
    _mapping(cloud, 8, u(2, "cccccccc"), 2)  # deleted in cell2: True
    _mapping(cloud, 9, u(93), 1, queued_for_delete=False)  # already set: not a candidate
    ctx = cloud.ctx()

    calls, bad = drain(api_cells.populate_queued_for_delete, ctx, 3)
    assert calls == [(3, 2), (3, 2), (2, 2)]
    assert bad == [
        Unmigratable(
            "instance_mappings",
            "2",
            "not mapped to a cell yet (instance still building, or stale)",
        ),
        Unmigratable("instance_mappings", "5", "cell cell3 has no database in this run"),
    ]
    listing = "SELECT id, queued_for_delete FROM instance_mappings ORDER BY id"
    expected = [(1, 0), (2, None), (3, 1), (4, 0), (5, None), (6, 1), (7, 0), (8, 1), (9, 0)]
    assert [(i, None if q is None else int(q)) for i, q in cloud.rows("api", listing)] == expected
    again = nothing_left(api_cells.populate_queued_for_delete, ctx)
    assert (again.found, again.done, len(again.unmigratable)) == (2, 0, 2)
    assert [(i, None if q is None else int(q)) for i, q in cloud.rows("api", listing)] == expected


def test_user_id_comes_from_the_cell_instance(cloud: Cloud) -> None:
    _mapped_instances(cloud)
    _mapping(cloud, 1, u(1), 1)  # alice
    _mapping(cloud, 2, u(90), None)  # no cell: reported
    _mapping(cloud, 3, u(2), 1)  # deleted instance: bob all the same
    _mapping(cloud, 4, u(1, "cccccccc"), 2)  # dave, from cell2
    _mapping(cloud, 5, u(94), 1, project_id=FAKE_UUID)  # Nova's marker project: skipped
    _mapping(cloud, 6, u(92), 1)  # instance gone: reported
    _mapping(cloud, 7, u(2, "cccccccc"), 2)  # instance without a user: reported
    _mapping(cloud, 8, u(3), 1)  # carol (soft-deleted)
    _mapping(cloud, 9, u(91), 3)  # cell3 has no database here: reported
    _mapping(cloud, 10, u(95), 1, user_id="zed")  # already set
    ctx = cloud.ctx()

    calls, bad = drain(api_cells.populate_user_id, ctx, 3)
    assert calls == [(3, 2), (3, 1), (2, 1)]
    assert bad == [
        Unmigratable(
            "instance_mappings",
            "2",
            "not mapped to a cell yet (instance still building, or stale)",
        ),
        Unmigratable("instance_mappings", "6", "instance not found in cell cell1"),
        Unmigratable("instance_mappings", "7", "instance in cell cell2 has no user_id"),
        Unmigratable("instance_mappings", "9", "cell cell3 has no database in this run"),
    ]
    listing = "SELECT id, user_id FROM instance_mappings ORDER BY id"
    expected = [
        (1, "alice"),
        (2, None),
        (3, "bob"),
        (4, "dave"),
        (5, None),
        (6, None),
        (7, None),
        (8, "carol"),
        (9, None),
        (10, "zed"),
    ]
    assert cloud.rows("api", listing) == expected
    again = nothing_left(api_cells.populate_user_id, ctx)
    assert (again.found, again.done, len(again.unmigratable)) == (4, 0, 4)
    assert cloud.rows("api", listing) == expected


# ---------------------------------------------------------------- allocation ratios


def _node(
    cloud: Cloud,
    ident: int,
    cpu: float | None,
    ram: float | None,
    disk: float | None,
    deleted: int = 0,
) -> None:
    cloud.put(
        "main",
        "compute_nodes",
        id=ident,
        host=f"h{ident}",
        hypervisor_hostname=f"n{ident}",
        cpu_allocation_ratio=cpu,
        ram_allocation_ratio=ram,
        disk_allocation_ratio=disk,
        deleted=deleted,
    )


RATIOS = (
    "SELECT id, cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio "
    "FROM compute_nodes ORDER BY id"
)


def test_empty_ratios_get_the_configured_ones(cloud: Cloud) -> None:
    nodes: list[tuple[float | None, float | None, float | None, int]] = [
        (None, None, None, 0),  # 1
        (0.0, 2.0, 3.0, 0),  # 2
        (8.0, 0.0, None, 0),  # 3
        (1.0, 1.0, 1.0, 0),  # 4: nothing empty
        (None, None, None, 5),  # 5: deleted: Nova leaves it
        (None, None, None, 0),  # 6
        (2.0, 2.0, 0.0, 0),  # 7
        (2.0, None, 2.0, 0),  # 8
        (None, 2.0, 2.0, 0),  # 9
    ]
    for ident, (cpu, ram, disk, deleted) in enumerate(nodes, start=1):
        _node(cloud, ident, cpu, ram, disk, deleted)
    ctx = cloud.ctx(
        DEFAULT__cpu_allocation_ratio="16.0", DEFAULT__initial_ram_allocation_ratio="1.5"
    )

    calls, bad = drain(compute.migrate_empty_ratio, ctx, 3)
    assert calls == [(3, 3), (3, 3), (1, 1)]
    assert bad == []
    expected = [
        (1, 16.0, 1.5, 1.0),
        (2, 16.0, 2.0, 3.0),
        (3, 8.0, 1.5, 1.0),
        (4, 1.0, 1.0, 1.0),
        (5, None, None, None),
        (6, 16.0, 1.5, 1.0),
        (7, 2.0, 2.0, 1.0),
        (8, 2.0, 1.5, 2.0),
        (9, 16.0, 2.0, 2.0),
    ]
    assert cloud.rows("main", RATIOS) == expected
    assert nothing_left(compute.migrate_empty_ratio, ctx) == Outcome()
    assert cloud.rows("main", RATIOS) == expected


def test_empty_ratio_options(cloud: Cloud) -> None:
    _node(cloud, 1, None, 2.0, 2.0)
    _node(cloud, 2, 2.0, 2.0, None)
    _node(cloud, 3, None, None, 2.0)
    # A ratio of 0.0 means "unset" (Nova: ``r if r else initial``); an initial
    # ratio of 0.0 would change nothing, so the node is reported.
    ctx = cloud.ctx(
        DEFAULT__cpu_allocation_ratio="0.0", DEFAULT__initial_disk_allocation_ratio="0"
    )
    calls, bad = drain(compute.migrate_empty_ratio, ctx, 10)
    assert calls == [(3, 2)]
    assert bad == [
        Unmigratable("compute_nodes", "2", "[DEFAULT]initial_disk_allocation_ratio is 0.0")
    ]
    assert cloud.rows("main", RATIOS) == [
        (1, 4.0, 2.0, 2.0),
        (2, 2.0, 2.0, None),
        (3, 4.0, 1.0, 2.0),
    ]
    with pytest.raises(ConfigError, match=r"\[DEFAULT\]ram_allocation_ratio = 'lots'"):
        compute.migrate_empty_ratio(cloud.ctx(DEFAULT__ram_allocation_ratio="lots"), 10, {})


# ---------------------------------------------------------------- virtual interfaces


def _port(n: int, mac: int | None = None) -> dict[str, Any]:
    return {
        "id": u(n, "dddddddd"),
        "address": f"fa:16:3e:00:00:{mac if mac is not None else n:02x}",
        "network": {"id": "net"},
    }


def _vm(
    cloud: Cloud,
    ident: int,
    minutes: int,
    cache: Any = None,
    *,
    deleted: int = 0,
    vm_state: str = "active",
) -> str:
    """An instance created ``minutes`` after T0 with an info cache (``None``: no cache row)."""
    instance = u(ident, "eeeeeeee")
    cloud.put(
        "main",
        "instances",
        id=ident,
        uuid=instance,
        created_at=T0 + timedelta(minutes=minutes),
        deleted=deleted,
        vm_state=vm_state,
    )
    if cache is not None:
        text = cache if isinstance(cache, str) else json.dumps(cache)
        cloud.put("main", "instance_info_caches", instance_uuid=instance, network_info=text)
    return instance


def _vif(
    cloud: Cloud,
    ident: int,
    instance: str,
    port: dict[str, Any],
    *,
    tag: str | None = None,
    deleted: int = 0,
) -> None:
    cloud.put(
        "main",
        "virtual_interfaces",
        id=ident,
        uuid=port["id"],
        address=f"{port['address']}/{port['id']}",
        instance_uuid=instance,
        tag=tag,
        created_at=T0 + timedelta(minutes=ident),
        deleted=deleted,
    )


LIVE_VIFS = (
    "SELECT instance_uuid, uuid, address, tag, network_id FROM virtual_interfaces "
    "WHERE deleted = 0 AND instance_uuid != :fake ORDER BY instance_uuid, id"
)


def test_fill_virtual_interface_list(cloud: Cloud) -> None:
    # Ids and creation times differ in order: Nova walks (created_at, id).
    a = _vm(cloud, 1, 5, [_port(1), _port(2)])  # no VIF rows: built
    b = _vm(cloud, 2, 1, [_port(3), _port(4)])  # VIF rows in another order: rebuilt
    c = _vm(cloud, 3, 2, [_port(5)])  # matches: nothing
    d = _vm(cloud, 4, 3, [_port(6)])  # more VIF rows than ports: reported
    _vm(cloud, 5, 4, "{not json")  # reported
    _vm(cloud, 6, 6)  # no cache: not a candidate
    _vm(cloud, 7, 7, [])  # empty cache: not a candidate
    _vm(cloud, 8, 8, [_port(9)], deleted=8)  # deleted: not a candidate
    _vm(cloud, 9, 9, [_port(10)], vm_state="soft-delete")  # soft-deleted: not a candidate
    _vm(cloud, 10, 10, [_port(5)])  # its VIF address is c's live one: reported
    k = _vm(cloud, 11, 0, [_port(11)])  # only a deleted VIF row: built
    newest = _vm(cloud, 12, 12, "[ ]")  # walked (the marker names it), not counted
    _vif(cloud, 1, b, _port(4))
    _vif(cloud, 2, b, _port(3), tag="tagged")
    _vif(cloud, 3, c, _port(5))
    _vif(cloud, 4, d, _port(6))
    _vif(cloud, 5, d, _port(7))
    _vif(cloud, 6, k, _port(11), deleted=6)
    ctx = cloud.ctx()

    calls, bad = drain(vifs.fill_virtual_interface_list, ctx, 3)
    # Live instances in (created_at, id) order, as Nova walks them: k, b, c | d, e, a |
    # 6, 7, j | newest.  Only those with a non-empty cache count as found.
    assert calls == [(3, 2), (3, 1), (1, 0), (0, 0)]
    assert bad == [
        Unmigratable(
            "instances",
            "4",
            "2 VIF rows but 1 in network_info (an interface attach in progress?); left as is",
        ),
        Unmigratable("instances", "5", "network_info is not a JSON list of VIFs with string ids"),
        Unmigratable(
            "instances",
            "10",
            f"VIF address fa:16:3e:00:00:05/{_port(5)['id']} "
            "is already in use by another live VIF row",
        ),
    ]

    def row(instance: str, port: dict[str, Any], tag: str | None = None) -> tuple[Any, ...]:
        return (instance, port["id"], f"{port['address']}/{port['id']}", tag, None)

    expected = sorted(
        [
            row(a, _port(1)),
            row(a, _port(2)),
            row(b, _port(3), "tagged"),
            row(b, _port(4)),
            row(c, _port(5)),
            row(d, _port(6)),
            row(d, _port(7)),
            row(k, _port(11)),
        ],
        key=lambda r: r[0],
    )
    assert cloud.rows("main", LIVE_VIFS, fake=FAKE_UUID) == expected
    # b's old rows soft-deleted, k's old deleted row untouched.
    assert cloud.rows(
        "main",
        "SELECT id, deleted, deleted_at IS NULL FROM virtual_interfaces WHERE id <= 6 ORDER BY id",
    ) == [(1, 1, 0), (2, 2, 0), (3, 0, 1), (4, 0, 1), (5, 0, 1), (6, 6, 1)]
    # Nova's marker: the last instance walked (with a cache or not), on a VIF row of a
    # deleted fake instance.
    marker = (
        "SELECT uuid, address, tag, deleted FROM virtual_interfaces WHERE instance_uuid = :fake"
    )
    assert cloud.rows("main", marker, fake=FAKE_UUID) == [
        (FAKE_UUID, f"ff:ff:ff:ff:ff:ff/{FAKE_UUID}", newest, 0)
    ]
    fake = (
        "SELECT project_id, user_id, deleted = id, deleted_at IS NOT NULL "
        "FROM instances WHERE uuid = :fake"
    )
    assert cloud.rows("main", fake, fake=FAKE_UUID) == [(FAKE_UUID, FAKE_UUID, 1, 1)]

    # A later run starts after the marker: nothing to look at, nothing changed.
    assert nothing_left(vifs.fill_virtual_interface_list, ctx) == Outcome()
    assert cloud.rows("main", LIVE_VIFS, fake=FAKE_UUID) == expected

    # An instance created since is the only one looked at, and the marker moves on.
    late = _vm(cloud, 20, 20, [_port(12)])
    assert drain(vifs.fill_virtual_interface_list, ctx, 3) == ([(1, 1)], [])
    assert cloud.rows("main", marker, fake=FAKE_UUID)[0][2] == late
    assert cloud.rows(
        "main", "SELECT count(*) FROM instances WHERE uuid = :fake", fake=FAKE_UUID
    ) == [(1,)]

    # A marker naming an instance that is gone restarts the walk (Nova would fail
    # every run): everything is looked at again and nothing changes.
    cloud.run(
        "main",
        "UPDATE virtual_interfaces SET tag = :gone WHERE instance_uuid = :fake",
        gone=u(99),
        fake=FAKE_UUID,
    )
    calls, bad = drain(vifs.fill_virtual_interface_list, ctx, 10)
    assert calls == [(7, 0), (1, 0)]  # 10 instances walked, then the late one
    assert [b.id for b in bad] == ["4", "5", "10"]
    assert len(cloud.rows("main", LIVE_VIFS, fake=FAKE_UUID)) == len(expected) + 1


@pytest.mark.parametrize("all_cells", [False, True])
def test_vif_walk_leaves_its_marker_in_cell0_too(cloud: Cloud, all_cells: bool) -> None:
    """Nova walks every cell mapping, cell0 included, and marks the last instance walked.

    cell0 (cell2's database, mapped with cell0's uuid) holds a never-scheduled
    instance whose cache is empty, as Nova buries it: no VIF to build, but the
    walk leaves its marker (and the fake instance under it) there, with or
    without --all-cells (the VIF migration always walks every mapping).
    """
    for ident, cell_uuid, name, db in (
        (1, CELL1, "cell1", "main"),
        (2, CELL0_UUID, "cell0", "cell2"),
    ):
        cloud.put("api", "cell_mappings", id=ident, uuid=cell_uuid, name=name,
                  transport_url="none:///", database_connection=cloud.urls[db])  # fmt: skip
    built = _vm(cloud, 1, 1, [_port(1)])
    buried = u(7, "cccccccc")
    cloud.put("cell2", "instances", id=7, uuid=buried, vm_state="error", created_at=T0)
    cloud.put("cell2", "instance_info_caches", instance_uuid=buried, network_info="[]")
    result = online_migrate(cloud.settings(), all_cells=all_cells)
    assert (result.exit_code, result.complete) == (0, True)
    assert _by_name(result)["fill_virtual_interface_list"] == (1, 1)
    marker = "SELECT tag FROM virtual_interfaces WHERE instance_uuid = :fake AND deleted = 0"
    fake = "SELECT deleted = id, project_id FROM instances WHERE uuid = :fake"
    assert cloud.rows("main", marker, fake=FAKE_UUID) == [(built,)]
    assert cloud.rows("cell2", marker, fake=FAKE_UUID) == [(buried,)]
    assert cloud.rows("cell2", fake, fake=FAKE_UUID) == [(1, FAKE_UUID)]
    # cell0's only other rows are its own: no VIF rows for the buried instance.
    assert cloud.rows("cell2", "SELECT COUNT(*) FROM virtual_interfaces") == [(1,)]


# ---------------------------------------------------------------- uuids, compute ids, placement


def test_uuid_migrations(cloud: Cloud) -> None:
    for ident, deleted, value in (
        (1, 0, None),
        (2, 2, None),
        (3, 0, u(3)),
        (4, 0, None),
        (5, 0, None),
    ):
        cloud.put("main", "migrations", id=ident, uuid=value, deleted=deleted)
        cloud.put("main", "block_device_mapping", id=ident, uuid=value, deleted=deleted)
    _node(cloud, 1, 1.0, 1.0, 1.0)
    for ident, deleted, value in ((1, 0, None), (2, 2, None), (3, 0, u(3))):
        cloud.put(
            "main",
            "pci_devices",
            id=ident,
            compute_node_id=1,
            address=f"0000:00:0{ident}.0",
            uuid=value,
            deleted=deleted,
        )
    ctx = cloud.ctx()

    # migrations: live rows only (Nova reads them with read_deleted='no').
    assert drain(cell_uuids.migration_migrate_to_uuid, ctx, 2) == ([(2, 2), (1, 1)], [])
    # BDMs and PCI devices: deleted rows too (Nova's raw queries).
    assert drain(cell_uuids.bdm_populate_uuids, ctx, 2) == ([(2, 2), (2, 2)], [])
    assert drain(cell_uuids.pci_populate_dev_uuids, ctx, 5) == ([(2, 2)], [])
    for table, untouched in (
        ("migrations", [2]),
        ("block_device_mapping", []),
        ("pci_devices", []),
    ):
        rows = cloud.rows("main", f"SELECT id, uuid FROM {table} ORDER BY id")
        assert [i for i, value in rows if value is None] == untouched, table
        values = [value for _, value in rows if value is not None]
        assert len(set(values)) == len(values)
        assert all(str(uuid.UUID(value)) == value for value in values)
        assert dict(rows)[3] == u(3)
    snapshot = cloud.rows("main", "SELECT id, uuid FROM block_device_mapping ORDER BY id")
    for func in (
        cell_uuids.migration_migrate_to_uuid,
        cell_uuids.bdm_populate_uuids,
        cell_uuids.pci_populate_dev_uuids,
    ):
        assert nothing_left(func, ctx) == Outcome()
    assert cloud.rows("main", "SELECT id, uuid FROM block_device_mapping ORDER BY id") == snapshot


def test_limit_splits_batches_and_chunking(cloud: Cloud) -> None:
    for ident in range(1, 11):
        cloud.put("main", "block_device_mapping", id=ident)
    ctx = cloud.ctx()
    calls, _ = drain(cell_uuids.bdm_populate_uuids, ctx, 3)
    assert calls == [(3, 3), (3, 3), (3, 3), (1, 1)]
    # The registry's wrapper works a large limit through in short steps.
    cloud.run("main", "UPDATE block_device_mapping SET uuid = NULL")
    stepped = chunked(cell_uuids.bdm_populate_uuids, size=3)
    state: dict[str, Any] = {}
    assert stepped(ctx, 7, state) == Outcome(7, 7)
    assert stepped(ctx, 7, state) == Outcome(3, 3)
    assert stepped(ctx, 7, state) == Outcome()


def test_populate_instance_compute_id(cloud: Cloud) -> None:
    _node(cloud, 1, 1.0, 1.0, 1.0)
    _node(cloud, 2, 1.0, 1.0, 1.0, deleted=2)
    # A deleted duplicate of node 1: the lowest id wins.
    cloud.put("main", "compute_nodes", id=3, host="h1", hypervisor_hostname="n1", deleted=3)
    for ident, host, node, deleted in (
        (1, None, None, 0),  # never scheduled: reported
        (2, "h1", "n1", 0),
        (3, "h2", "n2", 0),  # its node is deleted: found all the same
        (4, "h9", "n9", 0),  # no such node: reported
        (5, "h1", "n1", 5),  # deleted instances too
    ):
        cloud.put(
            "main", "instances", id=ident, uuid=u(ident), host=host, node=node, deleted=deleted
        )
    ctx = cloud.ctx()
    calls, bad = drain(cell_uuids.populate_instance_compute_id, ctx, 2)
    assert calls == [(2, 1), (2, 1), (1, 1)]
    assert bad == [
        Unmigratable("instances", "1", "never scheduled (host and node are NULL)"),
        Unmigratable("instances", "4", "host h9 with node n9 not found"),
    ]
    listing = "SELECT id, compute_id FROM instances ORDER BY id"
    expected = [(1, None), (2, 1), (3, 2), (4, None), (5, 1)]
    assert cloud.rows("main", listing) == expected
    again = nothing_left(cell_uuids.populate_instance_compute_id, ctx)
    assert (again.found, again.done, len(again.unmigratable)) == (2, 0, 2)
    assert cloud.rows("main", listing) == expected


def test_placement_migrations(cloud: Cloud) -> None:
    started = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    # A tree without roots, its child (2) numbered before its parent (3) and a
    # grandchild (5): one run gives all of them the root 3.
    for ident, parent in ((1, None), (3, None), (2, 3), (5, 2)):
        cloud.put(
            "placement",
            "resource_providers",
            id=ident,
            uuid=u(ident),
            name=f"rp{ident}",
            generation=0,
            parent_provider_id=parent,
        )
    cloud.put(
        "placement",
        "resource_providers",
        id=4,
        uuid=u(4),
        name="rp4",
        generation=0,
        root_provider_id=4,
    )
    # Two providers that are each other's parent: no root can be known.
    for ident in (6, 7):
        cloud.put("placement", "resource_providers", id=ident, uuid=u(ident), name=f"rp{ident}",
                  generation=0)  # fmt: skip
    cloud.run("placement", "UPDATE resource_providers SET parent_provider_id = 13 - id "
              "WHERE id > 5")  # fmt: skip
    ctx = cloud.ctx(placement__incomplete_consumer_project_id="proj-x")
    calls, bad = drain(placement.set_root_provider_ids, ctx, 2)
    # Level by level: 1 and 3, then 2, then 5; then the loop is reported, once.
    assert calls == [(2, 2), (1, 1), (1, 1), (2, 0)]
    reason = "its parent chain loops and never reaches a provider with a root"
    assert bad == [Unmigratable("resource_providers", str(i), reason) for i in (6, 7)]
    roots = "SELECT id, root_provider_id FROM resource_providers ORDER BY id"
    expected_roots = [(1, 1), (2, 3), (3, 3), (4, 4), (5, 3), (6, None), (7, None)]
    assert cloud.rows("placement", roots) == expected_roots
    # Placement's models stamp updated_at on every UPDATE: the rows given a root have it.
    stamped = "SELECT id, updated_at FROM resource_providers WHERE updated_at IS NOT NULL"
    written = dict(cloud.rows("placement", stamped))
    assert sorted(written) == [1, 2, 3, 5]
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    assert all(started <= (_when(w) or now) <= now for w in written.values()), written
    again = nothing_left(placement.set_root_provider_ids, ctx)
    assert (again.found, again.done, [b.id for b in again.unmigratable]) == (2, 0, ["6", "7"])
    assert cloud.rows("placement", roots) == expected_roots

    cloud.put("placement", "projects", id=1, external_id="proj-real")
    cloud.put("placement", "users", id=1, external_id="user-real")
    cloud.put("placement", "consumers", uuid=u(30), project_id=1, user_id=1, generation=3)
    for ident, consumer in ((1, u(10)), (2, u(10)), (3, u(20)), (4, u(30))):
        cloud.put(
            "placement",
            "allocations",
            id=ident,
            resource_provider_id=1,
            consumer_id=consumer,
            resource_class_id=0,
            used=1,
        )
    assert drain(placement.create_incomplete_consumers, ctx, 10) == ([(2, 2)], [])
    consumers = (
        "SELECT c.uuid, p.external_id, s.external_id, c.generation, c.consumer_type_id"
        " FROM consumers c JOIN projects p ON p.id = c.project_id"
        " JOIN users s ON s.id = c.user_id ORDER BY c.uuid"
    )
    expected = [
        (u(10), "proj-x", FAKE_UUID, 0, None),
        (u(20), "proj-x", FAKE_UUID, 0, None),
        (u(30), "proj-real", "user-real", 3, None),
    ]
    assert cloud.rows("placement", consumers) == expected
    # Rows the migration created carry created_at, as Placement's models stamp it.
    created = (
        "SELECT 'consumer', uuid, created_at FROM consumers UNION ALL"
        " SELECT 'project', external_id, created_at FROM projects UNION ALL"
        " SELECT 'user', external_id, created_at FROM users"
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    stamps = {(kind, name): _when(at) for kind, name, at in cloud.rows("placement", created)}
    assert {k for k, at in stamps.items() if at is not None and started <= at <= now} == {
        ("consumer", u(10)),
        ("consumer", u(20)),
        ("project", "proj-x"),
        ("user", FAKE_UUID),
    }
    assert {k for k, at in stamps.items() if at is None} == {
        ("consumer", u(30)),
        ("project", "proj-real"),
        ("user", "user-real"),
    }
    assert nothing_left(placement.create_incomplete_consumers, ctx) == Outcome()
    assert cloud.rows("placement", consumers) == expected


# ---------------------------------------------------------------- the runner


def _by_name(result: OnlineResult) -> dict[str, tuple[int, int]]:
    return {m.name: (m.found, m.done) for m in result.migrations}


def test_registry_is_novas_order() -> None:
    assert [(m.name, m.database) for m in MIGRATIONS] == [
        ("migrate_quota_limits_to_api_db", "main"),
        ("migrate_quota_classes_to_api_db", "main"),
        ("migration_migrate_to_uuid", "main"),
        ("populate_uuids", "main"),
        ("populate_missing_availability_zones", "main"),
        ("populate_queued_for_delete", "api"),
        ("migrate_empty_ratio", "main"),
        ("fill_virtual_interface_list", "api"),
        ("populate_user_id", "api"),
        ("populate_dev_uuids", "main"),
        ("populate_instance_compute_id", "main"),
        ("set_root_provider_ids", "placement"),
        ("create_incomplete_consumers", "placement"),
    ]


def _cell_work(cloud: Cloud) -> None:
    """A little work for every main and API migration, in cell1, plus mappings in cell2."""
    cloud.map_cells()
    cloud.put("main", "quotas", id=1, project_id="p1", resource="cores", hard_limit=10)
    cloud.put(
        "main",
        "project_user_quotas",
        id=1,
        user_id="u1",
        project_id="p1",
        resource="ram",
        hard_limit=5,
    )
    cloud.put("main", "quota_classes", id=1, class_name="default", resource="cores", hard_limit=20)
    cloud.put("main", "migrations", id=1)
    cloud.put("main", "block_device_mapping", id=1)
    _node(cloud, 1, None, 1.0, 1.0)
    cloud.put("main", "pci_devices", id=1, compute_node_id=1)
    cloud.put(
        "main", "instances", id=1, uuid=u(1), user_id="alice", host="h1", node="n1", created_at=T0
    )
    cloud.put(
        "main",
        "instance_info_caches",
        instance_uuid=u(1),
        network_info=json.dumps([_port(1)]),
    )
    cloud.put("main", "instances", id=2, uuid=u(2), user_id="bob", deleted=2, created_at=T0)
    cloud.put("cell2", "instances", id=1, uuid=u(3), user_id="carol", created_at=T0)
    _mapping(cloud, 1, u(1), 1)
    _mapping(cloud, 2, u(2), 1)
    _mapping(cloud, 3, u(3), 2)
    _mapping(cloud, 4, u(4), None)


def test_runner_main_database(cloud: Cloud) -> None:
    _cell_work(cloud)
    result = online_migrate(cloud.settings(), database="main", batch_size=2)
    assert (result.exit_code, result.complete, result.failed) == (0, True, False)
    assert _by_name(result) == {
        "migrate_quota_limits_to_api_db": (2, 2),
        "migrate_quota_classes_to_api_db": (1, 1),
        "migration_migrate_to_uuid": (1, 1),
        "populate_uuids": (1, 1),
        "populate_missing_availability_zones": (1, 1),
        # Walks both mapped cells, though the main migrations ran on cell1 only.
        "populate_queued_for_delete": (4, 3),
        "migrate_empty_ratio": (1, 1),
        "fill_virtual_interface_list": (1, 1),
        "populate_user_id": (4, 3),
        "populate_dev_uuids": (1, 1),
        # Instance 2 was never scheduled, and the vif migration's fake instance neither.
        "populate_instance_compute_id": (3, 1),
    }
    unmigratable = {(m.name, u.id) for m in result.migrations for u in m.unmigratable}
    assert unmigratable == {
        ("populate_queued_for_delete", "4"),
        ("populate_user_id", "4"),
        ("populate_instance_compute_id", "2"),
        ("populate_instance_compute_id", str(_fake_id(cloud))),
    }
    assert cloud.rows("api", "SELECT id, user_id FROM instance_mappings ORDER BY id") == [
        (1, "alice"),
        (2, "bob"),
        (3, "carol"),
        (4, None),
    ]
    assert cloud.rows(
        "main", "SELECT availability_zone, compute_id FROM instances WHERE id = 1"
    ) == [("nova", 1)]
    # A second run only finds the unmigratable rows again, and changes nothing.
    again = online_migrate(cloud.settings(), database="main", batch_size=2)
    assert again.exit_code == 0 and again.done == 0
    assert sum(m.found for m in again.migrations) == 4


def _fake_id(cloud: Cloud) -> int:
    return int(cloud.rows("main", "SELECT id FROM instances WHERE uuid = :f", f=FAKE_UUID)[0][0])


def test_runner_api_database_walks_every_mapped_cell(cloud: Cloud) -> None:
    _cell_work(cloud)
    # A mapped cell whose database cannot be opened: left out, its mappings reported.
    cloud.put(
        "api",
        "cell_mappings",
        id=3,
        uuid=CELL3,
        name="cell3",
        transport_url="none:///",
        database_connection="sqlite:////nonexistent/cell3.sqlite",
    )
    _mapping(cloud, 5, u(5), 3)
    events: list[Event] = []
    settings = cloud.settings()
    result = online_migrate(settings, database="api", batch_size=50, progress=events.append)
    assert _by_name(result) == {
        "populate_queued_for_delete": (5, 3),
        "populate_user_id": (5, 3),
        "fill_virtual_interface_list": (1, 1),
    }
    assert result.exit_code == 0
    warnings = [e.message for e in events if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith("cell cell3 left out: SQLite database")
    reported = {(m.name, r.id, r.reason) for m in result.migrations for r in m.unmigratable}
    assert ("populate_user_id", "5", "cell cell3 has no database in this run") in reported
    listing = "SELECT id, queued_for_delete, user_id FROM instance_mappings ORDER BY id"
    got = [(i, None if q is None else int(q), user) for i, q, user in cloud.rows("api", listing)]
    assert got == [
        (1, 0, "alice"),
        (2, 1, "bob"),
        (3, 0, "carol"),
        (4, None, None),
        (5, None, None),
    ]
    # The cell databases' own migrations did not run.
    assert cloud.rows("main", "SELECT count(*) FROM quotas WHERE deleted = 0") == [(1,)]


def test_runner_all_cells_runs_main_migrations_per_cell(cloud: Cloud) -> None:
    cloud.map_cells()
    for db in ("main", "cell2"):
        for ident in (1, 2):
            cloud.put(db, "block_device_mapping", id=ident)
    result = online_migrate(cloud.settings(), database="main", all_cells=True)
    assert _by_name(result)["populate_uuids"] == (4, 4)
    for db in ("main", "cell2"):
        assert cloud.rows(db, "SELECT count(*) FROM block_device_mapping WHERE uuid IS NULL") == [
            (0,)
        ]


def test_runner_placement_database(cloud: Cloud) -> None:
    cloud.put("placement", "resource_providers", id=1, uuid=u(1), name="rp1", generation=0)
    # A child numbered before its parent, neither with a root: one run does both.
    cloud.put("placement", "resource_providers", id=3, uuid=u(3), name="rp3", generation=0)
    cloud.put("placement", "resource_providers", id=2, uuid=u(2), name="rp2", generation=0,
              parent_provider_id=3)  # fmt: skip
    cloud.put(
        "placement",
        "allocations",
        id=1,
        resource_provider_id=1,
        consumer_id=u(10),
        resource_class_id=0,
        used=1,
    )
    cloud.put("main", "block_device_mapping", id=1)  # not this database: left alone
    result = online_migrate(cloud.settings(), database="placement")
    assert _by_name(result) == {
        "set_root_provider_ids": (3, 3),
        "create_incomplete_consumers": (1, 1),
    }
    assert (result.exit_code, result.complete) == (0, True)
    assert [m.unmigratable for m in result.migrations] == [[], []]
    roots = "SELECT id, root_provider_id FROM resource_providers ORDER BY id"
    assert cloud.rows("placement", roots) == [(1, 1), (2, 3), (3, 3)]
    assert cloud.rows("main", "SELECT count(*) FROM block_device_mapping WHERE uuid IS NULL") == [
        (1,)
    ]


def test_cli_prints_what_nova_manage_prints(
    cloud: Cloud, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout as nova-manage's: the batch size, a line per call that found rows, the table."""
    _cell_work(cloud)
    urls = ["--database", cloud.urls["main"], "--api-database", cloud.urls["api"],
            "--placement-database", cloud.urls["placement"]]  # fmt: skip
    assert cli.main([*urls, "online-migrate", "--batch-size", "2"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "Running batches of 2 until complete"
    assert "1 rows matched query populate_uuids, 1 migrated" in lines
    assert "1 rows matched query populate_dev_uuids, 1 migrated" in lines
    assert "2 rows matched query migrate_quota_limits_to_api_db, 2 migrated" in lines
    head = lines.index("|              Migration              | Total Needed | Completed |")
    assert lines[head - 1].startswith("+---") and all(
        re.match(r"^\d+ rows matched query \w+, \d+ migrated$", line)
        for line in lines[1 : head - 1]
    )
    assert "|           populate_uuids            |      1       |     1     |" in lines
    assert "Running batches" not in err
    # --max-count: one run, no "Running batches" line (nova-manage prints none either).
    cloud.put("main", "block_device_mapping", id=2)
    assert cli.main([*urls, "online-migrate", "--max-count", "5"]) == 1
    out, _ = capsys.readouterr()
    assert out.splitlines()[0] == "1 rows matched query populate_uuids, 1 migrated"
    # --json: stdout is the JSON document only.
    cloud.put("main", "block_device_mapping", id=3)
    assert cli.main([*urls, "--json", "online-migrate"]) == 0
    out, _ = capsys.readouterr()
    doc = json.loads(out)
    assert {m["name"]: m["done"] for m in doc["migrations"]}["populate_uuids"] == 1


def test_runner_max_count_and_exit_codes(cloud: Cloud) -> None:
    cloud.map_cells()
    for ident in range(1, 6):
        cloud.put("main", "block_device_mapping", id=ident)
    settings = cloud.settings()
    # One batch of at most --max-count rows; 1 while work was done, 0 once there is none.
    first = online_migrate(settings, max_count=3)
    assert (first.exit_code, first.done, first.batches, first.complete) == (1, 3, 1, False)
    second = online_migrate(settings, max_count=3)
    assert (second.exit_code, second.done) == (1, 2)
    third = online_migrate(settings, max_count=3)
    assert (third.exit_code, third.done) == (0, 0)
    for bad in (0, -1):
        with pytest.raises(BadInput) as raised:
            online_migrate(settings, max_count=bad)
        assert raised.value.exit_code == 127
        assert str(raised.value) == "Must supply a positive integer for --max-count."

    # A migration that fails does not stop the others: 2 when running to completion,
    # 1 with --max-count when other work was done (nova-manage's rules).
    _node(cloud, 1, None, 1.0, 1.0)
    cloud.put("main", "block_device_mapping", id=6)
    broken = cloud.settings(DEFAULT__cpu_allocation_ratio="abc")
    failed = online_migrate(broken)
    assert (failed.exit_code, failed.failed) == (2, True)
    errors = {m.name: m.error for m in failed.migrations if m.error}
    assert errors == {
        "migrate_empty_ratio": "[DEFAULT]cpu_allocation_ratio = 'abc' is not a number"
    }
    assert _by_name(failed)["populate_uuids"] == (1, 1)
    cloud.put("main", "block_device_mapping", id=7)
    limited = online_migrate(broken, max_count=10)
    assert (limited.exit_code, limited.done) == (1, 1)
    assert online_migrate(broken, max_count=10).exit_code == 2
