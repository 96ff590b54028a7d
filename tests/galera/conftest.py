"""The Galera tier: a 3-node MariaDB Galera cluster on 127.0.0.1, started once per session.

``cluster.sh`` (beside this file) starts it on SQL ports 13306-13308 and group
ports 14567/14577/14587 (IST +1, SST +2), in a directory of its own, and stops
it at the end of the session.  Each test gets the cluster back with three
nodes synced and the write-set limits at their defaults, whatever it killed
or set.  When the cluster cannot start, the tier is skipped, except under
``CI=true``, where it fails: CI never skips it (``.ci/galera.sh`` installs
the packages first).

Run it alone with ``python -m pytest -p no:xdist tests/galera`` (``./run-tests``
does, after the rest of the suite, so the cluster never competes with the
parallel tests for the cores).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pymysql
import pytest

SCRIPT = Path(__file__).with_name("cluster.sh")
SQL_PORT = 13306
NODES = (1, 2, 3)
DEFAULT_LIMITS = {"wsrep_max_ws_rows": 0, "wsrep_max_ws_size": 2147483647}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here needs the cluster (and so a MariaDB server)."""
    for item in items:
        item.add_marker(pytest.mark.mariadb)
        item.add_marker(pytest.mark.slow)


@dataclass
class Galera:
    """The running cluster: node URLs, SQL on a node, and kill/restart for failure tests."""

    base: Path
    databases: list[str] = field(default_factory=list)

    def port(self, node: int) -> int:
        return SQL_PORT + node - 1

    def url(self, node: int, database: str = "") -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port(node)}/{database}"

    def connect(self, node: int, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(
            host="127.0.0.1", port=self.port(node), user="root", password="",
            database=database, autocommit=True, connect_timeout=5, charset="utf8mb4",
        )  # fmt: skip

    def sql(self, node: int, statement: str, database: str | None = None) -> list[tuple]:
        conn = self.connect(node, database)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return list(cur.fetchall())
        finally:
            conn.close()

    def script(self, *args: str, timeout: float = 180) -> None:
        env = dict(os.environ, GALERA_BASE=str(self.base))
        subprocess.run([str(SCRIPT), *args], env=env, check=True, timeout=timeout)

    def alive(self, node: int) -> bool:
        try:
            self.sql(node, "SELECT 1")
        except pymysql.MySQLError:
            return False
        return True

    def kill(self, node: int) -> None:
        """kill -9 the node's mariadbd."""
        self.script("kill", str(node))

    def wait_size(self, node: int, size: int, timeout: float = 30) -> None:
        """Until ``node`` sees ``size`` members, synced."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                query = (
                    "SHOW STATUS WHERE Variable_name IN "
                    "('wsrep_cluster_size', 'wsrep_local_state_comment')"
                )
                got = dict(self.sql(node, query))
                if got == {"wsrep_cluster_size": str(size), "wsrep_local_state_comment": "Synced"}:
                    return
            except pymysql.MySQLError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"node{node} did not see {size} synced members")
            time.sleep(0.2)

    def heal(self) -> None:
        """Every node up and synced, the write-set limits back at their defaults."""
        for node in NODES:
            if not self.alive(node):
                self.script("start-node", str(node))
        for node in NODES:
            self.wait_size(node, len(NODES))
            for name, value in DEFAULT_LIMITS.items():
                self.sql(node, f"SET GLOBAL {name} = {value}")

    def new_db(self) -> str:
        """A new empty utf8mb4 database (replicated to every node); dropped at the end."""
        name = f"novadb_g_{secrets.token_hex(5)}"
        self.sql(1, f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        self.databases.append(name)
        return name


def _unavailable(reason: str) -> None:
    message = f"the Galera cluster cannot start: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (the Galera tier never skips in CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[Galera]:
    """The 3-node cluster for the whole session (started here, stopped at the end)."""
    for program in ("mariadbd", "mariadb-install-db", "mariadb", "rsync"):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            _unavailable(f"{program} is not installed (see .ci/galera.sh)")
    base = Path(tempfile.mkdtemp(prefix="novadb-galera-"))
    cluster = Galera(base)
    try:
        cluster.script("start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        _unavailable(f"{SCRIPT.name} start failed ({exc}); logs in {base}")
    try:
        yield cluster
    finally:
        cluster.script("stop", timeout=120)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def galera(galera_cluster: Galera) -> Iterator[Galera]:
    """The cluster, healed after the test (killed nodes back, limits reset, databases gone)."""
    galera_cluster.heal()
    yield galera_cluster
    galera_cluster.heal()
    for name in galera_cluster.databases:
        galera_cluster.sql(1, f"DROP DATABASE IF EXISTS `{name}`")
    galera_cluster.databases.clear()
