"""Archive and purge benchmarks on MariaDB, each against a set-based floor in the same run.

The cell is generated once per size, kept as a pristine database, and cloned
(``CREATE TABLE ... LIKE`` + ``INSERT ... SELECT``) just before every measured
run, so novadb and the floor start from identical data and an identically warm
buffer pool (before 2026-12-03 both clones were made first, and novadb ran on
the one written earlier, which the second clone had pushed out of the pool).

* Floor for archive: the API rows of the moved instances (one DELETE per API
  table), then per table (children before parents) one unbounded
  ``INSERT INTO shadow_x SELECT ... WHERE <moves>`` and one ``DELETE``, each
  table in a single transaction: the same work as archive, as fast as a
  set-based move can do it, with none of archive's bounds.
* Floor for purge: one ``DELETE FROM shadow_x`` per table (what Nova runs).

novadb runs in a child process (``novadb archive --until-complete``) so its
peak RSS is its own (VmHWM: ``ru_maxrss`` would carry the parent's size over
the fork); per-batch times come from its progress events.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import sqlalchemy as sa
from novadb.archive.graph import load_graph
from novadb.archive.tree_sql import Criteria, Schema, moved_clause
from novadb.config import load_settings
from novadb.connections import create_engine
from novadb.sample.cloud import ChildMix, CloudSpec, populate
from novadb.schema.sync import sync

# About 330,000 of 450,000 rows move at 20,000 instances, as in the issue.
DELETED_FRACTION = 0.73

CHILD = r"""
import json, resource, sys, time
from novadb.archive.archive import ArchiveOptions, archive_cell
from novadb.connections import create_engine
from novadb.archive.purge import PurgeOptions, purge_cell
cell, api, what = sys.argv[1], sys.argv[2], sys.argv[3]
engine, api_engine = create_engine(cell), create_engine(api)
marks, tree_gaps = [], []
def progress(event):
    if event.kind == "batch":
        now = time.perf_counter()
        if event.data.get("table") == "instances" and marks:
            tree_gaps.append(now - marks[-1])
        marks.append(now)
started = time.perf_counter()
if what == "archive":
    options = ArchiveOptions(until_complete=True)
    result = archive_cell(engine, api_engine, options, progress=progress)
    rows, batches, retries = sum(result.rows.values()), result.batches, result.retries
else:
    result = purge_cell(engine, PurgeOptions(purge_all=True), progress=progress)
    rows, batches, retries = sum(result.rows.values()), len(marks), 0
elapsed = time.perf_counter() - started
gaps = sorted(tree_gaps) or sorted(b - a for a, b in zip([started] + marks, marks))
# Linux's ru_maxrss survives exec: it would report the bench process's own
# size at fork.  VmHWM belongs to this process's memory alone.
try:
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
except (OSError, StopIteration):
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"elapsed": elapsed, "rows": rows, "batches": batches, "retries": retries,
                  "batch_median": gaps[len(gaps) // 2] if gaps else 0.0,
                  "rss_mb": hwm / 1024}))
"""


@dataclass(frozen=True)
class Measure:
    """One child-process run of novadb."""

    elapsed: float
    rows: int
    batches: int
    retries: int  # batches run again (conflicts, deadlocks between batches in flight)
    batch_median: float
    rss_mb: float


def _child(cell: str, api: str, what: str) -> Measure:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, cell, api, what], check=True, capture_output=True, text=True
    )
    return Measure(**json.loads(out.stdout.strip().splitlines()[-1]))


def _db_name(url: str) -> str:
    return sa.make_url(url).database or ""


def _counts(url: str) -> dict[str, int]:
    """Rows per table, to check that novadb and the floor did the same work."""
    engine = create_engine(url)
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        out = {
            n: int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(n))).scalar() or 0)
            for n in names
        }
    engine.dispose()
    return out


def clone(source: str, target: str) -> None:
    """Copy every table of ``source`` into the empty database ``target`` (same server)."""
    src, dst = _db_name(source), _db_name(target)
    engine = create_engine(source)
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
        for table in tables:
            conn.exec_driver_sql(f"CREATE TABLE `{dst}`.`{table}` LIKE `{src}`.`{table}`")
            conn.exec_driver_sql(f"INSERT INTO `{dst}`.`{table}` SELECT * FROM `{src}`.`{table}`")
        conn.commit()
    engine.dispose()


def build_cell(
    main: str, api: str, placement: str, instances: int, mix: ChildMix | None = None
) -> int:
    """Sync and fill a cell; return the number of rows archive will move."""
    settings = load_settings(database=main, api_database=api, placement_database=placement)
    sync(settings)
    engine, api_engine = create_engine(main), create_engine(api)
    spec = CloudSpec(instances=instances, deleted_fraction=DELETED_FRACTION, mix=mix or ChildMix())
    populate(engine, api_engine, spec)
    with engine.connect() as conn:
        schema = Schema(conn, load_graph(conn))
        count = sum(
            int(conn.execute(
                sa.select(sa.func.count()).select_from(schema.live[name])
                .where(moved_clause(schema, Criteria(), name))
            ).scalar() or 0)
            for name in schema.graph.tables
        )  # fmt: skip
    engine.dispose()
    api_engine.dispose()
    return count


def _children_first(schema: Schema) -> list[str]:
    order: list[str] = []

    def visit(name: str) -> None:
        if name in order:
            return
        for edge in schema.graph.edges:
            if edge.parent == name:
                visit(edge.child)
        order.append(name)

    for name in schema.graph.tables:
        visit(name)
    return order


def archive_floor(
    main: str, api: str, instrument: Callable[[sa.Engine], None] | None = None
) -> float:
    """Set-based move, unbounded: one INSERT...SELECT + one DELETE per table.

    It does the same work archive does: the API database's rows of the moved
    instances go too (one DELETE per API table, across databases on the same
    server), then every cell table, children first.
    """
    engine = create_engine(main)
    if instrument is not None:
        instrument(engine)
    api_name = _db_name(api)
    with engine.connect() as conn:
        schema = Schema(conn, load_graph(conn))
        conn.commit()
        started = time.perf_counter()
        instances = schema.live["instances"]
        moving = sa.select(instances.c.uuid).where(moved_clause(schema, Criteria(), "instances"))
        with conn.begin():
            for name in ("instance_mappings", "request_specs", "instance_group_member"):
                table = sa.table(name, sa.column("instance_uuid"), schema=api_name)
                conn.execute(sa.delete(table).where(table.c.instance_uuid.in_(moving)))
        for name in _children_first(schema):
            live, shadow = schema.live[name], schema.shadow[name]
            where = moved_clause(schema, Criteria(), name)
            columns = list(live.c.keys())
            with conn.begin():
                conn.execute(
                    shadow.insert().from_select(
                        columns, sa.select(*(live.c[c] for c in columns)).where(where)
                    )
                )
                conn.execute(sa.delete(live).where(where))
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


def purge_floor(main: str) -> float:
    """One DELETE per shadow table, as Nova's purge --all runs."""
    engine = create_engine(main)
    with engine.connect() as conn:
        tables = [t for t in sa.inspect(conn).get_table_names() if t.startswith("shadow_")]
        conn.commit()
        started = time.perf_counter()
        for table in tables:
            with conn.begin():
                conn.exec_driver_sql(f"DELETE FROM `{table}`")
        elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed


@dataclass(frozen=True)
class ArchiveFigures:
    """Medians over repeats for one cell size."""

    instances: int
    rows: int
    novadb_s: float
    floor_s: float
    batch_median_s: float
    rss_mb: float
    purge_s: float
    purge_floor_s: float
    shares: tuple[float, ...] = ()  # floor / novadb per repeat: the spread of the median
    retries: int = 0  # over every repeat


def measure(
    instances: int,
    repeat: int,
    dbs: Callable[[int], AbstractContextManager[list[str]]],
    mix: ChildMix | None = None,
) -> ArchiveFigures:
    """Generate once, then per repeat: clone twice, archive + purge each way."""
    ours, floors, batch, rss, purges, purge_floors = [], [], [], [], [], []
    retries = 0
    with dbs(3) as (main, api, placement):
        rows = build_cell(main, api, placement, instances, mix)
        for _ in range(repeat):
            with dbs(4) as (cell_a, api_a, cell_b, api_b):
                # Each side runs right after its own clone, so both start with
                # the buffer pool in the same state (the clone just written).
                clone(main, cell_a)
                clone(api, api_a)
                run = _child(cell_a, api_a, "archive")
                if run.rows != rows:
                    raise AssertionError(f"novadb moved {run.rows} rows, expected {rows}")
                ours.append(run.elapsed)
                retries += run.retries
                batch.append(run.batch_median)
                rss.append(run.rss_mb)
                archived = (_counts(cell_a), _counts(api_a))
                purge_run = _child(cell_a, api_a, "purge")
                purges.append(purge_run.elapsed)
                clone(main, cell_b)
                clone(api, api_b)
                floors.append(archive_floor(cell_b, api_b))
                if archived != (_counts(cell_b), _counts(api_b)):
                    raise AssertionError(f"novadb and the floor differ: {cell_a} {cell_b}")
                purge_floors.append(purge_floor(cell_b))
    return ArchiveFigures(
        instances,
        rows,
        statistics.median(ours),
        statistics.median(floors),
        statistics.median(batch),
        max(rss),
        statistics.median(purges),
        statistics.median(purge_floors),
        tuple(sorted(f / o for f, o in zip(floors, ours, strict=True))),
        retries,
    )
