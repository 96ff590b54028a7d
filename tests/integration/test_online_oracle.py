"""Nova 34's own nova-manage as the oracle: ``online-migrate`` ends in Nova's state.

novadb re-implements ``nova-manage db online_data_migrations`` with cursors,
set-based compare-and-swap updates and its own batching, so the only
convincing proof that the *result* is Nova's is to run the real thing next to
it.  Databases are created by Nova itself (``nova-manage api_db sync``, then
``db sync`` with cell0 and cell1 mapped, so cell0 is synced too), filled by
:mod:`novadb.sample.cloud` and turned into a cloud that needs every Nova
migration (NULL ``compute_id``/uuids/zones/ratios/mapping columns, cell quota
limits, pre-Newton VIF lists).  Two identical copies: nova-manage on copy A,
``novadb --config-file nova.conf online-migrate`` on copy B, with the same
nova.conf options (allocation ratios, default zone).

Scope: nova-manage runs the cell migrations on ``[database]`` only and the
API migrations over every mapped cell (``fill_virtual_interface_list`` too).
novadb without ``--all-cells`` does the same here (cell1 is ``[database]``;
cell0 holds no instances), so that is what runs; see
test_vifs_of_another_cell_are_novas for where the scopes part.

Compared: every row of every table of the cell and API databases (cell0
must stay untouched), except that uuids Nova generates at random
(``migrations``/``block_device_mapping``/``pci_devices.uuid``) are compared
as kept / new / NULL, ``updated_at`` only as NULL or not, and timestamps
written during the run (``created_at``, ``deleted_at``) only as "written by
the run".  The VIF walk's marker row has its ``tag`` and ``id`` compared in
test_vif_marker_is_novas.  Also compared: the ``Total Needed / Completed``
table of both, against what the databases held: equal, except that Nova counts
rows it cannot migrate as found in every batch (it has no cursor) and never
looks at a mapping without a cell for populate_queued_for_delete, while novadb
reports each such row once; and the shape of stdout (first line, per-batch
lines, table head and migration names), which scripts parse.

Where Nova and novadb differ, an xfail(strict) test pins the difference down
(raising NovaDiffers for exactly that difference, so any other failure still
fails): the rows Nova's first VIF walk leaves besides the marker instance (and
Nova failing on SQLite there); a deleted compute node's ratios rewritten by
Nova's populate_instance_compute_id (and Nova failing on SQLite there); a
quota limit already in the API database (Nova loses the batch).  The sample
cloud avoids their triggers (it has the marker instance, as any cloud past
Stein has) so that everything else is compared exactly.  The VIF walk's marker
(test_vif_marker_is_novas), the walk of cell0 and of other cells, and
``updated_at`` of migrated rows are Nova's.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.cells import CELL0_UUID
from novadb.cli import main as cli
from novadb.connections import create_engine
from novadb.sample.cloud import CloudSpec, populate
from sqlalchemy.engine import Connection, Engine, make_url

import tests.integration.test_nova_oracle as oracle
from tests.integration.test_nova_oracle import (
    CREATED,
    Pair,
    Run,
    Server,
    State,
    Writer,
    differences,
    dump,
    nova,
)

pytestmark = pytest.mark.slow

# The oracle module's fixture: Nova 34's nova-manage (skips without it, fails in CI).
nova_manage = oracle.nova_manage

SPEC = CloudSpec(
    instances=300,
    deleted_fraction=0.4,
    orphan_fraction=0.1,
    hosts=6,
    deleted_hosts=2,
    seed=2023,
    start=datetime(2024, 1, 1),
    days=365,
    group_fraction=0.1,
)
# nova.conf options both tools read (migrate_empty_ratio, the zone of hosts in no zone).
OPTIONS = (
    "cpu_allocation_ratio = 16.0\n"
    "initial_ram_allocation_ratio = 1.5\n"
    "default_availability_zone = az-default\n"
)
FAKE_UUID = "00000000-0000-0000-0000-000000000000"  # the VIF walk's marker instance


class NovaDiffers(Exception):
    """The one difference an xfail test documents (any other failure stays a failure)."""


# -- rows ------------------------------------------------------------------------------


def add_instance(w: Writer, gone: datetime | None, label: str, **values: Any) -> tuple[int, str]:
    """An instance (scheduled to host ``h``/node ``h`` unless ``values`` say otherwise)."""
    instance_uuid = str(uuid.uuid4())
    row: dict[str, Any] = dict(
        uuid=instance_uuid, user_id="u", project_id="crafted", display_name=label,
        hostname=label, vm_state="deleted" if gone else "active", vcpus=1, memory_mb=512,
        root_gb=1, host="h", node="h", availability_zone="az-east",
    )  # fmt: skip
    row.update(values)
    return w.add("instances", gone, **row), instance_uuid


def add_node(w: Writer, gone: datetime | None, host: str, **values: Any) -> int:
    row: dict[str, Any] = dict(
        host=host, hypervisor_hostname=host, uuid=str(uuid.uuid4()), vcpus=8, memory_mb=1024,
        local_gb=10, vcpus_used=0, memory_mb_used=0, local_gb_used=0, hypervisor_type="QEMU",
        hypervisor_version=1, cpu_info="{}", cpu_allocation_ratio=2.0,
        ram_allocation_ratio=1.0, disk_allocation_ratio=1.0,
    )  # fmt: skip
    row.update(values)
    return w.add("compute_nodes", gone, **row)


def add_marker_instance(w: Writer) -> None:
    """The instance fill_virtual_interface_list's first run leaves (soft-deleted)."""
    w.add("instances", CREATED, uuid=FAKE_UUID, project_id=FAKE_UUID, user_id=FAKE_UUID)


def network_info(ports: Sequence[tuple[str, str]]) -> str:
    return json.dumps([{"id": port, "address": mac, "type": "ovs"} for port, mac in ports])


def map_instances(api: Connection, cell: int | None, uuids: Sequence[str], **values: Any) -> None:
    im = sa.Table("instance_mappings", sa.MetaData(), autoload_with=api)
    for instance_uuid in uuids:
        row: dict[str, Any] = dict(
            instance_uuid=instance_uuid, cell_id=cell, project_id="crafted", user_id="u",
            queued_for_delete=False, created_at=CREATED, updated_at=CREATED,
        )  # fmt: skip
        row.update(values)
        api.execute(sa.insert(im).values(row))


@dataclass
class Crafted:
    """What craft() made that the assertions need."""

    # Instances whose compute_id no one can fill (no node with their host and node).
    no_node: set[int] = field(default_factory=set)
    # Mappings no one can give queued_for_delete / user_id.
    unmapped: int = 0  # cell_id NULL
    stale: int = 0  # the instance is not in the cell
    marker_project: int = 0  # project_id is FAKE_UUID: left out of populate_user_id
    # Instances whose VIF list is rebuilt, and their ports in cache order.
    rebuilt: dict[str, list[str]] = field(default_factory=dict)


def craft(main: Engine, api: Engine, cell1: int) -> Crafted:
    """Turn the (fully migrated) sample cloud into one that needs every Nova migration."""
    out = Crafted()
    with main.begin() as conn:
        w = Writer(conn)
        inst = w.table("instances")
        cn = w.table("compute_nodes")
        nodes = conn.execute(sa.select(cn.c.id, cn.c.host, cn.c.deleted).order_by(cn.c.id)).all()
        live = [n for n in nodes if n.deleted == 0]
        dead = [n for n in nodes if n.deleted != 0]
        # Real compute nodes are updated every minute (NULL is test_updated_at_...'s case).
        conn.execute(sa.update(cn).values(updated_at=CREATED))

        # populate_instance_compute_id: two thirds of the instances, live and deleted.
        conn.execute(sa.update(inst).where(inst.c.id % 3 != 0).values(compute_id=None))
        ids = conn.execute(
            sa.select(inst.c.id).where(inst.c.compute_id.is_(None)).order_by(inst.c.id)
        ).scalars().all()  # fmt: skip
        # On a deleted node (Nova looks nodes up with read_deleted='yes') ...
        conn.execute(sa.update(inst).where(inst.c.id.in_(ids[:4]))
                     .values(host=dead[0].host, node=dead[0].host))  # fmt: skip
        # ... and on a host whose node was deleted and re-created: the lowest id wins.
        assert add_node(w, None, dead[1].host) > dead[1].id
        conn.execute(sa.update(inst).where(inst.c.id.in_(ids[4:7]))
                     .values(host=dead[1].host, node=dead[1].host))  # fmt: skip
        on_live = dict(host=live[0].host, node=live[0].host, compute_id=live[0].id)

        add_marker_instance(w)
        out.no_node.add(int(w.next_id["instances"]) - 1)
        crafted: list[str] = []  # instances that get API mappings
        for gone, state in ((None, "building"), (None, "error"), (CREATED, "deleted")):
            row_id, instance_uuid = add_instance(
                w, gone, f"never-{state}", vm_state=state, host=None, node=None,
                availability_zone=None,
            )  # fmt: skip
            out.no_node.add(row_id)
            crafted.append(instance_uuid)
        row_id, instance_uuid = add_instance(
            w, None, "retired", host="retired-host", node="retired-node", availability_zone=None
        )
        out.no_node.add(row_id)
        crafted.append(instance_uuid)
        # Soft-deleted (deleted = 0): queued for delete; its VIFs are not looked at.
        _, soft = add_instance(w, None, "soft", vm_state="soft-delete", **on_live)
        crafted.append(soft)
        w.add("instance_info_caches", None, instance_uuid=soft,
              network_info=network_info([(str(uuid.uuid4()), "fa:16:3e:ff:00:01")]))  # fmt: skip

        # fill_virtual_interface_list: caches with ports, VIF rows missing or out of order.
        cases = {
            "missing": (2, []),  # pre-Newton: no VIF rows
            "reversed": (2, [1, 0]),  # rows in the other order (their tags are kept)
            "same": (1, [0]),
            "attaching": (1, [0, None]),  # more rows than ports: left alone
            "deleted": (1, []),  # deleted instance: not looked at
        }
        for n, (label, (count, rows)) in enumerate(cases.items()):
            gone = CREATED if label == "deleted" else None
            _, instance_uuid = add_instance(w, gone, f"vif-{label}", **on_live)
            crafted.append(instance_uuid)
            ports = [(str(uuid.uuid4()), f"fa:16:3e:ee:{n:02x}:{k:02x}") for k in range(count)]
            w.add("instance_info_caches", gone, instance_uuid=instance_uuid,
                  network_info=network_info(ports))  # fmt: skip
            for k, which in enumerate(rows):
                port = ports[which][0] if which is not None else str(uuid.uuid4())
                w.add("virtual_interfaces", None, instance_uuid=instance_uuid, uuid=port,
                      address=f"fa:16:3e:dd:{n:02x}:{k:02x}", tag=f"tag-{label}-{k}",
                      created_at=CREATED + timedelta(minutes=k))  # fmt: skip
            if label in ("missing", "reversed"):
                out.rebuilt[instance_uuid] = [port for port, _ in ports]

        # populate_dev_uuids: PCI devices without uuid, live and deleted, on
        # live and deleted nodes; one with a uuid.
        for node in (live[0], live[1], dead[0]):
            for k, gone in enumerate((None, None, CREATED, None)):
                w.add("pci_devices", gone, compute_node_id=node.id, address=f"0000:00:0{k}.0",
                      product_id="1520", vendor_id="8086", dev_type="type-VF", label="l",
                      status="available")  # fmt: skip
        w.add("pci_devices", None, compute_node_id=live[2].id, address="0000:00:09.0",
              product_id="1520", vendor_id="8086", dev_type="type-PF", label="l",
              status="available", uuid=str(uuid.uuid4()))  # fmt: skip

        # migration_migrate_to_uuid (Nova: live rows only); populate_uuids (BDMs).
        mig, bdm = w.table("migrations"), w.table("block_device_mapping")
        conn.execute(sa.update(mig).values(uuid=None))
        conn.execute(sa.update(bdm).where(bdm.c.id % 2 == 0).values(uuid=None))

        # migrate_empty_ratio: live nodes with 0.0/NULL ratios; a deleted one stays.
        for node, ratios in (
            (live[0], {"cpu": 0.0}),
            (live[1], {"ram": None, "disk": 0.0}),
            (live[2], {"cpu": None, "ram": None, "disk": None}),
        ):
            values = {f"{kind}_allocation_ratio": v for kind, v in ratios.items()}
            conn.execute(sa.update(cn).where(cn.c.id == node.id).values(values))
        add_node(w, CREATED, "dead-empty", cpu_allocation_ratio=0.0, ram_allocation_ratio=None)

        # populate_missing_availability_zones: a quarter of the instances, live and deleted.
        conn.execute(sa.update(inst).where(inst.c.id % 4 == 1).values(availability_zone=None))

        # Quotas: per project, per user (per-project resources among them), classes;
        # ids not in (project, resource) order.
        for n, (project, resource) in enumerate(
            (p, r) for r in ("cores", "ram", "instances", "fixed_ips") for p in ("q3", "q1", "q2")
        ):
            w.add("quotas", None, project_id=project, resource=resource, hard_limit=10 + n)
        w.add("quotas", CREATED, project_id="q1", resource="cores", hard_limit=1)
        for n, (user, project, resource) in enumerate((
            ("u2", "q1", "cores"), ("u1", "q1", "ram"), ("u1", "q2", "cores"),
            ("u1", "q1", "cores"), ("u9", "q9", "fixed_ips"), ("u9", "q9", "floating_ips"),
            ("u3", "q4", "instances"),
        )):  # fmt: skip
            w.add("project_user_quotas", None, user_id=user, project_id=project,
                  resource=resource, hard_limit=100 + n)  # fmt: skip
        w.add("project_user_quotas", CREATED, user_id="u1", project_id="q1", resource="ram",
              hard_limit=1)  # fmt: skip
        for n, (klass, resource) in enumerate((
            ("default", "cores"), ("default", "ram"), ("gold", "cores"), ("default", "instances"),
        )):  # fmt: skip
            w.add("quota_classes", None, class_name=klass, resource=resource, hard_limit=50 + n)
        w.add("quota_classes", CREATED, class_name="default", resource="key_pairs", hard_limit=1)

    with api.begin() as conn:
        meta = sa.MetaData()
        im = sa.Table("instance_mappings", meta, autoload_with=conn)
        # Mappings get updated_at when the instance is scheduled to a cell.
        conn.execute(sa.update(im).values(updated_at=CREATED))
        # populate_queued_for_delete and populate_user_id.
        conn.execute(sa.update(im).where(im.c.id % 3 == 0).values(queued_for_delete=None))
        conn.execute(sa.update(im).where(im.c.id % 4 == 0).values(user_id=None))
        map_instances(conn, cell1, crafted, queued_for_delete=None, user_id=None)
        for label, cell_id, project in (
            ("unmapped", None, "crafted"),
            ("stale", cell1, "crafted"),
            ("marker_project", cell1, FAKE_UUID),
        ):
            instance_uuid = str(uuid.uuid4())
            map_instances(conn, cell_id, [instance_uuid], project_id=project,
                          queued_for_delete=None, user_id=None)  # fmt: skip
            mapping_id = conn.execute(
                sa.select(im.c.id).where(im.c.instance_uuid == instance_uuid)
            ).scalar_one()
            setattr(out, label, int(mapping_id))

        # Zones of some hosts: two zones, an aggregate without one, a host spelled in
        # upper case (MariaDB matches it, SQLite does not: the same for both tools).
        aggregates = sa.Table("aggregates", meta, autoload_with=conn)
        hosts = sa.Table("aggregate_hosts", meta, autoload_with=conn)
        metadata = sa.Table("aggregate_metadata", meta, autoload_with=conn)
        for agg_id, (name, zone, members) in enumerate(
            (
                ("rack-east", "az-east", (live[0].host, live[1].host)),
                ("rack-west", "az-west", (live[2].host, dead[0].host, live[4].host.upper())),
                ("ssd", None, (live[3].host, live[0].host)),
            ),
            start=1,
        ):
            conn.execute(sa.insert(aggregates).values(
                id=agg_id, uuid=str(uuid.uuid4()), name=name, created_at=CREATED,
            ))  # fmt: skip
            for host in members:
                conn.execute(sa.insert(hosts).values(host=host, aggregate_id=agg_id,
                                                     created_at=CREATED))  # fmt: skip
            key, value = ("availability_zone", zone) if zone else ("ssd", "true")
            conn.execute(sa.insert(metadata).values(
                aggregate_id=agg_id, key=key, value=value, created_at=CREATED,
            ))  # fmt: skip
    return out


# -- databases -------------------------------------------------------------------------


@dataclass(frozen=True)
class Cloud:
    """Nova-created databases (API, cell0, cell1) to copy from, and their rows."""

    server: Server
    pair: Pair
    cell0: str
    cell1: int  # cell_mappings.id
    crafted: Crafted
    cell: State
    api: State
    cell0_state: State


def _map_cells(pair: Pair, cell0: str) -> int:
    """cell0 and cell1 in cell_mappings, as ``nova-manage cell_v2`` leaves them."""
    engine = create_engine(pair.api)
    try:
        with engine.begin() as conn:
            cm = sa.Table("cell_mappings", sa.MetaData(), autoload_with=conn)
            for cell_uuid, name, url in (
                (CELL0_UUID, "cell0", cell0),
                (str(uuid.uuid4()), "cell1", pair.main),
            ):
                conn.execute(sa.insert(cm).values(
                    uuid=cell_uuid, name=name, transport_url="none:///",
                    database_connection=url, disabled=False, created_at=CREATED,
                ))  # fmt: skip
            return int(conn.execute(sa.select(cm.c.id).where(cm.c.name == "cell1")).scalar_one())
    finally:
        engine.dispose()


def build(
    server: Server, nova_manage: str, fill: Callable[[Engine, Engine, int], Crafted] | None
) -> Cloud:
    """``api_db sync``, cells mapped, ``db sync`` (cell0 and cell1), then ``fill``."""
    pair = server.new_pair()
    cell0 = server.new_pair().main  # (its API database stays unused)
    run = nova(nova_manage, pair, "api_db", "sync")
    assert run.rc == 0, f"nova-manage api_db sync: {run.out}\n{run.err}"
    cell1 = _map_cells(pair, cell0)
    run = nova(nova_manage, pair, "db", "sync")
    assert run.rc == 0, f"nova-manage db sync: {run.out}\n{run.err}"
    crafted = Crafted()
    if fill is not None:
        main, api = create_engine(pair.main), create_engine(pair.api)
        try:
            crafted = fill(main, api, cell1)
        finally:
            main.dispose()
            api.dispose()
    return Cloud(server, pair, cell0, cell1, crafted, dump(pair.main), dump(pair.api), dump(cell0))


def _sample(main: Engine, api: Engine, cell1: int) -> Crafted:
    populate(main, api, SPEC, cell_id=cell1)
    return craft(main, api, cell1)


DIALECTS = ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]


def _server(request: pytest.FixtureRequest, factory: pytest.TempPathFactory) -> Server:
    mysql = request.getfixturevalue("mysql_url_base") if request.param == "mariadb" else None
    return Server(factory.mktemp(f"online-{request.param}"), mysql)


@pytest.fixture(scope="session", params=DIALECTS)
def cloud(
    request: pytest.FixtureRequest, nova_manage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """The sample cloud that needs every migration, once a session per dialect."""
    server = _server(request, tmp_path_factory)
    try:
        yield build(server, nova_manage, _sample)
    finally:
        server.drop()


@pytest.fixture(scope="session", params=DIALECTS)
def blank(
    request: pytest.FixtureRequest, nova_manage: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """Empty Nova-created databases for the small cases, once a session per dialect."""
    server = _server(request, tmp_path_factory)
    try:
        yield build(server, nova_manage, None)
    finally:
        server.drop()


def _point_at(copy: Pair, source: Cloud) -> None:
    """A copy's cell1 mapping names its own database; its nova.conf gets OPTIONS."""
    engine = create_engine(copy.api)
    try:
        with engine.begin() as conn:
            cm = sa.Table("cell_mappings", sa.MetaData(), autoload_with=conn)
            moved = conn.execute(
                sa.update(cm)
                .where(cm.c.database_connection == source.pair.main)
                .values(database_connection=copy.main)
            ).rowcount
            assert moved == 1
    finally:
        engine.dispose()
    text = copy.conf.read_text()
    copy.conf.write_text(text.replace("[DEFAULT]\n", f"[DEFAULT]\n{OPTIONS}", 1))


class Lab:
    """Copies of clouds (each copy's cell1 mapping names its own database), dropped at the end."""

    def __init__(self) -> None:
        self.made: list[tuple[Server, Pair]] = []

    def copies(self, source: Cloud, n: int) -> list[Pair]:
        pairs = [source.server.copy(source.pair) for _ in range(n)]
        for pair in pairs:
            self.made.append((source.server, pair))
            _point_at(pair, source)
        return pairs

    def derive(self, source: Cloud, work: Callable[[Writer, Connection], Any]) -> Cloud:
        """A copy of ``source`` with rows ``work`` adds (a Writer on cell1, the API connection)."""
        (pair,) = self.copies(source, 1)
        main, api = create_engine(pair.main), create_engine(pair.api)
        try:
            with main.begin() as conn, api.begin() as api_conn:
                work(Writer(conn), api_conn)
        finally:
            main.dispose()
            api.dispose()
        return Cloud(
            source.server, pair, source.cell0, source.cell1, source.crafted, dump(pair.main),
            dump(pair.api), source.cell0_state,
        )  # fmt: skip

    def discard(self) -> None:
        for server, pair in self.made:
            server.discard([pair])


@pytest.fixture
def lab() -> Iterator[Lab]:
    made = Lab()
    yield made
    made.discard()


# -- running both ----------------------------------------------------------------------


def run_novadb(pair: Pair, *args: str) -> Run:
    """``novadb --config-file <the copy's nova.conf> ...`` in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["--config-file", str(pair.conf), *args])
    return Run(rc, out.getvalue(), err.getvalue())


def migrate_both(
    nova_manage: str, a: Pair, b: Pair, *novadb_args: str
) -> tuple[Run, Run, datetime]:
    """``online_data_migrations`` on ``a`` (a subprocess) while novadb migrates ``b``.

    Also returns a time before both started: timestamps after it were written
    by the run.
    """
    started = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(seconds=60)
    proc = oracle._nova_start(nova_manage, a, "db", "online_data_migrations")
    try:
        mine = run_novadb(b, "online-migrate", *novadb_args)
    finally:
        theirs = oracle._nova_wait(proc)
    return theirs, mine, started


ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|$")


def migration_counts(out: str) -> dict[str, tuple[int, int]]:
    """The ``Migration | Total Needed | Completed`` rows."""
    found = {}
    for line in out.splitlines():
        match = ROW.match(line.strip())
        if match:
            found[match[1]] = (int(match[2]), int(match[3]))
    return found


BATCH_LINE = re.compile(r"^(\d+) rows matched query (\w+), (\d+) migrated$")


def output_shape(out: str) -> tuple[str, set[str], str, str]:
    """What a script reads in nova-manage's stdout: first line, per-batch names, table head."""
    lines = out.splitlines()
    names = {m[2] for line in lines if (m := BATCH_LINE.match(line))}
    at = next(i for i, line in enumerate(lines) if line.startswith("+"))
    return lines[0], names, lines[at], lines[at + 1]


# -- comparing -------------------------------------------------------------------------

# Columns Nova fills with uuid4(): compared as kept / new / NULL.
RANDOM_UUIDS = {"migrations": "uuid", "block_device_mapping": "uuid", "pci_devices": "uuid"}
DATETIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?$")


def _when(value: Any) -> datetime | None:
    """A DATETIME column's value (SQLite's raw rows hold strings)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and DATETIME.match(value):
        return datetime.fromisoformat(value)
    return None


def is_marker(columns: tuple[str, ...], row: tuple[Any, ...]) -> bool:
    return dict(zip(columns, row, strict=True)).get("instance_uuid") == FAKE_UUID


def normalized(
    state: State,
    before: State,
    started: datetime,
    urls: dict[str, str],
    *,
    marker: bool,
    updated_at: bool,
) -> State:
    """``state`` with the values another correct run could write differently replaced.

    New random uuids, ``updated_at`` values (only NULL or not counts), times
    the run wrote, the copy's own cell URL.  ``marker``: also the VIF walk
    marker's ``tag`` and ``id`` (see test_vif_marker_is_novas);
    ``updated_at=False``: not even whether ``updated_at`` is NULL (see
    test_updated_at_of_migrated_rows_is_novas).
    """
    out: State = {}
    for table, (columns, rows) in state.items():
        random_column = RANDOM_UUIDS.get(table)
        kept: set[Any] = set()
        if random_column is not None and table in before:
            at = before[table][0].index(random_column)
            kept = {r[at] for r in before[table][1]}
        fixed: Counter[tuple[Any, ...]] = Counter()
        for row, n in rows.items():
            blank = marker and table == "virtual_interfaces" and is_marker(columns, row)
            values = []
            for column, value in zip(columns, row, strict=True):
                when = _when(value)
                if column == random_column and value is not None and value not in kept:
                    value = "<new uuid>"
                elif column == "updated_at" and (value is not None or not updated_at):
                    value = "<set>" if updated_at else "<any>"
                elif when is not None and when >= started:
                    value = "<written by the run>"
                elif column == "database_connection" and value in urls:
                    value = urls[value]
                elif blank and column in ("tag", "id"):
                    value = "<marker>"
                values.append(value)
            fixed[tuple(values)] += n
        out[table] = (columns, fixed)
    return out


def state_differences(
    source: Cloud,
    a: Pair,
    b: Pair,
    started: datetime,
    *,
    marker: bool = True,
    updated_at: bool = True,
) -> list[str]:
    """Rows that differ between Nova's copy ``a`` and novadb's ``b``, after normalized()."""
    problems = []
    for label, before, theirs, mine in (
        ("cell", source.cell, a.main, b.main),
        ("api", source.api, a.api, b.api),
    ):
        urls_a = {a.main: "<cell1>", source.cell0: "<cell0>"}
        urls_b = {b.main: "<cell1>", source.cell0: "<cell0>"}
        problems += differences(
            label,
            normalized(
                dump(theirs), before, started, urls_a, marker=marker, updated_at=updated_at
            ),
            normalized(dump(mine), before, started, urls_b, marker=marker, updated_at=updated_at),
        )
    if dump(source.cell0) != source.cell0_state:
        problems.append("cell0: changed")
    return problems


def scalar(url: str, sql: str) -> Any:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar()
    finally:
        engine.dispose()


def scalar_row(url: str, sql: str) -> Sequence[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(sql)).one())
    finally:
        engine.dispose()


def column(url: str, sql: str) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(sql)).scalars())
    finally:
        engine.dispose()


# -- the sample cloud ------------------------------------------------------------------


EMPTY = (
    "("
    + " OR ".join(
        f"{k}_allocation_ratio IS NULL OR {k}_allocation_ratio = 0" for k in ("cpu", "ram", "disk")
    )
    + ")"
)


def expected_counts(cloud: Cloud) -> dict[str, tuple[int, int]]:
    """novadb's (found, done) per migration, from what the template holds."""
    main, api, c = cloud.pair.main, cloud.pair.api, cloud.crafted
    n = lambda sql: int(scalar(main, sql))  # noqa: E731
    a = lambda sql: int(scalar(api, sql))  # noqa: E731
    live_limits = n("SELECT COUNT(*) FROM quotas WHERE deleted = 0") + n(
        "SELECT COUNT(*) FROM project_user_quotas WHERE deleted = 0"
    )
    classes = n("SELECT COUNT(*) FROM quota_classes WHERE deleted = 0")
    migrations = n("SELECT COUNT(*) FROM migrations WHERE uuid IS NULL AND deleted = 0")
    bdms = n("SELECT COUNT(*) FROM block_device_mapping WHERE uuid IS NULL")
    zones = n(
        "SELECT COUNT(*) FROM instances WHERE host IS NOT NULL AND availability_zone IS NULL"
    )
    queued = a("SELECT COUNT(*) FROM instance_mappings WHERE queued_for_delete IS NULL")
    ratios = n(f"SELECT COUNT(*) FROM compute_nodes WHERE deleted = 0 AND {EMPTY}")
    caches = n(
        "SELECT COUNT(*) FROM instances i JOIN instance_info_caches c"
        " ON c.instance_uuid = i.uuid AND c.deleted = 0 WHERE i.deleted = 0"
        " AND i.vm_state != 'soft-delete' AND c.network_info NOT IN ('', '[]')"
    )
    users = a(
        "SELECT COUNT(*) FROM instance_mappings WHERE user_id IS NULL"
        f" AND project_id != '{FAKE_UUID}'"
    )
    pcis = n("SELECT COUNT(*) FROM pci_devices WHERE uuid IS NULL")
    computes = n("SELECT COUNT(*) FROM instances WHERE compute_id IS NULL")
    return {
        "migrate_quota_limits_to_api_db": (live_limits, live_limits),
        "migrate_quota_classes_to_api_db": (classes, classes),
        "migration_migrate_to_uuid": (migrations, migrations),
        "populate_uuids": (bdms, bdms),
        "populate_missing_availability_zones": (zones, zones),
        "populate_queued_for_delete": (queued, queued - 1),  # the unmapped one
        "migrate_empty_ratio": (ratios, ratios),
        "fill_virtual_interface_list": (caches, len(c.rebuilt)),
        "populate_user_id": (users, users - 2),  # unmapped, stale
        "populate_dev_uuids": (pcis, pcis),
        "populate_instance_compute_id": (computes, computes - len(c.no_node)),
    }


def assert_all_migrated(cloud: Cloud, pair: Pair) -> None:
    """Only the rows no one can migrate are left; every kind of zone was handed out."""
    main, api, c = pair.main, pair.api, cloud.crafted
    no_zone = "SELECT id FROM instances WHERE host IS NOT NULL AND availability_zone IS NULL"
    left = {
        "compute_id": column(main, "SELECT id FROM instances WHERE compute_id IS NULL"),
        "migrations": column(main, "SELECT id FROM migrations WHERE uuid IS NULL"),
        "bdm": column(main, "SELECT id FROM block_device_mapping WHERE uuid IS NULL"),
        "pci": column(main, "SELECT id FROM pci_devices WHERE uuid IS NULL"),
        "ratios": column(main, f"SELECT id FROM compute_nodes WHERE deleted = 0 AND {EMPTY}"),
        "zones": column(main, no_zone),
        "limits": column(
            main,
            "SELECT id FROM quotas WHERE deleted = 0 UNION ALL SELECT id FROM"
            " project_user_quotas WHERE deleted = 0 UNION ALL SELECT id FROM quota_classes"
            " WHERE deleted = 0",
        ),
        "queued": column(api, "SELECT id FROM instance_mappings WHERE queued_for_delete IS NULL"),
        "users": column(api, "SELECT id FROM instance_mappings WHERE user_id IS NULL"),
    }
    assert {k: sorted(v) for k, v in left.items()} == {
        "compute_id": sorted(c.no_node),
        # Deleted ones stay NULL (Nova reads them with read_deleted='no').
        "migrations": sorted(
            column(cloud.pair.main, "SELECT id FROM migrations WHERE deleted != 0")
        ),
        "bdm": [],
        "pci": [],
        "ratios": [],
        "zones": [],
        "limits": [],
        "queued": [c.unmapped],
        "users": sorted([c.unmapped, c.stale, c.marker_project]),
    }
    ids = ", ".join(str(i) for i in column(cloud.pair.main, no_zone))
    zones = column(main, f"SELECT DISTINCT availability_zone FROM instances WHERE id IN ({ids})")
    assert {"az-east", "az-west", "az-default"} <= set(zones), zones
    for instance_uuid, ports in c.rebuilt.items():
        vifs = column(
            main,
            f"SELECT uuid FROM virtual_interfaces WHERE instance_uuid = '{instance_uuid}'"
            " AND deleted = 0 ORDER BY created_at, id",
        )
        assert vifs == ports, instance_uuid


def test_online_migrate_ends_in_novas_state(nova_manage: str, cloud: Cloud, lab: Lab) -> None:
    """Same rows in every table of the cell and API databases; counts as Nova's.

    Counts: where a migration has rows it cannot migrate, nova-manage counts
    them as found in every batch (it has no cursor), novadb once; and
    populate_queued_for_delete never looks at a mapping without a cell in
    Nova, while novadb reports it.  Everything else is equal.
    """
    a, b = lab.copies(cloud, 2)
    theirs, mine, started = migrate_both(nova_manage, a, b)
    assert theirs.rc == 0, f"nova-manage rc {theirs.rc}\n{theirs.out}\n{theirs.err}"
    assert mine.rc == 0, f"novadb rc {mine.rc}\n{mine.out}\n{mine.err}"

    assert_all_migrated(cloud, b)
    assert_all_migrated(cloud, a)
    problems = state_differences(cloud, a, b, started)
    assert not problems, "end states differ:\n" + "\n".join(problems)

    expected = expected_counts(cloud)
    ours = migration_counts(mine.out)
    assert ours == expected
    nova_counts = migration_counts(theirs.out)
    assert nova_counts.keys() == expected.keys()
    # Scripts that read nova-manage's stdout read ours: the same first line, a line per
    # migration call that found rows, the same table (border, header, migration names).
    assert output_shape(mine.out) == output_shape(theirs.out), (mine.out, theirs.out)
    assert output_shape(mine.out)[0] == "Running batches of 50 until complete"
    for line in mine.out.splitlines():
        assert (
            line.startswith(("Running batches", "+", "|"))
            or BATCH_LINE.match(line)
            or (line.split(":")[0] in expected and "not migrated" in line)
        ), line
    unmigratable = {"populate_instance_compute_id", "populate_user_id"}
    for name, (found, done) in nova_counts.items():
        if name == "populate_queued_for_delete":
            assert (found, done) == (expected[name][1], expected[name][1])
        elif name in unmigratable:
            # Found again in every batch that reached them (at least the last one).
            assert done == expected[name][1], name
            assert found - done >= expected[name][0] - expected[name][1], (name, found, done)
        else:
            assert (found, done) == expected[name], name

    # A second run: nothing left but the rows no one can migrate, reported again.
    again = run_novadb(b, "online-migrate")
    assert again.rc == 0, again
    assert {k: v for k, v in migration_counts(again.out).items() if v != (0, 0)} == {
        name: (expected[name][0] - expected[name][1], 0)
        for name in ("populate_instance_compute_id", "populate_user_id",
                     "populate_queued_for_delete")
    }  # fmt: skip


# -- where Nova and novadb differ ------------------------------------------------------


def _only(problems: list[str], tables: set[str]) -> None:
    """The differences are in exactly ``tables`` (else a plain failure, not the xfail)."""
    assert {p.split(":")[0] for p in problems} == tables, "\n".join(problems)


def _migrate(nova_manage: str, lab: Lab, base: Cloud) -> tuple[Pair, Pair, Run, Run, datetime]:
    a, b = lab.copies(base, 2)
    theirs, mine, started = migrate_both(nova_manage, a, b)
    assert mine.rc == 0, f"novadb rc {mine.rc}\n{mine.out}\n{mine.err}"
    return a, b, theirs, mine, started


def _nova_failed_on_sqlite_lock(theirs: Run, migration: str) -> str:
    """nova-manage's exit 2 on SQLite, when a migration's nested writer finds the file locked."""
    assert theirs.rc == 2, f"nova-manage rc {theirs.rc}\n{theirs.out}\n{theirs.err}"
    errors = [line for line in theirs.out.splitlines() if "Error attempting to run" in line]
    assert errors and all(f"function {migration} " in e for e in errors), errors
    assert "database is locked" in theirs.out, theirs.out[-2000:]
    return f"nova-manage exited 2: {migration} failed with 'database is locked' ({len(errors)}x)"


@pytest.mark.parametrize("blank", ["sqlite"], indirect=True)
def test_vif_marker_is_novas(nova_manage: str, blank: Cloud, lab: Lab) -> None:
    """Oldest: an instance with a port and no VIF rows; newer ones without ports.

    Both walk every live instance and mark the last one walked, with a network
    cache or not: the marker row is Nova's, tag and id.
    """
    instances: dict[str, str] = {}

    def work(w: Writer, api: Connection) -> None:
        add_marker_instance(w)
        for label, day, info in (("ports", 15, "port"), ("empty", 20, "[]"), ("none", 25, None)):
            _, instances[label] = add_instance(w, None, label, created_at=datetime(2024, 1, day))
            if info == "port":
                info = network_info([(str(uuid.uuid4()), "fa:16:3e:00:00:01")])
            if info is not None:
                w.add("instance_info_caches", None, instance_uuid=instances[label],
                      network_info=info)  # fmt: skip

    base = lab.derive(blank, work)
    a, b, theirs, _, started = _migrate(nova_manage, lab, base)
    assert theirs.rc == 0, theirs
    assert state_differences(base, a, b, started, marker=False) == []
    sql = f"SELECT tag FROM virtual_interfaces WHERE instance_uuid = '{FAKE_UUID}'"
    assert column(a.main, sql) == column(b.main, sql) == [instances["none"]]


@pytest.mark.parametrize("blank", ["sqlite"], indirect=True)
def test_vif_walk_marks_cell0_as_nova_does(nova_manage: str, blank: Cloud, lab: Lab) -> None:
    """cell0 holds a never-scheduled instance (an empty network cache, as Nova buries it).

    Nova's VIF walk covers every cell mapping, cell0 included, and leaves its
    marker there too; so does novadb's, with or without --all-cells.  Each copy
    gets a cell0 of its own (the template's is shared and must stay as it is).
    The marker's instance is there already, as in any cell0 that held
    instances when Stein's migration first ran (Nova creating it on SQLite is
    test_first_vif_walk_creates_the_marker_instance's case).
    """
    base = lab.derive(blank, lambda w, api: add_marker_instance(w))
    cell0 = base.pair.conf.parent / "cell0-with-instances.sqlite"
    shutil.copy(make_url(blank.cell0).database or "", cell0)
    buried = str(uuid.uuid4())
    engine = create_engine(f"sqlite:///{cell0}")
    try:
        with engine.begin() as conn:
            w = Writer(conn)
            add_marker_instance(w)
            add_instance(w, None, "buried", uuid=buried, vm_state="error", host=None, node=None)
            w.add("instance_info_caches", None, instance_uuid=buried, network_info="[]")
    finally:
        engine.dispose()
    before = dump(f"sqlite:///{cell0}")
    pairs = lab.copies(base, 3)
    urls: dict[str, str] = {}
    for label, pair in zip(("nova", "novadb", "all-cells"), pairs, strict=True):
        own = pair.conf.parent / "cell0.sqlite"
        shutil.copy(cell0, own)
        urls[label] = f"sqlite:///{own}"
        engine = create_engine(pair.api)
        try:
            with engine.begin() as conn:
                cm = sa.Table("cell_mappings", sa.MetaData(), autoload_with=conn)
                moved = conn.execute(
                    sa.update(cm)
                    .where(cm.c.uuid == CELL0_UUID)
                    .values(database_connection=urls[label])
                ).rowcount
                assert moved == 1
        finally:
            engine.dispose()
    a, b, c = pairs
    theirs, mine, started = migrate_both(nova_manage, a, b)
    every = run_novadb(c, "online-migrate", "--all-cells")
    for label, run in (("nova", theirs), ("novadb", mine), ("all-cells", every)):
        assert run.rc == 0, (label, run)
    states = {
        label: normalized(dump(url), before, started, {}, marker=False, updated_at=True)
        for label, url in urls.items()
    }
    assert differences("cell0", states["nova"], states["novadb"]) == []
    assert differences("cell0", states["nova"], states["all-cells"]) == []
    marker = f"SELECT tag FROM virtual_interfaces WHERE instance_uuid = '{FAKE_UUID}'"
    assert [column(url, marker) for url in urls.values()] == [[buried]] * 3


@pytest.mark.xfail(
    strict=True,
    raises=NovaDiffers,
    reason=(
        "DIFF: the first fill_virtual_interface_list run in a cell creates the marker's "
        "instance (uuid 00000000-...). Nova creates it through Instance.create() and "
        "destroy(), which also leaves a live 'default' security_groups row with project_id "
        "NULL (security_group_ensure_default under an admin context without a project) and "
        "soft-deleted instance_extra, instance_info_caches and instance_id_mappings rows; "
        "novadb writes only the instances row (equal to Nova's). On SQLite Nova fails "
        "instead: security_group_ensure_default's independent writer transaction waits for "
        "the file lock the migration's own transaction holds ('database is locked'): the VIF "
        "lists are rebuilt (their own transactions) but the marker never written, the "
        "migration fails every batch and nova-manage exits 2."
    ),
)
def test_first_vif_walk_creates_the_marker_instance(
    nova_manage: str, blank: Cloud, lab: Lab
) -> None:
    ports: list[str] = []

    def work(w: Writer, api: Connection) -> None:
        _, instance_uuid = add_instance(w, None, "ports")
        ports.append(str(uuid.uuid4()))
        w.add("instance_info_caches", None, instance_uuid=instance_uuid,
              network_info=network_info([(ports[0], "fa:16:3e:00:00:01")]))  # fmt: skip

    base = lab.derive(blank, work)
    a, b, theirs, _, started = _migrate(nova_manage, lab, base)
    vifs = "SELECT uuid FROM virtual_interfaces WHERE deleted = 0 ORDER BY id"
    fake = f"SELECT deleted != 0 FROM instances WHERE uuid = '{FAKE_UUID}'"
    assert (column(b.main, vifs), column(b.main, fake)) == ([ports[0], FAKE_UUID], [True])
    if theirs.rc != 0 and make_url(a.main).get_backend_name() == "sqlite":
        message = _nova_failed_on_sqlite_lock(theirs, "fill_virtual_interface_list")
        # The VIF list is rebuilt (its own transactions); the marker is rolled back.
        assert (column(a.main, vifs), column(a.main, fake)) == ([ports[0]], [])
        raise NovaDiffers(message)
    assert theirs.rc == 0, theirs
    problems = state_differences(base, a, b, started, marker=False)
    if problems:
        extra = {"instance_extra", "instance_info_caches", "instance_id_mappings"}
        _only(problems, {f"cell.{t}" for t in {*extra, "security_groups"}})
        for table in extra:
            sql = f"SELECT deleted != 0 FROM {table} WHERE instance_uuid = '{FAKE_UUID}'"
            if table == "instance_id_mappings":
                sql = f"SELECT deleted != 0 FROM {table} WHERE uuid = '{FAKE_UUID}'"
            assert (column(a.main, sql), column(b.main, sql)) == ([True], []), table
        groups = "SELECT name FROM security_groups WHERE project_id IS NULL AND deleted = 0"
        assert (column(a.main, groups), column(b.main, groups)) == (["default"], [])
        raise NovaDiffers("\n".join(problems))


@pytest.mark.parametrize("blank", ["sqlite"], indirect=True)
def test_updated_at_of_migrated_rows_is_novas(nova_manage: str, blank: Cloud, lab: Lab) -> None:
    """One row per migration with updated_at NULL."""

    def work(w: Writer, api: Connection) -> None:
        add_marker_instance(w)
        never = {"updated_at": None}
        node = add_node(w, None, "h", cpu_allocation_ratio=0.0, **never)
        _, instance_uuid = add_instance(w, None, "i", availability_zone=None, **never)
        ports = [(str(uuid.uuid4()), f"fa:16:3e:00:00:0{k}") for k in range(2)]
        w.add("instance_info_caches", None, instance_uuid=instance_uuid,
              network_info=network_info(ports), **never)  # fmt: skip
        w.add("virtual_interfaces", None, instance_uuid=instance_uuid, uuid=ports[0][0],
              address="a", **never)  # fmt: skip
        w.add("block_device_mapping", None, instance_uuid=instance_uuid, **never)
        w.add("migrations", None, instance_uuid=instance_uuid, **never)
        w.add("pci_devices", None, compute_node_id=node, address="0000:00:01.0",
              product_id="1520", vendor_id="8086", dev_type="type-VF", label="l",
              status="available", **never)  # fmt: skip
        w.add("quotas", None, project_id="p", resource="cores", hard_limit=1, **never)
        w.add("quota_classes", None, class_name="c", resource="cores", hard_limit=1, **never)
        map_instances(api, blank.cell1, [instance_uuid], queued_for_delete=None, user_id=None,
                      **never)  # fmt: skip

    base = lab.derive(blank, work)
    a, b, theirs, _, started = _migrate(nova_manage, lab, base)
    assert theirs.rc == 0, theirs
    # updated_at included: novadb stamps every row it migrates, as Nova does.
    assert state_differences(base, a, b, started) == []


@pytest.mark.xfail(
    strict=True,
    raises=NovaDiffers,
    reason=(
        "DIFF: a deleted compute node with 0.0/NULL allocation ratios, matched by an instance "
        "whose compute_id is NULL. Both give the instance the node's id. Nova also rewrites "
        "the node's ratios (and updated_at): populate_instance_compute_id loads it with "
        "ComputeNode.get_by_host_and_nodename(read_deleted='yes'), whose _from_db_object "
        "'online migrates' empty ratios with compute_node_update(); migrate_empty_ratio "
        "itself (Nova's and novadb's) leaves deleted nodes alone. On SQLite Nova fails "
        "instead: that compute_node_update runs in a second writer transaction while the "
        "migration's own holds the file lock ('database is locked'); nova-manage exits 2 "
        "and the instance keeps compute_id NULL."
    ),
)
def test_deleted_node_of_an_instance_keeps_its_ratios(
    nova_manage: str, blank: Cloud, lab: Lab
) -> None:
    node: list[int] = []

    def work(w: Writer, api: Connection) -> None:
        add_marker_instance(w)
        node.append(add_node(w, CREATED, "gone", cpu_allocation_ratio=0.0,
                             ram_allocation_ratio=None))  # fmt: skip
        add_instance(w, CREATED, "i", host="gone", node="gone")

    base = lab.derive(blank, work)
    a, b, theirs, _, started = _migrate(nova_manage, lab, base)
    computes = "SELECT compute_id FROM instances WHERE uuid != '" + FAKE_UUID + "'"
    ratios = (
        "SELECT cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio"
        f" FROM compute_nodes WHERE id = {node[0]}"
    )
    assert column(b.main, computes) == node
    assert tuple(scalar_row(b.main, ratios)) == (0.0, None, 1.0)
    if theirs.rc != 0 and make_url(a.main).get_backend_name() == "sqlite":
        message = _nova_failed_on_sqlite_lock(theirs, "populate_instance_compute_id")
        assert column(a.main, computes) == [None]
        raise NovaDiffers(message)
    assert theirs.rc == 0, theirs
    problems = state_differences(base, a, b, started)
    if problems:
        _only(problems, {"cell.compute_nodes"})
        assert column(a.main, computes) == node
        assert tuple(scalar_row(a.main, ratios)) == (16.0, 1.5, 1.0)  # OPTIONS
        raise NovaDiffers("\n".join(problems))


@pytest.mark.xfail(
    strict=True,
    raises=NovaDiffers,
    reason=(
        "DIFF (novadb by design, see novadb.online.quotas): a cell limit or quota class that "
        "is already in the API database. Nova inserts a batch's limits in one API "
        "transaction; the duplicate raises QuotaExists/QuotaClassExists, the whole "
        "transaction rolls back, and Nova soft-deletes every cell row of the batch anyway: "
        "the batch's other limits are lost. novadb inserts each limit that is not there yet "
        "(the API value in force stays) and then soft-deletes the cell rows."
    ),
)
@pytest.mark.parametrize("blank", ["sqlite"], indirect=True)
def test_quota_already_in_api_db(nova_manage: str, blank: Cloud, lab: Lab) -> None:
    def work(w: Writer, api: Connection) -> None:
        api.execute(sa.text("INSERT INTO quotas (project_id, resource, hard_limit) "
                            "VALUES ('p1', 'cores', 5)"))  # fmt: skip
        api.execute(sa.text("INSERT INTO quota_classes (class_name, resource, hard_limit) "
                            "VALUES ('default', 'cores', 5)"))  # fmt: skip
        for resource, limit in (("cores", 1), ("ram", 2)):
            w.add("quotas", None, project_id="p1", resource=resource, hard_limit=limit)
            w.add("quota_classes", None, class_name="default", resource=resource,
                  hard_limit=limit)  # fmt: skip

    base = lab.derive(blank, work)
    a, b, theirs, _, started = _migrate(nova_manage, lab, base)
    assert theirs.rc == 0, theirs
    live = (
        "SELECT COUNT(*) FROM quotas WHERE deleted = 0 UNION ALL"
        " SELECT COUNT(*) FROM quota_classes WHERE deleted = 0"
    )
    assert column(a.main, live) == column(b.main, live) == [0, 0]
    limits = "SELECT resource || '=' || hard_limit FROM {} ORDER BY id"
    for table in ("quotas", "quota_classes"):
        assert column(b.api, limits.format(table)) == ["cores=5", "ram=2"]
    problems = state_differences(base, a, b, started)
    if problems:
        _only(problems, {"api.quotas", "api.quota_classes"})
        for table in ("quotas", "quota_classes"):
            assert column(a.api, limits.format(table)) == ["cores=5"]
        raise NovaDiffers("\n".join(problems))


@pytest.mark.parametrize("blank", ["sqlite"], indirect=True)
def test_vifs_of_another_cell_are_novas(nova_manage: str, blank: Cloud, lab: Lab) -> None:
    """cell2 (a copy of the Nova-synced, empty cell0) has an instance without VIF rows."""
    base = lab.derive(blank, lambda w, api: add_marker_instance(w))
    cell2 = base.pair.conf.parent / "cell2.sqlite"
    shutil.copy(make_url(blank.cell0).database or "", cell2)
    instance_uuid, port = str(uuid.uuid4()), str(uuid.uuid4())
    engine = create_engine(f"sqlite:///{cell2}")
    try:
        with engine.begin() as conn:
            w = Writer(conn)
            add_marker_instance(w)
            add_instance(w, None, "in-cell2", uuid=instance_uuid)
            w.add("instance_info_caches", None, instance_uuid=instance_uuid,
                  network_info=network_info([(port, "fa:16:3e:00:00:09")]))  # fmt: skip
            w.add("block_device_mapping", None, instance_uuid=instance_uuid)
    finally:
        engine.dispose()
    outcome: dict[str, tuple[list[Any], bool]] = {}
    pairs = lab.copies(base, 3)
    for pair in pairs:
        own = pair.conf.parent / "cell2.sqlite"
        shutil.copy(cell2, own)
        engine = create_engine(pair.api)
        try:
            with engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO cell_mappings (uuid, name, transport_url,"
                        " database_connection, disabled) VALUES (:uuid, 'cell2', 'none:///',"
                        " :url, 0)"
                    ),
                    {"uuid": str(uuid.uuid4()), "url": f"sqlite:///{own}"},
                )
        finally:
            engine.dispose()
    a, b, c = pairs
    theirs, mine, _ = migrate_both(nova_manage, a, b)
    every = run_novadb(c, "online-migrate", "--all-cells")
    for label, pair, run in (("nova", a, theirs), ("novadb", b, mine), ("all-cells", c, every)):
        assert run.rc == 0, (label, run)
        url = f"sqlite:///{pair.conf.parent / 'cell2.sqlite'}"
        vifs = column(url, "SELECT uuid FROM virtual_interfaces WHERE deleted = 0 ORDER BY id")
        uuids = column(url, "SELECT uuid IS NOT NULL FROM block_device_mapping")
        outcome[label] = (vifs, uuids == [True])
    # Nova is the oracle: its VIF walk visits every mapped cell, so cell2's
    # instance gets its VIF rows (and the marker), while the per-cell BDM
    # migration runs on [database] only.  novadb's plain run must do the same;
    # --all-cells (novadb's own) also runs the per-cell migrations in cell2.
    assert outcome["nova"] == ([port, FAKE_UUID], False), outcome
    assert outcome["novadb"] == outcome["nova"], outcome
    assert outcome["all-cells"] == ([port, FAKE_UUID], True), outcome
