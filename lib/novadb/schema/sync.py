"""``sync`` and ``version``: Nova's and Placement's schema migrations.

A sync first inspects every database it will touch (current revision, legacy
sqlalchemy-migrate stamp, unknown revisions, data blockers) and only then runs
DDL, database by database in Nova's order.  A database it cannot safely take
over stops the whole sync before anything changes.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Connection, Engine

from novadb import exit_codes
from novadb.config import Settings
from novadb.connections import create_engine, engine_for, mask, parse_url
from novadb.errors import (
    PLACEMENT_NOT_CONFIGURED,
    BadInput,
    BlockerFound,
    DatabaseUnreachable,
    SchemaError,
    UnknownRevision,
)
from novadb.locking import database_lock
from novadb.progress import Event, Progress, ignore
from novadb.schema import revisions
from novadb.schema.blockers import Finding, find_blockers
from novadb.schema.releases import RELEASES, release_index, release_label, revisions_in
from novadb.targets import Target, plan

# sqlalchemy-migrate versions whose schema equals our initial revision
# (Nova's squashed 402_train / 067_train plus their no-op placeholders).
LEGACY_RANGE = {"main": (402, 422), "api": (66, 87)}


@dataclass(frozen=True)
class DatabaseSync:
    """What sync did to one database."""

    name: str
    environment: str
    url: str
    before: str | None
    after: str | None
    applied: tuple[str, ...] = ()
    skipped: str | None = None


@dataclass(frozen=True)
class SyncResult:
    """Per database: revision before and after, revisions applied."""

    databases: tuple[DatabaseSync, ...]
    elapsed: float
    sql: str | None = None

    @property
    def exit_code(self) -> int:
        """0: a sync either reaches its target or raises."""
        return exit_codes.OK

    @property
    def applied(self) -> int:
        """Number of revisions applied over all databases."""
        return sum(len(d.applied) for d in self.databases)


@dataclass(frozen=True)
class DatabaseVersion:
    """One database's schema position."""

    name: str
    environment: str
    url: str
    current: str | None
    head: str
    pending: int
    release: str | None


@dataclass(frozen=True)
class VersionResult:
    """Schema position of every database."""

    databases: tuple[DatabaseVersion, ...]

    @property
    def exit_code(self) -> int:
        """0: reading the revisions either works or raises."""
        return exit_codes.OK


@dataclass
class _Plan:
    target: Target
    engine: Engine | None
    before: str | None
    legacy: int | None
    goal: str
    todo: list[str] = field(default_factory=list)
    skipped: str | None = None


def _inspect(conn: Connection, target: Target) -> tuple[str | None, int | None]:
    """Return (alembic revision, legacy migrate version) or fail clearly."""
    env = target.environment
    where = f"{target.name} ({mask(target.url)})"
    tables = set(sa.inspect(conn).get_table_names())
    current = revisions.current_revision(conn) if "alembic_version" in tables else None
    if current is not None:
        if current not in revisions.chain(env):
            raise UnknownRevision(
                f"{where} is at revision {current}, which novadb does not know "
                f"(a newer Nova?); upgrade novadb; nothing was changed"
            )
        return current, None
    if "migrate_version" in tables and env in LEGACY_RANGE:
        version = conn.execute(sa.text("SELECT version FROM migrate_version")).scalar()
        low, high = LEGACY_RANGE[env]
        if version is None or not low <= int(version) <= high:
            raise SchemaError(
                f"{where} is a sqlalchemy-migrate database at version {version}; novadb takes "
                f"over versions {low}-{high} (Train to Wallaby); upgrade it with that "
                "release's nova-manage first; nothing was changed"
            )
        return None, int(version)
    if tables - {"alembic_version"}:
        raise SchemaError(
            f"{where} has tables but no schema version; it is not a database novadb "
            "or Nova created; check the URL; nothing was changed"
        )
    return None, None


def _goal(environment: str, revision: str | None, release: str | None) -> str:
    if revision is not None:
        if revision in ("head", "heads"):
            return revisions.head(environment)
        matches = [r for r in revisions.chain(environment) if r.startswith(revision)]
        if len(matches) != 1:
            first, last = revisions.chain(environment)[0], revisions.head(environment)
            raise BadInput(
                f"unknown {environment} revision {revision!r}; the {environment} chain runs "
                f"from {first} to {last}; nothing was changed",
            )
        return matches[0]
    if release is not None:
        wanted = revisions_in(environment, release_index(release))
        chain = [r for r in revisions.chain(environment) if r in wanted]
        if not chain:
            raise BadInput(f"release {release} has no {environment} schema")
        return chain[-1]
    return revisions.head(environment)


def _plan_all(
    settings: Settings,
    database: str,
    *,
    revision: str | None,
    release: str | None,
    local_cell: bool,
    create: bool,
) -> list[_Plan]:
    if release is not None:
        release_index(release)  # validate before connecting anywhere
    plans: list[_Plan] = []
    for target in plan(settings, database, local_cell=local_cell, create=create):
        goal = _goal(target.environment, revision, release)
        reason = _shared_placement(settings, target)
        if reason is not None:
            if database == "placement":
                settings.placement_url()  # PlacementNotConfigured when it is only the fallback
                raise BadInput(f"{reason}: set [placement_database]/connection of its own")
            plans.append(_Plan(target, None, None, None, goal, skipped=reason))
            continue
        plans.append(_Plan(target, create_engine(target.url, create=create), None, None, goal))
    return plans


def _shared_placement(settings: Settings, target: Target) -> str | None:
    """Why Placement cannot be migrated here (it shares the API database), or None."""
    if target.environment != "placement" or not settings.placement_shares_api():
        return None
    if not settings.placement_configured:
        return PLACEMENT_NOT_CONFIGURED
    return "Placement shares the API database; Placement 16's schema needs its own database"


def _dispose(plans: list[_Plan]) -> None:
    for p in plans:
        if p.engine is not None:
            p.engine.dispose()


def sync(
    settings: Settings,
    database: str = "all",
    *,
    revision: str | None = None,
    release: str | None = None,
    local_cell: bool = False,
    sql: bool = False,
    progress: Progress = ignore,
) -> SyncResult:
    """Bring the chosen databases to ``revision``, ``release``'s heads, or head."""
    started = time.monotonic()
    if revision is not None and database == "all":
        raise BadInput("--revision needs --database api, main or placement")
    if sql:
        return _sync_offline(settings, database, revision, release, local_cell, started)
    plans = _plan_all(
        settings, database, revision=revision, release=release, local_cell=local_cell, create=True
    )
    try:
        blockers: list[str] = []
        for p in plans:
            if p.engine is None:
                continue
            with p.engine.connect() as conn:
                p.before, p.legacy = _inspect(conn, p.target)
                # A legacy database is stamped at the initial revision, then upgraded.
                start = revisions.chain(p.target.environment)[0] if p.legacy else p.before
                p.todo = _todo(p.target.environment, start, p.goal)
                checks = p.todo + (["legacy"] if p.legacy is not None else [])
                found: list[Finding] = find_blockers(conn, p.target.environment, checks)
            blockers += [f.describe(f"{p.target.name} ({mask(p.target.url)})") for f in found]
        if blockers:
            raise BlockerFound("sync blocked, nothing was migrated: " + "; ".join(blockers))
        results = [_run(p, progress) for p in plans]
    finally:
        _dispose(plans)
    return SyncResult(tuple(results), time.monotonic() - started)


def _todo(environment: str, current: str | None, goal: str) -> list[str]:
    chain = revisions.chain(environment)
    if current is not None and chain.index(current) >= chain.index(goal):
        return []
    return revisions.pending(environment, current, goal)


def _run(p: _Plan, progress: Progress) -> DatabaseSync:
    target = p.target
    url = mask(target.url)
    if p.engine is None:
        progress(Event("sync", "warning", f"{target.name}: skipped, {p.skipped}"))
        return DatabaseSync(target.name, target.environment, url, None, None, skipped=p.skipped)
    env = target.environment
    applied: list[str] = []
    progress(
        Event(
            "sync",
            "database",
            f"{target.name} ({url}): {p.before or 'empty'} -> {p.goal}",
            {"database": target.name, "pending": len(p.todo)},
        )
    )

    def on_apply(*, step: Any, **_kw: Any) -> None:
        rev = step.up_revision_id
        applied.append(rev)
        if step.is_stamp:  # a legacy database takes the initial revision as done
            message = f"{target.name}: legacy sqlalchemy-migrate version {p.legacy}, stamped {rev}"
        else:
            message = f"{target.name}: applied {rev} {revisions.describe(env, rev)}"
        progress(Event("sync", "revision", message, {"database": target.name, "revision": rev}))

    with database_lock(p.engine, "schema"), p.engine.connect() as conn:
        config = revisions.alembic_config(env)
        config.attributes.update(
            connection=conn, on_version_apply=on_apply, database_name=p.engine.url.database
        )
        # Another run may have moved this database while we waited for the lock:
        # look again, so a legacy stamp never sets a newer version back.
        _current, legacy = _inspect(conn, target)
        conn.commit()
        if legacy is not None:
            command.stamp(config, revisions.chain(env)[0])
            conn.commit()
        if p.todo:
            command.upgrade(config, p.goal)
        conn.commit()
        after = revisions.current_revision(conn)
    return DatabaseSync(target.name, env, url, p.before, after, tuple(applied))


def _sync_offline(
    settings: Settings,
    database: str,
    revision: str | None,
    release: str | None,
    local_cell: bool,
    started: float,
) -> SyncResult:
    """Render the DDL sync would run, without changing anything."""
    out = io.StringIO()
    results = []
    for target in plan(settings, database, local_cell=local_cell):
        env = target.environment
        goal = _goal(env, revision, release)
        current = None
        try:
            with engine_for(target.url) as engine, engine.connect() as conn:
                current, _legacy = _inspect(conn, target)
        except DatabaseUnreachable:
            current = None
        todo = _todo(env, current, goal)
        out.write(
            f"-- novadb sync --sql: {target.name} ({mask(target.url)}) "
            f"{current or 'empty'} -> {goal}\n"
        )
        if todo:
            config = revisions.alembic_config(env)
            config.output_buffer = out
            url = parse_url(target.url)
            config.attributes.update(offline_url=url, database_name=url.database)
            span = f"{current}:{goal}" if current else goal
            try:
                command.upgrade(config, span, sql=True)
            except Exception as exc:  # alembic refuses table rebuilds offline
                raise BadInput(
                    f"cannot render {target.name}'s DDL offline ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); run sync without --sql"
                ) from exc
        results.append(
            DatabaseSync(target.name, env, mask(target.url), current, current, tuple(todo))
        )
    return SyncResult(tuple(results), time.monotonic() - started, sql=out.getvalue())


def _release_of(environment: str, current: str | None) -> str | None:
    if current is None:
        return None
    chain = revisions.chain(environment)
    done = set(chain[: chain.index(current) + 1])
    satisfied = [i for i in range(len(RELEASES)) if revisions_in(environment, i) <= done]
    return release_label(satisfied[-1]) if satisfied else None


def version(
    settings: Settings, database: str = "all", *, local_cell: bool = False
) -> VersionResult:
    """Each database's current revision, head, pending count and release."""
    out = []
    for target in plan(settings, database, local_cell=local_cell):
        env = target.environment
        if _shared_placement(settings, target) is not None:
            continue
        with engine_for(target.url) as engine, engine.connect() as conn:
            current, legacy = _inspect(conn, target)
        head = revisions.head(env)
        pending = len(_todo(env, current, head))
        if legacy is not None:  # stamped at the initial revision, then the rest
            pending = len(revisions.chain(env)) - 1
        out.append(
            DatabaseVersion(
                target.name,
                env,
                mask(target.url),
                current,
                head,
                pending,
                _release_of(env, current),
            )
        )
    return VersionResult(tuple(out))
