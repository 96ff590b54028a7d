"""An operator's worst day on one MariaDB server: every fault ends in a documented exit code.

Lost connections (a batch's, the walk's, the lock's), sustained conflicts, a
lock another run takes over, shadow tables the copy cannot fill, a read-only
user, and kill -9 of archive, purge and online-migrate right after their first
committed batch.  Each test checks the rows: nothing lost or duplicated, and a
rerun ends exactly where an uninterrupted run ends.
"""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, ArchiveResult, archive
from novadb.archive.purge import PurgeOptions, purge
from novadb.check.check import check
from novadb.connections import create_engine
from novadb.errors import LockLost, LockTimeout
from novadb.locking import database_lock, lock_key
from novadb.progress import Event
from novadb.sample.cloud import CloudSpec, populate
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

from tests.integration.test_archive_crash import (
    Cloud,
    Snapshot,
    _diff,
    _restore,
    _server,
    _snapshot,
    _synced,
)

pytestmark = pytest.mark.slow

NewDb = Callable[[], str]
INSTANCES = 200


@dataclass
class Pair:
    """A populated cloud, and the end state an uninterrupted archive reaches from it."""

    cloud: Cloud
    pristine: Snapshot
    expected: Snapshot
    server: Engine

    def snapshot(self) -> Snapshot:
        with self.server.connect() as conn:
            return _snapshot(conn, self.cloud)

    def sql(self, statement: str) -> list[Any]:
        with self.server.begin() as conn:
            conn.exec_driver_sql(f"USE `{self.cloud.main}`")
            result = conn.exec_driver_sql(statement)
            return list(result) if result.returns_rows else []

    def cli(self, *args: str, database: str | None = None) -> list[str]:
        return [
            sys.executable, "-m", "novadb.cli.main", "--json",
            "--database", database or self.cloud.main_url, "--api-database", self.cloud.api_url,
            *args,
        ]  # fmt: skip


def _populated(mysql_dbs: NewDb) -> Cloud:
    cloud = _synced(mysql_dbs)
    main, api = create_engine(cloud.main_url), create_engine(cloud.api_url)
    populate(main, api, CloudSpec(instances=INSTANCES, deleted_fraction=0.5, seed=11))
    main.dispose()
    api.dispose()
    return cloud


@pytest.fixture
def pair(mysql_dbs: NewDb) -> Iterator[Pair]:
    trial, twin = _populated(mysql_dbs), _synced(mysql_dbs)
    server = _server(trial.main_url)
    with server.begin() as conn:
        _restore(conn, trial.main, twin.main)
        _restore(conn, trial.api, twin.api)
        pristine = _snapshot(conn, trial)
    reference = archive(twin.settings, ArchiveOptions(until_complete=True, batch_size=50))
    assert reference.complete and not reference.failures
    with server.connect() as conn:
        expected = _snapshot(conn, twin)
    yield Pair(trial, pristine, expected, server)
    server.dispose()


def _main_union(snapshot: Snapshot) -> dict[str, Counter[tuple]]:
    """Per cell table, its live rows plus its shadow rows (archive only moves between them)."""
    out: dict[str, Counter[tuple]] = {}
    for table, rows in snapshot.items():
        if table.startswith("main.") and not table.startswith("main.shadow_"):
            name = table.removeprefix("main.")
            out[name] = rows + snapshot.get(f"main.shadow_{name}", Counter())
    return out


def _assert_exactly_once(pair: Pair) -> None:
    """Every cell row is live or in shadow, once; API rows only ever disappear."""
    now = pair.snapshot()
    assert _main_union(now) == _main_union(pair.pristine)
    for table, rows in now.items():
        if table.startswith("api."):
            assert not rows - pair.pristine[table], table


# -- kill -9 right after the first committed batch ------------------------------------------


def _kill_after_first(proc: subprocess.Popen, progressed: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 60
    while not progressed():
        if proc.poll() is not None:
            raise AssertionError(f"ended before its first batch: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError("no batch committed in 60 s")
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


@pytest.mark.parametrize("batch_size", [10, 100, 1000])
def test_archive_killed_after_its_first_batch(pair: Pair, batch_size: int) -> None:
    proc = subprocess.Popen(
        pair.cli("archive", "--until-complete", "--batch-size", str(batch_size)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def progressed() -> bool:
        return bool(pair.sql("SELECT COUNT(*) FROM shadow_compute_nodes")[0][0])

    _kill_after_first(proc, progressed)

    assert proc.returncode == -signal.SIGKILL
    _assert_exactly_once(pair)
    rerun = subprocess.run(
        pair.cli("archive", "--until-complete", "--batch-size", str(batch_size)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (rerun.returncode, rerun.stderr) in ((0, ""), (1, "")), rerun.stderr
    assert json.loads(rerun.stdout)["complete"]
    assert _diff(pair.expected, pair.snapshot()) == []


def test_purge_killed_after_its_first_window(pair: Pair) -> None:
    assert archive(pair.cloud.settings, ArchiveOptions(until_complete=True)).complete
    archived = pair.snapshot()
    shadows = {t: rows for t, rows in archived.items() if t.startswith("main.shadow_")}
    total = sum(sum(r.values()) for r in shadows.values())
    proc = subprocess.Popen(
        pair.cli("purge", "--all", "--batch-size", "5"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def progressed() -> bool:
        left = sum(
            pair.sql(f"SELECT COUNT(*) FROM `{t.removeprefix('main.')}`")[0][0] for t in shadows
        )
        return left < total

    _kill_after_first(proc, progressed)

    killed = pair.snapshot()
    # On a loaded machine the purge may finish between the poll that saw its
    # first window and the kill: then the rerun finds nothing, nova-manage's 3.
    left = sum(sum(rows.values()) for table, rows in killed.items() if table in shadows)
    for table, rows in killed.items():
        if table in shadows:
            assert not rows - shadows[table], table  # only ever deleted, never written
        else:
            assert rows == archived[table], table  # live tables untouched
    rerun = subprocess.run(pair.cli("purge", "--all"), capture_output=True, text=True, timeout=120)
    assert (rerun.returncode, rerun.stderr) == (0 if left else 3, ""), rerun.stderr
    end = pair.snapshot()
    assert all(not end[t] for t in shadows)
    assert {t: r for t, r in end.items() if t not in shadows} == {
        t: r for t, r in archived.items() if t not in shadows
    }


def test_online_migrate_killed_after_its_first_batch(pair: Pair) -> None:
    want = dict(pair.sql("SELECT id, compute_id FROM instances WHERE deleted = 0"))
    pair.sql("UPDATE instances SET compute_id = NULL WHERE deleted = 0")
    proc = subprocess.Popen(
        pair.cli("online-migrate", "--batch-size", "5", "--database", "main"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def progressed() -> bool:
        return bool(pair.sql("SELECT COUNT(*) FROM instances WHERE compute_id IS NOT NULL "
                             "AND deleted = 0")[0][0])  # fmt: skip

    _kill_after_first(proc, progressed)

    now = dict(pair.sql("SELECT id, compute_id FROM instances WHERE deleted = 0"))
    assert set(now) == set(want)
    assert all(v is None or v == want[k] for k, v in now.items())  # done right, or not yet
    rerun = subprocess.run(
        pair.cli("online-migrate", "--batch-size", "5", "--database", "main"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (rerun.returncode, rerun.stderr) == (0, ""), rerun.stderr
    assert dict(pair.sql("SELECT id, compute_id FROM instances WHERE deleted = 0")) == want


# -- lost connections, in process --------------------------------------------------------


@dataclass
class Killer:
    """Kills the connection about to run the ``nth`` statement matching ``pattern``."""

    server_url: str
    database: str
    pattern: re.Pattern[str]
    nth: int
    seen: int = 0
    killed: int = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if conn.engine.url.database != self.database or not self.pattern.search(statement):
            return
        self.seen += 1
        if self.seen == self.nth:
            self.kill(cursor.connection.thread_id())

    def on_commit(self, conn: Any) -> None:
        """As a ``commit`` listener: kill the connection just before its nth COMMIT."""
        if conn.engine.url.database != self.database or not conn.in_transaction():
            return
        self.seen += 1
        if self.seen == self.nth:
            self.kill(conn.connection.dbapi_connection.thread_id())

    def kill(self, thread: int) -> None:
        url = make_url(self.server_url)
        admin = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username,
                                password=url.password or "", autocommit=True)  # fmt: skip
        try:
            with admin.cursor() as cur:
                cur.execute(f"KILL CONNECTION {int(thread)}")
        finally:
            admin.close()
        self.killed += 1


@pytest.fixture
def kill_on() -> Iterator[Callable[[Pair, str, int], Killer]]:
    killers: list[Killer] = []

    def install(pair: Pair, pattern: str, nth: int) -> Killer:
        killer = Killer(pair.cloud.main_url, pair.cloud.main, re.compile(pattern, re.S), nth)
        if pattern == "COMMIT":
            event.listen(Engine, "commit", killer.on_commit)
        else:
            event.listen(Engine, "before_cursor_execute", killer)
        killers.append(killer)
        return killer

    yield install
    for killer in killers:
        if killer.pattern.pattern == "COMMIT":
            event.remove(Engine, "commit", killer.on_commit)
        else:
            event.remove(Engine, "before_cursor_execute", killer)


def _archive(pair: Pair, **options: Any) -> ArchiveResult:
    values: dict[str, Any] = {"until_complete": True, "batch_size": 10, **options}
    return archive(pair.cloud.settings, ArchiveOptions(**values))


@pytest.mark.parametrize(
    ("where", "pattern", "nth"),
    [
        # A batch's DELETE of its instances (MySQL's joined form: see archive/joined.py).
        ("inside a batch", r"^DELETE instances FROM\b", 3),
        ("while walking", r"^SELECT instances\.id\s.*LIMIT", 4),
        # Lost at COMMIT: whether the batch landed is checked before it is redone.
        ("at commit", "COMMIT", 6),
    ],
)
def test_a_lost_connection_is_resumed(
    pair: Pair, kill_on: Callable[[Pair, str, int], Killer], where: str, pattern: str, nth: int
) -> None:
    killer = kill_on(pair, pattern, nth)

    result = _archive(pair, batch_size=10)

    assert killer.killed == 1, where
    assert result.complete and not result.failures, result.failures
    assert result.reconnects >= 1
    assert _diff(pair.expected, pair.snapshot()) == []


def test_a_lost_lock_connection_is_taken_again(pair: Pair) -> None:
    key = lock_key("archive", pair.cloud.main)
    killed: list[int] = []
    warnings: list[str] = []

    def on_event(e: Event) -> None:
        if e.kind == "warning":
            warnings.append(e.message)
        if e.kind == "batch" and not killed:
            (holder,) = pair.sql(f"SELECT IS_USED_LOCK('{key}')")[0]
            pair.sql(f"KILL CONNECTION {int(holder)}")
            killed.append(int(holder))

    result = archive(
        pair.cloud.settings, ArchiveOptions(until_complete=True, batch_size=10), progress=on_event
    )

    assert killed and result.complete and not result.failures
    assert result.reconnects >= 1
    assert any("lock's connection" in w and "taken again" in w for w in warnings), warnings
    assert _diff(pair.expected, pair.snapshot()) == []


def test_a_lock_another_run_took_stops_this_run_between_batches(pair: Pair) -> None:
    key = lock_key("archive", pair.cloud.main)
    thief = pymysql.connect(host="127.0.0.1", port=make_url(pair.cloud.main_url).port or 3306,
                            user="root", autocommit=True)  # fmt: skip
    batches: list[int] = []

    def on_event(e: Event) -> None:
        if e.kind != "batch":
            return
        batches.append(1)
        if len(batches) == 1:
            (holder,) = pair.sql(f"SELECT IS_USED_LOCK('{key}')")[0]
            pair.sql(f"KILL CONNECTION {int(holder)}")
            with thief.cursor() as cur:  # the second run gets the lock
                cur.execute("SELECT GET_LOCK(%s, 10)", (key,))
                assert cur.fetchone() == (1,)

    try:
        with pytest.raises(LockLost) as info:
            archive(
                pair.cloud.settings,
                ArchiveOptions(until_complete=True, batch_size=10),
                progress=on_event,
            )
    finally:
        thief.close()

    assert len(batches) == 1  # not one batch beside the other run
    assert info.value.exit_code == 75
    message = str(info.value)
    assert "lock on mysql+pymysql://root@127.0.0.1" in message
    assert "another run holds it now (held by connection" in message
    assert "this run stopped between batches" in message
    _assert_exactly_once(pair)


def test_a_waiting_run_says_for_whom_and_long_names_do_not_share_a_lock(
    mysql_url_base: str,
) -> None:
    base = make_url(mysql_url_base)
    common = "novadb_t_lock_" + secrets.token_hex(4) + "_" + "x" * 30  # 53 characters
    names = [f"{common}_cell_a", f"{common}_cell_b"]
    root = sa.create_engine(base)
    with root.begin() as conn:
        for name in names:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    engines = [create_engine(base.set(database=n)) for n in names]
    warnings: list[str] = []
    try:
        with database_lock(engines[0], "purge"):
            # Another database sharing the first 49 characters: not the same lock.
            with database_lock(engines[1], "purge", timeout=0.2):
                pass
            waiter = create_engine(base.set(database=names[0]))
            engines.append(waiter)
            with (
                pytest.raises(LockTimeout),
                database_lock(
                    waiter, "purge", timeout=0.3, progress=lambda e: warnings.append(e.message)
                ),
            ):
                pass
    finally:
        for engine in engines:
            engine.dispose()
        with root.begin() as conn:
            for name in names:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        root.dispose()
    assert len(warnings) == 1
    assert re.fullmatch(
        r"waiting up to 0\.3 s for another novadb purge on mysql\+pymysql://root@\S+ to "
        r"finish \(held by connection \d+, root@[0-9.:]+\)",
        warnings[0],
    ), warnings


# -- sustained conflicts ------------------------------------------------------------------


def _holding_instances(pair: Pair, seconds: float) -> threading.Thread:
    """Lock every deleted instance row in another session for ``seconds``."""
    ready = threading.Event()

    def hold() -> None:
        url = make_url(pair.cloud.main_url)
        conn = pymysql.connect(host=url.host, port=url.port or 3306, user="root",
                               database=pair.cloud.main)  # fmt: skip
        try:
            with conn.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute("SELECT id FROM instances WHERE deleted != 0 FOR UPDATE")
                ready.set()
                time.sleep(seconds)
            conn.rollback()
        finally:
            conn.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert ready.wait(30)
    return thread


def _impatient(url: str) -> str:
    """The URL with a 1 s lock wait, so a held row lock shows up as 1205 at once."""
    return url + "?init_command=SET%20SESSION%20innodb_lock_wait_timeout%3D1"


def test_sustained_conflicts_are_retried_and_the_batch_split(pair: Pair) -> None:
    holder = _holding_instances(pair, 10)
    run = subprocess.run(
        pair.cli("archive", "--until-complete", "--batch-size", "40",
                 database=_impatient(pair.cloud.main_url)),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    holder.join()

    assert (run.returncode, run.stderr) == (1, ""), run.stderr
    result = json.loads(run.stdout)
    assert result["complete"] and result["failures"] == []
    # Conflicts were waited out (retried), and a batch that kept conflicting was split.
    assert result["retries"] >= 2
    assert result["halvings"] >= 1
    assert _diff(pair.expected, pair.snapshot()) == []


def test_conflicts_past_the_budget_end_in_one_line_and_exit_75(pair: Pair) -> None:
    holder = _holding_instances(pair, 12)
    run = subprocess.run(
        pair.cli("archive", "--until-complete", "--batch-size", "40", "--max-runtime", "1",
                 database=_impatient(pair.cloud.main_url)),
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    holder.join()

    assert run.returncode == 75, run.stderr
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith("novadb: error: archive of mysql+pymysql://root@127.0.0.1:")
    assert "stopped: conflicts did not stop for " in line
    assert "(1205) Lock wait timeout exceeded" in line
    assert "rows archived in" in line and "nothing is lost or half-moved" in line
    assert line.endswith("Run the same command again (on any node of the cluster) to finish")
    _assert_exactly_once(pair)
    # Nothing half-done: the rerun reaches the uninterrupted end state.
    assert _archive(pair).complete
    assert _diff(pair.expected, pair.snapshot()) == []


# -- shadow tables the copy cannot fill ------------------------------------------------------


@pytest.mark.parametrize(
    ("ddl", "failed", "phrase"),
    [
        (
            "ALTER TABLE shadow_instances ADD COLUMN audit_tag VARCHAR(20) NOT NULL",
            ["instances"],
            "shadow_instances.audit_tag is NOT NULL without a default and instances has no "
            "such column; nothing moved from instances. Fix the shadow table(s) (ALTER TABLE "
            "shadow_instances MODIFY audit_tag varchar(20) NULL) and archive again",
        ),
        (
            "ALTER TABLE shadow_instance_faults MODIFY message VARCHAR(5)",
            ["instances", "instance_faults"],
            "shadow_instance_faults.message is varchar(5), which cannot hold every value of "
            "instance_faults.message (varchar(255)); nothing moved from {table}. Fix the "
            "shadow table(s) (ALTER TABLE shadow_instance_faults MODIFY message varchar(255) "
            "NULL) and archive again",
        ),
        (
            "DROP TABLE shadow_instances",
            ["instances"],
            "shadow_instances is missing, so nothing moved from instances. Create it (CREATE "
            "TABLE shadow_instances AS SELECT * FROM instances WHERE 1 = 0; ALTER TABLE "
            "shadow_instances ADD PRIMARY KEY (id)) and archive again",
        ),
        (
            "DROP TABLE shadow_instance_faults",
            ["instance_faults", "instances"],
            None,
        ),
    ],
)
def test_shadow_drift_fails_the_table_before_anything_moves(
    pair: Pair, ddl: str, failed: list[str], phrase: str | None
) -> None:
    pair.sql(ddl)
    before = pair.snapshot()

    run = subprocess.run(
        pair.cli("archive", "--until-complete"), capture_output=True, text=True, timeout=120
    )

    assert run.returncode == 255, run.stderr
    lines = run.stderr.splitlines()
    tables = [m[1] for x in lines if (m := re.match(r"novadb: error: main: (\w+): ", x))]
    assert (len(tables), sorted(tables)) == (len(lines), sorted(failed)), lines
    if phrase is not None:
        for table in failed:
            assert f"novadb: error: main: {table}: {phrase.format(table=table)}" in lines
    else:
        assert any("shadow_instance_faults missing: instances rows take their "
                   "instance_faults rows with them, so nothing moved from instances" in x
                   for x in lines), lines  # fmt: skip
    after = pair.snapshot()
    for table in failed:
        assert after[f"main.{table}"] == before[f"main.{table}"], table
    assert json.loads(run.stdout)["failures"] == [x.removeprefix("novadb: error: ") for x in lines]


def test_a_read_only_user_is_told_which_privilege_is_missing(pair: Pair) -> None:
    user = f"ro_{secrets.token_hex(3)}"
    url = make_url(pair.cloud.main_url)
    with pair.server.begin() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'R0-s3cret'"))
        conn.execute(sa.text(f"GRANT SELECT ON `{pair.cloud.main}`.* TO '{user}'@'%'"))
        conn.execute(sa.text(f"GRANT SELECT ON `{pair.cloud.api}`.* TO '{user}'@'%'"))
    read_only = url.set(username=user, password="R0-s3cret").render_as_string(False)
    before = pair.snapshot()
    try:
        run = subprocess.run(
            pair.cli("archive", "--until-complete", database=read_only),
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        with pair.server.begin() as conn:
            conn.execute(sa.text(f"DROP USER '{user}'@'%'"))

    assert run.returncode == 3, run.stderr
    (line,) = run.stderr.splitlines()
    assert "R0-s3cret" not in line
    assert re.match(
        rf"novadb: error: archive of mysql\+pymysql://{user}:\*\*\*@\S+ stopped: user "
        rf"'{user}'@'[^']+' lacks INSERT on shadow_\w+; nothing was changed by the failing "
        r"statement \(nothing was archived before that\)\. Grant it",
        line,
    ), line
    assert pair.snapshot() == before


def test_purge_keeps_going_after_a_lost_connection(
    pair: Pair, kill_on: Callable[[Pair, str, int], Killer]
) -> None:
    assert _archive(pair, batch_size=1000).complete
    killer = kill_on(pair, r"^DELETE FROM shadow_instance_system_metadata\b", 2)

    result = purge(pair.cloud.settings, PurgeOptions(purge_all=True, batch_size=50))

    assert killer.killed == 1
    assert result.reconnects >= 1
    end = pair.snapshot()
    assert all(not rows for t, rows in end.items() if t.startswith("main.shadow_"))


def test_check_reports_what_archive_refuses(pair: Pair) -> None:
    """The pre-upgrade check names the same shadow columns, with the same fix."""
    pair.sql("ALTER TABLE shadow_instances ADD COLUMN audit_tag VARCHAR(20) NOT NULL")
    pair.sql("ALTER TABLE shadow_instance_faults MODIFY message VARCHAR(5)")

    result = check(pair.cloud.settings)

    drift = {f.subject: f for f in result.findings if f.code == "shadow-drift"}
    assert set(drift) == {"instances", "instance_faults"}
    assert all(f.severity == "blocker" for f in drift.values())
    assert "shadow_instances.audit_tag is NOT NULL without a default" in drift["instances"].summary
    assert (
        drift["instances"].fix == "ALTER TABLE shadow_instances MODIFY audit_tag varchar(20) NULL"
    )
    assert "MODIFY message varchar(255)" in drift["instance_faults"].fix
    for finding in drift.values():
        for statement in finding.fix.split("; "):
            pair.sql(statement)
    # Fixed as check said: archive moves everything (shadow_instances keeps its extra column).
    fixed = _archive(pair)
    assert fixed.complete and fixed.failures == []
    assert pair.sql("SELECT COUNT(*) FROM instances WHERE deleted != 0") == [(0,)]
