"""``heal-allocations``: give every instance the allocations its flavor says it holds.

What Nova's ``nova-manage placement heal_allocations`` does instance by
instance over the Placement API, done here in batches straight on the
databases: one cell query per batch of instances (with their embedded flavor
and root disk), one Placement transaction per batch.  Per instance:

* skipped, with the reason, when it has a task state or no node;
* no allocations -> create them from the flavor on its compute node's provider;
* allocations under another project/user -> rewrite the consumer's owner;
* ``--force`` (with ``--instance``) -> replace them with the flavor's;
* otherwise it is up to date.

Placement's rules hold, as Nova 34 writes through them: a consumer heal
creates has no consumer type and one it updates keeps its own (Nova writes
allocations below Placement microversion 1.38, which leaves the type alone,
and never reads it); inventory must exist and have room
(``(total - reserved) * allocation_ratio``, ``min_unit``/``max_unit``/
``step_size``); provider and consumer generations are bumped with
compare-and-swap, the batch redone on a race.

Exit codes are nova-manage's: 0 healed some, 1 ``--max-count`` reached,
2 an instance's compute node is gone, 3 an allocation could not be written,
4 nothing to heal (always with ``--dry-run``), 8 a flavor heal cannot handle,
127 bad input; ``--instance`` ends with 0 or 4 (or a failure's code), never 1.
Unlike nova-manage, one bad instance does not stop the run; the first
failure's code is the exit code.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from novadb import counts, exit_codes
from novadb.cells import Cell, list_cells
from novadb.config import Settings
from novadb.connections import engine_for
from novadb.errors import BadArgument, BadInput
from novadb.placement.db import (
    PlacementTables,
    bump_generations,
    chunks,
    class_ids,
    external_ids,
    utcnow,
    write,
    writer_lock,
)
from novadb.placement.nova_side import (
    INVENTORY_FIELDS,
    Inventory,
    cells_for_placement,
    instances_query,
)
from novadb.placement.resources import (
    UnsupportedFlavor,
    flavor_from_instance_extra,
    resources_from_flavor,
)
from novadb.progress import Event, Progress, ignore
from novadb.targets import api_exists

DEFAULT_BATCH = 1000

Resources = dict[str, int]


@dataclass(frozen=True)
class HealOptions:
    """heal-allocations' options, checked as nova-manage checks them."""

    max_count: int | None = None
    dry_run: bool = False
    instance: str | None = None
    cell: str | None = None
    force: bool = False
    batch_size: int = DEFAULT_BATCH

    def validate(self) -> None:
        """Raise BadArgument (exit 127) on combinations nova-manage refuses.

        With ``--instance`` nova-manage ignores ``--max-count`` altogether.
        """
        if self.cell and self.instance:
            raise BadArgument("The --cell and --instance options are mutually exclusive.")
        if self.force and not self.instance:
            raise BadArgument("The --instance flag is required when using --force flag.")
        if not self.instance:
            counts.max_count(self.max_count)
        if self.batch_size < 1:
            raise BadArgument("--batch-size must be a positive integer.")


@dataclass(frozen=True)
class Healed:
    """One instance whose allocations were (or, dry-run, would be) written."""

    instance: str
    action: str  # create | update | force
    provider: str
    resources: Resources
    project_id: str
    user_id: str


@dataclass(frozen=True)
class NotHealed:
    """An instance left alone: skipped (with why) or failed (with the exit code)."""

    instance: str
    reason: str
    code: int = 0


@dataclass(frozen=True)
class HealResult:
    """What was healed, skipped and failed, per the options."""

    healed: list[Healed] = field(default_factory=list)
    up_to_date: int = 0
    skipped: list[NotHealed] = field(default_factory=list)
    failed: list[NotHealed] = field(default_factory=list)
    dry_run: bool = False
    max_count_reached: bool = False
    cells: int = 0
    elapsed: float = 0.0
    stopped: str | None = None  # "interrupted": Ctrl-C, after the batch in progress

    @property
    def processed(self) -> int:
        """Instances healed (nova-manage's 'Processed N instances')."""
        return len(self.healed)

    @property
    def exit_code(self) -> int:
        """nova-manage's order: a failure, then max-count, then healed or not."""
        if self.failed:
            return self.failed[0].code
        if self.max_count_reached:
            return exit_codes.HEAL_MAX_COUNT
        return (
            exit_codes.HEAL_HEALED if self.healed and not self.dry_run else exit_codes.HEAL_NOTHING
        )


@dataclass
class _Instance:
    id: int
    uuid: str
    host: str | None
    node: str | None
    task_state: str | None
    project_id: str
    user_id: str
    image_ref: str | None
    flavor: str | None
    root_destination: str | None = None


@dataclass
class _Plan:
    instance: _Instance
    node_uuid: str
    resources: Resources


@dataclass
class _Run:
    options: HealOptions
    progress: Progress
    healed: list[Healed] = field(default_factory=list)
    up_to_date: int = 0
    skipped: list[NotHealed] = field(default_factory=list)
    failed: list[NotHealed] = field(default_factory=list)
    max_count_reached: bool = False
    stop: threading.Event | None = None
    stopped: str | None = None

    def interrupted(self) -> bool:
        """Asked to stop (Ctrl-C): checked between batches, never inside one."""
        if self.stop is not None and self.stop.is_set():
            self.stopped = "interrupted"
        return self.stopped is not None

    def room(self) -> int | None:
        # Like nova-manage, a dry run counts nothing towards --max-count.
        if self.options.max_count is None or self.options.dry_run:
            return None
        return self.options.max_count - len(self.healed)


def _cells(settings: Settings, options: HealOptions) -> list[Cell]:
    """The cells to walk: all but cell0, one by ``--cell``, or ``--instance``'s."""
    if options.instance is None and options.cell is None:
        return cells_for_placement(settings)
    if not api_exists(settings):
        raise BadArgument("--cell and --instance need the API database; pass --api-database URL")
    with engine_for(settings.url("api")) as api:
        cells = list_cells(api, settings.main)
        if options.cell is not None:
            found = [c for c in cells if c.uuid == options.cell]
            if not found:
                raise BadArgument(f"Cell with uuid {options.cell} was not found.")
            return found
        mappings = sa.Table("instance_mappings", sa.MetaData(), autoload_with=api)
        cm = sa.Table("cell_mappings", sa.MetaData(), autoload_with=api)
        query = (
            sa.select(cm.c.uuid)
            .select_from(mappings.join(cm, cm.c.id == mappings.c.cell_id))
            .where(mappings.c.instance_uuid == options.instance)
        )
        with api.connect() as conn:
            cell_uuid = conn.execute(query).scalar()
    found = [c for c in cells if c.uuid is not None and c.uuid == cell_uuid]
    if not found:
        raise BadArgument(
            f"Unable to find cell for instance {options.instance}, is it mapped? Try running "
            '"nova-manage cell_v2 verify_instance" or "nova-manage cell_v2 map_instances".'
        )
    return found


class _CellReader:
    """Batches of a cell's live instances, with flavor, root disk and compute node."""

    def __init__(self, conn: Connection, instance: str | None) -> None:
        meta = sa.MetaData()
        meta.reflect(
            conn, only=["instances", "instance_extra", "block_device_mapping", "compute_nodes"]
        )
        self.conn = conn
        self.inst = meta.tables["instances"]
        self.extra = meta.tables["instance_extra"]
        self.bdm = meta.tables["block_device_mapping"]
        self.only = instance
        cn = meta.tables["compute_nodes"]
        self.nodes: dict[tuple[str, str], list[str]] = defaultdict(list)
        query = sa.select(cn.c.host, cn.c.hypervisor_hostname, cn.c.uuid).where(cn.c.deleted == 0)
        for host, name, uuid in conn.execute(query):
            self.nodes[(host, name)].append(str(uuid))

    def count(self) -> int:
        """Live instances to look at (for the progress bar's ETA): one indexed count."""
        query = sa.select(sa.func.count()).where(self.inst.c.deleted == 0)
        if self.only is not None:
            query = query.where(self.inst.c.uuid == self.only)
        return int(self.conn.execute(query).scalar_one())

    def batch(self, after: int, limit: int) -> list[_Instance]:
        inst = self.inst
        query = instances_query(inst, self.extra).where(inst.c.id > after).limit(limit)
        if self.only is not None:
            query = query.where(inst.c.uuid == self.only)
        rows = [
            _Instance(
                int(r.id),
                str(r.uuid),
                r.host,
                r.node,
                r.task_state,
                str(r.project_id or ""),
                str(r.user_id or ""),
                r.image_ref,
                r.flavor,
            )
            for r in self.conn.execute(query)
        ]
        if rows:
            bdm = self.bdm
            roots = sa.select(bdm.c.instance_uuid, bdm.c.destination_type).where(
                bdm.c.instance_uuid.in_([r.uuid for r in rows]),
                bdm.c.boot_index == 0,
                bdm.c.deleted == 0,
            )
            found = {str(u): d for u, d in self.conn.execute(roots)}
            for row in rows:
                row.root_destination = found.get(row.uuid)
        return rows


def _boot_from_volume(row: _Instance) -> bool:
    """Nova's is_volume_backed_instance: no image, or a volume as the root device."""
    if not row.image_ref:
        return True
    return row.root_destination == "volume"


def _classify(run: _Run, reader: _CellReader, rows: list[_Instance]) -> list[_Plan]:
    plans = []
    for row in rows:
        if row.task_state is not None:
            run.skipped.append(
                NotHealed(
                    row.uuid,
                    f"Instance {row.uuid} is undergoing a task state transition: {row.task_state}",
                )
            )
            continue
        if row.node is None or row.host is None:
            run.skipped.append(NotHealed(row.uuid, f"Instance {row.uuid} is not on a host."))
            continue
        nodes = reader.nodes.get((row.host, row.node), [])
        if len(nodes) != 1:
            run.failed.append(
                NotHealed(
                    row.uuid,
                    f"Instance {row.uuid}: unable to find one compute_nodes record for "
                    f"host {row.host} node {row.node} ({len(nodes)} found)",
                    exit_codes.HEAL_NO_NODE,
                )
            )
            continue
        try:
            flavor = flavor_from_instance_extra(row.flavor)
            resources = resources_from_flavor(flavor, boot_from_volume=_boot_from_volume(row))
        except UnsupportedFlavor as exc:
            run.failed.append(
                NotHealed(row.uuid, f"Instance {row.uuid}: {exc}", exit_codes.HEAL_UNSUPPORTED)
            )
            continue
        except BadInput as exc:
            run.failed.append(
                NotHealed(row.uuid, f"Instance {row.uuid}: {exc}", exit_codes.HEAL_FAILED)
            )
            continue
        plans.append(_Plan(row, nodes[0], resources))
    return plans


@dataclass
class _Existing:
    consumer_id: int | None = None
    generation: int | None = None
    project: str | None = None
    user: str | None = None
    allocations: dict[int, dict[int, int]] = field(default_factory=dict)  # rp -> rc -> used


def _existing(conn: Connection, t: PlacementTables, uuids: list[str]) -> dict[str, _Existing]:
    out: dict[str, _Existing] = defaultdict(_Existing)
    c, p, u, a = t.consumers, t.projects, t.users, t.allocations
    for part in chunks(uuids):
        query = (
            sa.select(
                c.c.uuid,
                c.c.id,
                c.c.generation,
                p.c.external_id.label("project"),
                u.c.external_id.label("user"),
            )
            .select_from(
                c.outerjoin(p, p.c.id == c.c.project_id).outerjoin(u, u.c.id == c.c.user_id)
            )
            .where(c.c.uuid.in_(part))
        )
        for r in conn.execute(query):
            e = out[str(r.uuid)]
            e.consumer_id, e.generation = int(r.id), r.generation
            e.project, e.user = r.project, r.user
        query = sa.select(
            a.c.consumer_id, a.c.resource_provider_id, a.c.resource_class_id, a.c.used
        ).where(a.c.consumer_id.in_(part))
        for consumer, rp, rc, used in conn.execute(query):
            out[str(consumer)].allocations.setdefault(int(rp), {})[int(rc)] = int(used)
    return out


@dataclass
class _Decision:
    plan: _Plan
    action: str
    rp_id: int
    wanted: dict[int, int]  # rc id -> amount


def _capacity_failures(
    conn: Connection,
    t: PlacementTables,
    decisions: list[_Decision],
    existing: dict[str, _Existing],
) -> dict[str, str]:
    """Instances whose new allocations Placement would refuse, with Placement's reason."""
    rps = sorted({d.rp_id for d in decisions if d.action in ("create", "force")})
    if not rps:
        return {}
    limits, usage = _capacity(conn, t, rps)
    names = {v: k for k, v in class_ids(conn, t).items()}
    failures: dict[str, str] = {}
    for d in decisions:
        if d.action not in ("create", "force"):
            continue
        if d.action == "force":  # its old allocations go away first
            for rp, held in existing[d.plan.instance.uuid].allocations.items():
                for rc, used in held.items():
                    usage[(rp, rc)] -= used
        problem = None
        for rc, amount in sorted(d.wanted.items()):
            name = names.get(rc, str(rc))
            problem = _refusal(
                limits.get((d.rp_id, rc)), usage[(d.rp_id, rc)], name, amount, d.plan.node_uuid
            )
            if problem is not None:
                break
        if problem is not None:
            failures[d.plan.instance.uuid] = problem
            continue
        for rc, amount in d.wanted.items():
            usage[(d.rp_id, rc)] += amount
    return failures


def _capacity(
    conn: Connection, t: PlacementTables, rps: list[int]
) -> tuple[dict[tuple[int, int], Inventory], dict[tuple[int, int], int]]:
    """Per (provider, class): the inventory, and what allocations already use of it."""
    inv, a = t.inventories, t.allocations
    limits: dict[tuple[int, int], Inventory] = {}
    usage: dict[tuple[int, int], int] = defaultdict(int)
    for part in chunks(rps):
        query = sa.select(
            inv.c.resource_provider_id,
            inv.c.resource_class_id,
            *(inv.c[f] for f in INVENTORY_FIELDS),
        ).where(inv.c.resource_provider_id.in_(part))
        for r in conn.execute(query):
            key = (int(r.resource_provider_id), int(r.resource_class_id))
            limits[key] = Inventory.from_row(r)
        query = (
            sa.select(a.c.resource_provider_id, a.c.resource_class_id, sa.func.sum(a.c.used))
            .where(a.c.resource_provider_id.in_(part))
            .group_by(a.c.resource_provider_id, a.c.resource_class_id)
        )
        for rp, rc, used in conn.execute(query):
            usage[(int(rp), int(rc))] = int(used or 0)
    return limits, usage


def _refusal(
    limit: Inventory | None, used: int, name: str, amount: int, node_uuid: str
) -> str | None:
    """Placement's reason to refuse ``amount`` of a class on a provider, or None if it fits."""
    if limit is None:
        return f"its provider {node_uuid} has no {name} inventory"
    if (
        amount < limit.min_unit
        or amount > limit.max_unit
        or (amount - limit.min_unit) % limit.step_size
    ):
        return (
            f"{name}={amount} is outside min_unit {limit.min_unit}, max_unit "
            f"{limit.max_unit}, step {limit.step_size} of provider {node_uuid}"
        )
    capacity = (limit.total - limit.reserved) * limit.allocation_ratio
    if used + amount > capacity:
        return f"provider {node_uuid} has no room for {name}={amount}"
    return None


def _decide(
    plans: list[_Plan],
    existing: dict[str, _Existing],
    providers: dict[str, tuple[int, int | None]],
    ids: dict[str, int],
    force: bool,
) -> tuple[list[_Decision], list[NotHealed], int]:
    decisions: list[_Decision] = []
    failed: list[NotHealed] = []
    current = 0
    for plan in plans:
        uuid = plan.instance.uuid
        rp = providers.get(plan.node_uuid)
        unknown = sorted(k for k in plan.resources if k not in ids)
        if rp is None:
            failed.append(
                NotHealed(
                    uuid,
                    f"Instance {uuid}: compute node {plan.node_uuid} has no resource provider "
                    "in Placement; run `novadb rebuild-placement` or restart its nova-compute",
                    exit_codes.HEAL_FAILED,
                )
            )
            continue
        if unknown:
            failed.append(
                NotHealed(
                    uuid,
                    f"Instance {uuid}: Placement has no resource class {', '.join(unknown)}",
                    exit_codes.HEAL_FAILED,
                )
            )
            continue
        wanted = {ids[k]: v for k, v in plan.resources.items()}
        have = existing.get(uuid)
        if have is None or not have.allocations:
            decisions.append(_Decision(plan, "create", rp[0], wanted))
        elif force:
            decisions.append(_Decision(plan, "force", rp[0], wanted))
        elif (have.project, have.user) != (plan.instance.project_id, plan.instance.user_id):
            decisions.append(_Decision(plan, "update", rp[0], wanted))
        else:
            current += 1
    return decisions, failed, current


def _write_batch(
    conn: Connection,
    t: PlacementTables,
    decisions: list[_Decision],
    existing: dict[str, _Existing],
    providers: dict[str, tuple[int, int | None]],
) -> None:
    now = utcnow()
    projects = external_ids(conn, t.projects, (d.plan.instance.project_id for d in decisions))
    users = external_ids(conn, t.users, (d.plan.instance.user_id for d in decisions))
    fresh = [
        d for d in decisions if existing.get(d.plan.instance.uuid, _Existing()).consumer_id is None
    ]
    if fresh:
        conn.execute(
            sa.insert(t.consumers),
            [
                {
                    "uuid": d.plan.instance.uuid,
                    "project_id": projects[d.plan.instance.project_id],
                    "user_id": users[d.plan.instance.user_id],
                    "generation": 0,
                    "created_at": now,
                }
                for d in fresh
            ],
        )
    consumer_gens: dict[int, int | None] = {}
    for part in chunks([d.plan.instance.uuid for d in fresh]):
        query = sa.select(t.consumers.c.id).where(t.consumers.c.uuid.in_(part))
        consumer_gens.update({int(i): 0 for (i,) in conn.execute(query)})
    touched: set[int] = set()
    replaced: list[str] = []
    for d in decisions:
        have = existing.get(d.plan.instance.uuid)
        if have is not None and have.consumer_id is not None:
            consumer_gens[have.consumer_id] = have.generation
            conn.execute(
                sa.update(t.consumers)
                .where(t.consumers.c.id == have.consumer_id)
                .values(
                    project_id=projects[d.plan.instance.project_id],
                    user_id=users[d.plan.instance.user_id],
                    updated_at=now,
                )
            )
        if have is not None:
            touched |= set(have.allocations)
        if d.action == "force":
            replaced.append(d.plan.instance.uuid)
        touched.add(d.rp_id)
    for part in chunks(replaced):
        conn.execute(sa.delete(t.allocations).where(t.allocations.c.consumer_id.in_(part)))
    rows = [
        {
            "resource_provider_id": d.rp_id,
            "consumer_id": d.plan.instance.uuid,
            "resource_class_id": rc,
            "used": amount,
            "created_at": now,
        }
        for d in decisions
        if d.action in ("create", "force")
        for rc, amount in sorted(d.wanted.items())
    ]
    if rows:
        conn.execute(sa.insert(t.allocations), rows)
    rp_gens = {rp_id: gen for rp_id, gen in providers.values() if rp_id in touched}
    # Providers that only lose allocations (--force moving them off another provider)
    # were not read with the batch: read them here, in this transaction, to swap them too.
    others = sorted(touched - set(rp_gens))
    for part in chunks(others):
        query = sa.select(t.providers.c.id, t.providers.c.generation).where(
            t.providers.c.id.in_(part)
        )
        rp_gens.update({int(i): g for i, g in conn.execute(query)})
    bump_generations(conn, t.providers, rp_gens)
    bump_generations(conn, t.consumers, consumer_gens)


def _heal_batch(
    engine: Engine, t: PlacementTables, run: _Run, plans: list[_Plan]
) -> tuple[list[_Decision], int]:
    """Decide and (unless dry-run) write one batch; the decisions that stood."""

    def work(conn: Connection) -> tuple[list[_Decision], list[NotHealed], int]:
        rp = t.providers
        providers: dict[str, tuple[int, int | None]] = {}
        for part in chunks(sorted({p.node_uuid for p in plans})):
            query = sa.select(rp.c.uuid, rp.c.id, rp.c.generation).where(rp.c.uuid.in_(part))
            providers.update({str(u): (int(i), g) for u, i, g in conn.execute(query)})
        existing = _existing(conn, t, [p.instance.uuid for p in plans])
        ids = class_ids(conn, t)
        decisions, failed, current = _decide(plans, existing, providers, ids, run.options.force)
        room = run.room()
        if room is not None and len(decisions) > room:
            decisions = decisions[:room]
        refused = _capacity_failures(conn, t, decisions, existing)
        failed += [
            NotHealed(uuid, f"Instance {uuid}: {why}", exit_codes.HEAL_FAILED)
            for uuid, why in refused.items()
        ]
        decisions = [d for d in decisions if d.plan.instance.uuid not in refused]
        if decisions and not run.options.dry_run:
            _write_batch(conn, t, decisions, existing, providers)
        return decisions, failed, current

    decisions, failed, current = write(engine, work)
    run.failed += failed
    return decisions, current


def heal_allocations(
    settings: Settings,
    options: HealOptions | None = None,
    *,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
    lock_held: bool = False,
) -> HealResult:
    """Heal every cell's instances (or the chosen cell or instance), batch by batch."""
    options = options or HealOptions()
    options.validate()
    # Placement's database first: an unconfigured one is refused before any connection.
    placement_url = settings.placement_url()
    if options.instance is not None:
        options = HealOptions(
            max_count=1,
            dry_run=options.dry_run,
            instance=options.instance,
            force=options.force,
            batch_size=options.batch_size,
        )
    started = time.monotonic()
    cells = _cells(settings, options)
    run = _Run(options, progress, stop=stop)
    with (
        engine_for(placement_url) as placement,
        writer_lock(placement, held=lock_held or options.dry_run),
    ):
        tables = PlacementTables(placement)
        for cell in cells:
            _heal_cell(cell, placement, tables, run)
            if run.max_count_reached or run.interrupted():
                break
    return HealResult(
        healed=run.healed,
        up_to_date=run.up_to_date,
        skipped=run.skipped,
        failed=run.failed,
        dry_run=options.dry_run,
        max_count_reached=run.max_count_reached,
        cells=len(cells),
        elapsed=time.monotonic() - started,
        stopped=run.stopped,
    )


def _heal_cell(cell: Cell, placement: Engine, tables: PlacementTables, run: _Run) -> None:
    with engine_for(cell.url) as engine, engine.connect() as conn:
        reader = _CellReader(conn, run.options.instance)
        expected = reader.count()
        after = 0
        while not run.interrupted():
            rows = reader.batch(after, run.options.batch_size)
            conn.rollback()  # end the read snapshot between batches
            if not rows:
                return
            after = rows[-1].id
            plans = _classify(run, reader, rows)
            if plans:
                decisions, current = _heal_batch(placement, tables, run, plans)
                run.up_to_date += current
                for d in decisions:
                    i = d.plan.instance
                    run.healed.append(
                        Healed(i.uuid, d.action, d.plan.node_uuid, d.plan.resources,
                               i.project_id, i.user_id)
                    )  # fmt: skip
            run.progress(
                Event(
                    "heal-allocations",
                    "batch",
                    f"{cell.label}: {len(run.healed)} healed",
                    {
                        "cell": cell.label,
                        "done": len(rows),
                        "expected": expected,
                        "healed": len(run.healed),
                    },  # fmt: skip
                )
            )
            room = run.room()
            if room is not None and room <= 0:
                # --instance is one instance, not "--max-count 1": nova-manage ends it
                # with 0 (healed) or 4 (nothing to heal), never "Max count reached".
                run.max_count_reached = run.options.instance is None
                return
