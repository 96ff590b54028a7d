"""Where archive's time goes: time per statement kind, on a cloned benchmark cell.

``python -m tests.bench.profile [--instances N] [--real] [--keep NAME]``

Builds the benchmark cell (or reuses the one kept under ``--keep NAME``),
clones it, and runs ``archive_cell --until-complete`` in this process with
SQLAlchemy's ``before/after_cursor_execute`` hooks and a timer around the
driver's COMMIT.  Every statement is filed under a kind (candidate selection,
the lock, INSERT...SELECT and DELETE per table, the API rows, commit) and the
table prints the total time, the count and the rows per kind, then what the
statements leave unexplained (Python, the network, the pool).  Bench-only:
nothing here is timed in a test.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymysql.connections
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive_cell
from novadb.connections import create_engine
from novadb.sample.cloud import REAL_CELL
from sqlalchemy import event

from tests.bench.archive import archive_floor, build_cell, clone
from tests.bench.run import BASE, databases

_INSERT = re.compile(r"^INSERT INTO (?:\S+\.)?`?shadow_(\w+)`?", re.I)
# DELETE t FROM ... (a batch's joined form) or DELETE FROM t; t may be db.t.
_DELETE = re.compile(r"^DELETE (?:(\S+) FROM|FROM (\S+))", re.I)


def kind(statement: str) -> str:
    """The kind of one archive statement, e.g. ``insert instance_actions``."""
    text = " ".join(statement.split())
    if m := _INSERT.match(text):
        return f"insert {m.group(1)}"
    if m := _DELETE.match(text):
        table = (m.group(1) or m.group(2)).replace("`", "").split(".")[-1]
        if table in ("instance_mappings", "request_specs", "instance_group_member"):
            return f"api delete {table}"
        return f"delete {table}"
    upper = text.upper()
    if upper.startswith("SELECT") and "FOR UPDATE" in upper:
        return "lock/expand (SELECT ... FOR UPDATE)"
    if upper.startswith("SELECT") and "LIMIT" in upper:
        return "candidates"
    if upper.startswith("SELECT"):
        return "other select"
    return "other " + text.split(" ", 1)[0].lower()


class Profile:
    """Statement times per kind, gathered through engine events."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.count: dict[str, int] = defaultdict(int)
        self.rows: dict[str, int] = defaultdict(int)

    def add(self, what: str, seconds: float, rows: int) -> None:
        self.seconds[what] += seconds
        self.count[what] += 1
        self.rows[what] += max(rows, 0)

    def attach(self, engine: sa.Engine) -> None:
        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info["profile_started"] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            started = conn.info.pop("profile_started", None)
            if started is not None:
                self.add(kind(statement), time.perf_counter() - started, cursor.rowcount)

        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)

    @contextmanager
    def commits(self) -> Iterator[None]:
        original = pymysql.connections.Connection.commit

        def commit(conn: pymysql.connections.Connection) -> None:
            started = time.perf_counter()
            try:
                original(conn)
            finally:
                self.add("commit", time.perf_counter() - started, 0)

        pymysql.connections.Connection.commit = commit  # type: ignore[method-assign]
        try:
            yield
        finally:
            pymysql.connections.Connection.commit = original  # type: ignore[method-assign]

    def report(self, elapsed: float) -> str:
        lines = [f"{'kind':58} {'s':>7} {'share':>6} {'n':>6} {'rows':>9} {'ms/n':>7}"]
        total = 0.0
        for what in sorted(self.seconds, key=lambda k: -self.seconds[k]):
            s, n = self.seconds[what], self.count[what]
            total += s
            lines.append(
                f"{what[:58]:58} {s:7.2f} {s / elapsed:6.1%} {n:6} {self.rows[what]:9} "
                f"{s / n * 1000:7.1f}"
            )
        lines.append(f"{'(statements + commits)':58} {total:7.2f} {total / elapsed:6.1%}")
        lines.append(f"{'(elsewhere: Python, pool, network)':58} {elapsed - total:7.2f}")
        lines.append(f"{'elapsed':58} {elapsed:7.2f}")
        return "\n".join(lines)


@contextmanager
def kept(name: str | None, count: int) -> Iterator[list[str]]:
    """``count`` databases named after ``name`` (kept between runs), or temporary ones."""
    if name is None:
        with databases(count) as urls:
            yield urls
        return
    yield [BASE.rstrip("/") + f"/novadb_prof_{name}_{i}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=20_000)
    parser.add_argument("--real", action="store_true", help="a real cell's child mix")
    parser.add_argument("--keep", help="keep the generated cell under this name and reuse it")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--floor", action="store_true", help="profile the set-based floor")
    parser.add_argument(
        "--parallel",
        type=int,
        default=ArchiveOptions.parallel,
        help="batches in flight (statement times overlap above 1)",
    )
    args = parser.parse_args(argv)
    with kept(args.keep, 3) as (main_url, api_url, placement_url):
        admin = sa.create_engine(BASE)
        with admin.connect() as conn:
            have = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s",
                (sa.make_url(main_url).database,),
            ).scalar()
        if not have:
            with admin.begin() as conn:
                for url in (main_url, api_url, placement_url):
                    conn.exec_driver_sql(
                        f"CREATE DATABASE {sa.make_url(url).database} CHARACTER SET utf8mb4"
                    )
            started = time.perf_counter()
            rows = build_cell(
                main_url, api_url, placement_url, args.instances, REAL_CELL if args.real else None
            )
            print(f"built {rows:,} movable rows in {time.perf_counter() - started:.1f} s")
        admin.dispose()
        with databases(2) as (cell, api):
            clone(main_url, cell)
            clone(api_url, api)
            profile = Profile()
            engine, api_engine = create_engine(cell), create_engine(api)
            profile.attach(engine)
            profile.attach(api_engine)
            options = ArchiveOptions(
                until_complete=True, batch_size=args.batch_size, parallel=args.parallel
            )
            with profile.commits():
                started = time.perf_counter()
                if args.floor:
                    archive_floor(cell, api, profile.attach)
                else:
                    result = archive_cell(engine, api_engine, options)
                    print(f"{sum(result.rows.values()):,} rows in {result.batches} batches")
                elapsed = time.perf_counter() - started
            engine.dispose()
            api_engine.dispose()
            print(profile.report(elapsed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
