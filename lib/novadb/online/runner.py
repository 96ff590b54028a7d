"""The ``online-migrate`` loop: batches until a batch finds nothing, or one run of --max-count.

Nova stops as soon as a whole batch is unmigratable and reports success;
here each migration walks its candidates with a cursor, so unmigratable rows
are reported (id and reason) and the loop goes on to the migratable ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from novadb import counts, dberrors, exit_codes
from novadb.batching import Adaptation, Faults, GaveUp, StopWhen
from novadb.cells import list_cells
from novadb.config import Settings
from novadb.connections import create_engine
from novadb.errors import (
    PLACEMENT_NOT_CONFIGURED,
    AccessDenied,
    BadArgument,
    BadInput,
    DatabaseFault,
    NovaDbError,
)
from novadb.fanout import cell_targets
from novadb.locking import DEFAULT_TIMEOUT, HeldLock, database_lock
from novadb.online.base import Context, Migration, Unmigratable
from novadb.online.registry import MIGRATIONS
from novadb.progress import Event, Progress, ignore

DATABASES = ("all", "main", "api", "placement")
SHARED_PLACEMENT = (
    "Placement shares the API database; skipping Placement's migrations (Placement "
    "needs a database of its own: set [placement_database]/connection)"
)


@dataclass
class MigrationResult:
    """Totals of one migration over every batch and cell of the run."""

    name: str
    database: str
    found: int = 0
    done: int = 0
    unmigratable: list[Unmigratable] = field(default_factory=list)
    error: str | None = None


@dataclass
class OnlineResult:
    """The run: per migration totals, batches, and how it ended."""

    migrations: list[MigrationResult]
    batches: int
    elapsed: float
    complete: bool
    failed: bool
    done: int
    max_count: int | None
    stopped: str | None = None
    retries: int = 0  # calls run again after a conflict that outlasted the statement's retries
    halvings: int = 0  # (batches are not split: a migration's batch is already small)
    reconnects: int = 0  # lost connections the run resumed from

    @property
    def exit_code(self) -> int:
        """nova-manage's: 2 a migration failed, 1 work done with --max-count, else 0."""
        if self.failed and (self.max_count is None or not self.done):
            return exit_codes.ONLINE_FAILED
        if self.max_count is not None and self.done:
            return exit_codes.ONLINE_MORE
        return exit_codes.ONLINE_DONE


@dataclass
class _Unit:
    migration: Migration
    context: Context
    result: MigrationResult
    state: dict[str, Any] = field(default_factory=dict)
    failed: bool = False
    # Found nothing after its cursor: nothing is left for it in this run.
    exhausted: bool = False


def validate(max_count: int | None, batch_size: int, database: str) -> None:
    """nova-manage's exit code 127 for a bad count, before anything is opened."""
    counts.max_count(max_count)
    if batch_size < 1:
        raise BadArgument("--batch-size must be a positive integer")
    if database not in DATABASES:
        raise BadArgument(f"--database must be one of {', '.join(DATABASES)}")


def _placement_engine(
    settings: Settings, database: str, engine: Callable[[str], Engine], progress: Progress
) -> Engine | None:
    """Placement's engine, or None (with a warning) when it has no database of its own.

    Placement's migrations never run on the API database (``sync`` skips it
    there too); asked for Placement alone, that is an error, not a no-op.
    """
    if not settings.placement_shares_api():
        return engine(settings.placement_url())
    if database == "placement":
        settings.placement_url()  # PlacementNotConfigured when it is only the fallback
        raise BadInput(
            "Placement shares the API database; its migrations need a database of its "
            "own: set [placement_database]/connection"
        )
    message = SHARED_PLACEMENT if settings.placement_configured else PLACEMENT_NOT_CONFIGURED
    progress(Event("online-migrate", "warning", message))
    return None


def online_migrate(
    settings: Settings,
    *,
    max_count: int | None = None,
    batch_size: int = 50,
    database: str = "all",
    all_cells: bool = False,
    progress: Progress = ignore,
    stop: threading.Event | None = None,
    lock_timeout: float = DEFAULT_TIMEOUT,
) -> OnlineResult:
    """Run every registered migration for ``database`` until done (or one --max-count run)."""
    validate(max_count, batch_size, database)
    started = time.monotonic()
    with ExitStack() as stack:
        engines: dict[str, Engine] = {}

        def engine(url: str) -> Engine:
            if url not in engines:
                engines[url] = create_engine(url)
                stack.callback(engines[url].dispose)
            return engines[url]

        api = engine(settings.url("api")) if database in ("all", "main", "api") else None
        placement = None
        if database in ("all", "placement"):
            placement = _placement_engine(settings, database, engine, progress)
        cells = cell_targets(settings, api, all_cells=all_cells) if api is not None else []
        cell_engines = [(c.name, c.identity, engine(c.url)) for c in cells]
        mapped = _mapped_cells(settings, api, engine, progress) if api is not None else []
        units = _units(settings, database, api, placement, cell_engines, mapped)
        # One online-migrate at a time (DESIGN's safety rule), held on the API
        # database, or on Placement's when only Placement is migrated.
        holder = api if api is not None else placement
        held = HeldLock()
        if holder is not None:
            held = stack.enter_context(
                database_lock(holder, "online-migrate", lock_timeout, progress=progress)
            )
        stop_when = StopWhen.after(None, stop)
        adapted = Adaptation()

        def retried(kind: str, exc: BaseException) -> None:
            what = "reconnecting" if kind == "lost" else "retrying"
            progress(Event("online-migrate", "retry", f"{what}: {dberrors.message(exc)}"))

        faults = Faults(stop_when, adapted, on_retry=retried)
        result = _loop(units, max_count, batch_size, progress, stop_when, faults, held)
        result.retries = adapted.retries
        result.reconnects = adapted.reconnects + held.reacquired
    result.elapsed = round(time.monotonic() - started, 3)
    return result


def _mapped_cells(
    settings: Settings, api: Engine, engine: Callable[[str], Engine], progress: Progress
) -> list[tuple[str, str, Engine]] | str:
    """Every mapped cell for the API migrations, which walk them all as Nova's do.

    A cell whose database cannot be opened is left out with a warning (its
    instance mappings are then reported, not migrated); when the mappings
    cannot be read at all, the reason.
    """
    try:
        cells = list_cells(api, settings.main)
    except NovaDbError as exc:
        return str(exc)
    out: list[tuple[str, str, Engine]] = []
    for c in cells:
        try:
            out.append((c.label, c.uuid or "", engine(c.url)))
        except NovaDbError as exc:
            progress(Event("online-migrate", "warning", f"cell {c.label} left out: {exc}"))
    return out


def _units(
    settings: Settings,
    database: str,
    api: Engine | None,
    placement: Engine | None,
    cells: list[tuple[str, str, Engine]],
    mapped: list[tuple[str, str, Engine]] | str,
) -> list[_Unit]:
    """One unit per migration and database: per cell target for ``main``, once for the others.

    ``mapped`` is every cell of ``cell_mappings`` (label, uuid, engine) for the
    API migrations, or why they could not be listed (those units then fail).
    """
    units: list[_Unit] = []
    results: dict[str, MigrationResult] = {}
    for m in MIGRATIONS:
        if database not in ("all", m.database) and not (
            database == "main" and m.database == "api"
        ):
            continue
        result = results.setdefault(m.name, MigrationResult(m.name, m.database))
        if m.database == "main":
            for name, _identity, eng in cells:
                units.append(
                    _Unit(m, Context(settings, main=eng, api=api, cell_name=name), result)
                )
        elif m.database == "api" and api is not None:
            if isinstance(mapped, str):
                result.error = mapped
                units.append(_Unit(m, Context(settings, api=api), result, failed=True))
            else:
                units.append(_Unit(m, Context(settings, api=api, cells=list(mapped)), result))
        elif m.database == "placement" and placement is not None:
            units.append(_Unit(m, Context(settings, placement=placement), result))
    return units


def _call(unit: _Unit, limit: int, faults: Faults) -> Any:
    """One call of a migration, run again (from the same cursor) after faults.

    A migration's writes are compare-and-swap updates, so a call cut off by a
    lost connection can run again: rows it already changed are no longer
    candidates.  Its cursor is put back first, so no candidate is skipped.
    """
    saved = dict(unit.state)

    def once() -> Any:
        unit.state.clear()
        unit.state.update(saved)
        return unit.migration.func(unit.context, limit, unit.state)

    return faults.call(once)


def _fault(exc: BaseException, done: int) -> NovaDbError:
    before = f"{done} rows migrated before that" if done else "nothing was migrated before that"
    if isinstance(exc, GaveUp):
        return DatabaseFault(
            f"online-migrate stopped: {exc.describe()}. {before}; each migration's batch is "
            "its own transaction and migrations are idempotent, so nothing is half-done. "
            "Run the same command again (on any node of the cluster) to finish"
        )
    assert isinstance(exc, DBAPIError)
    lacking = dberrors.privilege_problem(exc)
    if lacking is not None:
        return AccessDenied(f"online-migrate stopped: {lacking}; {before}. Grant it and run again")
    return DatabaseFault(f"online-migrate stopped: {dberrors.message(exc)}; {before}")


def _loop(  # noqa: C901 - nova-manage's batch loop: each exit (done, max-count, stop, fault) is one branch of it
    units: list[_Unit],
    max_count: int | None,
    batch_size: int,
    progress: Progress,
    stop: StopWhen,
    faults: Faults,
    held: HeldLock,
) -> OnlineResult:
    results: list[MigrationResult] = []
    for unit in units:
        if unit.result not in results:
            results.append(unit.result)
    batches = ran_total = 0
    complete = False
    stopped = None
    while True:
        batches += 1
        found_any = False
        ran = 0
        for unit in units:
            if unit.failed or unit.exhausted:
                continue
            limit = batch_size if max_count is None else max_count - ran
            if limit <= 0:
                break
            held.verify()  # LockLost: another run took over; stop here
            try:
                outcome = _call(unit, limit, faults)
            except GaveUp as exc:
                raise _fault(exc, ran_total + ran) from exc.cause
            except DBAPIError as exc:
                if dberrors.privilege_problem(exc) is None:
                    unit.failed = True
                    unit.result.error = dberrors.message(exc)
                    progress(Event(
                        "online-migrate", "warning",
                        f"{unit.migration.name} ({unit.context.cell_name}) failed: "
                        f"{unit.result.error}",
                    ))  # fmt: skip
                    continue
                raise _fault(exc, ran_total + ran) from exc
            except NovaDbError as exc:
                unit.failed = True
                unit.result.error = str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - Nova reports and goes on too
                unit.failed = True
                first = (str(exc).splitlines() or [""])[0]
                unit.result.error = f"{type(exc).__name__}: {first}"
                where = f"{unit.migration.name} ({unit.context.cell_name})"
                progress(
                    Event("online-migrate", "warning", f"{where} failed: {unit.result.error}")
                )
                continue
            unit.result.found += outcome.found
            unit.result.done += outcome.done
            unit.result.unmigratable += outcome.unmigratable
            found_any = found_any or outcome.seen > 0
            # Without --max-count a unit that looked at nothing is not asked again:
            # its cursor is past every candidate, and asking costs a scan.
            unit.exhausted = max_count is None and outcome.seen == 0
            ran += outcome.done
            if outcome.found:
                progress(Event(
                    "online-migrate", "batch",
                    f"{unit.migration.name} ({unit.context.cell_name}): {outcome.found} found, "
                    f"{outcome.done} migrated",
                    {"migration": unit.migration.name, "cell": unit.context.cell_name,
                     "found": outcome.found, "done": outcome.done, "batch": batches},
                ))  # fmt: skip
        ran_total += ran
        if max_count is not None:
            break
        if not found_any:
            complete = True
            break
        stopped = stop.reason()
        if stopped is not None:
            break
    return OnlineResult(
        migrations=results,
        batches=batches,
        elapsed=0.0,
        complete=complete,
        failed=any(u.failed for u in units),
        done=ran_total,
        max_count=max_count,
        stopped=stopped,
    )
