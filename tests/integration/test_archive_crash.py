"""archive's end state survives SIGKILL at any moment, and a writer working beside it (MariaDB).

Operators run ``archive --until-complete`` from cron on a live cloud and kill it
when it overruns a window.  archive promises (see :mod:`novadb.archive.archive`) that
every batch is one transaction on the cell, with the API rows committed just
before it, so a run killed anywhere and run again ends exactly where an
uninterrupted run ends; and that rows written or soft-deleted while it runs are
neither lost nor duplicated.  These tests check both promises on real row sets.

``sample_cloud.populate`` is deterministic for a seed except for its uuids
(``uuid.uuid4()``, not seeded), so the crash test copies one generated cloud
instead of generating it twice.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive
from novadb.archive.graph import MODEL_EDGES, load_graph
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.sample import cloud as sample_cloud
from novadb.sample.cloud import CloudSpec, populate
from novadb.schema.sync import sync
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

pytestmark = pytest.mark.slow

NewDb = Callable[[], str]
Snapshot = dict[str, Counter[tuple[Any, ...]]]  # "main.<table>" / "api.<table>" -> rows

API_TABLES = ("instance_mappings", "request_specs", "instance_group_member")
SEED = 20240611
TRIALS = 20
# Columns the concurrent writer changes when it soft-deletes a row.
MUTABLE = frozenset({"deleted", "deleted_at", "updated_at"})
# The tables whose rows sample_cloud soft-deletes with their instance (and so must the writer).
SOFT_DELETED_WITH_INSTANCE = (
    "instance_extra", "instance_info_caches", "instance_system_metadata", "instance_metadata",
    "block_device_mapping", "instance_faults", "migrations", "virtual_interfaces",
)  # fmt: skip


# -- databases -----------------------------------------------------------------
@dataclass(frozen=True)
class Cloud:
    """A synced cell + API database pair on the test server."""

    main_url: str
    api_url: str

    @property
    def main(self) -> str:
        return str(make_url(self.main_url).database)

    @property
    def api(self) -> str:
        return str(make_url(self.api_url).database)

    @property
    def settings(self) -> Settings:
        return load_settings(database=self.main_url, api_database=self.api_url)


def _synced(mysql_dbs: NewDb) -> Cloud:
    main, api, placement = mysql_dbs(), mysql_dbs(), mysql_dbs()
    sync(load_settings(database=main, api_database=api, placement_database=placement))
    return Cloud(main, api)


def _server(url: str) -> Engine:
    """An engine on the server itself (no default database, no pooled state carried over)."""
    return sa.create_engine(make_url(url).set(database=None), poolclass=NullPool)


def _tables(conn: Connection, db: str) -> list[str]:
    return list(
        conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = :db AND table_type = 'BASE TABLE' ORDER BY table_name"
            ),
            {"db": db},
        ).scalars()
    )


def _restore(conn: Connection, src: str, dst: str, only: Iterable[str] | None = None) -> None:
    """Make every table (or those ``only``) of ``dst`` hold exactly the rows of ``src``'s twin."""
    conn.exec_driver_sql("SET SESSION foreign_key_checks = 0")
    for table in _tables(conn, src) if only is None else only:
        conn.exec_driver_sql(f"DELETE FROM `{dst}`.`{table}`")
        conn.exec_driver_sql(f"INSERT INTO `{dst}`.`{table}` SELECT * FROM `{src}`.`{table}`")


def _snapshot(conn: Connection, cloud: Cloud) -> Snapshot:
    """Every row of every table of the cell and API databases, as multisets."""
    out: Snapshot = {}
    for role, db in (("main", cloud.main), ("api", cloud.api)):
        for table in _tables(conn, db):
            rows = conn.exec_driver_sql(f"SELECT * FROM `{db}`.`{table}`")
            out[f"{role}.{table}"] = Counter(tuple(r) for r in rows)
    return out


def _diff(expected: Snapshot, actual: Snapshot) -> list[str]:
    """Per table that differs: how many rows are missing and how many are extra."""
    out = []
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table, Counter()), actual.get(table, Counter())
        if want != got:
            missing, extra = want - got, got - want
            sample = next(iter(missing or extra))
            out.append(
                f"{table}: {sum(missing.values())} missing, {sum(extra.values())} extra "
                f"(e.g. {'missing' if missing else 'extra'} {sample[:4]}...)"
            )
    return out


def _changed(before: Snapshot, after: Snapshot, role: str) -> list[str]:
    """Tables of the ``role`` database whose rows differ between two snapshots."""
    prefix = f"{role}."
    return [
        t.removeprefix(prefix) for t in before if t.startswith(prefix) and before[t] != after[t]
    ]


def _moved(result_rows: dict[str, int]) -> dict[str, int]:
    """An archive result's rows without zero entries (API tables appear with 0)."""
    return {t: n for t, n in result_rows.items() if n}


def _archive_cmd(cloud: Cloud, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "novadb.cli.main", "--json",
        "--database", cloud.main_url, "--api-database", cloud.api_url,
        "archive", "--until-complete", *options,
    ]  # fmt: skip


def _autocommit(engine: Engine) -> Connection:
    return engine.connect().execution_options(isolation_level="AUTOCOMMIT")


# -- 1. SIGKILL at a random moment, then run again ------------------------------
def _progress_probe(cloud: Cloud) -> str:
    """SQL counting rows of the tables archive walks first and longest.

    Non-zero once the first batch committed (compute_nodes move first); it then
    grows batch by batch through instance_id_mappings and instances.
    """
    counts = (
        f"(SELECT COUNT(*) FROM `{cloud.main}`.`shadow_{t}`)"
        for t in ("compute_nodes", "instance_id_mappings", "instances", "services")
    )
    return "SELECT " + " + ".join(counts)


@dataclass
class Calibration:
    """When the uninterrupted run committed its first batch, and when it exited."""

    first_batch: float
    finished: float
    progress: int  # the progress probe's value at the end
    rows: dict[str, int]


def _reference_run(server: Engine, cloud: Cloud) -> Calibration:
    """Run archive to completion in a subprocess, timing its first batch and its exit."""
    probe = _progress_probe(cloud)
    first = None
    with _autocommit(server) as conn:
        start = time.monotonic()
        proc = subprocess.Popen(
            _archive_cmd(cloud, "--batch-size", "50"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while proc.poll() is None:
            if first is None and conn.exec_driver_sql(probe).scalar():
                first = time.monotonic() - start
            time.sleep(0.005)
        finished = time.monotonic() - start
        progress = int(conn.exec_driver_sql(probe).scalar_one())
    out, err = proc.communicate()
    assert (proc.returncode, err) == (1, ""), out
    result = json.loads(out)
    assert result["complete"] and not result["failures"] and not result["held_back"], result
    assert first is not None, "the reference run archived nothing"
    return Calibration(first, finished, progress, _moved(result["rows"]))


def _counts(conn: Connection, cloud: Cloud) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per non-empty shadow table, and rows per API table."""
    shadow = {}
    for table in _tables(conn, cloud.main):
        if table.startswith("shadow_"):
            n = conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{cloud.main}`.`{table}`").scalar()
            if n:
                shadow[table.removeprefix("shadow_")] = int(n)
    api = {
        t: int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM `{cloud.api}`.`{t}`").scalar_one())
        for t in API_TABLES
    }
    return shadow, api


def _writes_open(conn: Connection, cloud: Cloud) -> bool:
    """Whether a session on the trial databases holds uncommitted row changes right now."""
    return bool(
        conn.execute(
            sa.text(
                "SELECT COUNT(*) FROM information_schema.innodb_trx t "
                "JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id "
                "WHERE p.db IN (:main, :api) AND t.trx_rows_modified > 0"
            ),
            {"main": cloud.main, "api": cloud.api},
        ).scalar()
    )


def _api_ahead(conn: Connection, cloud: Cloud) -> int:
    """Live instances whose API rows are already gone: killed between the two commits."""
    return int(
        conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{cloud.main}`.instances i WHERE i.deleted != 0 AND NOT "
            f"EXISTS (SELECT 1 FROM `{cloud.api}`.instance_mappings m "
            f"WHERE m.instance_uuid = i.uuid)"
        ).scalar_one()
    )


def _kill_at(
    server: Engine, cloud: Cloud, window: str, timing: Calibration, rng: random.Random
) -> tuple[str, float, bool, int, str]:
    """Start archive, SIGKILL it in ``window``; return what the kill hit.

    ``start`` and ``end`` are random delays from launch, scaled by the reference
    run.  ``run`` waits until a random share of the rows has moved, then up to
    about two batches longer: run times vary with the machine's load, progress
    does not, so these kills land among the batches (between or inside them).
    """
    probe = _progress_probe(cloud)
    with _autocommit(server) as conn:
        started = time.monotonic()
        proc = subprocess.Popen(
            _archive_cmd(cloud, "--batch-size", "50"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if window == "start":
            time.sleep(rng.uniform(0.05, max(0.06, timing.first_batch * 0.9)))
        elif window == "end":
            time.sleep(rng.uniform(0.9, 1.2) * timing.finished)
        else:
            target = rng.randint(1, timing.progress - 60)
            pause = rng.uniform(0.0, 0.05)
            while proc.poll() is None and conn.exec_driver_sql(probe).scalar_one() < target:
                time.sleep(0.002)
            time.sleep(pause)
        delay = time.monotonic() - started
        open_writes = _writes_open(conn, cloud)
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate(timeout=30)
        ahead = _api_ahead(conn, cloud)
    assert proc.returncode in (-9, 1), f"exit {proc.returncode}: {err}"
    return f"exit {proc.returncode}", delay, open_writes, ahead, err


def test_archive_killed_at_random_moments_reaches_the_uninterrupted_end_state(
    mysql_dbs: NewDb,
) -> None:
    """SIGKILL anywhere (start-up, mid-batch, between the API and cell commits, after the
    work) and a second run: the same rows live, in shadow and in the API DB as one run."""
    pristine, reference, trial = _synced(mysql_dbs), _synced(mysql_dbs), _synced(mysql_dbs)
    main, api = create_engine(pristine.main_url), create_engine(pristine.api_url)
    spec = CloudSpec(instances=1500, deleted_fraction=0.6, orphan_fraction=0.1, seed=SEED)
    generated = populate(main, api, spec)
    main.dispose()
    api.dispose()
    assert generated.orphaned_instances > 0  # children left live under deleted instances

    server = _server(pristine.main_url)
    with server.begin() as conn:
        for copy in (reference, trial):
            _restore(conn, pristine.main, copy.main)
            _restore(conn, pristine.api, copy.api)
    with server.connect() as conn:
        before = _snapshot(conn, pristine)
        _, api_before = _counts(conn, pristine)
    timing = _reference_run(server, reference)
    with server.connect() as conn:
        expected = _snapshot(conn, reference)
        shadow_after, api_after = _counts(conn, reference)
    # Each trial ends asserted equal to ``expected``, so putting back the tables
    # archive changed makes the trial databases pristine again.
    changed = {role: _changed(before, expected, role) for role in ("main", "api")}
    assert set(changed["api"]) == set(API_TABLES), changed
    # The reference really archived: every deleted instance and its API rows went.
    assert timing.rows["instances"] == generated.deleted_instances
    assert shadow_after == {t: n for t, n in timing.rows.items() if not t.startswith("API_DB.")}
    for table in API_TABLES:
        assert api_before[table] - api_after[table] == timing.rows.get(f"API_DB.{table}", 0)

    # A few kills during start-up, most while batches run, a few around the end;
    # the order and the delays come from a fixed seed so a failure reproduces.
    rng = random.Random(SEED)
    plan = ["start"] * 3 + ["run"] * (TRIALS - 6) + ["end"] * 3
    rng.shuffle(plan)
    landed: Counter[str] = Counter()
    in_transaction = api_ahead = 0
    log = []
    for n, window in enumerate(plan):
        if n:
            with server.begin() as conn:
                _restore(conn, pristine.main, trial.main, changed["main"])
                _restore(conn, pristine.api, trial.api, changed["api"])
        exit_, delay, open_writes, ahead, err = _kill_at(server, trial, window, timing, rng)
        with server.connect() as conn:
            shadow_killed, api_killed = _counts(conn, trial)
        if (shadow_killed, api_killed) == (shadow_after, api_after):
            phase = "after completion"
        elif not shadow_killed and api_killed == api_before:
            phase = "before any batch"
        else:
            phase = "mid-run"
        landed[phase] += 1
        in_transaction += open_writes
        api_ahead += bool(ahead)
        what = f"trial {n} (seed {SEED}, {window}, killed at {delay:.3f} s, {exit_})"
        log.append(f"{what}: {phase}{', writes open' if open_writes else ''}")
        assert err == "", what

        rerun = archive(trial.settings, ArchiveOptions(until_complete=True, batch_size=50))
        assert rerun.complete and not rerun.failures and not rerun.held_back, (what, rerun)
        with server.connect() as conn:
            end = _snapshot(conn, trial)
        assert _diff(expected, end) == [], what
        # The second run moved exactly what the killed one left: nothing counted twice.
        left = Counter(shadow_after)
        left.subtract(shadow_killed)
        left.update({f"API_DB.{t}": api_killed[t] - api_after[t] for t in API_TABLES})
        assert _moved(rerun.rows) == _moved(dict(left)), what

    summary = (
        f"{TRIALS} kills (reference run {timing.finished:.2f} s, first batch at "
        f"{timing.first_batch:.2f} s): {dict(landed)}; {in_transaction} with uncommitted "
        f"writes open, {api_ahead} between the API and cell commits"
    )
    print(summary, *log, sep="\n")
    assert landed["mid-run"] >= TRIALS / 2, summary + "\n" + "\n".join(log)

    # A kill between the API commit and the cell commit is too narrow to hit by timing;
    # build the state it leaves (the first instances batch's API rows gone, the
    # instances still live and deleted) and check that a run from there ends the same.
    with server.begin() as conn:
        _restore(conn, pristine.main, trial.main, changed["main"])
        _restore(conn, pristine.api, trial.api, changed["api"])
        batch = list(
            conn.exec_driver_sql(
                f"SELECT uuid FROM `{trial.main}`.instances WHERE deleted != 0 "
                f"ORDER BY id LIMIT 50"
            ).scalars()
        )
        for table in API_TABLES:
            conn.execute(
                sa.text(
                    f"DELETE FROM `{trial.api}`.`{table}` WHERE instance_uuid IN :uuids"
                ).bindparams(sa.bindparam("uuids", expanding=True)),
                {"uuids": batch},
            )
        assert _api_ahead(conn, trial) == 50
        _, api_ahead_state = _counts(conn, trial)
    rerun = archive(trial.settings, ArchiveOptions(until_complete=True, batch_size=50))
    assert rerun.complete and not rerun.failures, rerun
    with server.connect() as conn:
        assert _diff(expected, _snapshot(conn, trial)) == []
    assert _moved(rerun.rows) == _moved(
        {**shadow_after, **{f"API_DB.{t}": api_ahead_state[t] - api_after[t] for t in API_TABLES}}
    )


# -- 2. A writer beside a running archive ----------------------------------------------
class _Recorder:
    """Every row the test's engines inserted and committed, per table."""

    def __init__(self, *engines: Engine) -> None:
        self.rows: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._lock = threading.Lock()
        for engine in engines:
            event.listen(engine, "after_execute", self._executed)
            event.listen(engine, "commit", self._committed)
            event.listen(engine, "rollback", self._rolled_back)

    def _executed(
        self, conn: Connection, clause: Any, multiparams: Any, params: Any, *_: Any
    ) -> None:
        if not isinstance(clause, sa.Insert):
            return
        # SQLAlchemy hands a single parameter set over as ``params``, several as
        # ``multiparams``; ``insert().values(...)`` carries its values in the statement.
        if multiparams:
            rows = list(multiparams)
        elif params:
            rows = [params]
        else:
            rows = [clause.compile().params]
        pending = conn.info.setdefault("novadb_test_pending", [])
        pending.extend((clause.table.name, dict(r)) for r in rows)

    def _committed(self, conn: Connection) -> None:
        with self._lock:
            for table, row in conn.info.pop("novadb_test_pending", []):
                self.rows[table].append(row)

    def _rolled_back(self, conn: Connection) -> None:
        conn.info.pop("novadb_test_pending", None)


def _retryable(exc: DBAPIError) -> bool:
    args = getattr(exc.orig, "args", ())
    return bool(args) and args[0] in (1205, 1213)  # lock wait timeout, deadlock


@dataclass
class _Writer:
    """New instances (some born deleted) and soft-deletes of live ones, for a while."""

    main: Engine
    api: Engine
    seconds: float
    archiving: Callable[[], bool]
    rng: random.Random = field(default_factory=lambda: random.Random(SEED))
    soft_deleted: set[str] = field(default_factory=set)
    rounds: int = 0
    beside_archive: int = 0  # rounds that ended while the archive was still running
    retries: int = 0
    error: BaseException | None = None

    def run(self) -> None:
        end = time.monotonic() + self.seconds
        try:
            while time.monotonic() < end:
                self.rounds += 1
                self._again(self._populate)
                self._again(self._soft_delete)
                self.beside_archive += self.archiving()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _again(self, work: Callable[[], object]) -> None:
        for _ in range(20):
            try:
                work()
                return
            except DBAPIError as exc:
                if not _retryable(exc):
                    raise
                self.retries += 1
        raise AssertionError("the writer kept deadlocking")

    def _populate(self) -> None:
        spec = CloudSpec(instances=50, seed=SEED + self.rounds, deleted_fraction=0.5)
        populate(self.main, self.api, spec)

    def _soft_delete(self) -> None:
        """Nova's delete of a few live instances: instance and children in one transaction."""
        with self.main.begin() as conn:
            live = conn.exec_driver_sql("SELECT id, uuid FROM instances WHERE deleted = 0").all()
            chosen = self.rng.sample(live, min(5, len(live)))
            if not chosen:
                return
            ids, uuids = [r[0] for r in chosen], [r[1] for r in chosen]
            updated = conn.execute(
                sa.text(
                    "UPDATE instances SET deleted = id, deleted_at = NOW(), updated_at = NOW() "
                    "WHERE id IN :ids AND deleted = 0"
                ).bindparams(sa.bindparam("ids", expanding=True)),
                {"ids": ids},
            ).rowcount
            # Live rows are the writer's alone: archive never moves them.
            assert updated == len(ids)
            for table in SOFT_DELETED_WITH_INSTANCE:
                conn.execute(
                    sa.text(
                        f"UPDATE {table} SET deleted = id, deleted_at = NOW(), updated_at = NOW() "
                        "WHERE instance_uuid IN :uuids AND deleted = 0"
                    ).bindparams(sa.bindparam("uuids", expanding=True)),
                    {"uuids": uuids},
                )
            conn.execute(
                sa.text(
                    "UPDATE instance_id_mappings SET deleted = id, deleted_at = NOW() "
                    "WHERE uuid IN :uuids AND deleted = 0"
                ).bindparams(sa.bindparam("uuids", expanding=True)),
                {"uuids": uuids},
            )
        self.soft_deleted.update(uuids)


def _key(row: dict[str, Any], columns: Iterable[str]) -> tuple[Any, ...]:
    return tuple(row[c] for c in columns)


def _inventory_errors(conn: Connection, cloud: Cloud, recorder: _Recorder) -> list[str]:
    """Rows the writer committed that are not in live or shadow exactly once, and strays."""
    errors = []
    for table in sample_cloud.MAIN_TABLES:
        written = recorder.rows[table]
        columns = sorted(set(written[0]) - MUTABLE) if written else ["id"]
        assert all(sorted(set(r) - MUTABLE) == columns for r in written), table
        assert all(r["id"] for r in written), table
        want = Counter(_key(r, columns) for r in written)
        select = ", ".join(f"`{c}`" for c in columns)
        found = conn.exec_driver_sql(
            f"SELECT {select} FROM `{cloud.main}`.`{table}` "
            f"UNION ALL SELECT {select} FROM `{cloud.main}`.`shadow_{table}`"
        )
        got = Counter(tuple(r) for r in found)
        if got != want:
            errors.append(
                f"{table}: {sum((want - got).values())} written rows lost, "
                f"{sum((got - want).values())} duplicated or unknown"
            )
    # API rows: there while their instance is live, gone once it is archived.
    live_uuids = set(conn.exec_driver_sql(f"SELECT uuid FROM `{cloud.main}`.instances").scalars())
    for table in API_TABLES:
        written = recorder.rows[table]
        columns = sorted(set(written[0]) - MUTABLE) if written else ["instance_uuid"]
        assert all(sorted(set(r) - MUTABLE) == columns for r in written), table
        assert all(r["instance_uuid"] for r in written), table
        want = Counter(_key(r, columns) for r in written if r["instance_uuid"] in live_uuids)
        select = ", ".join(f"`{c}`" for c in columns)
        got = Counter(
            tuple(r) for r in conn.exec_driver_sql(f"SELECT {select} FROM `{cloud.api}`.`{table}`")
        )
        if got != want:
            errors.append(
                f"API {table}: {sum((want - got).values())} rows of live instances missing, "
                f"{sum((got - want).values())} rows of archived (or unknown) instances left"
            )
    return errors


def _dangling(conn: Connection, cloud: Cloud) -> dict[str, int]:
    """Live rows that reference a row archive moved to shadow (per model edge, and API)."""
    out = {}
    for e in MODEL_EDGES:
        n = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{cloud.main}`.`{e.child}` WHERE `{e.column}` IN "
            f"(SELECT `{e.parent_column}` FROM `{cloud.main}`.`shadow_{e.parent}`)"
        ).scalar_one()
        if n:
            out[f"{e.child}.{e.column}"] = int(n)
    for table in API_TABLES:
        n = conn.exec_driver_sql(
            f"SELECT COUNT(*) FROM `{cloud.api}`.`{table}` WHERE instance_uuid IN "
            f"(SELECT uuid FROM `{cloud.main}`.shadow_instances)"
        ).scalar_one()
        if n:
            out[f"API_DB.{table}"] = int(n)
    return out


def test_archive_beside_a_writer_loses_and_duplicates_nothing(
    mysql_dbs: NewDb,
) -> None:
    """archive --until-complete while new instances arrive and live ones are deleted:
    every written row ends live or in shadow exactly once, no live row points into
    shadow, and a last run leaves no deleted instance behind."""
    cloud = _synced(mysql_dbs)
    main, api = create_engine(cloud.main_url), create_engine(cloud.api_url)
    recorder = _Recorder(main, api)
    populate(main, api, CloudSpec(instances=1000, deleted_fraction=0.5, orphan_fraction=0.1))
    assert len(recorder.rows["instances"]) == 1000

    proc = subprocess.Popen(
        _archive_cmd(cloud, "--sleep", "0.05", "--batch-size", "100"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    writer = _Writer(main, api, seconds=4.0, archiving=lambda: proc.poll() is None)
    thread = threading.Thread(target=writer.run)
    thread.start()
    thread.join()
    out, err = proc.communicate(timeout=120)
    assert writer.error is None, repr(writer.error)
    assert proc.returncode in (0, 1), err
    assert err == ""
    first = json.loads(out)
    assert first["failures"] == [] and first["complete"] and first["stopped"] is None, first
    # Their transactions interleaved.  (archive may end early, once a pass finds
    # nothing new; the final run below then has the writer's later rows to move.)
    assert writer.beside_archive >= 2 and writer.soft_deleted, writer

    server = _server(cloud.main_url)
    with _autocommit(server) as conn:
        assert _inventory_errors(conn, cloud, recorder) == []
        assert _dangling(conn, cloud) == {}

    with main.connect() as conn:
        graph = load_graph(conn)
    final = archive(cloud.settings, ArchiveOptions(until_complete=True, batch_size=100))
    assert final.complete and not final.failures and final.held_back == {}, final
    with _autocommit(server) as conn:
        assert _inventory_errors(conn, cloud, recorder) == []
        assert _dangling(conn, cloud) == {}
        for table in graph.tables:
            left = conn.exec_driver_sql(
                f"SELECT COUNT(*) FROM `{cloud.main}`.`{table}` WHERE deleted != 0"
            ).scalar_one()
            assert left == 0, f"{table}: {left} soft-deleted rows still live"
        shadowed = set(
            conn.exec_driver_sql(f"SELECT uuid FROM `{cloud.main}`.shadow_instances").scalars()
        )
        assert writer.soft_deleted <= shadowed
        shadow, api_live = _counts(conn, cloud)
    # The two runs' counts add up to what the shadow tables (and the API DB) lost.
    both = Counter(_moved(first["rows"]))
    both.update(_moved(final.rows))
    expected = dict(shadow)
    expected |= {
        f"API_DB.{t}": len(recorder.rows[t]) - api_live[t]
        for t in API_TABLES
        if len(recorder.rows[t]) - api_live[t]
    }
    assert dict(both) == expected
    print(
        f"writer: {writer.rounds} rounds ({writer.beside_archive} beside archive), "
        f"{len(writer.soft_deleted)} instances soft-deleted, "
        f"{writer.retries} retries; first archive {first['total']} rows in "
        f"{first['batches']} batches, final {final.total}"
    )
    main.dispose()
    api.dispose()


def test_populate_after_archive_does_not_reuse_archived_ids(mysql_dbs: NewDb) -> None:
    """populate is documented as a writer that can run again beside archive; its new rows
    must not take ids of archived rows, as AUTO_INCREMENT would not."""
    cloud = _synced(mysql_dbs)
    main, api = create_engine(cloud.main_url), create_engine(cloud.api_url)
    populate(main, api, CloudSpec(instances=20, deleted_fraction=1.0, orphan_fraction=0, seed=1))
    first = archive(cloud.settings, ArchiveOptions(until_complete=True))
    assert first.rows["instances"] == 20
    populate(main, api, CloudSpec(instances=20, deleted_fraction=1.0, orphan_fraction=0, seed=2))
    with main.connect() as conn:
        reused = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM instances i JOIN shadow_instances s ON s.id = i.id"
        ).scalar_one()
    main.dispose()
    api.dispose()
    second = archive(cloud.settings, ArchiveOptions(until_complete=True))
    assert (reused, second.failures, second.rows.get("instances")) == (0, [], 20)
