"""``check``: before an upgrade, everything in the databases that will bite, found read-only.

Per database (the API database, cell0 and every cell, Placement) it reports
schema revisions still to apply and the rows that would stop them, online
migrations still to run, archive's backlog and whatever would make archive
fail or leave rows behind, rows that belong to no instance, instances the
API cannot route to, and tables a MySQL cluster cannot replicate safely.  The
Placement audit's findings are added when a ``placement`` callable is given.

Every connection runs read-only (:func:`novadb.check.dialect.read_only`) and
every figure is a ``COUNT``/``MIN``/``MAX`` or a catalogue lookup; nothing is
copied.  Each finding names the exact command that fixes it (or the SQL to
run by hand when novadb has no command for it).

Severities, as an operator about to upgrade reads them: a **blocker** makes
the upgrade or its pre-upgrade steps (``sync``, ``online-migrate``, the
``archive-data`` action COU runs first) fail or lose data; a **warning** is
cleanup to do before upgrading; **info** needs nothing now.  In particular:

* Pending schema revisions are what an upgrade's ``sync`` applies, so a
  database exactly at some release's heads is *info*; one that stops part-way
  through a release (an interrupted sync) or has no schema is a *warning*;
  the rows that would make a pending revision refuse to run are *blockers*.
* Pending online migrations are *blockers*: Nova requires the previous
  release's to be complete before the next schema sync, whose blocker
  revisions check exactly that.  Rows a migration looks at but by design
  never changes (a never-scheduled instance has no ``compute_id``) are *info*.
* Anything that makes archive fail (a missing or drifted shadow table, a
  shadow id the live table hands out again) is a *blocker*, because COU's
  pre-upgrade ``archive-data`` action then fails; rows archive merely leaves
  behind, and the backlog itself, are *warnings*.
* Non-InnoDB tables and tables without a primary key are *blockers*: Galera
  and Group Replication (the clusters these clouds run on) do not replicate
  or refuse to write them, and archive's one-transaction move needs InnoDB.

============================== ======== =============================================
code                           severity fix
============================== ======== =============================================
unreachable, config-error      blocker  the connection or configuration
unknown-revision               blocker  a novadb that knows the revision
unmanaged-schema               blocker  upgrade with that release's nova-manage
migration-blocker              blocker  the command the blocked revision names
pending-online-migration       blocker  ``novadb online-migrate --database ...``
shadow-missing, shadow-drift   blocker  the DDL that restores the shadow table
shadow-id-ahead                blocker  ``ALTER TABLE t AUTO_INCREMENT = n`` (MySQL)
shadow-id-duplicate            blocker  ``DELETE FROM shadow_t WHERE id IN (...)``
non-innodb-table               blocker  ``ALTER TABLE t ENGINE=InnoDB``
table-without-primary-key      blocker  ``ALTER TABLE t ADD PRIMARY KEY (id)``
pending-revisions              warning  ``novadb sync ...`` (empty, legacy or part-way
                                        through a release)
pending-revisions              info     at a release's heads: the upgrade's own sync
archivable-rows                warning  ``novadb archive --until-complete --all-cells``
archive-held-back              warning  the DELETE of the legacy rows, then archive
null-instance-uuid             warning  ``novadb null-instance-uuid-scan --delete``
instance-mapping-without-cell  warning  the UPDATE that sets the mappings' cell
instance-without-mapping       warning  ``nova-manage cell_v2 map_instances ...``
stale-instance-mapping         info     the DELETE of the stale mappings
unmigratable-rows              info     none: online-migrate leaves them by design
placement-not-checked          info     set ``[placement_database]/connection``
placement-audit-failed         blocker  see ``novadb placement-audit``
check-failed                   blocker  the database error in the summary
============================== ======== =============================================

Exit code: 2 with any blocker, 1 with warnings, else 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from novadb import exit_codes
from novadb.check.cell import CellFacts, check_cell
from novadb.check.dialect import catalogue, read_only, storage_problems
from novadb.check.mappings import CellLink, instances_without_mapping, mappings_without_cell
from novadb.config import Settings
from novadb.connections import engine_for, mask
from novadb.errors import (
    PLACEMENT_NOT_CONFIGURED,
    DatabaseUnreachable,
    NovaDbError,
    SchemaError,
    UnknownRevision,
)
from novadb.findings import BLOCKER, EXIT_CODES, INFO, WARNING, Finding
from novadb.online.pending import pending
from novadb.online.registry import MIGRATIONS
from novadb.progress import Event, Progress, ignore
from novadb.schema import revisions
from novadb.schema.blockers import find_blockers
from novadb.schema.releases import FIRST_RELEASE, RELEASES, revisions_in
from novadb.schema.sync import _inspect, _release_of, _todo  # sync's own reading of a schema
from novadb.targets import Target, main_targets, plan

__all__ = ["CheckResult", "DatabaseFacts", "Finding", "PlacementAudit", "check"]

PlacementAudit = Callable[[Settings], list[Finding]]

ONLINE_FIX = {
    "main": "novadb online-migrate --database main --all-cells",
    "api": "novadb online-migrate --database api",
    "placement": "novadb online-migrate --database placement",
}


@dataclass(frozen=True)
class DatabaseFacts:
    """What ``check`` measured in one database, problem or not.

    ``online``: rows each pending online migration would change;
    ``archivable``: rows per table a full archive would move;
    ``oldest_deleted``: per table, the oldest ``deleted_at`` of a soft-deleted
    row; ``held_back``: per table, soft-deleted rows archive must leave live.
    """

    name: str
    environment: str
    url: str
    reachable: bool = True
    revision: str | None = None
    head: str | None = None
    pending_revisions: int = 0
    release: str | None = None
    online: dict[str, int] = field(default_factory=dict)
    archivable: dict[str, int] = field(default_factory=dict)
    oldest_deleted: dict[str, datetime] = field(default_factory=dict)
    held_back: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0


@dataclass(frozen=True)
class CheckResult:
    """Every finding, in database order, and the facts behind them."""

    findings: tuple[Finding, ...]
    databases: tuple[DatabaseFacts, ...]
    elapsed: float

    @property
    def exit_code(self) -> int:
        """2 with any blocker, 1 with warnings, 0 when clean or with info only."""
        return max((EXIT_CODES[f.severity] for f in self.findings), default=exit_codes.CHECK_CLEAN)

    def count(self, severity: str) -> int:
        """How many findings have ``severity``."""
        return sum(1 for f in self.findings if f.severity == severity)


def check(
    settings: Settings, *, progress: Progress = ignore, placement: PlacementAudit | None = None
) -> CheckResult:
    """Check every database read-only; ``placement`` adds the Placement audit's findings."""
    started = time.monotonic()
    findings: list[Finding] = []
    facts: list[DatabaseFacts] = []
    with ExitStack() as stack:  # every connection stays open (and its snapshot) to the end
        usable: dict[str, tuple[Target, Connection]] = {}
        targets = _targets(settings, findings)
        _report(progress, findings)  # the API database, when it cannot be read
        for target in targets:
            if target.environment == "placement" and settings.placement_shares_api():
                findings.append(_placement_not_checked(settings))
                continue
            progress(Event("check", "database", f"{target.name} ({mask(target.url)})",
                           {"database": target.name}))  # fmt: skip
            found, fact, conn = _open_and_check(stack, target, settings)
            facts.append(fact)
            findings += found
            if conn is not None:
                usable[target.name] = (target, conn)
            _report(progress, found)
        cross = _cross_checks(usable)
        _report(progress, cross)
        findings += cross
    # The audit reads the cells through the API database: without it, it would only
    # repeat the API's blocker under Placement's name.
    api_down = any(f.database == "api" and f.code in _UNUSABLE for f in findings)
    if placement is not None and not api_down and settings.placement_configured:
        audited = _placement_audit(placement, settings)
        _report(progress, audited)
        findings += audited
    return CheckResult(tuple(findings), tuple(facts), round(time.monotonic() - started, 3))


_UNUSABLE = ("unreachable", "config-error")


def _open_and_check(
    stack: ExitStack, target: Target, settings: Settings
) -> tuple[list[Finding], DatabaseFacts, Connection | None]:
    """One database's findings and facts, and its connection when its schema is readable."""
    begun = time.monotonic()
    url = mask(target.url)
    try:
        engine = stack.enter_context(engine_for(target.url))
    except NovaDbError as exc:
        return (
            [_unusable(target.name, exc)],
            DatabaseFacts(target.name, target.environment, url, reachable=False),
            None,
        )
    conn = stack.enter_context(read_only(engine))
    try:
        found, fact, ready = _check_database(conn, target, settings)
    except DBAPIError as exc:  # one unreadable database does not hide the others
        detail = str(getattr(exc, "orig", exc)).splitlines()[0]
        failed = Finding(
            target.name,
            BLOCKER,
            "check-failed",
            f"checking {target.name} failed: {detail}",
            1,
            "fix the database error in the summary, then run `novadb check`",
        )
        return [failed], DatabaseFacts(target.name, target.environment, url), None  # fmt: skip
    fact = replace(fact, elapsed=round(time.monotonic() - begun, 3))
    return found, fact, conn if ready else None


def _report(progress: Progress, found: list[Finding]) -> None:
    for f in found:
        progress(Event("check", "finding", f"{f.database}: {f.severity}: {f.summary}",
                       {"database": f.database, "code": f.code, "severity": f.severity,
                        "count": f.count}))  # fmt: skip


def _unusable(database: str, exc: NovaDbError) -> Finding:
    if isinstance(exc, DatabaseUnreachable):
        return Finding(
            database,
            BLOCKER,
            "unreachable",
            str(exc),
            1,
            "make the database reachable (see the summary), then run `novadb check`",
        )
    return Finding(database, BLOCKER, "config-error", str(exc), 1,
                   "fix the configuration (see the summary), then run `novadb check`")  # fmt: skip


def _targets(settings: Settings, findings: list[Finding]) -> list[Target]:
    """Nova's order: api, cell0, cells, placement; without the API, what can still be read."""
    try:
        return plan(settings, "all")
    except NovaDbError as exc:  # the API database or its cell mappings cannot be read
        findings.append(_unusable("api", exc))
    targets = []
    if settings.main is not None:
        targets += main_targets(settings, None, local_cell=True)
    if settings.placement is not None:
        targets.append(Target("placement", "placement", settings.placement))
    return targets


def _placement_not_checked(settings: Settings) -> Finding:
    """The one INFO finding when Placement's schema is not checked (as ``sync`` skips it).

    Without ``[placement_database]`` this is the only word about Placement: its
    audit is skipped too (it would fail on the API database, with a fix that
    fails).  Shared on purpose, the schema is not Placement's to check here, but
    the audit still runs on the tables the operator pointed at.
    """
    if not settings.placement_configured:
        return Finding("placement", INFO, "placement-not-checked", PLACEMENT_NOT_CONFIGURED,
                       0, "pass --placement-database URL")  # fmt: skip
    return Finding("placement", INFO, "placement-not-checked",
                   "Placement shares the API database; its schema was not checked", 0,
                   "set [placement_database]/connection to a database of its own")  # fmt: skip


def _placement_audit(audit: PlacementAudit, settings: Settings) -> list[Finding]:
    try:
        return list(audit(settings))
    except NovaDbError as exc:
        return [Finding("placement", BLOCKER, "placement-audit-failed", str(exc), 1,
                        "see the summary, then run `novadb placement-audit`")]  # fmt: skip


# -- one database ------------------------------------------------------------------


def _check_database(
    conn: Connection, target: Target, settings: Settings
) -> tuple[list[Finding], DatabaseFacts, bool]:
    """Findings, facts, and whether the schema is one the cross-database checks can read."""
    env, name, url = target.environment, target.name, mask(target.url)
    head = revisions.head(env)
    try:
        current, legacy = _inspect(conn, target)
    except UnknownRevision as exc:
        found = Finding(name, BLOCKER, "unknown-revision", str(exc), 1,
                        "upgrade novadb to a version that knows this revision")  # fmt: skip
        return [found], DatabaseFacts(name, env, url, head=head), False
    except SchemaError as exc:
        found = Finding(name, BLOCKER, "unmanaged-schema", str(exc), 1,
                        "see the summary; novadb cannot take this schema over")  # fmt: skip
        return [found], DatabaseFacts(name, env, url, head=head), False
    # A legacy database is stamped at the first revision, then upgraded (as sync does).
    todo = _todo(env, revisions.chain(env)[0] if legacy is not None else current, head)
    found = _revision_findings(name, env, current, legacy, todo)
    for blocker in find_blockers(conn, env, todo + (["legacy"] if legacy is not None else [])):
        found.append(Finding(
            name, BLOCKER, "migration-blocker",
            f"{blocker.count} {blocker.table} row(s) {blocker.problem}: revision "
            f"{blocker.revision} refuses to run", blocker.count, blocker.fix,
            subject=blocker.revision, examples=tuple(str(i) for i in blocker.first_ids),
        ))  # fmt: skip
    facts = DatabaseFacts(
        name, env, url, revision=current, head=head, pending_revisions=len(todo),
        release=_release_of(env, current),
    )  # fmt: skip
    if current is None and legacy is None:  # an empty database: nothing else to look at
        return found, facts, False
    found += _storage(conn, name)
    columns = catalogue(conn)
    online = pending(conn, env, settings, columns)
    for migration, count in online.items():
        found += _online_findings(name, migration, count.rows, count.stuck, count.reason)
    cell = CellFacts()
    if env == "main":
        cell_found, cell = check_cell(conn, name, columns)
        found += cell_found
    facts = replace(
        facts, online={m: c.rows for m, c in online.items() if c.rows},
        archivable=cell.archivable, oldest_deleted=cell.oldest_deleted, held_back=cell.held_back,
    )  # fmt: skip
    return found, facts, True


def _revision_findings(
    name: str, env: str, current: str | None, legacy: int | None, todo: list[str]
) -> list[Finding]:
    if not todo:
        return []
    n, head = len(todo), revisions.head(env)
    sync = f"novadb sync --database {env}"
    if legacy is not None:
        return [Finding(name, WARNING, "pending-revisions",
                        f"a sqlalchemy-migrate database (version {legacy}): sync takes it over "
                        f"and applies {n} revision(s) up to {head}", n, sync)]  # fmt: skip
    if current is None:
        return [
            Finding(
                name,
                WARNING,
                "pending-revisions",
                f"no schema yet: {n} revision(s) to apply up to {head}",
                n,
                sync,
            )
        ]
    release = _release_of(env, current) or "no release"
    if _at_release_heads(env, current):
        return [Finding(
            name, INFO, "pending-revisions",
            f"schema at {release}'s heads ({current}); {n} revision(s) of newer releases "
            "pending: the upgrade's sync applies them",
            n, f"{sync} --release <the release you upgrade to>",
        )]  # fmt: skip
    within = FIRST_RELEASE[env][todo[0]]
    return [Finding(
        name, WARNING, "pending-revisions",
        f"schema stops part-way through release {within} at {current}: {n} revision(s) "
        f"pending up to {head} (an interrupted sync?)",
        n, f"{sync} --release {within}",
    )]  # fmt: skip


def _at_release_heads(env: str, current: str) -> bool:
    chain = revisions.chain(env)
    done = set(chain[: chain.index(current) + 1])
    return any(revisions_in(env, i) == done for i in range(len(RELEASES)))


def _online_findings(
    name: str, migration: str, rows: int, stuck: int, reason: str
) -> list[Finding]:
    out = []
    database = next(m.database for m in MIGRATIONS if m.name == migration)
    if rows:
        out.append(Finding(
            name, BLOCKER, "pending-online-migration",
            f"online migration {migration} has {rows} row(s) to migrate; Nova requires it "
            "complete before the next upgrade", rows, ONLINE_FIX[database], subject=migration,
        ))  # fmt: skip
    if stuck:
        out.append(Finding(
            name, INFO, "unmigratable-rows",
            f"online migration {migration} leaves {stuck} row(s) as they are: {reason}",
            stuck, "none needed: `novadb online-migrate` lists their ids", subject=migration,
        ))  # fmt: skip
    return out


def _storage(conn: Connection, name: str) -> list[Finding]:
    """MySQL only: tables a Galera or Group Replication cluster cannot handle safely."""
    problems = storage_problems(conn)
    out = []
    if problems.engines:
        listed = ", ".join(f"{t} ({e})" for t, e in problems.engines.items())
        out.append(Finding(
            name, BLOCKER, "non-innodb-table",
            f"{len(problems.engines)} table(s) not on InnoDB: {listed}; their changes are "
            "not transactional and a cluster does not replicate them",
            len(problems.engines),
            "; ".join(f"ALTER TABLE {t} ENGINE=InnoDB" for t in problems.engines),
        ))  # fmt: skip
    if problems.no_primary_key:
        fixes = [
            f"ALTER TABLE {t} ADD PRIMARY KEY (id)"
            if t in problems.with_id
            else f"add a primary key to {t}"
            for t in problems.no_primary_key
        ]
        out.append(Finding(
            name, BLOCKER, "table-without-primary-key",
            f"{len(problems.no_primary_key)} table(s) without a primary key: "
            f"{', '.join(problems.no_primary_key)}; Group Replication refuses to write them",
            len(problems.no_primary_key), "; ".join(fixes),
        ))  # fmt: skip
    return out


# -- across databases --------------------------------------------------------------


def _cross_checks(usable: dict[str, tuple[Target, Connection]]) -> list[Finding]:
    """Instance mappings against the cells' instances (needs a readable API database)."""
    api = usable.get("api")
    if api is None or not sa.inspect(api[1]).has_table("instance_mappings"):
        return []
    api_conn = api[1]
    mappings = sa.table("cell_mappings", sa.column("id"), sa.column("uuid"))
    ids = {str(u): int(i) for i, u in api_conn.execute(sa.select(mappings.c.id, mappings.c.uuid))}
    cells = []
    for target, conn in usable.values():
        if target.environment != "main" or not sa.inspect(conn).has_table("instances"):
            continue
        uuid = target.cell.uuid if target.cell is not None else None
        cells.append(CellLink(target.name, conn, uuid, ids.get(uuid) if uuid else None))
    out = mappings_without_cell(api_conn, cells)
    for cell in cells:
        out += instances_without_mapping(api_conn, cell)
    return out
