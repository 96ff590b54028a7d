"""A realistic cloud in a database: instances with children in a real cell's proportions.

Used by the tests, the demo and the benchmarks.  Per instance, on average:
instance_extra 1, instance_info_caches 1, instance_system_metadata 8,
instance_metadata 2, block_device_mapping 1, instance_actions 2 (each with one
event), instance_faults 0.3, migrations 0.2, virtual_interfaces 1,
instance_id_mappings 1.  A chosen fraction of instances is soft-deleted (with
their children, as Nova deletes them), and a fraction of those are "orphans":
deleted instances whose children were left live by an interrupted cleanup.
The API database gets each instance's mapping and request spec and, for one in
ten, a server-group membership.  Deleted services and compute nodes come too.

Rows are written with explicit ids that continue after each table's current
maximum, so the generator can run again on the same database (a concurrent
writer in tests does exactly that), in chunks so memory stays flat.
"""

from __future__ import annotations

import functools
import json
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

CHUNK = 1000  # instances per transaction


@dataclass(frozen=True)
class ChildMix:
    """How many child rows an instance (and a host) has, on average.

    The default is the generator's historical mix, kept so the tests' data
    do not move; :data:`REAL_CELL` is closer to a production cell's, where
    an instance collects many actions (each with several events), faults,
    volumes, ports and a large network cache over its life.
    """

    system_metadata: int = 8
    metadata: int = 2
    actions: int = 2  # "create" plus "delete" or "reboot", then other verbs
    events_per_action: int = 1
    faults: float = 0.3  # chance of one fault
    migrations: float = 0.2  # chance of one migration
    block_devices: int = 1
    virtual_interfaces: int = 1
    network_info_ports: int = 0  # ports described in the info cache's network_info
    pci_per_host: int = 0  # PCI devices per compute node
    pci_deleted: float = 0.0  # share of a host's devices soft-deleted (unplugged)


REAL_CELL = ChildMix(
    system_metadata=14,
    metadata=3,
    actions=6,
    events_per_action=3,
    faults=0.6,
    migrations=0.5,
    block_devices=2,
    virtual_interfaces=2,
    network_info_ports=2,
    pci_per_host=16,
    pci_deleted=0.25,
)

_VERBS = ("create", "stop", "start", "resize", "confirmResize", "rebuild", "migrate", "attach")


@dataclass(frozen=True)
class CloudSpec:
    """What to generate."""

    instances: int = 100
    deleted_fraction: float = 0.5
    orphan_fraction: float = 0.05
    hosts: int = 10
    deleted_hosts: int = 2
    seed: int = 42
    start: datetime = datetime(2024, 1, 1)
    days: int = 365
    group_fraction: float = 0.1
    mix: ChildMix = field(default_factory=ChildMix)


@dataclass(frozen=True)
class GeneratedCell:
    """Rows written, per table (API tables prefixed ``API_DB.``)."""

    rows: dict[str, int] = field(default_factory=dict)
    deleted_instances: int = 0
    orphaned_instances: int = 0


class _Ids:
    """Next free id per table, after what the table *and its shadow twin* hold.

    Like a running server's AUTO_INCREMENT, ids of rows already archived are
    never handed out again.
    """

    def __init__(self, conn: Connection, meta: sa.MetaData) -> None:
        self._conn = conn
        self._meta = meta
        self._next: dict[str, int] = {}

    def take(self, table: str) -> int:
        if table not in self._next:
            highest = 0
            for name in (table, f"shadow_{table}"):
                if name in self._meta.tables:
                    t = self._meta.tables[name]
                    current = self._conn.execute(sa.select(sa.func.max(t.c.id))).scalar()
                    highest = max(highest, int(current or 0))
            self._next[table] = highest + 1
        value = self._next[table]
        self._next[table] += 1
        return value


def _tables(engine: Engine, names: list[str]) -> sa.MetaData:
    meta = sa.MetaData()
    present = set(sa.inspect(engine).get_table_names())
    meta.reflect(engine, only=[n for n in names if n in present])
    return meta


MAIN_TABLES = [
    "instances", "instance_extra", "instance_info_caches", "instance_system_metadata",
    "instance_metadata", "block_device_mapping", "instance_actions", "instance_actions_events",
    "instance_faults", "migrations", "virtual_interfaces", "instance_id_mappings", "services",
    "compute_nodes", "pci_devices",
]  # fmt: skip
API_TABLES = ["instance_mappings", "request_specs", "instance_groups", "instance_group_member"]


def _flavor_json(rng: random.Random) -> str:
    vcpus, ram, disk = rng.choice([(1, 512, 1), (2, 2048, 20), (4, 8192, 40), (8, 16384, 80)])
    flavor = {
        "nova_object.name": "Flavor",
        "nova_object.namespace": "nova",
        "nova_object.version": "1.2",
        "nova_object.data": {
            "vcpus": vcpus, "memory_mb": ram, "root_gb": disk, "ephemeral_gb": 0,
            "swap": 0, "extra_specs": {}, "name": f"m1.{vcpus}", "flavorid": str(vcpus),
        },
    }  # fmt: skip
    return json.dumps({"cur": flavor, "old": None, "new": None})


def _hosts(
    conn: Connection, meta: sa.MetaData, ids: _Ids, spec: CloudSpec, now: datetime
) -> list[tuple[str, str, int]]:
    """Create services and compute nodes; return the live (host, node, node id)."""
    live = []
    for n in range(spec.hosts + spec.deleted_hosts):
        deleted = n >= spec.hosts
        host = f"compute-{uuid.uuid4().hex[:8]}"
        sid, cid = ids.take("services"), ids.take("compute_nodes")
        conn.execute(sa.insert(meta.tables["services"]).values(
            id=sid, host=host, binary="nova-compute", topic="compute", report_count=0,
            disabled=False, deleted=sid if deleted else 0, uuid=str(uuid.uuid4()),
            created_at=now, deleted_at=now if deleted else None, version=66,
        ))  # fmt: skip
        conn.execute(sa.insert(meta.tables["compute_nodes"]).values(
            id=cid, service_id=sid, host=host, hypervisor_hostname=host, uuid=str(uuid.uuid4()),
            vcpus=64, memory_mb=262144, local_gb=2048, vcpus_used=0, memory_mb_used=0,
            local_gb_used=0, hypervisor_type="QEMU", hypervisor_version=8002000, cpu_info="{}",
            cpu_allocation_ratio=4.0, ram_allocation_ratio=1.0, disk_allocation_ratio=1.0,
            deleted=cid if deleted else 0, created_at=now, deleted_at=now if deleted else None,
        ))  # fmt: skip
        for slot in range(spec.mix.pci_per_host):
            unplugged = deleted or slot < spec.mix.pci_per_host * spec.mix.pci_deleted
            pid = ids.take("pci_devices")
            conn.execute(sa.insert(meta.tables["pci_devices"]).values(
                id=pid, compute_node_id=cid, address=f"0000:{slot // 8:02x}:{slot % 8:02x}.0",
                product_id="1528", vendor_id="8086", dev_type="type-VF", dev_id=f"pci_{pid}",
                label="label_8086_1528", status="removed" if unplugged else "available",
                extra_info="{}", numa_node=slot % 2, uuid=str(uuid.uuid4()), created_at=now,
                deleted=pid if unplugged else 0, deleted_at=now if unplugged else None,
            ))  # fmt: skip
        if not deleted:
            live.append((host, host, cid))
    return live


def _add_child(
    rows: dict[str, list[dict[str, object]]],
    ids: _Ids,
    table: str,
    *,
    created: datetime,
    gone: datetime | None,
    soft: bool,
    **values: object,
) -> int:
    """Queue one child row; soft-deleted with its instance unless never soft-deleted."""
    cid = ids.take(table)
    deleted = soft and table not in ("instance_actions", "instance_actions_events")
    rows[table].append(
        dict(
            id=cid,
            created_at=created,
            updated_at=gone or created,
            deleted_at=gone if deleted else None,
            deleted=cid if deleted else 0,
            **values,
        )
    )
    return cid


Rows = dict[str, list[dict[str, object]]]


def _instance(  # noqa: PLR0913 - the generator's shared state, passed rather than global
    rng: random.Random,
    spec: CloudSpec,
    ids: _Ids,
    rows: Rows,
    api_rows: Rows,
    hosts: list[tuple[str, str, int]],
    cell_id: int | None,
    group_id: int | None,
    *,
    with_api: bool,
) -> tuple[bool, bool]:
    """Queue one instance, its children and its API rows; return (deleted, orphan)."""
    deleted = rng.random() < spec.deleted_fraction
    orphan = deleted and rng.random() < spec.orphan_fraction
    created = spec.start + timedelta(seconds=rng.randrange(spec.days * 86400))
    gone = created + timedelta(days=rng.randrange(1, 30)) if deleted else None
    host, node, node_id = rng.choice(hosts)
    inst_id, inst_uuid = ids.take("instances"), str(uuid.uuid4())
    rows["instances"].append(dict(
        id=inst_id, uuid=inst_uuid, created_at=created, updated_at=gone or created,
        deleted_at=gone, deleted=inst_id if deleted else 0, user_id="u",
        project_id=f"project-{rng.randrange(20)}", host=host, node=node,
        compute_id=node_id, vm_state="deleted" if deleted else "active",
        power_state=0 if deleted else 1, vcpus=2, memory_mb=2048, root_gb=20,
        ephemeral_gb=0, image_ref=str(uuid.uuid4()), display_name=f"vm-{inst_id}",
        hostname=f"vm-{inst_id}", availability_zone="nova", launched_on=host,
        cleaned=1 if deleted else 0, locked=False,
    ))  # fmt: skip
    child = functools.partial(
        _add_child, rows, ids, created=created, gone=gone,
        soft=deleted and not orphan,
    )  # fmt: skip
    child("instance_extra", instance_uuid=inst_uuid, flavor=_flavor_json(rng),
          numa_topology=None, pci_requests="[]")  # fmt: skip
    mix = spec.mix
    child("instance_info_caches", instance_uuid=inst_uuid,
          network_info=_network_info(inst_id, mix.network_info_ports))  # fmt: skip
    for k in range(mix.system_metadata):
        child(
            "instance_system_metadata",
            instance_uuid=inst_uuid,
            key=f"image_k{k}",
            value="v",
        )
    for k in range(mix.metadata):
        child("instance_metadata", instance_uuid=inst_uuid, key=f"meta{k}", value="v")
    for k in range(mix.block_devices):
        root = k == 0
        child("block_device_mapping", instance_uuid=inst_uuid, device_name=f"/dev/vd{chr(97 + k)}",
              source_type="image" if root else "volume",
              destination_type="local" if root else "volume", boot_index=0 if root else None,
              uuid=str(uuid.uuid4()), delete_on_termination=True)  # fmt: skip
    last = "delete" if deleted else "reboot"
    verbs = ["create", *_VERBS[1 : mix.actions - 1], last] if mix.actions >= 2 else ["create"]
    for verb in verbs:
        action_id = child("instance_actions", instance_uuid=inst_uuid, action=verb,
                          request_id=f"req-{uuid.uuid4()}", user_id="u", project_id="p",
                          start_time=created)  # fmt: skip
        for step in range(mix.events_per_action):
            suffix = "" if step == 0 else f"_{step}"
            child("instance_actions_events", action_id=action_id,
                  event=f"compute_{verb}{suffix}", start_time=created, result="Success",
                  host=host)  # fmt: skip
    if rng.random() < mix.faults:
        child(
            "instance_faults",
            instance_uuid=inst_uuid,
            code=500,
            message="boom",
            host=host,
        )
    if rng.random() < mix.migrations:
        child("migrations", instance_uuid=inst_uuid, source_compute=host,
              dest_compute=host, source_node=node, dest_node=node, status="confirmed",
              migration_type="migration", uuid=str(uuid.uuid4()))  # fmt: skip
    for k in range(mix.virtual_interfaces):
        address = f"fa:16:3e:{inst_id:08x}" + (f":{k:02x}" if k else "")
        child("virtual_interfaces", instance_uuid=inst_uuid, uuid=str(uuid.uuid4()),
              address=address)  # fmt: skip
    child("instance_id_mappings", uuid=inst_uuid)
    if with_api:
        api_rows["instance_mappings"].append(dict(
            instance_uuid=inst_uuid, cell_id=cell_id, project_id="p", user_id="u",
            queued_for_delete=deleted, created_at=created,
        ))  # fmt: skip
        api_rows["request_specs"].append(dict(instance_uuid=inst_uuid, spec="{}",
                                              created_at=created))  # fmt: skip
        if group_id is not None and rng.random() < spec.group_fraction:
            api_rows["instance_group_member"].append(dict(
                group_id=group_id, instance_uuid=inst_uuid, created_at=created,
            ))  # fmt: skip
    return deleted, orphan


def _network_info(instance_id: int, ports: int) -> str:
    """The info cache's network_info: ``[]``, or that many ports as Neutron describes them."""
    if not ports:
        return "[]"
    return json.dumps([
        {
            "id": f"{instance_id:08x}-{k:04x}-4000-8000-{instance_id:012x}",
            "address": f"fa:16:3e:{instance_id % 256:02x}:{k:02x}:01",
            "type": "ovs", "devname": f"tap{instance_id:08x}{k:02x}", "active": True,
            "vnic_type": "normal", "ovs_interfaceid": f"{instance_id:08x}",
            "network": {
                "id": f"net-{k}", "label": "private", "bridge": "br-int",
                "subnets": [{"cidr": "10.0.0.0/24", "ips": [
                    {"address": f"10.0.{k}.{instance_id % 250 + 2}", "type": "fixed",
                     "floating_ips": []}]}],
            },
            "details": {"port_filter": True, "ovs_hybrid_plug": False},
        }
        for k in range(ports)
    ])  # fmt: skip


def _chunks(total: int) -> Iterator[range]:
    for start in range(0, total, CHUNK):
        yield range(start, min(total, start + CHUNK))


def populate(
    main: Engine, api: Engine | None, spec: CloudSpec, *, cell_id: int | None = None
) -> GeneratedCell:
    """Write ``spec``'s cloud into a cell database (and its API database)."""
    rng = random.Random(spec.seed)
    meta = _tables(main, MAIN_TABLES + [f"shadow_{t}" for t in MAIN_TABLES])
    api_meta = _tables(api, API_TABLES) if api is not None else None
    counts: Counter[str] = Counter()
    deleted_total = orphan_total = 0
    now = spec.start + timedelta(days=spec.days)
    with main.begin() as conn:
        ids = _Ids(conn, meta)
        hosts = _hosts(conn, meta, ids, spec, now)
        counts["services"] = counts["compute_nodes"] = spec.hosts + spec.deleted_hosts
        if spec.mix.pci_per_host:
            counts["pci_devices"] = (spec.hosts + spec.deleted_hosts) * spec.mix.pci_per_host
    group_id = None
    if api is not None and api_meta is not None:
        with api.begin() as aconn:
            groups = api_meta.tables["instance_groups"]
            inserted = aconn.execute(sa.insert(groups).values(
                uuid=str(uuid.uuid4()), user_id="u", project_id="p", name="sample-group",
                created_at=now,
            ))  # fmt: skip
            key = inserted.inserted_primary_key
            group_id = int(key[0]) if key is not None else None
    for chunk in _chunks(spec.instances):
        rows: dict[str, list[dict[str, object]]] = {name: [] for name in MAIN_TABLES}
        api_rows: dict[str, list[dict[str, object]]] = {name: [] for name in API_TABLES}
        with main.begin() as conn:
            ids = _Ids(conn, meta)
            for _ in chunk:
                deleted, orphan = _instance(
                    rng, spec, ids, rows, api_rows, hosts, cell_id, group_id,
                    with_api=api_meta is not None,
                )  # fmt: skip
                deleted_total += deleted
                orphan_total += orphan
            for name in MAIN_TABLES:
                if rows[name]:
                    conn.execute(sa.insert(meta.tables[name]), rows[name])
                    counts[name] += len(rows[name])
        if api is not None and api_meta is not None:
            with api.begin() as aconn:
                for name in API_TABLES:
                    if api_rows[name]:
                        aconn.execute(sa.insert(api_meta.tables[name]), api_rows[name])
                        counts[f"API_DB.{name}"] += len(api_rows[name])
    return GeneratedCell(dict(counts), deleted_total, orphan_total)


def map_cell(conn: Connection, name: str, url: str, *, cell_uuid: str | None = None) -> int:
    """Add a ``cell_mappings`` row as ``nova-manage cell_v2 create_cell`` would; return its id.

    The sample clouds, the demo and the benchmarks map their cells this one way.
    """
    mappings = sa.Table("cell_mappings", sa.MetaData(), autoload_with=conn)
    key = conn.execute(
        sa.insert(mappings).values(
            uuid=cell_uuid or str(uuid.uuid4()),
            name=name,
            transport_url="none:///",
            database_connection=url,
            disabled=False,
        )
    ).inserted_primary_key
    assert key is not None
    return int(key[0])
