"""Batches in flight side by side, their pinned plans, and batches sized by the bounds.

On MariaDB a run keeps up to ``parallel`` batches in flight, each on its own
connection under READ COMMITTED.  They must end exactly where one batch at a
time ends, without waiting for or deadlocking with each other, and every
statement must reach its rows from the batch's ids down (the plan the
statements pin).  A run to completion without a batch size sizes its batches
from the backlog and the bounds; the end state is the same.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from novadb.archive import archive as archive_module
from novadb.archive.archive import ArchiveOptions, archive
from novadb.archive.graph import load_graph
from novadb.archive.tree_sql import Criteria, Schema
from novadb.progress import Event
from novadb.sample.cloud import populate

from tests.integration.test_archive import (
    DIALECTS,
    SPEC,
    Cloud,
    Databases,
    assert_state,
    check_run,
    open_databases,
    simulate,
    sqlite_template_dir,
)

MARIADB = [pytest.param("mariadb", marks=pytest.mark.mariadb)]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sqlite_template_dir(tmp_path_factory.mktemp("archive-parallel-template"))


@pytest.fixture(params=MARIADB)
def mariadb(request: pytest.FixtureRequest, tmp_path: Path, template: Path) -> Iterator[Databases]:
    yield from open_databases(request, tmp_path, template)


@pytest.fixture(params=DIALECTS)
def any_dbs(request: pytest.FixtureRequest, tmp_path: Path, template: Path) -> Iterator[Databases]:
    yield from open_databases(request, tmp_path, template)


def _cloud(dbs: Databases) -> Cloud:
    cloud = dbs.cloud()
    populate(cloud.main, cloud.api, SPEC)
    return cloud


class _InFlight:
    """The most batches that ran at the same moment, and on which threads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 0
        self.most = 0
        self.threads: set[str] = set()
        self._lock = threading.Lock()
        original = archive_module._CellRun._batch_once

        def counted(run: Any, tree: Any, ids: list[int]) -> dict[str, int]:
            with self._lock:
                self.now += 1
                self.most = max(self.most, self.now)
                self.threads.add(threading.current_thread().name)
            try:
                return original(run, tree, ids)
            finally:
                with self._lock:
                    self.now -= 1

        monkeypatch.setattr(archive_module._CellRun, "_batch_once", counted)


def test_batches_in_flight_end_where_one_at_a_time_ends(
    mariadb: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = _cloud(mariadb)
    twin = mariadb.clone(cloud)
    start = cloud.snapshot()
    graph = cloud.graph()

    one = twin.archive(until_complete=True, batch_size=5, parallel=1)
    flight = _InFlight(monkeypatch)
    three = cloud.archive(until_complete=True, batch_size=5, parallel=3)

    # The same batches (the same roots, chosen by id), the same end state as
    # both one at a time and the independent model of Nova's rules.
    plan = simulate(start, graph, batch_size=5)
    check_run(start, cloud.snapshot(), three, plan)
    assert_state(cloud.snapshot(), twin.snapshot())
    assert (three.rows, three.batches) == (one.rows, one.batches)
    # They did run side by side, and never had to be run again: batches hold
    # disjoint roots and read only their own rows, so they do not deadlock.
    assert flight.most >= 2, flight.most
    assert len(flight.threads) >= 2, flight.threads
    assert (three.retries, three.halvings) == (0, 0)


def test_a_stop_lets_the_batches_in_flight_finish_and_nothing_more(
    mariadb: Databases,
) -> None:
    cloud = _cloud(mariadb)
    start = cloud.snapshot()
    graph = cloud.graph()
    stop = threading.Event()

    def progress(event: Event) -> None:
        if event.kind == "batch" and event.data["table"] == "instances":
            stop.set()

    result = archive(
        cloud.settings,
        ArchiveOptions(until_complete=True, batch_size=5, parallel=3),
        progress=progress,
        stop=stop,
    )

    # Each batch already started commits whole; none starts after the stop.
    assert result.stopped == "interrupted"
    order = [table for table, _ids in simulate(start, graph, batch_size=5).roots]
    before = order.index("instances")  # the batches of the trees walked first
    assert 1 <= result.batches - before <= 3 < order.count("instances")
    plan = simulate(start, graph, batch_size=5, max_batches=result.batches)
    check_run(start, cloud.snapshot(), result, plan)


def test_the_batch_statements_read_from_the_ids_down(mariadb: Databases) -> None:
    """On the real server: the ids first, then instances by primary key, then each
    child through the index on its foreign key: no statement reads another batch's rows."""
    cloud = _cloud(mariadb)
    with cloud.main.connect() as conn:
        schema = Schema(conn, load_graph(conn))
        tree = schema.tree("instances", Criteria())
        ids = [int(r[0]) for r in conn.execute(tree.candidates(0, 20))]
        keys = tree.expand(conn, tree.root_keys(conn.execute(tree.lock(ids)).all()))
        checked = 0
        for move in tree.moves(keys):
            for statement in (move.insert, move.delete):
                sql = str(statement.compile(conn, compile_kwargs={"literal_binds": True}))
                plan = conn.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")).mappings().all()
                tables = [str(row["table"]) for row in plan]
                assert tables[:2] == ["novadb_batch", "instances"], (move.table, plan)
                assert (plan[1]["type"], plan[1]["key"]) == ("eq_ref", "PRIMARY"), plan
                for row in plan[2:]:
                    index = schema.indexes[(str(row["table"]), _column(tree, str(row["table"])))]
                    assert row["type"] in ("ref", "eq_ref"), (move.table, plan)
                    assert row["key"] == index, (move.table, plan)
                checked += 1
        conn.rollback()
    assert checked == 2 * len(tree.tables)


def _column(tree: Any, table: str) -> str:
    return next(e.column for e in tree.edges if e.child == table)


def test_a_run_to_completion_sizes_its_batches_from_the_backlog(
    any_dbs: Databases, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No batch size: after a first batch of DEFAULT_BATCH_SIZE parents, a tree's backlog
    split in BATCHES_PER_WORKER batches per batch in flight; a given size is kept."""
    monkeypatch.setattr(archive_module, "DEFAULT_BATCH_SIZE", 3)
    cloud = _cloud(any_dbs)
    twin = any_dbs.clone(cloud)
    start = cloud.snapshot()
    graph = cloud.graph()
    roots = [ids for table, ids in simulate(start, graph, batch_size=10**6).roots
             if table == "instances"][0]  # fmt: skip
    events: list[Event] = []

    adaptive = archive(cloud.settings, ArchiveOptions(until_complete=True),
                       progress=events.append)  # fmt: skip
    fixed = twin.archive(until_complete=True, batch_size=3)

    parallel = 2 if any_dbs.dialect == "mariadb" else 1  # SQLite: one writer
    per_batch = max(3, len(roots) // (archive_module.BATCHES_PER_WORKER * parallel))
    batches = [e for e in events if e.kind == "batch" and e.data["table"] == "instances"]
    assert per_batch > 3
    # The first batch (of the default size) came back full: the rest are sized
    # from the backlog, counted then.
    assert len(batches) == 1 + math.ceil((len(roots) - 3) / per_batch)
    assert fixed.batches > adaptive.batches
    assert_state(cloud.snapshot(), twin.snapshot())
    assert_state(cloud.snapshot(), simulate(start, graph).apply(start))
    assert adaptive.rows == fixed.rows
