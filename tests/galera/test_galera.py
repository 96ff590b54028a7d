"""novadb on a 3-node MariaDB Galera cluster: what an operator's worst day does to it.

Each test drives the real ``novadb`` command (a subprocess, as cron or COU
would) against one node, and checks row sets on every node afterwards:
``sync`` replicates DDL; archive passes write-set limits by halving (and says
so); archive beside a writer on another node surfaces no error and loses or
duplicates nothing; a node killed mid-run is survived when the cluster keeps
quorum, and when it is the node archive talks to, the run ends in one clean
line and a rerun on a survivor ends where an uninterrupted run ends; purge and
online-migrate work there too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from novadb.archive.archive import ArchiveOptions, archive
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.sample.cloud import CloudSpec, populate
from novadb.schema.sync import sync

from tests import schema_snapshot
from tests.galera.conftest import NODES, Galera
from tests.integration.test_archive_crash import Cloud as CrashCloud
from tests.integration.test_archive_crash import (
    _dangling,
    _inventory_errors,
    _Recorder,
    _Writer,
)

REFERENCE = Path(__file__).parents[1] / "reference"
ARCHIVED = ("instances", "instance_extra", "instance_system_metadata", "instance_actions")


@dataclass
class GCloud:
    """A synced cell + API + Placement database trio on the cluster."""

    galera: Galera
    main: str
    api: str
    placement: str

    def settings(self, node: int = 1) -> Settings:
        g = self.galera
        return load_settings(
            database=g.url(node, self.main),
            api_database=g.url(node, self.api),
            placement_database=g.url(node, self.placement),
        )

    def crash_cloud(self, node: int = 1) -> CrashCloud:
        return CrashCloud(self.galera.url(node, self.main), self.galera.url(node, self.api))

    def novadb(self, node: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(node, *args), capture_output=True, text=True, timeout=timeout
        )

    def command(self, node: int, *args: str) -> list[str]:
        g = self.galera
        return [
            sys.executable, "-m", "novadb.cli.main", "--json",
            "--database", g.url(node, self.main), "--api-database", g.url(node, self.api),
            "--placement-database", g.url(node, self.placement), *args,
        ]  # fmt: skip

    def count(self, node: int, sql: str) -> int:
        return int(self.galera.sql(node, sql, self.main)[0][0])

    def rows(self, node: int, table: str, database: str | None = None) -> Counter[tuple]:
        return Counter(self.galera.sql(node, f"SELECT * FROM `{table}`", database or self.main))


def _cloud(galera: Galera, instances: int = 120, seed: int = 7) -> GCloud:
    cloud = GCloud(galera, galera.new_db(), galera.new_db(), galera.new_db())
    sync(cloud.settings())
    main, api = create_engine(galera.url(1, cloud.main)), create_engine(galera.url(1, cloud.api))
    try:
        populate(main, api, CloudSpec(instances=instances, deleted_fraction=0.5, seed=seed))
    finally:
        main.dispose()
        api.dispose()
    return cloud


def _exactly_once(cloud: GCloud, before: dict[str, Counter[tuple]], node: int = 1) -> None:
    """Every row of ``before`` is in exactly one of live and shadow, and nothing else is."""
    for table, rows in before.items():
        both = cloud.rows(node, table) + cloud.rows(node, f"shadow_{table}")
        assert both == rows, f"{table}: {sum((rows - both).values())} lost, " + (
            f"{sum((both - rows).values())} duplicated"
        )


def _live_and_shadow(cloud: GCloud, node: int = 1) -> dict[str, Counter[tuple]]:
    return {
        t: cloud.rows(node, t) + cloud.rows(node, f"shadow_{t}") for t in ARCHIVED
    }  # fmt: skip


def _end_state(cloud: GCloud, node: int) -> dict[str, Counter[tuple]]:
    return {
        name: cloud.rows(node, name)
        for t in ARCHIVED
        for name in (t, f"shadow_{t}")
    }  # fmt: skip


def _deleted_left(cloud: GCloud, node: int) -> int:
    return cloud.count(node, "SELECT COUNT(*) FROM instances WHERE deleted != 0")


# -- sync -------------------------------------------------------------------------------


def test_sync_replicates_the_schema_to_every_node(galera: Galera) -> None:
    dbs = {"main": galera.new_db(), "api": galera.new_db(), "placement": galera.new_db()}
    settings = load_settings(
        database=galera.url(1, dbs["main"]),
        api_database=galera.url(1, dbs["api"]),
        placement_database=galera.url(1, dbs["placement"]),
    )

    result = sync(settings)

    assert [d.after is not None for d in result.databases] == [True] * len(result.databases)
    for role, database in dbs.items():
        reference = json.loads((REFERENCE / f"{role}.mysql.json").read_text())
        for node in NODES:
            got = schema_snapshot.snapshot(galera.url(node, database))
            assert schema_snapshot.diff(reference, got) == [], (role, node)
        versions = {
            node: galera.sql(node, "SELECT version_num FROM alembic_version", database)
            for node in NODES
        }
        assert versions[1] == versions[2] == versions[3] != []


# -- write-set limits ---------------------------------------------------------------------


def _archive_under_limit(
    galera: Galera, setting: str, value: int, *args: str, mid_run: bool = False
) -> dict[str, Any]:
    """Archive on node 1 with ``setting`` at ``value``: before the run, or lowered mid-run."""
    cloud = _cloud(galera)
    before = _live_and_shadow(cloud)
    proc = None
    if mid_run:
        # One batch at a time, small enough to commit under the default limits.
        command = cloud.command(1, "archive", "--until-complete", "--sleep", "0.5", *args)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        _wait_first_batch(cloud, 1, proc, 60)
    for node in NODES:  # GLOBAL, not replicated: the limit is the writing node's
        galera.sql(node, f"SET GLOBAL {setting} = {value}")
    try:
        if proc is None:
            run = cloud.novadb(1, "archive", "--until-complete", *args)
            returncode, out, err = run.returncode, run.stdout, run.stderr
        else:
            out, err = proc.communicate(timeout=120)
            returncode = proc.returncode
    finally:
        for node in NODES:
            galera.sql(node, f"SET GLOBAL {setting} = DEFAULT")

    assert (returncode, err) == (1, ""), err
    result = json.loads(out)
    assert result["complete"] and result["failures"] == [], result
    _exactly_once(cloud, before)
    assert _deleted_left(cloud, 1) == 0
    assert _end_state(cloud, 3) == _end_state(cloud, 1)  # replicated as it committed
    return result


def test_archive_sizes_its_batches_under_wsrep_max_ws_rows(galera: Galera) -> None:
    """The limit is read before the first batch: batches fit it, none is refused."""
    result = _archive_under_limit(galera, "wsrep_max_ws_rows", 500)

    # Each moved row is two changes in the write set: batches of at most 200 rows.
    assert result["batches"] >= result["total"] // 200 > 1
    assert result["halvings"] == 0
    assert result["reconnects"] == 0


def test_archive_sizes_its_batches_under_wsrep_max_ws_size(galera: Galera) -> None:
    result = _archive_under_limit(galera, "wsrep_max_ws_size", 256 * 1024)

    assert result["batches"] > 1
    # Bytes are estimated from the server's row statistics (rows are counted):
    # the first batch may still be refused once; the run then keeps the smaller size.
    assert result["halvings"] <= 1


def test_a_limit_lowered_mid_run_halves_the_batches_it_refuses(galera: Galera) -> None:
    """The run read a larger limit; the server refuses the next batches; they are split."""
    result = _archive_under_limit(
        galera, "wsrep_max_ws_rows", 100, "--batch-size", "20", mid_run=True
    )

    assert result["halvings"] > 0
    assert result["batches"] > 1
    assert result["reconnects"] == 0


# -- a writer on another node ------------------------------------------------------------


def test_archive_beside_a_writer_on_another_node(galera: Galera) -> None:
    """Certification conflicts between the nodes are retried: no error, nothing lost."""
    cloud = GCloud(galera, galera.new_db(), galera.new_db(), galera.new_db())
    sync(cloud.settings())
    # The writer works on node 2 and records every row it commits.
    main2, api2 = create_engine(galera.url(2, cloud.main)), create_engine(galera.url(2, cloud.api))
    recorder = _Recorder(main2, api2)
    populate(main2, api2, CloudSpec(instances=200, deleted_fraction=0.5, seed=3))
    proc = subprocess.Popen(
        cloud.command(1, "archive", "--until-complete", "--batch-size", "20", "--sleep", "0.02"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    writer = _Writer(main2, api2, seconds=6.0, archiving=lambda: proc.poll() is None)
    thread = threading.Thread(target=writer.run)
    thread.start()
    thread.join()
    out, err = proc.communicate(timeout=120)

    assert writer.error is None, repr(writer.error)
    assert (proc.returncode, err) in ((0, ""), (1, "")), err
    first = json.loads(out)
    assert first["failures"] == [] and first["complete"], first
    assert writer.beside_archive >= 2, writer
    # The last rows the writer soft-deleted: a final run on node 3 moves them.
    final = archive(cloud.settings(3), ArchiveOptions(until_complete=True, batch_size=50))
    assert final.complete and not final.failures
    server = sa.create_engine(galera.url(2))
    with server.connect() as conn:
        assert _inventory_errors(conn, cloud.crash_cloud(2), recorder) == []
        assert _dangling(conn, cloud.crash_cloud(2)) == {}
    server.dispose()
    assert _deleted_left(cloud, 2) == 0
    print(
        f"writer: {writer.rounds} rounds, {writer.retries} retries; archive retried "
        f"{first['retries']} batches, {first['reconnects']} reconnects"
    )
    main2.dispose()
    api2.dispose()


# -- nodes killed mid-run ------------------------------------------------------------------


def _wait_first_batch(cloud: GCloud, node: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cloud.count(node, "SELECT COUNT(*) FROM shadow_instances"):
            return
        if proc.poll() is not None:
            raise AssertionError(f"archive ended before its first batch: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no batch committed in time")


def test_a_node_killed_mid_run_with_quorum_kept(galera: Galera) -> None:
    """Node 3 dies while archive works on node 1: the run goes on and finishes."""
    cloud = _cloud(galera, instances=150)
    before = _live_and_shadow(cloud)
    proc = subprocess.Popen(
        cloud.command(1, "archive", "--until-complete", "--batch-size", "5", "--sleep", "0.05"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_first_batch(cloud, 1, proc, 60)
    galera.kill(3)
    out, err = proc.communicate(timeout=120)

    assert (proc.returncode, err) == (1, ""), err
    result = json.loads(out)
    assert result["complete"] and result["failures"] == []
    _exactly_once(cloud, before)
    assert _deleted_left(cloud, 1) == 0
    galera.heal()  # node 3 rejoins (IST) and holds the same rows
    galera.wait_size(3, 3)
    assert _end_state(cloud, 3) == _end_state(cloud, 1)


def test_the_connected_node_killed_then_a_rerun_on_a_survivor(galera: Galera) -> None:
    """Node 1 dies under archive: one clean line, exit 75; node 2 finishes the job."""
    cloud = _cloud(galera, instances=150)
    # The uninterrupted end state, from a copy of the same rows.
    twin = GCloud(galera, galera.new_db(), galera.new_db(), cloud.placement)
    for source, copy in ((cloud.main, twin.main), (cloud.api, twin.api)):
        for table, _kind in galera.sql(
            1, "SHOW FULL TABLES WHERE Table_type = 'BASE TABLE'", source
        ):
            galera.sql(1, f"CREATE TABLE `{copy}`.`{table}` LIKE `{source}`.`{table}`")
            galera.sql(1, f"INSERT INTO `{copy}`.`{table}` SELECT * FROM `{source}`.`{table}`")
    reference = archive(twin.settings(2), ArchiveOptions(until_complete=True, batch_size=5))
    assert reference.complete
    before = _live_and_shadow(cloud, 2)
    proc = subprocess.Popen(
        cloud.command(1, "archive", "--until-complete", "--batch-size", "5", "--sleep", "0.05",
                      "--max-runtime", "3"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_first_batch(cloud, 1, proc, 60)
    galera.kill(1)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 75, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(
        f"novadb: error: archive of mysql+pymysql://root@127.0.0.1:13306/{cloud.main}"
    ), line
    assert "the server was unreachable" in line
    assert "nothing is lost or half-moved" in line
    assert "Run the same command again (on any node of the cluster) to finish" in line
    galera.wait_size(2, 2)
    _exactly_once(cloud, before, node=2)

    rerun = cloud.novadb(2, "archive", "--until-complete", "--batch-size", "5")

    assert rerun.returncode in (0, 1), rerun.stderr
    assert json.loads(rerun.stdout)["complete"]
    for table in ARCHIVED:
        for name in (table, f"shadow_{table}"):
            assert cloud.rows(2, name) == twin.rows(2, name, twin.main), name


# -- purge and online-migrate ------------------------------------------------------------


def test_purge_and_online_migrate_on_the_cluster(galera: Galera) -> None:
    cloud = _cloud(galera, instances=80)
    assert archive(cloud.settings(1), ArchiveOptions(until_complete=True)).complete
    live = {t: cloud.rows(3, t) for t in ARCHIVED}
    galera.sql(2, "UPDATE instances SET compute_id = NULL WHERE deleted = 0", cloud.main)
    unset = cloud.count(2, "SELECT COUNT(*) FROM instances WHERE compute_id IS NULL")
    assert unset > 0

    purged = cloud.novadb(2, "purge", "--all", "--batch-size", "7")
    migrated = cloud.novadb(3, "online-migrate", "--batch-size", "10", "--database", "main")

    assert (purged.returncode, purged.stderr) == (0, ""), purged.stderr
    assert json.loads(purged.stdout)["total"] > 0
    for node in NODES:
        for table in ARCHIVED:
            assert cloud.rows(node, f"shadow_{table}") == Counter(), (node, table)
    assert (migrated.returncode, migrated.stderr) == (0, ""), migrated.stderr
    done = {m["name"]: m["done"] for m in json.loads(migrated.stdout)["migrations"]}
    assert done["populate_instance_compute_id"] == unset
    assert cloud.count(1, "SELECT COUNT(*) FROM instances WHERE compute_id IS NULL") == 0
    for table in ARCHIVED:
        if table != "instances":
            assert cloud.rows(1, table) == live[table]
