"""archive on real databases: every row ends in exactly one place, Nova's tree semantics.

Every test runs on SQLite and on MariaDB (the ``dbs`` parameter), on cells built
by ``novadb.schema.sync`` and filled by ``novadb.sample.cloud``.  Each test takes a
snapshot of every table of the cell database (live and shadow) and of the API
database's per-instance tables before and after, and checks the result three
ways: against invariants that need no model (nothing lost or duplicated, no
dangling reference, no soft-deleted row left live), against an independent
Python re-implementation of Nova's archive rules (:func:`simulate`, which
predicts exactly which rows move, batch by batch), and against the counts the
run reports.

The helpers here are also used by ``test_archive_property.py``.
"""

from __future__ import annotations

import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.archive import archive as archive_module
from novadb.archive.archive import ArchiveOptions, ArchiveResult, archive
from novadb.archive.graph import MODEL_EDGES, Edge, Graph, load_graph
from novadb.cells import CELL0_UUID
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.errors import LockTimeout
from novadb.locking import database_lock
from novadb.progress import Event
from novadb.sample.cloud import CloudSpec, map_cell, populate
from novadb.schema.sync import sync
from sqlalchemy.engine import Engine, make_url

Row = tuple[tuple[str, Any], ...]
Tables = dict[str, frozenset[Row]]

API_TABLES = ("instance_mappings", "request_specs", "instance_group_member")
# Legacy tables with a foreign key to instances.uuid that archive never moves.
BLOCKER_TABLES = ("fixed_ips", "consoles", "share_mapping")
# Every reference a live row may hold to a row archive moves: the model's edges,
# plus the legacy tables' foreign keys.
REFERENCES: tuple[Edge, ...] = (
    *MODEL_EDGES,
    *(Edge(t, "instance_uuid", "instances", "uuid") for t in ("fixed_ips", "consoles")),
)


# -- snapshots -----------------------------------------------------------------------


def as_dict(row: Row) -> dict[str, Any]:
    return dict(row)


def row_id(row: Row) -> Any:
    return as_dict(row)["id"]


def _dump(conn: sa.Connection, meta: sa.MetaData, names: list[str]) -> Tables:
    out: Tables = {}
    for name in names:
        table = meta.tables[name]
        columns = sorted(table.c.keys())
        rows = conn.execute(sa.select(*(table.c[c] for c in columns))).all()
        out[name] = frozenset(tuple(zip(columns, r, strict=True)) for r in rows)
    return out


# Reflected tables per database URL, so repeated snapshots do not reflect again;
# a copy of a database shares its source's entry (same_schema) until DDL
# changes it (forget_schema).
_REFLECTED: dict[str, tuple[sa.MetaData, list[str]]] = {}
_SAME_SCHEMA: dict[str, str] = {}


def _url_key(url: str | sa.URL) -> str:
    return make_url(url).render_as_string(hide_password=False)


def same_schema(copy: str, source: str) -> None:
    """``copy`` was copied from ``source``: snapshots may reuse its reflection."""
    key = _url_key(source)
    _SAME_SCHEMA[_url_key(copy)] = _SAME_SCHEMA.get(key, key)


def forget_schema(engine: Engine) -> None:
    key = _url_key(engine.url)
    _SAME_SCHEMA.pop(key, None)
    _REFLECTED.pop(key, None)


def _reflected(
    conn: sa.Connection, only: list[str] | None = None
) -> tuple[sa.MetaData, list[str]]:
    key = _url_key(conn.engine.url)
    key = _SAME_SCHEMA.get(key, key)
    if key not in _REFLECTED:
        names = only if only is not None else sorted(sa.inspect(conn).get_table_names())
        meta = sa.MetaData()
        meta.reflect(conn, only=names, resolve_fks=False)
        _REFLECTED[key] = (meta, names)
    return _REFLECTED[key]


@dataclass(frozen=True)
class Snapshot:
    """Every row of a cell database (live and shadow) and of the API's instance tables.

    Rows are tuples of (column, value) sorted by column name, so a live row and
    its shadow copy compare equal whatever the tables' column order.
    """

    live: Tables  # every table of the cell database that is not a shadow table
    shadow: Tables  # every shadow table, keyed by its live twin's name
    api: Tables  # the API tables archive deletes from

    def ids(self, table: str, *, shadow: bool = False) -> set[Any]:
        return {row_id(r) for r in (self.shadow if shadow else self.live)[table]}

    def rows(self, table: str) -> dict[Any, dict[str, Any]]:
        """Live rows of ``table`` by id, as dicts."""
        return {row_id(r): as_dict(r) for r in self.live[table]}


def snapshot(main: Engine, api: Engine | None) -> Snapshot:
    with main.connect() as conn:
        dumped = _dump(conn, *_reflected(conn))
    live = {n: rows for n, rows in dumped.items() if not n.startswith("shadow_")}
    shadow = {
        n.removeprefix("shadow_"): rows for n, rows in dumped.items() if n.startswith("shadow_")
    }
    api_rows: Tables = {}
    if api is not None:
        with api.connect() as conn:
            api_rows = _dump(conn, *_reflected(conn, list(API_TABLES)))
    return Snapshot(live, shadow, api_rows)


def graph_of(engine: Engine) -> Graph:
    with engine.connect() as conn:
        return load_graph(conn)


# -- model-free invariants -----------------------------------------------------------


def check_moves(
    before: Snapshot, after: Snapshot, *, disjoint: bool = True
) -> dict[str, set[Row]]:
    """Every row is where it was, or moved unchanged from live to shadow; return the moves.

    Per table: live rows only disappear, shadow rows only appear, and what left
    live is exactly what appeared in shadow (so the union of live and shadow is
    unchanged).  Tables without a shadow twin are untouched.  With
    ``disjoint``, no id is both live and in shadow afterwards.
    """
    assert after.live.keys() == before.live.keys()
    assert after.shadow.keys() == before.shadow.keys()
    moved: dict[str, set[Row]] = {}
    for table, was in before.live.items():
        now = after.live[table]
        if table not in before.shadow:
            assert now == was, f"{table} has no shadow twin, yet it changed"
            continue
        gone, new = was - now, after.shadow[table] - before.shadow[table]
        assert now <= was, f"{table}: live rows appeared or changed"
        assert before.shadow[table] <= after.shadow[table], f"shadow_{table}: rows lost"
        assert gone == new, f"{table}: rows that left live != rows that reached shadow_{table}"
        assert now | after.shadow[table] == was | before.shadow[table]
        if disjoint and "id" in {c for r in now for c, _ in r}:
            both = {row_id(r) for r in now} & after.ids(table, shadow=True)
            assert not both, f"{table}: ids both live and in shadow: {sorted(both)}"
        if gone:
            moved[table] = set(gone)
    for table in before.shadow.keys() - before.live.keys():
        assert after.shadow[table] == before.shadow[table], f"shadow_{table} changed"
    return moved


def dangling(after: Snapshot, moved: Mapping[str, set[Row]]) -> list[str]:
    """Live rows that reference a row archive moved, through any model edge or legacy FK."""
    out = []
    for edge in REFERENCES:
        if edge.parent not in moved or edge.child not in after.live:
            continue
        gone = {as_dict(r)[edge.parent_column] for r in moved[edge.parent]} - {None}
        for row in after.live[edge.child]:
            value = as_dict(row)[edge.column]
            if value in gone:
                out.append(f"{edge.child}.{edge.column}={value} -> archived {edge.parent}")
    return out


def soft_deleted_live(after: Snapshot, graph: Graph) -> dict[str, set[Any]]:
    """Ids of live rows with deleted != 0, per archivable table."""
    out: dict[str, set[Any]] = {}
    for table in graph.tables:
        ids = {i for i, d in after.rows(table).items() if d["deleted"]}
        if ids:
            out[table] = ids
    return out


def check_api(before: Snapshot, after: Snapshot, moved: Mapping[str, set[Row]]) -> None:
    """API rows of archived instances are gone; every other API row is still there."""
    archived = {as_dict(r)["uuid"] for r in moved.get("instances", set())}
    for table in API_TABLES:
        kept = {r for r in before.api[table] if as_dict(r)["instance_uuid"] not in archived}
        assert after.api[table] == kept, table


def counts_of(before: Snapshot, after: Snapshot, moved: Mapping[str, set[Row]]) -> dict[str, int]:
    """What result.rows must say, from the snapshots alone."""
    rows = {table: len(r) for table, r in moved.items()}
    if moved.get("instances"):
        for table in API_TABLES:
            rows[f"API_DB.{table}"] = len(before.api[table] - after.api[table])
    return rows


# -- the model: Nova's rules, re-implemented on snapshots ----------------------------


def own_eligible(
    table: str, row: Mapping[str, Any], before: datetime | None, task_log: bool
) -> bool:
    """Nova's rule for a row to move on its own (including its task_log quirk)."""
    if table == "task_log" and task_log:
        return before is None or (row["updated_at"] is not None and row["updated_at"] < before)
    if not row["deleted"]:
        return False
    if before is not None and table != "task_log":
        return row["deleted_at"] is not None and row["deleted_at"] < before
    return True


@dataclass
class Plan:
    """What an archive run must do, predicted from a snapshot."""

    moved: dict[str, set[Row]]
    api_moved: dict[str, set[Row]]
    batches: int
    complete: bool
    stopped: str | None
    failed: list[str]
    held_back: dict[str, int]
    roots: list[tuple[str, list[Any]]] = field(default_factory=list)  # per batch

    def rows(self, prefix: str = "") -> dict[str, int]:
        """The cell's part of result.rows (API keys unprefixed, as _combine makes them)."""
        out = {f"{prefix}{t}": len(r) for t, r in self.moved.items() if r}
        if self.moved.get("instances"):
            out.update({f"API_DB.{t}": len(r) for t, r in self.api_moved.items()})
        return out

    @property
    def total(self) -> int:
        return sum(len(r) for r in self.moved.values())

    def apply(self, snap: Snapshot) -> Snapshot:
        """The snapshot after the run."""
        live = {t: rows - self.moved.get(t, set()) for t, rows in snap.live.items()}
        shadow = {t: rows | self.moved.get(t, set()) for t, rows in snap.shadow.items()}
        api = {t: rows - self.api_moved.get(t, set()) for t, rows in snap.api.items()}
        return Snapshot(
            {t: frozenset(r) for t, r in live.items()},
            {t: frozenset(r) for t, r in shadow.items()},
            {t: frozenset(r) for t, r in api.items()},
        )


def simulate(
    snap: Snapshot,
    graph: Graph,
    *,
    before: datetime | None = None,
    task_log: bool = False,
    batch_size: int = 1000,
    until_complete: bool = True,
    failed: tuple[str, ...] = (),
    conflicts: Mapping[str, set[Any]] | None = None,
    max_batches: int | None = None,
) -> Plan:
    """Run archive's algorithm on a snapshot.

    Passes over ``graph.tables`` in order; each table walked by id in batches
    of ``batch_size`` eligible root rows, each batch moving its roots and every
    row below them.  Without ``until_complete``, ``batch_size`` is a budget of
    root rows for the whole run.  ``failed`` tables (shadow drift) never move;
    a batch whose roots include a ``conflicts`` id fails and ends its table for
    the run; ``max_batches`` models a stop request after that many batches.
    """
    conflicts = conflicts or {}
    view = {t: {row_id(r): as_dict(r) for r in snap.live[t]} for t in graph.tables}
    rows = {t: {row_id(r): r for r in snap.live[t]} for t in graph.tables}
    blocked = {
        as_dict(r)["instance_uuid"] for t in BLOCKER_TABLES for r in snap.live.get(t, ())
    } - {None}

    def eligible(table: str, row: Mapping[str, Any]) -> bool:
        if not own_eligible(table, row, before, task_log):
            return False
        return not (table == "instances" and row["uuid"] in blocked)

    def closure(root: str, ids: list[Any]) -> dict[str, set[Any]]:
        out: dict[str, set[Any]] = {root: set(ids)}
        todo = [root]
        while todo:
            parent = todo.pop()
            for edge in graph.children(parent):
                values = {view[parent][i][edge.parent_column] for i in out[parent]} - {None}
                hit = {i for i, d in view[edge.child].items() if d[edge.column] in values}
                if not hit <= out.get(edge.child, set()):
                    out.setdefault(edge.child, set()).update(hit)
                    todo.append(edge.child)
        return out

    moved: dict[str, set[Row]] = {}
    failures = list(failed)
    budget = None if until_complete else batch_size
    batches = 0
    stopped: str | None = None
    roots: list[tuple[str, list[Any]]] = []
    while stopped is None:
        moved_in_pass = 0
        for table in graph.tables:
            if table in failures:
                continue
            after = 0
            while True:
                if max_batches is not None and batches >= max_batches:
                    stopped = "interrupted"
                    break
                limit = batch_size if budget is None else min(batch_size, budget)
                if limit == 0:
                    stopped = "budget"
                    break
                candidates = sorted(
                    i for i, d in view[table].items() if i > after and eligible(table, d)
                )[:limit]
                if not candidates:
                    break
                if set(candidates) & conflicts.get(table, set()):
                    failures.append(table)
                    break
                for name, ids in closure(table, candidates).items():
                    for i in ids:
                        moved.setdefault(name, set()).add(rows[name].pop(i))
                        del view[name][i]
                        moved_in_pass += 1
                batches += 1
                roots.append((table, candidates))
                after = candidates[-1]
                if budget is not None:
                    budget -= len(candidates)
            if stopped is not None:
                break
        if stopped is not None or not until_complete or moved_in_pass == 0:
            break
    if stopped is not None:
        complete = False
    elif until_complete:
        complete = not failures
    else:
        left = any(eligible(t, d) for t in graph.tables for d in view[t].values())
        complete = bool(budget) and not failures and not left
    uuids = {as_dict(r)["uuid"] for r in moved.get("instances", set())}
    api_moved = {
        t: {r for r in snap.api.get(t, frozenset()) if as_dict(r)["instance_uuid"] in uuids}
        for t in API_TABLES
    }
    held = sum(
        1
        for d in view["instances"].values()
        if own_eligible("instances", d, before, task_log) and d["uuid"] in blocked
    )
    return Plan(
        moved=moved,
        api_moved=api_moved,
        batches=batches,
        complete=complete,
        stopped=stopped,
        failed=failures,
        held_back={"instances": held} if held else {},
        roots=roots,
    )


def assert_state(actual: Snapshot, expected: Snapshot, context: str = "") -> None:
    """The two snapshots hold the same rows; on failure, name tables and ids."""
    problems = []
    for kind in ("live", "shadow", "api"):
        mine, theirs = getattr(actual, kind), getattr(expected, kind)
        assert mine.keys() == theirs.keys(), kind
        for table in sorted(mine):
            if mine[table] != theirs[table]:
                extra = sorted(str(as_dict(r).get("id")) for r in mine[table] - theirs[table])
                missing = sorted(str(as_dict(r).get("id")) for r in theirs[table] - mine[table])
                problems.append(f"{kind} {table}: unexpected ids {extra}, missing ids {missing}")
    assert not problems, "\n".join([*problems, context])


# -- databases -----------------------------------------------------------------------


@dataclass
class Cloud:
    """One cell database and its API database, with open engines."""

    settings: Settings
    main: Engine
    api: Engine

    def snapshot(self) -> Snapshot:
        return snapshot(self.main, self.api)

    def graph(self) -> Graph:
        return graph_of(self.main)

    def execute(self, sql: str, **params: Any) -> None:
        with self.main.begin() as conn:
            conn.execute(sa.text(sql), params)
        if sql.startswith("ALTER"):
            forget_schema(self.main)

    def insert(self, table: str, **values: Any) -> None:
        self.insert_rows(table, [values])

    def insert_rows(self, table: str, rows: list[dict[str, Any]]) -> None:
        with self.main.begin() as conn:
            insert = sa.insert(sa.Table(table, sa.MetaData(), autoload_with=conn))
            for row in rows:  # one transaction; rows may name different columns
                conn.execute(insert, row)

    def archive(self, **options: Any) -> ArchiveResult:
        return archive(self.settings, ArchiveOptions(**options))


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def _clone_mysql(source: Engine, target: Engine) -> None:
    """Copy every table (DDL with its foreign keys, and rows) of one database into another."""
    database = source.url.database
    with source.connect() as conn:
        names = [
            r[0] for r in conn.exec_driver_sql("SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'")
        ]
        ddl = [conn.exec_driver_sql(f"SHOW CREATE TABLE `{n}`").one()[1] for n in names]
    raw = target.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("SET SESSION foreign_key_checks = 0")
        for name, create in zip(names, ddl, strict=True):
            cursor.execute(create)
            cursor.execute(f"INSERT INTO `{name}` SELECT * FROM `{database}`.`{name}`")
        raw.commit()
    finally:
        raw.close()


class Databases:
    """Fresh, synced databases of one dialect, and clones of populated ones."""

    def __init__(
        self, dialect: str, directory: Path, template: Path, mysql_dbs: Callable[[], str] | None
    ) -> None:
        self.dialect = dialect
        self.directory = directory
        self.template = template
        self.mysql_dbs = mysql_dbs
        self.engines: list[Engine] = []

    def engine(self, url: str) -> Engine:
        engine = create_engine(url)
        self.engines.append(engine)
        return engine

    def _new_sqlite(self, kind: str) -> str:
        path = self.directory / f"{kind}-{uuid.uuid4().hex[:8]}.sqlite"
        shutil.copy(self.template / f"{kind}.sqlite", path)
        same_schema(_sqlite_url(path), _sqlite_url(self.template / f"{kind}.sqlite"))
        return _sqlite_url(path)

    def urls(self, cells: int = 1) -> tuple[str, list[str]]:
        """An API database and ``cells`` cell databases, all synced, none mapped."""
        if self.mysql_dbs is None:
            return self._new_sqlite("api"), [self._new_sqlite("main") for _ in range(cells)]
        api, mains = self.mysql_dbs(), [self.mysql_dbs() for _ in range(cells)]
        sync(load_settings(database=mains[0], api_database=api), "api")
        for main in mains:
            sync(load_settings(database=main, api_database=api), "main", local_cell=True)
        return api, mains

    def cloud(self) -> Cloud:
        api, [main] = self.urls()
        return self._open(main, api)

    def _open(self, main: str, api: str) -> Cloud:
        settings = load_settings(database=main, api_database=api)
        return Cloud(settings, self.engine(main), self.engine(api))

    def clone(self, cloud: Cloud) -> Cloud:
        """A second cloud holding exactly the rows of ``cloud``."""
        if self.mysql_dbs is None:
            urls = []
            for engine in (cloud.main, cloud.api):
                assert engine.url.database is not None
                copy = self.directory / f"clone-{uuid.uuid4().hex[:8]}.sqlite"
                shutil.copy(engine.url.database, copy)
                urls.append(_sqlite_url(copy))
        else:
            urls = [self.mysql_dbs(), self.mysql_dbs()]
            _clone_mysql(cloud.main, self.engine(urls[0]))
            _clone_mysql(cloud.api, self.engine(urls[1]))
        same_schema(urls[0], _url_key(cloud.main.url))
        same_schema(urls[1], _url_key(cloud.api.url))
        return self._open(urls[0], urls[1])

    def close(self) -> None:
        for engine in self.engines:
            engine.dispose()


def sqlite_template_dir(directory: Path) -> Path:
    """Synced API and cell SQLite databases, to copy from."""
    settings = load_settings(
        database=_sqlite_url(directory / "main.sqlite"),
        api_database=_sqlite_url(directory / "api.sqlite"),
    )
    sync(settings, "api")
    sync(settings, "main", local_cell=True)
    return directory


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template_dir(tmp_path_factory.mktemp("archive-template"))


DIALECTS = ["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)]


def open_databases(
    request: pytest.FixtureRequest, directory: Path, template: Path
) -> Iterator[Databases]:
    """The body of a ``dbs`` fixture parametrized with DIALECTS."""
    mysql = request.getfixturevalue("mysql_dbs") if request.param == "mariadb" else None
    databases = Databases(request.param, directory, template, mysql)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture(params=DIALECTS)
def dbs(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[Databases]:
    yield from open_databases(request, tmp_path, sqlite_template)


SPEC = CloudSpec(instances=150, deleted_fraction=0.5, orphan_fraction=0.25, seed=11)


@pytest.fixture
def cloud(dbs: Databases) -> Cloud:
    """A cell of 150 instances, half deleted, a quarter of those orphans."""
    c = dbs.cloud()
    populate(c.main, c.api, SPEC)
    return c


def deleted_instances(snap: Snapshot) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deleted instances in id order: (normal, orphans whose children stayed live)."""
    extra_deleted = {
        as_dict(r)["instance_uuid"]: as_dict(r)["deleted"] for r in snap.live["instance_extra"]
    }
    normal, orphans = [], []
    for _id, row in sorted(snap.rows("instances").items()):
        if row["deleted"]:
            (normal if extra_deleted[row["uuid"]] else orphans).append(row)
    return normal, orphans


def tree_rows(snap: Snapshot, graph: Graph, instance_uuid: str) -> dict[str, set[Any]]:
    """Ids of every live row of one instance's tree (actions' events included), by table."""
    out: dict[str, set[Any]] = {}
    for edge in graph.children("instances"):
        ids = {i for i, d in snap.rows(edge.child).items() if d[edge.column] == instance_uuid}
        if ids:
            out[edge.child] = ids
    actions = out.get("instance_actions", set())
    events = {
        i for i, d in snap.rows("instance_actions_events").items() if d["action_id"] in actions
    }
    if events:
        out["instance_actions_events"] = events
    return out


def check_run(
    before: Snapshot,
    after: Snapshot,
    result: ArchiveResult,
    plan: Plan,
    *,
    disjoint: bool = True,
) -> dict[str, set[Row]]:
    """The run did what the plan says, and the model-free invariants hold."""
    moved = check_moves(before, after, disjoint=disjoint)
    assert dangling(after, moved) == []
    check_api(before, after, moved)
    assert result.rows == counts_of(before, after, moved)
    context = f"run: {result.failures} {result.batches} batches; plan: {plan.failed} {plan.roots}"
    assert_state(after, plan.apply(before), context)
    assert result.rows == plan.rows()
    assert result.total == plan.total
    assert result.batches == plan.batches
    assert result.complete is plan.complete
    assert result.stopped == plan.stopped
    assert result.held_back == plan.held_back
    assert result.dry_run is False
    return moved


# -- until complete ------------------------------------------------------------------


def test_until_complete_moves_every_tree_whole(cloud: Cloud) -> None:
    before = cloud.snapshot()
    graph = cloud.graph()
    normal, orphans = deleted_instances(before)
    assert len(normal) > 20 and len(orphans) > 10  # the sample has both kinds

    result = cloud.archive(until_complete=True, batch_size=25)
    after = cloud.snapshot()

    check_run(before, after, result, simulate(before, graph, batch_size=25))
    assert result.failures == []
    assert result.complete is True
    assert result.stopped is None
    # Nothing soft-deleted is left live.
    assert soft_deleted_live(after, graph) == {}
    # Every deleted instance left with its whole tree, orphans' live children included.
    archived = after.ids("instances", shadow=True)
    assert archived == {d["id"] for d in normal + orphans}
    for orphan in orphans:
        tree = tree_rows(before, graph, orphan["uuid"])
        for table, ids in tree.items():
            assert {before.rows(table)[i]["deleted"] for i in ids} == {0}, table
            assert ids <= after.ids(table, shadow=True), table
            assert not ids & after.ids(table), table
    # Live instances keep their trees and API rows.
    for inst in after.rows("instances").values():
        assert tree_rows(after, graph, inst["uuid"]) == tree_rows(before, graph, inst["uuid"])
    live_uuids = {d["uuid"] for d in after.rows("instances").values()}
    for table in API_TABLES:
        assert {as_dict(r)["instance_uuid"] for r in after.api[table]} <= live_uuids
    assert len(after.api["instance_mappings"]) == len(live_uuids)
    assert result.rows["API_DB.instance_mappings"] == len(normal) + len(orphans)
    assert result.total == sum(v for k, v in result.rows.items() if not k.startswith("API_DB."))

    again = cloud.archive(until_complete=True, batch_size=25)
    assert again.rows == {}
    assert again.total == 0
    assert again.batches == 0
    assert again.complete is True
    assert_state(cloud.snapshot(), after)


def test_dry_run_counts_equal_the_real_run_and_change_nothing(cloud: Cloud) -> None:
    before = cloud.snapshot()

    dry = cloud.archive(dry_run=True, batch_size=10)
    assert_state(cloud.snapshot(), before)
    assert dry.dry_run is True
    assert dry.complete is True
    assert dry.batches == 0
    assert dry.failures == []

    real = cloud.archive(until_complete=True)
    assert real.rows == dry.rows
    assert real.total == dry.total
    assert {k for k in dry.rows if k.startswith("API_DB.")} == {f"API_DB.{t}" for t in API_TABLES}
    assert dry.held_back == real.held_back == {}
    check_moves(before, cloud.snapshot())


def test_dry_run_after_a_partial_run_counts_what_is_left(cloud: Cloud) -> None:
    cloud.archive(batch_size=30)  # one budgeted run: part of the work
    middle = cloud.snapshot()
    plan = simulate(middle, cloud.graph())

    dry = cloud.archive(dry_run=True)
    assert dry.rows == plan.rows()
    assert_state(cloud.snapshot(), middle)


# -- --before ------------------------------------------------------------------------

BEFORE = datetime(2024, 7, 1)


def test_before_moves_only_parents_deleted_before_the_date(cloud: Cloud) -> None:
    start = cloud.snapshot()
    graph = cloud.graph()
    normal, _orphans = deleted_instances(start)
    old = [d for d in normal if d["deleted_at"] < BEFORE]
    new = [d for d in normal if d["deleted_at"] >= BEFORE]
    assert len(old) > 3 and len(new) > 3
    # A deleted instance without deleted_at never moves with --before ...
    no_date = old[0]
    cloud.execute("UPDATE instances SET deleted_at = NULL WHERE id = :id", id=no_date["id"])
    # ... one deleted long ago takes its children even if they were deleted after the date ...
    follows = old[1]
    cloud.execute(
        "UPDATE instance_system_metadata SET deleted_at = :late WHERE instance_uuid = :u",
        late=datetime(2030, 1, 1),
        u=follows["uuid"],
    )
    # ... and soft-deleted children of a live instance go on their own when old enough.
    live = next(d for d in start.rows("instances").values() if not d["deleted"])
    metadata = sorted(
        i for i, d in start.rows("instance_metadata").items() if d["instance_uuid"] == live["uuid"]
    )
    cloud.execute(
        "UPDATE instance_metadata SET deleted = id, deleted_at = :at WHERE id = :id",
        at=datetime(2024, 2, 1),
        id=metadata[0],
    )
    cloud.execute(
        "UPDATE instance_metadata SET deleted = id, deleted_at = :at WHERE id = :id",
        at=datetime(2024, 9, 1),
        id=metadata[1],
    )
    before = cloud.snapshot()

    dry = cloud.archive(dry_run=True, before=BEFORE)
    result = cloud.archive(until_complete=True, before=BEFORE, batch_size=20)
    after = cloud.snapshot()

    check_run(before, after, result, simulate(before, graph, before=BEFORE, batch_size=20))
    assert dry.rows == result.rows
    moved_instances = {as_dict(r)["id"]: as_dict(r) for r in after.shadow["instances"]}
    assert moved_instances
    assert all(
        d["deleted_at"] is not None and d["deleted_at"] < BEFORE for d in moved_instances.values()
    )
    assert no_date["id"] in after.ids("instances")
    assert {d["id"] for d in new} <= after.ids("instances")
    assert follows["id"] in moved_instances
    late = tree_rows(before, graph, follows["uuid"])["instance_system_metadata"]
    assert len(late) == 8 and late <= after.ids("instance_system_metadata", shadow=True)
    assert metadata[0] in after.ids("instance_metadata", shadow=True)
    assert metadata[1] in after.ids("instance_metadata")
    assert live["id"] in after.ids("instances")


# -- task_log ------------------------------------------------------------------------

OLD, NEW = datetime(2023, 6, 1), datetime(2025, 6, 1)
# name: (deleted, deleted_at, updated_at)
TASK_LOG = {
    "live-old": (False, None, OLD),
    "live-new": (False, None, NEW),
    "live-undated": (False, None, None),
    "deleted-new": (True, NEW, NEW),
    "deleted-old": (True, OLD, OLD),
    "deleted-undated": (True, None, None),
}


TASK_LOG_CASES = [
    # --task-log: every row (never soft-deleted in Nova), dated by updated_at.
    (True, None, set(TASK_LOG)),
    (True, datetime(2024, 1, 1), {"live-old", "deleted-old"}),
    # Without it: soft-deleted rows only, and --before does not filter them.
    (False, None, {"deleted-new", "deleted-old", "deleted-undated"}),
    (False, datetime(2024, 1, 1), {"deleted-new", "deleted-old", "deleted-undated"}),
]


def test_task_log_rows(dbs: Databases) -> None:
    """The four combinations of --task-log and --before, one after the other on one cell."""
    cloud = dbs.cloud()
    for task_log, before, moves in TASK_LOG_CASES:
        case = f"task_log={task_log} before={before}"
        cloud.execute("DELETE FROM task_log")
        cloud.execute("DELETE FROM shadow_task_log")
        cloud.insert_rows(
            "task_log",
            [
                {
                    "id": n,
                    "task_name": "instance_usage_audit",
                    "state": "DONE",
                    "host": name,
                    "period_beginning": datetime(2023, 1, 1),
                    "period_ending": datetime(2023, 2, 1),
                    "message": "done",
                    "created_at": OLD,
                    "updated_at": updated_at,
                    "deleted_at": deleted_at,
                    "deleted": n if deleted else 0,
                }
                for n, (name, (deleted, deleted_at, updated_at)) in enumerate(
                    TASK_LOG.items(), start=1
                )
            ],
        )
        before_snap = cloud.snapshot()
        plan = simulate(before_snap, cloud.graph(), before=before, task_log=task_log)

        dry = cloud.archive(dry_run=True, task_log=task_log, before=before)
        result = cloud.archive(until_complete=True, task_log=task_log, before=before)
        after = cloud.snapshot()

        check_run(before_snap, after, result, plan)
        assert {as_dict(r)["host"] for r in after.shadow["task_log"]} == moves, case
        assert {as_dict(r)["host"] for r in after.live["task_log"]} == set(TASK_LOG) - moves, case
        assert result.rows == dry.rows == {"task_log": len(moves)}, case


# -- the other trees -----------------------------------------------------------------


def test_security_group_quota_and_compute_node_trees(dbs: Databases) -> None:
    cloud = dbs.cloud()
    populate(cloud.main, cloud.api, CloudSpec(instances=10, deleted_fraction=0.5, seed=3))
    start = cloud.snapshot()
    live = sorted(i for i, d in start.rows("instances").items() if not d["deleted"])
    dead = sorted(i for i, d in start.rows("instances").items() if d["deleted"])
    uuid_of = {i: d["uuid"] for i, d in start.rows("instances").items()}
    gone = datetime(2024, 5, 1)
    cloud.insert_rows(
        "security_groups",
        [
            {"id": 1, "name": "old", "project_id": "p", "deleted": 1, "deleted_at": gone},
            {"id": 2, "name": "web", "project_id": "p", "deleted": 0},
        ],
    )
    cloud.insert_rows(
        "security_group_rules",
        [
            # Hangs off the deleted group: goes with it.
            {"id": 1, "parent_group_id": 1, "group_id": None, "protocol": "tcp", "deleted": 0},
            # Live group, but allows traffic from the deleted one: goes too (group_id edge).
            {"id": 2, "parent_group_id": 2, "group_id": 1, "protocol": "tcp", "deleted": 0},
            # Live group, no reference to the deleted one: stays.
            {"id": 3, "parent_group_id": 2, "group_id": 2, "protocol": "udp", "deleted": 0},
        ],
    )
    cloud.insert_rows(
        "security_group_instance_association",
        [
            {"id": 1, "security_group_id": 1, "instance_uuid": uuid_of[live[0]], "deleted": 0},
            {"id": 2, "security_group_id": 2, "instance_uuid": uuid_of[dead[0]], "deleted": 0},
            {"id": 3, "security_group_id": 2, "instance_uuid": uuid_of[live[0]], "deleted": 0},
        ],
    )
    cloud.insert_rows(
        "quota_usages",
        [
            {"id": 1, "project_id": "p", "resource": "cores", "in_use": 0, "reserved": 0,
             "deleted": 1, "deleted_at": gone},
            {"id": 2, "project_id": "p", "resource": "ram", "in_use": 0, "reserved": 0,
             "deleted": 0},
        ],
    )  # fmt: skip
    cloud.insert_rows(
        "reservations",
        [
            {"id": n, "uuid": str(uuid.uuid4()), "usage_id": usage, "delta": 1, "deleted": 0}
            for n, usage in ((1, 1), (2, 1), (3, 2))
        ],
    )
    node = min(i for i, d in start.rows("compute_nodes").items() if d["deleted"])
    cloud.insert_rows(
        "pci_devices",
        [
            {"id": 1, "compute_node_id": node, "address": "0000:00:01.0", "product_id": "1",
             "vendor_id": "8086", "dev_type": "type-PCI", "label": "l", "status": "available",
             "deleted": 0},
        ],
    )  # fmt: skip
    before = cloud.snapshot()
    graph = cloud.graph()

    dry = cloud.archive(dry_run=True)
    result = cloud.archive(until_complete=True, batch_size=1)
    after = cloud.snapshot()

    check_run(before, after, result, simulate(before, graph, batch_size=1))
    assert dry.rows == result.rows
    assert after.ids("security_groups") == {2}
    assert after.ids("security_group_rules", shadow=True) == {1, 2}
    assert after.ids("security_group_instance_association", shadow=True) == {1, 2}
    assert after.ids("quota_usages") == {2}
    assert after.ids("reservations") == {3}
    assert after.ids("pci_devices") == set()
    assert soft_deleted_live(after, graph) == {}


# -- budgeted runs -------------------------------------------------------------------


def test_batch_size_is_a_parent_budget_and_runs_converge(dbs: Databases, cloud: Cloud) -> None:
    graph = cloud.graph()
    reference = dbs.clone(cloud)
    start = cloud.snapshot()
    runs = 0
    before = start
    while True:
        plan = simulate(before, graph, batch_size=12, until_complete=False)
        result = cloud.archive(batch_size=12)
        after = cloud.snapshot()
        check_run(before, after, result, plan)
        before = after
        # At most 12 parent rows per run, their children along.
        assert sum(len(ids) for _t, ids in plan.roots) <= 12
        runs += 1
        if result.complete:
            assert result.stopped is None
            break
        assert result.stopped == "budget"
        assert runs < 100
    assert runs > 5

    full = reference.archive(until_complete=True)
    assert_state(cloud.snapshot(), reference.snapshot())
    assert full.total == sum(len(r) for r in simulate(start, graph).moved.values())


def test_row_bound_splits_a_heavy_tree_and_ends_in_the_same_state(
    cloud: Cloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of a tree with many rows per parent stay near the row bound, not --batch-size.

    The bound divides by the rows per parent seen so far in the run (the
    server's statistics before the first batch, if any), so one batch may pass
    it a little; the end state is the one batches of --batch-size give.
    """
    before = cloud.snapshot()
    graph = cloud.graph()
    bound = 200  # about ten deleted instances with their children
    monkeypatch.setattr(archive_module, "DEFAULT_MAX_ROWS", bound)
    events: list[Event] = []
    options = ArchiveOptions(until_complete=True, batch_size=20)
    result = archive(cloud.settings, options, progress=events.append)
    after = cloud.snapshot()

    moved = check_moves(before, after)
    assert dangling(after, moved) == []
    check_api(before, after, moved)
    plan = simulate(before, graph, batch_size=20)
    assert_state(after, plan.apply(before))
    assert result.rows == plan.rows()
    assert result.complete is True
    assert result.failures == []
    batches = [e.data for e in events if e.kind == "batch"]
    sizes = [int(str(b["rows"])) for b in batches if b["table"] == "instances"]
    unbounded = [ids for table, ids in plan.roots if table == "instances"]
    assert len(sizes) > len(unbounded)
    assert max(sizes[1:]) <= 2 * bound
    assert result.batches == len(batches)


def test_budget_exhausted_exactly_reports_budget_not_complete(dbs: Databases) -> None:
    """Pins a quirk: a budget used up by the last eligible rows still says 'budget'."""
    cloud = dbs.cloud()
    populate(
        cloud.main,
        cloud.api,
        CloudSpec(instances=10, deleted_fraction=0.0, hosts=2, deleted_hosts=2),
    )
    before = cloud.snapshot()
    assert len(soft_deleted_live(before, cloud.graph())["services"]) == 2

    # Two deleted compute nodes and two deleted services: four parent rows.
    result = cloud.archive(batch_size=4)
    assert result.rows == {"compute_nodes": 2, "services": 2}
    assert result.stopped == "budget"
    assert result.complete is False

    again = cloud.archive(batch_size=4)
    assert again.rows == {}
    assert again.complete is True
    assert again.stopped is None


# -- held back -----------------------------------------------------------------------


def test_rows_referenced_from_legacy_tables_are_held_back(cloud: Cloud) -> None:
    start = cloud.snapshot()
    graph = cloud.graph()
    normal, orphans = deleted_instances(start)
    pinned_orphan, pinned = orphans[0], normal[0]
    cloud.insert(
        "fixed_ips",
        id=1,
        address="10.0.0.5",
        instance_uuid=pinned_orphan["uuid"],
        allocated=True,
        leased=True,
        reserved=False,
        deleted=0,
    )
    cloud.insert(
        "share_mapping",
        id=1,
        uuid=str(uuid.uuid4()),
        instance_uuid=pinned["uuid"],
        share_id=str(uuid.uuid4()),
        status="active",
        tag="data",
        export_location="10.0.0.9:/share",
        share_proto="NFS",
    )
    before = cloud.snapshot()
    plan = simulate(before, graph, batch_size=10)
    assert plan.held_back == {"instances": 2}

    dry = cloud.archive(dry_run=True)
    result = cloud.archive(until_complete=True, batch_size=10)
    after = cloud.snapshot()

    check_run(before, after, result, plan)
    assert result.failures == []
    assert result.complete is True
    assert result.held_back == dry.held_back == {"instances": 2}
    assert dry.rows == result.rows
    # The two instances stay live, unchanged, with their API rows.
    assert soft_deleted_live(after, graph) == {"instances": {pinned_orphan["id"], pinned["id"]}}
    for inst in (pinned_orphan, pinned):
        assert after.rows("instances")[inst["id"]] == inst
        for table in API_TABLES:
            mine = {r for r in before.api[table] if as_dict(r)["instance_uuid"] == inst["uuid"]}
            assert mine <= after.api[table], table
        assert inst["uuid"] in {as_dict(r)["instance_uuid"] for r in after.api["request_specs"]}
    # The orphan's tree is all live (deleted = 0), so all of it stays.
    assert tree_rows(after, graph, pinned_orphan["uuid"]) == tree_rows(
        before, graph, pinned_orphan["uuid"]
    )
    # Nova's rule: soft-deleted rows move on their own, so the pinned instance's
    # soft-deleted children go; only its never-deleted actions (and events) stay.
    kept = tree_rows(after, graph, pinned["uuid"])
    assert set(kept) == {"instance_actions", "instance_actions_events"}
    assert kept == {
        t: ids for t, ids in tree_rows(before, graph, pinned["uuid"]).items() if t in kept
    }
    # Everything else left.
    others = {d["id"] for d in normal + orphans} - {pinned["id"], pinned_orphan["id"]}
    assert after.ids("instances", shadow=True) == others
    assert after.live["fixed_ips"] == before.live["fixed_ips"]
    assert after.live["share_mapping"] == before.live["share_mapping"]


def test_consoles_row_holds_back_its_instance(dbs: Databases) -> None:
    cloud = dbs.cloud()
    populate(
        cloud.main, cloud.api, CloudSpec(instances=20, deleted_fraction=1.0, orphan_fraction=0.0)
    )
    start = cloud.snapshot()
    first = min(start.ids("instances"))
    uuid_of = start.rows("instances")[first]["uuid"]
    cloud.insert("consoles", id=1, instance_name="vm", instance_uuid=uuid_of, deleted=0)
    before = cloud.snapshot()

    result = cloud.archive(until_complete=True)

    check_run(before, cloud.snapshot(), result, simulate(before, cloud.graph()))
    assert result.held_back == {"instances": 1}
    assert result.rows["instances"] == 19
    assert cloud.snapshot().ids("instances") == {first}


# -- failures ------------------------------------------------------------------------

DRIFT_MESSAGE = (
    "main: {table}: shadow_instance_extra lacks column(s) vpmems that instance_extra has; "
    "nothing moved from {table}. Run `novadb sync` (or add the columns to the shadow tables) "
    "and archive again"
)


def test_shadow_drift_fails_the_tree_and_moves_the_rest(cloud: Cloud) -> None:
    cloud.execute("ALTER TABLE shadow_instance_extra DROP COLUMN vpmems")
    before = cloud.snapshot()
    graph = cloud.graph()
    failures: list[str] = []

    result = archive(
        cloud.settings,
        ArchiveOptions(until_complete=True, batch_size=20),
        progress=lambda e: failures.append(e.message) if e.kind == "failure" else None,
    )
    after = cloud.snapshot()

    plan = simulate(before, graph, batch_size=20, failed=("instances", "instance_extra"))
    check_run(before, after, result, plan)
    assert result.failures == [
        DRIFT_MESSAGE.format(table="instances"),
        DRIFT_MESSAGE.format(table="instance_extra"),
    ]
    # Each failure is also an event as it happens, for live logs.
    assert failures == result.failures
    assert result.complete is False
    # Nothing of instances or instance_extra moved ...
    assert after.live["instances"] == before.live["instances"]
    assert after.live["instance_extra"] == before.live["instance_extra"]
    assert after.api == before.api
    # ... while the other tables' soft-deleted rows did.
    assert result.rows["instance_system_metadata"] > 0
    assert result.rows["services"] == 2
    assert set(soft_deleted_live(after, graph)) == {"instances", "instance_extra"}


def test_dry_run_reports_shadow_drift_like_the_real_run(cloud: Cloud) -> None:
    cloud.execute("ALTER TABLE shadow_instance_extra DROP COLUMN vpmems")

    dry = cloud.archive(dry_run=True)
    real = cloud.archive(until_complete=True)

    assert real.failures
    assert dry.failures == real.failures
    assert dry.rows == real.rows


def test_duplicate_shadow_id_fails_its_batch_and_loses_nothing(cloud: Cloud) -> None:
    start = cloud.snapshot()
    graph = cloud.graph()
    normal, orphans = deleted_instances(start)
    eligible = sorted(d["id"] for d in normal + orphans)
    victim = start.rows("instances")[eligible[4]]
    # A stale copy of a row with the same id, as AUTO_INCREMENT reuse leaves behind.
    stale = dict(victim, display_name="stale copy")
    with cloud.main.begin() as conn:
        conn.execute(
            sa.insert(sa.Table("shadow_instances", sa.MetaData(), autoload_with=conn)), stale
        )
    before = cloud.snapshot()

    # One batch at a time: with more in flight, the batches already started
    # when one fails still commit (test_archive_parallel.py), past the model's stop.
    result = cloud.archive(until_complete=True, batch_size=2, parallel=1)
    after = cloud.snapshot()

    plan = simulate(before, graph, batch_size=2, conflicts={"instances": {victim["id"]}})
    check_run(before, after, result, plan, disjoint=False)
    assert result.failures == [
        f"main: instances: shadow_instances already holds id(s) {victim['id']} that archive "
        "would move from instances (e.g. AUTO_INCREMENT reuse after a server restart, or rows "
        "restored by hand); nothing was moved or lost. Compare those rows; if the shadow "
        "copies are stale, delete them from shadow_instances (or `novadb purge --all`), then "
        "archive again"
    ]
    assert result.complete is False
    # The batches before the conflicting one moved; the instances table stopped there.
    assert after.ids("instances", shadow=True) == {
        eligible[0],
        eligible[1],
        eligible[2],
        eligible[3],
        victim["id"],
    }
    assert {
        as_dict(r)["display_name"] for r in after.shadow["instances"] if row_id(r) == victim["id"]
    } == {"stale copy"}
    assert set(eligible[4:]) <= after.ids("instances")
    # The victim and its never-deleted rows are live and unchanged.
    assert after.rows("instances")[victim["id"]] == victim
    kept = tree_rows(after, graph, victim["uuid"])
    for table, ids in kept.items():
        assert {i: before.rows(table)[i] for i in ids} == {i: after.rows(table)[i] for i in ids}
    assert victim["uuid"] in {as_dict(r)["instance_uuid"] for r in after.api["instance_mappings"]}

    # Once the stale copy is gone, archive finishes the job as if nothing happened.
    cloud.execute("DELETE FROM shadow_instances WHERE display_name = 'stale copy'")
    final = cloud.archive(until_complete=True)
    assert final.failures == []
    assert final.complete is True
    assert_state(cloud.snapshot(), simulate(start, graph).apply(start))


# -- all cells -----------------------------------------------------------------------


def test_all_cells_prefixes_cell_keys(dbs: Databases) -> None:
    api, cells = dbs.urls(cells=3)
    names = ("cell0", "cell1", "cell2")
    api_engine = dbs.engine(api)
    with api_engine.begin() as conn:
        ids = {
            name: map_cell(conn, name, url, cell_uuid=CELL0_UUID if name == "cell0" else None)
            for name, url in zip(names, cells, strict=True)
        }
    engines = {name: dbs.engine(url) for name, url in zip(names, cells, strict=True)}
    for seed, name in enumerate(("cell1", "cell2")):
        populate(engines[name], api_engine, CloudSpec(instances=40, seed=seed), cell_id=ids[name])
    before_states = {name: snapshot(engines[name], api_engine) for name in names}
    plans = {name: simulate(before_states[name], graph_of(engines[name])) for name in names}
    settings = load_settings(database=cells[1], api_database=api)

    dry = archive(settings, ArchiveOptions(all_cells=True, dry_run=True))
    result = archive(settings, ArchiveOptions(all_cells=True, until_complete=True))

    expected: dict[str, int] = {}
    for name in ("cell1", "cell2"):
        expected.update(
            {k: v for k, v in plans[name].rows(f"{name}.").items() if not k.startswith("API_DB.")}
        )
    for table in API_TABLES:
        expected[f"API_DB.{table}"] = sum(len(plans[n].api_moved[table]) for n in names)
    assert result.rows == expected
    assert dry.rows == expected
    assert not any(k.startswith("cell0.") for k in result.rows)
    assert result.total == plans["cell1"].total + plans["cell2"].total
    assert [c.name for c in result.cells] == list(names)
    assert result.complete is True
    for name in ("cell1", "cell2"):
        after = snapshot(engines[name], None)
        assert_state(
            Snapshot(after.live, after.shadow, {}),
            Snapshot(
                plans[name].apply(before_states[name]).live,
                plans[name].apply(before_states[name]).shadow,
                {},
            ),
        )
    # The API rows of both cells' archived instances are gone, the others stay.
    archived = set()
    for name in ("cell1", "cell2"):
        archived |= {as_dict(r)["uuid"] for r in plans[name].moved["instances"]}
    final_api = snapshot(engines["cell0"], api_engine).api
    for table in API_TABLES:
        kept = {
            r
            for r in before_states["cell0"].api[table]
            if as_dict(r)["instance_uuid"] not in archived
        }
        assert final_api[table] == kept


def test_all_cells_share_one_parent_budget(dbs: Databases) -> None:
    api, cells = dbs.urls(cells=2)
    api_engine = dbs.engine(api)
    with api_engine.begin() as conn:
        for name, url in zip(("cell1", "cell2"), cells, strict=True):
            map_cell(conn, name, url)
    engines = [dbs.engine(url) for url in cells]
    # Only deleted instances to archive: their children stay live (orphans), hosts are live.
    spec = CloudSpec(instances=20, deleted_fraction=1.0, orphan_fraction=1.0, deleted_hosts=0)
    for engine in engines:
        populate(engine, api_engine, spec)
    settings = load_settings(database=cells[0], api_database=api)
    results: list[ArchiveResult] = []
    # Hold each cell's write lock for a moment, so both cells are in their first batch
    # at once, as two large cells would be.
    raws = [engine.raw_connection() for engine in engines]
    try:
        for raw in raws:
            cursor = raw.cursor()
            if dbs.dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute("START TRANSACTION")
                cursor.execute("SELECT id FROM instances FOR UPDATE")
        worker = threading.Thread(
            target=lambda: results.append(
                archive(settings, ArchiveOptions(all_cells=True, batch_size=5))
            )
        )
        worker.start()
        worker.join(2.0)
    finally:
        for raw in raws:
            raw.rollback()
            raw.close()
    worker.join(60)
    [result] = results

    assert result.stopped == "budget"
    assert result.rows.get("cell1.instances", 0) + result.rows.get("cell2.instances", 0) == 5


# -- stopping ------------------------------------------------------------------------


def test_stop_event_after_first_batch_leaves_a_consistent_state(cloud: Cloud) -> None:
    start = cloud.snapshot()
    graph = cloud.graph()
    stop = threading.Event()
    events: list[Event] = []

    def progress(event: Event) -> None:
        events.append(event)
        if event.kind == "batch":
            stop.set()

    result = archive(
        cloud.settings,
        ArchiveOptions(until_complete=True, batch_size=5),
        progress=progress,
        stop=stop,
    )
    after = cloud.snapshot()

    plan = simulate(start, graph, batch_size=5, max_batches=1)
    check_run(start, after, result, plan)
    assert result.stopped == "interrupted"
    assert result.complete is False
    assert result.batches == 1
    assert [e.kind for e in events] == ["batch"]
    assert 0 < result.total < simulate(start, graph).total

    rest = cloud.archive(until_complete=True)
    assert rest.complete is True
    assert_state(cloud.snapshot(), simulate(start, graph).apply(start))


def test_max_runtime_spent_before_the_first_batch_still_moves_one(cloud: Cloud) -> None:
    """A deadline already past still lets one batch through (COU loops on archive-data)."""
    start = cloud.snapshot()
    graph = cloud.graph()

    result = archive(
        cloud.settings, ArchiveOptions(until_complete=True, batch_size=5, max_runtime=0.000001)
    )

    assert result.stopped == "max-runtime"
    assert result.complete is False
    assert result.batches == 1
    plan = simulate(start, graph, batch_size=5, max_batches=1)
    check_run(start, cloud.snapshot(), result, replace(plan, stopped="max-runtime"))


def test_archive_waits_for_the_lock_and_changes_nothing(cloud: Cloud) -> None:
    before = cloud.snapshot()

    with database_lock(cloud.main, "archive", 5), pytest.raises(LockTimeout) as info:
        cloud.archive(until_complete=True, lock_timeout=0.5)

    rendered = make_url(str(cloud.main.url)).render_as_string(hide_password=True)
    # The message names who holds the lock: this process, or this test's session.
    holder = r"held by (process \d+|connection \d+, root@[0-9.:]+)"
    assert re.fullmatch(
        re.escape(f"another novadb archive is running on {rendered} (")
        + holder
        + re.escape(") (waited 0.5 s); let it finish or stop it, then retry"),
        str(info.value),
    ), str(info.value)
    assert info.value.exit_code == 255
    assert_state(cloud.snapshot(), before)
    # Once the lock is free, the same call works.
    assert cloud.archive(until_complete=True, lock_timeout=0.5).complete is True
