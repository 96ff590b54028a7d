"""``placement-audit``: where Placement and Nova's cells disagree, and what to do about it.

Nova's ``nova-manage placement audit`` looks only for orphaned allocations.
This audit also compares every live compute node with the provider Nova
expects for it (uuid = ``compute_nodes.uuid``, name = ``hypervisor_hostname``):

``missing-provider``
    a compute node has no provider: its instances cannot be scheduled or
    healed until one exists;
``name-conflict``
    a provider with another uuid holds the node's name: nova-compute's create
    gets 409 from Placement forever (bug 1817833, typically after a cell
    database was restored from backup);
``stale-provider``
    a root provider whose uuid is no compute node in any cell;
``inventory-mismatch``
    VCPU/MEMORY_MB/DISK_GB totals or ratios differ from the node's row;
``orphan-allocation``
    a consumer holds Nova resources on a compute node's provider but is
    neither a live instance on that node, an in-progress migration there, nor
    an instance still being built (``build_requests``).

``--delete`` removes orphan allocations only, in one transaction, as Placement would
(consumers left without allocations are dropped), with the generations of
the consumers and of the providers that lose allocations bumped by
compare-and-swap: Placement 16 moves no generation when allocations are
removed, but novadb keeps one contract for every change of a provider's
allocations, so a placement-api write based on the old state gets its 409.
Exit codes follow Nova's audit: 0 nothing found, 3 something found and left,
4 orphans found and deleted and nothing else left, 127 bad input, 1 the
deletions could not be made (Placement changed under them 10 times in a row;
nothing was deleted).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from novadb import exit_codes
from novadb.config import Settings
from novadb.connections import engine_for
from novadb.errors import BadArgument, NovaDbError
from novadb.placement.db import (
    ConcurrentUpdate,
    PlacementTables,
    bump_generations,
    chunks,
    delete_empty_consumers,
    write,
    writer_lock,
)
from novadb.placement.kinds import AuditKind
from novadb.placement.nova_side import (
    CloudFacts,
    ComputeNode,
    cells_for_placement,
    node_inventory,
    read_cloud,
)
from novadb.progress import Event, Progress, ignore
from novadb.targets import api_exists

# Nova's audit counts a consumer only if it holds one of these on the provider.
NOVA_CLASSES = frozenset(
    {
        "VCPU",
        "MEMORY_MB",
        "DISK_GB",
        "VGPU",
        "NET_BW_EGR_KILOBIT_PER_SEC",
        "NET_BW_IGR_KILOBIT_PER_SEC",
        "PCPU",
        "MEM_ENCRYPTION_CONTEXT",
    }
)
_RATIO_TOLERANCE = 1e-6


class UnknownProvider(BadArgument):
    """``--resource-provider`` names no provider."""


@dataclass(frozen=True)
class AuditFinding:
    """One disagreement: what kind, which provider, the details, the fixing command."""

    kind: AuditKind
    provider: str  # provider uuid, or the compute node uuid for missing-provider
    name: str
    detail: str
    fix: str
    consumer: str | None = None


@dataclass(frozen=True)
class AuditResult:
    """Every finding, what --delete removed, and the counts it looked at."""

    findings: list[AuditFinding] = field(default_factory=list)
    deleted_consumers: int = 0
    deleted_allocations: int = 0
    changed_consumers: list[str] = field(default_factory=list)
    providers: int = 0
    compute_nodes: int = 0
    elapsed: float = 0.0

    def count(self, kind: str) -> int:
        """How many findings of one kind."""
        return sum(1 for f in self.findings if f.kind == kind)

    @property
    def remaining(self) -> list[AuditFinding]:
        """Findings still true after the run (deleted orphans are gone)."""
        if not self.deleted_consumers:
            return list(self.findings)
        kept = set(self.changed_consumers)
        return [
            f for f in self.findings if f.kind != AuditKind.ORPHAN_ALLOCATION or f.consumer in kept
        ]

    @property
    def exit_code(self) -> int:
        """0 clean, 3 found and left, 4 orphans deleted and nothing else left."""
        if not self.findings:
            return exit_codes.AUDIT_CLEAN
        if self.deleted_consumers and not self.remaining:
            return exit_codes.AUDIT_DELETED
        return exit_codes.AUDIT_FOUND


@dataclass
class _Provider:
    id: int
    uuid: str
    name: str | None
    root: int | None
    parent: int | None
    generation: int | None


@dataclass
class _PlacementView:
    providers: dict[int, _Provider]
    inventory: dict[int, dict[str, tuple[int, float]]]  # rp id -> class -> (total, ratio)
    # rp id -> consumer -> classes held there
    allocations: dict[int, dict[str, set[str]]]
    consumer_generations: dict[str, int | None]


def _read_placement(conn: Connection, tables: PlacementTables) -> _PlacementView:
    rp, inv, alloc, rc = tables.providers, tables.inventories, tables.allocations, tables.classes
    providers = {
        int(r.id): _Provider(
            int(r.id), str(r.uuid), r.name, r.root_provider_id, r.parent_provider_id, r.generation
        )
        for r in conn.execute(
            sa.select(
                rp.c.id,
                rp.c.uuid,
                rp.c.name,
                rp.c.root_provider_id,
                rp.c.parent_provider_id,
                rp.c.generation,
            )
        )
    }
    inventory: dict[int, dict[str, tuple[int, float]]] = defaultdict(dict)
    query = sa.select(
        inv.c.resource_provider_id, rc.c.name, inv.c.total, inv.c.allocation_ratio
    ).select_from(inv.join(rc, rc.c.id == inv.c.resource_class_id))
    for rp_id, name, total, ratio in conn.execute(query):
        inventory[int(rp_id)][str(name)] = (int(total), float(ratio))
    allocations: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    query = sa.select(alloc.c.resource_provider_id, alloc.c.consumer_id, rc.c.name).select_from(
        alloc.join(rc, rc.c.id == alloc.c.resource_class_id)
    )
    for rp_id, consumer, name in conn.execute(query):
        allocations[int(rp_id)][str(consumer)].add(str(name))
    cons = tables.consumers
    generations = {str(u): g for u, g in conn.execute(sa.select(cons.c.uuid, cons.c.generation))}
    return _PlacementView(providers, inventory, allocations, generations)


def _building(settings: Settings) -> set[str]:
    """Instances still being scheduled: their allocations exist before their cell row."""
    if not api_exists(settings):
        return set()
    with engine_for(settings.url("api")) as api:
        if not sa.inspect(api).has_table("build_requests"):
            return set()
        table = sa.Table("build_requests", sa.MetaData(), autoload_with=api)
        with api.connect() as conn:
            return {str(r[0]) for r in conn.execute(sa.select(table.c.instance_uuid))}


def _root_uuid(view: _PlacementView, provider: _Provider) -> str:
    root = view.providers.get(provider.root or provider.id)
    return root.uuid if root is not None else provider.uuid


def _node_findings(
    view: _PlacementView, nodes: list[ComputeNode], settings: Settings, only: str | None
) -> list[AuditFinding]:
    by_uuid = {p.uuid: p for p in view.providers.values()}
    by_name = {p.name: p for p in view.providers.values() if p.name is not None}
    out: list[AuditFinding] = []
    for node in nodes:
        provider = by_uuid.get(node.uuid)
        holder = by_name.get(node.hypervisor_hostname)
        if only is not None and only not in (node.uuid, holder.uuid if holder else None):
            continue
        if provider is None:
            if holder is not None and holder.uuid != node.uuid:
                out.append(
                    AuditFinding(
                        AuditKind.NAME_CONFLICT,
                        holder.uuid,
                        node.hypervisor_hostname,
                        f"provider {holder.uuid} holds the name of compute node {node.uuid} "
                        f"({node.cell}): nova-compute gets 409 creating its provider",
                        AuditKind.NAME_CONFLICT.fix,
                    )
                )
            else:
                out.append(
                    AuditFinding(
                        AuditKind.MISSING_PROVIDER,
                        node.uuid,
                        node.hypervisor_hostname,
                        f"compute node {node.uuid} on {node.host} (cell {node.cell}) "
                        "has no resource provider",
                        AuditKind.MISSING_PROVIDER.fix_for(node.host),
                    )
                )
            continue
        expected = node_inventory(node, settings)
        have = view.inventory.get(provider.id, {})
        wrong = []
        for rclass, inv in expected.items():
            got = have.get(rclass)
            if got is None:
                wrong.append(f"{rclass} missing (want total {inv.total})")
            elif got[0] != inv.total:
                wrong.append(f"{rclass} total {got[0]} != {inv.total}")
            elif (
                node.ratios.get(rclass) is not None
                and abs(got[1] - inv.allocation_ratio) > _RATIO_TOLERANCE
            ):
                wrong.append(f"{rclass} ratio {got[1]:g} != {inv.allocation_ratio:g}")
        if wrong:
            out.append(
                AuditFinding(
                    AuditKind.INVENTORY_MISMATCH,
                    provider.uuid,
                    node.hypervisor_hostname,
                    "; ".join(wrong),
                    AuditKind.INVENTORY_MISMATCH.fix_for(node.host),
                )
            )
    return out


def _stale_findings(
    view: _PlacementView, nodes: list[ComputeNode], conflicts: set[str], only: str | None
) -> list[AuditFinding]:
    known = {n.uuid for n in nodes}
    out = []
    for provider in view.providers.values():
        if provider.parent is not None or provider.uuid in known or provider.uuid in conflicts:
            continue
        if only is not None and provider.uuid != only:
            continue
        held = len(view.allocations.get(provider.id, {}))
        out.append(
            AuditFinding(
                AuditKind.STALE_PROVIDER,
                provider.uuid,
                provider.name or "",
                f"no compute node has this uuid; {held} consumers hold allocations on it",
                AuditKind.STALE_PROVIDER.fix,
            )
        )
    return out


def _orphans(
    view: _PlacementView, facts: CloudFacts, building: set[str], only: str | None
) -> list[tuple[_Provider, str, list[str]]]:
    out = []
    for rp_id, consumers in view.allocations.items():
        provider = view.providers.get(rp_id)
        if provider is None:
            continue
        root = _root_uuid(view, provider)
        if root not in facts.consumers:
            continue  # not a compute node's tree: Nova's audit skips it too
        if only is not None and provider.uuid != only and root != only:
            continue
        legit = facts.consumers[root]
        for consumer, classes in sorted(consumers.items()):
            if consumer in legit or consumer in building or not (classes & NOVA_CLASSES):
                continue
            out.append((provider, consumer, sorted(classes)))
    return out


def _delete_orphans(
    engine: sa.Engine,
    tables: PlacementTables,
    view: _PlacementView,
    orphans: list[tuple[_Provider, str, list[str]]],
) -> tuple[int, int, list[str]]:
    """Delete each orphan's allocations on its provider, with both generations swapped.

    A consumer whose generation moved since the audit read it changed under
    us (someone wrote its allocations): it is left alone and reported, since
    the verdict "orphan" was about the state we read.
    """
    alloc, consumers, rp = tables.allocations, tables.consumers, tables.providers

    def work(conn: Connection) -> tuple[int, int, list[str]]:
        uuids = sorted({c for _, c, _ in orphans})
        now: dict[str, tuple[int, int | None]] = {}
        for part in chunks(uuids):
            query = sa.select(consumers.c.uuid, consumers.c.id, consumers.c.generation).where(
                consumers.c.uuid.in_(part)
            )
            now.update({str(u): (int(i), g) for u, i, g in conn.execute(query)})
        changed = [
            u
            for u in uuids
            if (now[u][1] if u in now else None) != view.consumer_generations.get(u)
        ]
        pairs = sorted({(p.id, c) for p, c, _ in orphans if c not in changed})
        if not pairs:
            return 0, 0, changed
        gens = {
            int(i): g
            for i, g in conn.execute(
                sa.select(rp.c.id, rp.c.generation).where(rp.c.id.in_({p for p, _ in pairs}))
            )
        }
        removed = 0
        by_provider: dict[int, list[str]] = defaultdict(list)
        for rp_id, consumer in pairs:
            by_provider[rp_id].append(consumer)
        for rp_id, group in sorted(by_provider.items()):
            for part in chunks(group):
                statement = sa.delete(alloc).where(
                    alloc.c.resource_provider_id == rp_id, alloc.c.consumer_id.in_(part)
                )
                removed += conn.execute(statement).rowcount
        gone = sorted({c for _, c in pairs})
        bump_generations(conn, rp, gens)
        bump_generations(conn, consumers, {now[c][0]: now[c][1] for c in gone if c in now})
        delete_empty_consumers(conn, tables, gone)
        return len(gone), removed, changed

    return write(engine, work)


def placement_audit(
    settings: Settings,
    *,
    delete: bool = False,
    resource_provider: str | None = None,
    progress: Progress = ignore,
) -> AuditResult:
    """Compare every cell's compute nodes with Placement; delete orphans if asked."""
    # Placement's database first: an unconfigured one is refused before any connection.
    placement_url = settings.placement_url()
    started = time.monotonic()
    cells = cells_for_placement(settings)
    progress(Event("placement-audit", "step", f"reading {len(cells)} cell(s)"))
    facts = read_cloud(cells)
    building = _building(settings)
    with engine_for(placement_url) as engine:
        tables = PlacementTables(engine)
        with engine.connect() as conn:
            view = _read_placement(conn, tables)
        if resource_provider is not None and not any(
            p.uuid == resource_provider for p in view.providers.values()
        ):
            raise UnknownProvider(
                f"Resource provider with UUID {resource_provider} does not exist; "
                "check the uuid (openstack resource provider list)"
            )
        progress(Event("placement-audit", "step", f"comparing {len(view.providers)} providers"))
        findings = _node_findings(view, facts.nodes, settings, resource_provider)
        conflicts = {f.provider for f in findings if f.kind == AuditKind.NAME_CONFLICT}
        findings += _stale_findings(view, facts.nodes, conflicts, resource_provider)
        orphans = _orphans(view, facts, building, resource_provider)
        findings += [
            AuditFinding(
                AuditKind.ORPHAN_ALLOCATION,
                p.uuid,
                p.name or "",
                f"consumer {c} holds {', '.join(classes)} but is no instance or "
                "in-progress migration on this node",
                AuditKind.ORPHAN_ALLOCATION.fix,
                consumer=c,
            )
            for p, c, classes in orphans
        ]
        deleted: tuple[int, int, list[str]] = (0, 0, [])
        if delete and orphans:
            progress(Event("placement-audit", "step", f"deleting {len(orphans)} orphans"))
            with writer_lock(engine):
                try:
                    deleted = _delete_orphans(engine, tables, view, orphans)
                except ConcurrentUpdate as exc:
                    # nova-manage's 1: the deletions could not be made; here nothing was.
                    raise NovaDbError(
                        f"placement-audit --delete deleted nothing: {exc}",
                        exit_code=exit_codes.AUDIT_RACES,
                    ) from exc
    return AuditResult(
        findings=findings,
        deleted_consumers=deleted[0],
        deleted_allocations=deleted[1],
        changed_consumers=deleted[2],
        providers=len(view.providers),
        compute_nodes=len(facts.nodes),
        elapsed=time.monotonic() - started,
    )
