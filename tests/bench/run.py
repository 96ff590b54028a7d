"""novadb benchmarks: ``tox -e bench`` or ``python -m tests.bench.run``.

Each benchmark measures novadb and a baseline in the same run (this machine is
shared and noisy, so only ratios within one run mean anything) and prints one
row of the results table in docs/benchmarks.md.  MariaDB comes from NOVADB_TEST_MYSQL_URL
(default ``mysql+pymysql://root@127.0.0.1:3306/``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import sqlalchemy as sa
from novadb.config import load_settings
from novadb.sample.cloud import REAL_CELL, ChildMix
from novadb.schema.sync import sync

BASE = os.environ.get("NOVADB_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
DDL = Path(__file__).resolve().parent / "ddl"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    name: str
    novadb: float
    baseline: float
    baseline_name: str
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.novadb / self.baseline if self.baseline else float("nan")


@contextmanager
def databases(count: int) -> Iterator[list[str]]:
    """Fresh utf8mb4 MariaDB databases, dropped afterwards."""
    names = [f"novadb_bench_{uuid.uuid4().hex[:10]}" for _ in range(count)]
    admin = sa.create_engine(BASE)
    with admin.begin() as conn:
        for name in names:
            conn.execute(
                sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
            )
    try:
        yield [BASE.rstrip("/") + "/" + name for name in names]
    finally:
        with admin.begin() as conn:
            for name in names:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def _timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def _load_dump(url: str, dump: Path) -> None:
    """Execute a mysqldump-style DDL file statement by statement."""
    statements = [s.strip() for s in dump.read_text().split(";\n") if s.strip()]
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        for statement in statements:
            lines = [ln for ln in statement.splitlines() if not ln.startswith("--")]
            text = "\n".join(lines).strip()
            if text:
                conn.exec_driver_sql(text)
        conn.commit()
    engine.dispose()


def bench_sync(repeat: int) -> Row:
    """sync of main + api + placement from empty, against loading the final DDL."""
    ours, floor = [], []
    for _ in range(repeat):
        with databases(3) as (main, api, placement):
            settings = load_settings(database=main, api_database=api, placement_database=placement)
            ours.append(_timed(lambda settings=settings: sync(settings)))
        with databases(3) as urls:
            floor.append(
                _timed(
                    lambda urls=urls: [
                        _load_dump(u, DDL / f"{n}.mysql.sql")
                        for u, n in zip(urls, ("main", "api", "placement"), strict=True)
                    ]
                )
            )
    return Row(
        "sync main+api+placement from empty (MariaDB)",
        statistics.median(ours),
        statistics.median(floor),
        "load final DDL dump",
        "s",
    )


def _archive_rows(instances: int, repeat: int, mix: ChildMix | None = None) -> list[Row]:
    from tests.bench.archive import measure

    f = measure(instances, repeat, databases, mix)
    share = f.floor_s / f.novadb_s
    shape = ", a real cell's child mix" if mix is not None else ""
    spread = f" (runs {', '.join(f'{s:.0%}' for s in f.shares)})" if len(f.shares) > 1 else ""
    return [
        Row(
            f"archive --until-complete, {f.instances:,}-instance cell{shape}, {f.rows:,} rows "
            "(MariaDB)",
            f.novadb_s,
            f.floor_s,
            "set-based floor (one INSERT...SELECT + DELETE per table, unbounded)",
            "s",
            f"{f.rows / f.novadb_s:,.0f} rows/s = {share:.0%} of the floor's speed{spread}; "
            f"median instances batch {f.batch_median_s * 1000:.0f} ms; "
            f"{f.retries} batches retried; peak RSS {f.rss_mb:.0f} MB",
        ),
        Row(
            f"purge --all, {f.rows:,} shadow rows (MariaDB)",
            f.purge_s,
            f.purge_floor_s,
            "one DELETE per shadow table (Nova)",
            "s",
            f"{f.purge_floor_s / f.purge_s:.0%} of the floor's speed",
        ),
    ]


def bench_archive(repeat: int) -> list[Row]:
    """archive + purge of a generated 20,000-instance cell."""
    return _archive_rows(20_000, repeat)


def bench_archive_real(repeat: int) -> list[Row]:
    """archive + purge of a 20,000-instance cell with a production cell's child mix.

    Several events per action, faults, volumes, ports with a full network
    cache, unplugged PCI devices (sample.cloud.REAL_CELL), so the ratio to the
    floor is not tuned to one shape of data.
    """
    return _archive_rows(20_000, repeat, REAL_CELL)


def bench_archive_large(repeat: int) -> list[Row]:
    """The same at 100,000 instances: RSS and per-batch time must not grow."""
    return _archive_rows(100_000, max(1, repeat // 3))


@contextmanager
def buffer_pool(size: int) -> Iterator[None]:
    """The server's InnoDB buffer pool resized to ``size`` bytes for a while (needs SUPER)."""
    admin = sa.create_engine(BASE)
    with admin.connect() as conn:
        before = int(conn.exec_driver_sql("SELECT @@innodb_buffer_pool_size").scalar_one())
        conn.execute(sa.text("SET GLOBAL innodb_buffer_pool_size = :size"), {"size": size})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SET GLOBAL innodb_buffer_pool_size = :size"), {"size": before})
        admin.dispose()


def bench_archive_large_pool(repeat: int) -> list[Row]:
    """The 100,000-instance cell with a 2 GB buffer pool, which holds it (and its clones)."""
    with buffer_pool(2 * 1024**3):
        rows = _archive_rows(100_000, max(1, repeat // 3))
    return [replace(row, name=row.name + ", 2 GB buffer pool") for row in rows]


def bench_online(repeat: int) -> list[Row]:
    """online-migrate of 100,000 instances with NULL compute_id."""
    from tests.bench.online import measure

    f = measure(100_000, databases)
    ours = f.rows / f.novadb_s
    default = f.rows / f.novadb_default_s
    nova = f.baseline_rows / f.baseline_s
    return [
        Row(
            f"online-migrate, {f.rows:,} instances with NULL compute_id (MariaDB)",
            ours,
            nova,
            "one UPDATE + COMMIT per instance, as Nova's object layer",
            "rows/s",
            f"--batch-size 1000: {f.novadb_s:.2f} s; default --batch-size 50: "
            f"{default:,.0f} rows/s ({f.novadb_default_s:.2f} s); baseline on "
            f"{f.baseline_rows:,} rows",
        )
    ]


def bench_nova(repeat: int) -> list[Row]:
    """archive against Nova 34's own nova-manage on a 2,000-instance cell."""
    from tests.bench.nova import measure

    rows, ours, nova = measure(2_000, databases)
    return [
        Row(
            f"archive --until-complete vs nova-manage, 2,000-instance cell, {rows:,} rows "
            "(MariaDB)",
            ours,
            nova,
            "Nova 34 nova-manage db archive_deleted_rows --until-complete",
            "s",
            f"novadb {rows / ours:,.0f} rows/s, Nova {rows / nova:,.0f} rows/s: "
            f"{nova / ours:.0f}x faster",
        )
    ]


def bench_heal(repeat: int) -> list[Row]:
    """heal-allocations of 10,000 instances with no allocations (target < 10 s)."""
    from tests.bench.placement import measure_heal

    f = measure_heal(10_000, databases)
    per_instance = f.baseline_instances / f.baseline_s
    return [
        Row(
            f"heal-allocations, {f.instances:,} instances without allocations, 500 nodes "
            "(MariaDB)",
            f.novadb_s,
            f.instances / per_instance,
            "one transaction per instance (--batch-size 1), extrapolated from "
            f"{f.baseline_instances:,}",
            "s",
            f"{f.instances / f.novadb_s:,.0f} instances/s vs {per_instance:,.0f} instances/s",
        )
    ]


def bench_rebuild(repeat: int) -> list[Row]:
    """rebuild-placement of a 500-node, 20,000-instance cloud (target < 60 s)."""
    from tests.bench.placement import measure_rebuild

    f = measure_rebuild(20_000, databases)
    return [
        Row(
            f"rebuild-placement, {f.nodes} nodes, {f.instances:,} instances, all node uuids "
            "changed (MariaDB)",
            f.novadb_s,
            f.restore_s,
            "restoring its own backup (same rows, no decisions)",
            "s",
            "; ".join(f.steps),
        )
    ]


def bench_check(repeat: int) -> list[Row]:
    """check of the 20,000-instance cell (target: under 5 s)."""
    from tests.bench.check import measure

    f = measure(20_000, repeat, databases)
    per_database = ", ".join(f"{name} {s:.2f} s" for name, s in f.per_database.items())
    return [
        Row(
            f"check, {f.instances:,}-instance cell + cell0, api, placement (MariaDB)",
            f.check_s,
            f.dry_run_s,
            "archive --dry-run --all-cells (the backlog counts alone)",
            "s",
            f"target < 5 s; {f.findings} findings, {f.archivable:,} archivable rows; "
            f"{per_database}",
        )
    ]


def bench_demo(repeat: int) -> list[Row]:
    """novadb demo end to end on SQLite (target < 60 s), against building its cloud alone."""
    import tempfile

    from novadb.progress import ignore
    from novadb.sample.demo import DEFAULT_INSTANCES, build_cloud, run_demo

    ours, build = [], []
    for _ in range(repeat):
        ours.append(_timed(lambda: run_demo()))
        with tempfile.TemporaryDirectory() as tmp:
            build.append(_timed(lambda tmp=tmp: build_cloud(Path(tmp), DEFAULT_INSTANCES, ignore)))
    return [
        Row(
            f"demo: sample cloud ({DEFAULT_INSTANCES:,} instances) + the 8-step flow (SQLite)",
            statistics.median(ours),
            statistics.median(build),
            "building the sample cloud alone",
            "s",
            "the flow itself is the difference",
        )
    ]


def _sync_rows(repeat: int) -> list[Row]:
    return [bench_sync(repeat)]


BENCHES: dict[str, Callable[[int], list[Row]]] = {
    "sync": _sync_rows,
    "archive": bench_archive,
    "archive-real": bench_archive_real,
    "archive-100k": bench_archive_large,
    "archive-100k-pool": bench_archive_large_pool,
    "online": bench_online,
    "nova": bench_nova,
    "heal": bench_heal,
    "rebuild": bench_rebuild,
    "check": bench_check,
    "demo": bench_demo,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=list(BENCHES), help="benchmarks to run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print("| Benchmark | novadb | Baseline (same run) | Ratio | Notes |")
    print("|---|---|---|---|---|")
    for name in args.names:
        for row in BENCHES[name](args.repeat):
            fmt = ",.0f" if row.unit == "rows/s" else ".2f"
            print(
                f"| {row.name} | {row.novadb:{fmt}} {row.unit} | {row.baseline_name}: "
                f"{row.baseline:{fmt}} {row.unit} | {row.ratio:.2f}x | {row.note} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
