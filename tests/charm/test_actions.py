"""The charm's actions and status under ops.testing (Scenario), on real SQLite databases.

Each test copies databases that ``novadb.schema.sync.sync`` created (and, where it
matters, ``novadb.sample.cloud.populate`` filled) into its own directory, writes
a nova.conf naming them and runs one event through the charm class.  Results
are compared key by key and value by value, because operators and COU read
them; the databases are inspected afterwards, because the results must say what
happened to them.

The repository has no metadata.yaml, so the Context is given the metadata,
actions and config from charmcraft.yaml and actions.yaml explicitly.  Scenario
passes only the params a test gives (Juju would add actions.yaml's defaults):
``test_param_defaults_match_actions_yaml`` keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ops
import pytest
import sqlalchemy as sa
import yaml
from novadb.api.options import (
    NullUuidScanOptions,
    OnlineMigrateOptions,
    PlacementAuditOptions,
    SyncAggregatesOptions,
    VersionOptions,
)
from novadb.archive.archive import ArchiveOptions, archive
from novadb.config import Settings, load_settings
from novadb.connections import create_engine
from novadb.placement.heal import HealOptions
from novadb.sample.cloud import CloudSpec, GeneratedCell, populate
from novadb.schema import revisions
from novadb.schema.releases import FIRST_RELEASE, RELEASES, release_index
from novadb.schema.sync import sync
from ops import testing
from scenario.errors import InconsistentScenarioError
from sqlalchemy.engine import make_url

from charm import PROBE_TIMEOUT, NovaCloudControllerCharm
from charm_params import (
    ArchiveDataParams,
    ArchiveParams,
    CharmConfig,
    CheckParams,
    OpenstackUpgradeParams,
    PurgeDataParams,
    PurgeParams,
    RebuildPlacementParams,
    SyncParams,
)
from tests.charm.fake_packages import FakePackages

ROOT = Path(__file__).resolve().parents[2]
CHARMCRAFT: dict[str, Any] = yaml.safe_load((ROOT / "charmcraft.yaml").read_text())
ACTIONS: dict[str, Any] = yaml.safe_load((ROOT / "actions.yaml").read_text())
# What `charmcraft pack` puts in metadata.yaml (links become other keys; not needed here).
META = {
    k: CHARMCRAFT[k] for k in ("name", "title", "summary", "description", "assumes", "requires")
}
FILES = {"main": "nova.sqlite", "api": "nova_api.sqlite", "placement": "placement.sqlite"}
HEADS = {"api": "cdeec0c85668", "main": "ab450ba04102", "placement": "a082b8bb98d0"}
CONF = "credentials: nova.conf"
AT_HEAD = f"schema at head; matches installed 2026.2 (hibiscus); {CONF}"
AT_HEAD_SECRET = AT_HEAD.replace(CONF, "credentials: database-secret")
BAD_BEFORE = (
    "Invalid value for --before: String does not contain a date: garbage; "
    "give a date such as 2024-01-31 or '2024-01-31 12:00'"
)
NO_DB = (
    "no database configured: relate the application to mysql-router (shared-db), or set "
    "database-secret, or provide {conf}"
)
SPEC = CloudSpec(instances=100, seed=42)


def context() -> testing.Context[NovaCloudControllerCharm]:
    return testing.Context(
        NovaCloudControllerCharm, meta=META, actions=ACTIONS, config=CHARMCRAFT["config"]
    )


# -- databases ---------------------------------------------------------------------------


def sqlite_urls(directory: Path) -> dict[str, str]:
    return {db: f"sqlite:///{directory / name}" for db, name in FILES.items()}


def write_nova_conf(path: Path, urls: dict[str, str]) -> Path:
    path.write_text(
        f"[database]\nconnection = {urls['main']}\n\n"
        f"[api_database]\nconnection = {urls['api']}\n\n"
        f"[placement_database]\nconnection = {urls['placement']}\n"
    )
    return path


@dataclass
class Cloud:
    """A cell, API and Placement database on SQLite, and the nova.conf that names them."""

    directory: Path
    conf: Path
    settings: Settings
    gen: GeneratedCell | None = None
    engines: dict[str, sa.Engine] = field(default_factory=dict, repr=False)

    def engine(self, db: str) -> sa.Engine:
        if db not in self.engines:
            self.engines[db] = create_engine(self.settings.url(db))
        return self.engines[db]

    def dispose(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    def count(self, db: str, sql: str) -> int:
        with self.engine(db).connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())

    def tables(self, db: str = "main") -> dict[str, int]:
        """Rows per table: equal before and after means the action changed nothing."""
        with self.engine(db).connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return {
                n: int(conn.execute(sa.text(f'SELECT count(*) FROM "{n}"')).scalar_one())
                for n in names
            }

    def revision(self, db: str) -> str | None:
        with self.engine(db).connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    def state(self, **config: Any) -> testing.State:
        return testing.State(config={"nova-conf": str(self.conf), **config})


def make_cloud(
    base: Path, template: Path | None = None, gen: GeneratedCell | None = None
) -> Cloud:
    directory = base / "db"
    directory.mkdir(parents=True)
    if template is not None:
        for name in FILES.values():
            shutil.copy2(template / name, directory / name)
    conf = write_nova_conf(base / "nova.conf", sqlite_urls(directory))
    return Cloud(directory, conf, load_settings([str(conf)]), gen)


@pytest.fixture(scope="session")
def head_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Databases at every head, made once per worker and copied by each test."""
    directory = tmp_path_factory.mktemp("head")
    urls = sqlite_urls(directory)
    sync(
        load_settings(
            database=urls["main"], api_database=urls["api"], placement_database=urls["placement"]
        )
    )
    return directory


@pytest.fixture(scope="session")
def populated_template(
    tmp_path_factory: pytest.TempPathFactory, head_template: Path
) -> tuple[Path, GeneratedCell]:
    """Databases at head holding SPEC's sample cloud (half its instances deleted)."""
    directory = tmp_path_factory.mktemp("populated")
    for name in FILES.values():
        shutil.copy2(head_template / name, directory / name)
    urls = sqlite_urls(directory)
    main, api = create_engine(urls["main"]), create_engine(urls["api"])
    gen = populate(main, api, SPEC)
    main.dispose()
    api.dispose()
    return directory, gen


@pytest.fixture
def head_cloud(tmp_path: Path, head_template: Path) -> Iterator[Cloud]:
    cloud = make_cloud(tmp_path, head_template)
    yield cloud
    cloud.dispose()


@pytest.fixture
def cloud(tmp_path: Path, populated_template: tuple[Path, GeneratedCell]) -> Iterator[Cloud]:
    template, gen = populated_template
    cloud = make_cloud(tmp_path, template, gen)
    yield cloud
    cloud.dispose()


@pytest.fixture
def empty_cloud(tmp_path: Path) -> Iterator[Cloud]:
    """A nova.conf naming databases that do not exist yet."""
    cloud = make_cloud(tmp_path)
    yield cloud
    cloud.dispose()


# -- expectations ----------------------------------------------------------------------


def key(table: str, prefix: str = "rows") -> str:
    """The charm's flattened result key: ``rows.instance-system-metadata``."""
    return ".".join([prefix, *table.lower().replace("_", "-").split(".")])


def complete_archive(cloud: Cloud) -> dict[str, int]:
    """What archiving a fresh SPEC cloud to completion moves, per table, from how it was made.

    Every deleted instance moves with all its children (an orphan's children too:
    children follow their parent whatever their own ``deleted``); an orphan's
    ``instance_id_mappings`` row is a root of its own and not deleted, so it
    stays.  Faults, migrations and group members are random per instance: counted.
    """
    assert cloud.gen is not None
    deleted, orphans = cloud.gen.deleted_instances, cloud.gen.orphaned_instances

    def of_deleted(table: str) -> int:
        return cloud.count(
            "main",
            f"SELECT count(*) FROM {table} t JOIN instances i ON t.instance_uuid = i.uuid "
            "WHERE i.deleted != 0",
        )

    groups = cloud.count(
        "api",
        "SELECT count(*) FROM instance_group_member WHERE instance_uuid IN "
        "(SELECT instance_uuid FROM instance_mappings WHERE queued_for_delete = 1)",
    )
    rows = {
        "API_DB.instance_group_member": groups,
        "API_DB.instance_mappings": deleted,
        "API_DB.request_specs": deleted,
        "block_device_mapping": deleted,
        "compute_nodes": SPEC.deleted_hosts,
        "instance_actions": 2 * deleted,
        "instance_actions_events": 2 * deleted,
        "instance_extra": deleted,
        "instance_faults": of_deleted("instance_faults"),
        "instance_id_mappings": deleted - orphans,
        "instance_info_caches": deleted,
        "instance_metadata": 2 * deleted,
        "instance_system_metadata": 8 * deleted,
        "instances": deleted,
        "migrations": of_deleted("migrations"),
        "services": SPEC.deleted_hosts,
        "virtual_interfaces": deleted,
    }
    return {t: n for t, n in rows.items() if n or t.startswith("API_DB.")}


def nova_manage_table(rows: dict[str, int]) -> str:
    """nova-manage ``archive_deleted_rows --verbose``'s PrettyTable, columns left-aligned."""
    items = sorted(rows.items())
    left = max(len("Table"), *(len(t) for t, _ in items))
    right = max(len("Number of Rows Archived"), *(len(str(n)) for _, n in items))
    rule = f"+{'-' * (left + 2)}+{'-' * (right + 2)}+"
    body = [f"| {t:<{left}} | {n!s:<{right}} |" for t, n in items]
    header = f"| {'Table':<{left}} | {'Number of Rows Archived':<{right}} |"
    return "\n".join([rule, header, rule, *body, rule])


def results(ctx: testing.Context[NovaCloudControllerCharm]) -> dict[str, str]:
    """The action's results, less ``elapsed`` (checked to be a duration, then dropped)."""
    assert ctx.action_results is not None
    out = dict(ctx.action_results)
    assert float(out.pop("elapsed")) >= 0
    return out


def state_after(failure: testing.ActionFailed) -> testing.State:
    """The output state Scenario attaches to a failed action."""
    assert isinstance(failure.state, testing.State)
    return failure.state


def run_action(
    ctx: testing.Context[NovaCloudControllerCharm],
    state: testing.State,
    action: str,
    params: dict[str, Any] | None = None,
) -> testing.State:
    return ctx.run(ctx.on.action(action, params=params or {}), state)


# -- consistency of the charm's declarations ----------------------------------------------


def test_param_defaults_match_actions_yaml() -> None:
    """Juju fills actions.yaml defaults in; Scenario and the dataclasses must agree with them."""
    classes = {
        "sync": SyncParams,
        "version": VersionOptions,
        "archive": ArchiveParams,
        "purge": PurgeParams,
        "null-instance-uuid-scan": NullUuidScanOptions,
        "online-migrate": OnlineMigrateOptions,
        "check": CheckParams,
        "placement-audit": PlacementAuditOptions,
        "heal-allocations": HealOptions,
        "sync-aggregates": SyncAggregatesOptions,
        "rebuild-placement": RebuildPlacementParams,
        "archive-data": ArchiveDataParams,
        "purge-data": PurgeDataParams,
        "openstack-upgrade": OpenstackUpgradeParams,
    }
    assert set(classes) == set(ACTIONS)
    for action, cls in classes.items():
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        params = ACTIONS[action]["params"]
        assert set(fields) == {p.replace("-", "_") for p in params}, action
        for name, spec in params.items():
            assert fields[name.replace("-", "_")] == spec.get("default"), (action, name)
    options = CHARMCRAFT["config"]["options"]
    config_fields = {f.name: f.default for f in dataclasses.fields(CharmConfig)}
    assert config_fields == {n.replace("-", "_"): o.get("default") for n, o in options.items()}


def test_scenario_refuses_params_actions_yaml_does_not_allow() -> None:
    """Types and names are checked against actions.yaml (as Juju does); enums are not."""
    ctx = context()
    state = testing.State(config={"nova-conf": "/nonexistent/nova.conf"})
    with pytest.raises(InconsistentScenarioError, match="batch-size is of type"):
        run_action(ctx, state, "archive", {"batch-size": "10"})
    with pytest.raises(InconsistentScenarioError, match="param max-rows is not a valid"):
        run_action(ctx, state, "archive", {"max-rows": 10})


# -- version and status --------------------------------------------------------------------


def test_version_at_head(head_cloud: Cloud) -> None:
    ctx = context()
    out = run_action(ctx, head_cloud.state(), "version")
    assert ctx.action_results == {
        **{
            f"databases.{db}.{item}": value
            for db, head in HEADS.items()
            for item, value in (
                ("current", head),
                ("head", head),
                ("pending", "0"),
                ("release", "2026.2 (hibiscus)"),
            )
        },
        "pending": "0",
    }
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)


def test_version_on_empty_databases(empty_cloud: Cloud, packages: FakePackages) -> None:
    packages.version = "29.0.0"  # 2024.1
    for name in FILES.values():
        (empty_cloud.directory / name).touch()
    ctx = context()
    state = empty_cloud.state()
    out = run_action(ctx, state, "version")
    pending = {db: len(revisions.chain(db)) for db in HEADS}
    assert pending == {"api": 3, "main": 10, "placement": 5}
    assert ctx.action_results == {
        **{
            f"databases.{db}.{item}": value
            for db, head in HEADS.items()
            for item, value in (
                ("current", "none"),
                ("head", head),
                ("pending", str(pending[db])),
                ("release", "unknown"),
            )
        },
        "pending": "18",
    }
    assert out.unit_status == ops.WaitingStatus(
        "18 schema revisions pending; behind installed 2024.1 (caracal): waiting for the leader "
        f"to migrate; {CONF}"
    )


def test_status_names_the_release_of_the_installed_nova_common(
    head_cloud: Cloud, packages: FakePackages
) -> None:
    """The workload version is nova-common's upstream version; 29.x is 2024.1 (caracal)."""
    packages.version = "29.2.0"
    ctx = context()
    out = ctx.run(ctx.on.update_status(), head_cloud.state())
    assert out.workload_version == "29.2.0"
    assert out.unit_status == ops.BlockedStatus(
        "schema at head; ahead of installed 2024.1 (caracal): the schema is newer than "
        f"nova-common; set openstack-origin to the schema's release; {CONF}"
    )


def test_status_behind_the_installed_release_until_sync(
    empty_cloud: Cloud, packages: FakePackages
) -> None:
    """Databases of an older release (2023.1) on a unit that runs 2024.1."""
    packages.version = "29.0.0"
    sync(empty_cloud.settings, release="2023.1")
    ctx = context()
    out = ctx.run(ctx.on.update_status(), empty_cloud.state())
    # main stops at 960aac0e09ea (6 to go), api at b30f573d3377 (1), placement at 422ece571366 (1).
    assert out.unit_status == ops.WaitingStatus(
        "8 schema revisions pending; behind installed 2024.1 (caracal): waiting for the leader "
        f"to migrate; {CONF}"
    )

    # The leader says what resumes the upgrade's database steps.
    out = ctx.run(ctx.on.action("version"), dataclasses.replace(empty_cloud.state(), leader=True))
    assert out.unit_status == ops.BlockedStatus(
        "8 schema revisions pending; behind installed 2024.1 (caracal): run juju run "
        f"nova-cloud-controller/leader openstack-upgrade; {CONF}"
    )

    # The sync action brings each database to 2024.1's heads.
    out = run_action(ctx, empty_cloud.state(), "sync")
    assert ctx.action_results == {
        "release": "2024.1",
        "databases.api.before": "b30f573d3377",
        "databases.api.after": HEADS["api"],
        "databases.api.applied": "1",
        "databases.main.before": "960aac0e09ea",
        "databases.main.after": "13863f4e1612",
        "databases.main.applied": "3",
        "databases.placement.before": "422ece571366",
        "databases.placement.after": HEADS["placement"],
        "databases.placement.applied": "1",
        "applied": "5",
    }
    assert out.unit_status == ops.ActiveStatus(
        f"3 schema revisions pending; matches installed 2024.1 (caracal); {CONF}"
    )


def test_without_nova_common_sync_goes_to_head(head_cloud: Cloud, packages: FakePackages) -> None:
    packages.version = None
    ctx = context()
    out = run_action(ctx, head_cloud.state(), "sync")
    assert out.unit_status == ops.ActiveStatus(f"schema at head; {CONF}")
    assert out.workload_version == ""
    assert ctx.action_results == {
        "release": "head",
        **{f"databases.{db}.before": h for db, h in HEADS.items()},
        **{f"databases.{db}.after": h for db, h in HEADS.items()},
        **{f"databases.{db}.applied": "0" for db in HEADS},
        "applied": "0",
    }


def test_an_origin_that_cannot_work_blocks_and_installs_nothing(
    head_cloud: Cloud, packages: FakePackages
) -> None:
    ctx = context()
    state = head_cloud.state(**{"openstack-origin": "cloud:noble-zebra"})
    out = ctx.run(ctx.on.config_changed(), state)
    assert out.unit_status == ops.BlockedStatus(
        "openstack-origin cloud:noble-zebra: the Cloud Archive has no zebra pocket for noble; "
        "use distro, cloud:noble-<codename> (e.g. cloud:noble-dalmatian) or a release name"
    )
    assert packages.installs == []


def test_blocked_without_nova_conf_or_secret(tmp_path: Path) -> None:
    conf = tmp_path / "absent" / "nova.conf"
    ctx = context()
    state = testing.State(config={"nova-conf": str(conf)})
    out = ctx.run(ctx.on.update_status(), state)
    assert out.unit_status == ops.BlockedStatus(NO_DB.format(conf=conf))
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, state, "archive-data")
    assert failed.value.message == NO_DB.format(conf=conf)
    assert state_after(failed.value).unit_status == ops.BlockedStatus(NO_DB.format(conf=conf))


def test_blocked_when_a_database_file_is_missing(empty_cloud: Cloud) -> None:
    ctx = context()
    out = ctx.run(ctx.on.update_status(), empty_cloud.state())
    path = empty_cloud.directory / FILES["api"]
    assert out.unit_status == ops.BlockedStatus(
        f"SQLite database {path} does not exist; run `novadb sync` first or check the URL; {CONF}"
    )


def test_blocked_when_the_server_is_unreachable(tmp_path: Path) -> None:
    urls = {db: f"mysql+pymysql://nova:s3cretpw@127.0.0.1:1/{db}" for db in FILES}
    conf = write_nova_conf(tmp_path / "nova.conf", urls)
    ctx = context()
    out = ctx.run(ctx.on.update_status(), testing.State(config={"nova-conf": str(conf)}))
    assert out.unit_status == ops.BlockedStatus(
        "cannot connect to mysql+pymysql://nova:***@127.0.0.1:1/api: (2003, \"Can't connect to "
        "MySQL server on '127.0.0.1' ([Errno 111] Connection refused)\"); is the server "
        f"running and reachable?; {CONF}"
    )


@dataclass
class SilentServer:
    """A TCP port on 127.0.0.1 that accepts connections and never says a word (a hung node)."""

    port: int
    accepted: int = 0


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    server = SilentServer(listener.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue
            server.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_status_on_a_hung_server_is_one_bounded_connect_then_cached(
    tmp_path: Path, silent_server: SilentServer
) -> None:
    """One connect of at most PROBE_TIMEOUT when status looks again, none when it need not.

    The library's own connect retries for ~10 s against such a server; the
    status must not pay that in every hook.  An action that cannot change the
    schema (here one refused for its params) reuses the stored answer.
    """
    port = silent_server.port
    urls = {db: f"mysql+pymysql://nova:pw@127.0.0.1:{port}/{db}" for db in FILES}
    conf = write_nova_conf(tmp_path / "nova.conf", urls)
    ctx = context()
    started = time.monotonic()
    out = ctx.run(ctx.on.update_status(), testing.State(config={"nova-conf": str(conf)}))
    assert time.monotonic() - started < PROBE_TIMEOUT + 5
    blocked = ops.BlockedStatus(
        f"cannot connect to mysql+pymysql://nova:***@127.0.0.1:{port}/api: (2013, "
        "'Lost connection to MySQL server during query (timed out)'); is the server running "
        f"and reachable?; {CONF}"
    )
    assert out.unit_status == blocked
    assert silent_server.accepted == 1

    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, out, "rebuild-placement", {"restore": "backup.json.gz", "force": True})
    assert failed.value.message.startswith("restore takes no other rebuild-placement param")
    assert state_after(failed.value).unit_status == blocked
    assert silent_server.accepted == 1


# -- sync ----------------------------------------------------------------------------------


def test_sync_stops_at_the_installed_releases_heads(
    empty_cloud: Cloud, packages: FakePackages
) -> None:
    """nova-common 29.x is 2024.1: main stops at the last revision 2024.1 shipped."""
    packages.version = "29.0.0"
    caracal = release_index("2024.1")
    main_chain = revisions.chain("main")
    shipped = [r for r in main_chain if release_index(FIRST_RELEASE["main"][r]) <= caracal]
    assert shipped == list(main_chain[: len(shipped)]) and shipped[-1] == "13863f4e1612"

    ctx = context()
    state = empty_cloud.state()
    out = run_action(ctx, state, "sync")

    assert ctx.action_results == {
        "release": "2024.1",
        "databases.api.before": "none",
        "databases.api.after": HEADS["api"],
        "databases.api.applied": "3",
        "databases.main.before": "none",
        "databases.main.after": "13863f4e1612",
        "databases.main.applied": str(len(shipped)),
        "databases.placement.before": "none",
        "databases.placement.after": HEADS["placement"],
        "databases.placement.applied": "5",
        "applied": str(3 + len(shipped) + 5),
    }
    assert {db: empty_cloud.revision(db) for db in HEADS} == {**HEADS, "main": "13863f4e1612"}
    api_url = empty_cloud.settings.url("api")
    assert ctx.action_logs[0] == f"api ({api_url}): empty -> {HEADS['api']}"
    assert out.unit_status == ops.ActiveStatus(
        f"3 schema revisions pending; matches installed 2024.1 (caracal); {CONF}"
    )


def test_sync_release_param_overrides_the_installed_release(
    empty_cloud: Cloud, packages: FakePackages
) -> None:
    packages.version = "29.0.0"
    ctx = context()
    state = empty_cloud.state()
    out = run_action(ctx, state, "sync", {"release": "epoxy"})
    assert ctx.action_results is not None
    assert ctx.action_results["release"] == "epoxy"
    assert ctx.action_results["databases.main.after"] == "2903cd72dc14"
    assert ctx.action_results["databases.main.applied"] == "9"
    assert empty_cloud.revision("main") == "2903cd72dc14"
    assert out.unit_status == ops.BlockedStatus(
        "1 schema revision pending; ahead of installed 2024.1 (caracal): the schema is newer "
        f"than nova-common; set openstack-origin to the schema's release; {CONF}"
    )

    out = run_action(ctx, state, "sync", {"release": "2026.2"})
    assert ctx.action_results == {
        "release": "2026.2",
        **{f"databases.{db}.before": h for db, h in HEADS.items()},
        "databases.main.before": "2903cd72dc14",
        **{f"databases.{db}.after": h for db, h in HEADS.items()},
        "databases.api.applied": "0",
        "databases.main.applied": "1",
        "databases.placement.applied": "0",
        "applied": "1",
    }
    assert empty_cloud.revision("main") == HEADS["main"]
    assert out.unit_status == ops.BlockedStatus(
        "schema at head; ahead of installed 2024.1 (caracal): the schema is newer than "
        f"nova-common; set openstack-origin to the schema's release; {CONF}"
    )


def test_sync_one_database_to_a_revision(empty_cloud: Cloud) -> None:
    ctx = context()
    state = empty_cloud.state()
    run_action(ctx, state, "sync", {"database": "api", "revision": "b30f"})
    assert ctx.action_results == {
        "release": "head",
        "databases.api.before": "none",
        "databases.api.after": "b30f573d3377",
        "databases.api.applied": "2",
        "applied": "2",
    }
    assert empty_cloud.revision("api") == "b30f573d3377"
    assert not (empty_cloud.directory / FILES["main"]).exists()


# -- archive, purge, null-instance-uuid-scan -------------------------------------------------


def test_archive_without_until_complete_spends_batch_size_on_parent_rows(cloud: Cloud) -> None:
    """batch-size is one budget of parent rows: compute_nodes first, then instance_id_mappings."""
    ctx = context()
    run_action(ctx, cloud.state(), "archive", {"batch-size": 10})
    assert results(ctx) == {
        "total": "10",
        "batches": "2",
        "complete": "false",
        "dry-run": "false",
        "stopped": "budget",
        "rows.compute-nodes": str(SPEC.deleted_hosts),
        "rows.instance-id-mappings": str(10 - SPEC.deleted_hosts),
    }
    assert ctx.action_logs == [
        "main: compute_nodes: 2 rows (total 2)",
        "main: instance_id_mappings: 8 rows (total 10)",
    ]
    assert cloud.count("main", "SELECT count(*) FROM shadow_compute_nodes") == 2
    assert cloud.count("main", "SELECT count(*) FROM shadow_instance_id_mappings") == 8
    assert cloud.count("main", "SELECT count(*) FROM shadow_instances") == 0


def test_archive_until_complete_with_purge(cloud: Cloud) -> None:
    expected = complete_archive(cloud)
    total = sum(n for t, n in expected.items() if "." not in t)
    ctx = context()
    out = run_action(
        ctx,
        cloud.state(),
        "archive",
        {"until-complete": True, "purge": True},
    )
    got = results(ctx)
    assert int(got.pop("batches")) > 0
    assert got == {
        "total": str(total),
        "complete": "true",
        "dry-run": "false",
        **{key(t): str(n) for t, n in expected.items()},
        **{key(f"shadow_{t}", "purged"): str(n) for t, n in expected.items() if "." not in t},
    }
    assert cloud.count("main", "SELECT count(*) FROM instances WHERE deleted != 0") == 0
    assert all(n == 0 for t, n in cloud.tables().items() if t.startswith("shadow_"))
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)


def test_archive_dry_run_counts_and_moves_nothing(cloud: Cloud) -> None:
    expected = complete_archive(cloud)
    before = cloud.tables(), cloud.tables("api")
    ctx = context()
    run_action(ctx, cloud.state(), "archive", {"dry-run": True, "until-complete": True})
    assert results(ctx) == {
        "total": str(sum(n for t, n in expected.items() if "." not in t)),
        "batches": "0",
        "complete": "true",
        "dry-run": "true",
        **{key(t): str(n) for t, n in expected.items()},
    }
    assert (cloud.tables(), cloud.tables("api")) == before


def test_archive_before_a_date_moves_only_older_deletions(cloud: Cloud) -> None:
    older = cloud.count(
        "main", "SELECT count(*) FROM instances WHERE deleted != 0 AND deleted_at < '2024-07-01'"
    )
    assert 0 < older < cloud.count("main", "SELECT count(*) FROM instances WHERE deleted != 0")
    ctx = context()
    run_action(ctx, cloud.state(), "archive", {"before": "2024-07-01", "until-complete": True})
    got = results(ctx)
    assert got["rows.instances"] == str(older)
    assert got["rows.api-db.instance-mappings"] == str(older)
    # Services and compute nodes were deleted at the end of the generated year.
    assert "rows.services" not in got and "rows.compute-nodes" not in got
    assert cloud.count("main", "SELECT count(*) FROM shadow_instances") == older
    assert (
        cloud.count(
            "main",
            "SELECT count(*) FROM instances WHERE deleted != 0 AND deleted_at < '2024-07-01'",
        )
        == 0
    )


def test_archive_reports_rows_held_back(cloud: Cloud) -> None:
    """A legacy fixed_ips row still naming a deleted instance keeps that instance live."""
    with cloud.engine("main").begin() as conn:
        uuid = conn.execute(
            sa.text("SELECT uuid FROM instances WHERE deleted != 0 ORDER BY id LIMIT 1")
        ).scalar_one()
        conn.execute(
            sa.text(
                "INSERT INTO fixed_ips (id, address, instance_uuid, deleted, allocated, leased, "
                "reserved) VALUES (1, '10.0.0.5', :u, 0, 1, 1, 0)"
            ),
            {"u": uuid},
        )
    ctx = context()
    run_action(ctx, cloud.state(), "archive", {"until-complete": True})
    got = results(ctx)
    assert got["held-back.instances"] == "1"
    assert got["complete"] == "true"
    assert cloud.gen is not None
    assert got["rows.instances"] == str(cloud.gen.deleted_instances - 1)
    assert cloud.count("main", f"SELECT count(*) FROM instances WHERE uuid = '{uuid}'") == 1


def test_archive_failure_of_one_table_sets_results_and_fails(cloud: Cloud) -> None:
    """A shadow table missing a column: that tree fails, the others move, the action fails."""
    with cloud.engine("main").begin() as conn:
        conn.execute(
            sa.text("ALTER TABLE shadow_instances RENAME COLUMN hostname TO old_hostname")
        )
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, cloud.state(), "archive", {"until-complete": True})
    message = (
        "main: instances: shadow_instances lacks column(s) hostname that instances has; nothing "
        "moved from instances. Run `novadb sync` (or add the columns to the shadow tables) and "
        "archive again"
    )
    assert failed.value.message == message
    got = results(ctx)
    assert got["complete"] == "false"
    assert "rows.instances" not in got
    assert message in ctx.action_logs  # warnings are logged at once, never throttled
    assert cloud.count("main", "SELECT count(*) FROM shadow_instances") == 0


def archive_all(cloud: Cloud) -> None:
    """Set-up: every deleted row into the shadow tables (the library, not the charm)."""
    archive(cloud.settings, ArchiveOptions(until_complete=True))


def test_purge_all(cloud: Cloud) -> None:
    expected = {f"shadow_{t}": n for t, n in complete_archive(cloud).items() if "." not in t}
    archive_all(cloud)
    ctx = context()
    run_action(ctx, cloud.state(), "purge", {"all": True, "batch-size": 100})
    assert results(ctx) == {
        "total": str(sum(expected.values())),
        "dry-run": "false",
        **{key(t): str(n) for t, n in expected.items()},
    }
    assert all(n == 0 for t, n in cloud.tables().items() if t.startswith("shadow_"))
    # One progress line per batch, throttled: the first and the last at least.
    vifs = expected["shadow_virtual_interfaces"]
    assert ctx.action_logs[-1] == f"main: shadow_virtual_interfaces: {vifs} rows (total {vifs})"


def column_of(shadow_table: str) -> str:
    """Nova's purge column for the shadow tables a sample cloud fills."""
    never_soft_deleted = ("shadow_instance_actions", "shadow_instance_actions_events")
    return "created_at" if shadow_table in never_soft_deleted else "deleted_at"


def test_purge_before_uses_novas_timestamp_columns(cloud: Cloud) -> None:
    archive_all(cloud)
    before = "2024-07-01"
    expected: dict[str, int] = {}
    for table, rows in cloud.tables().items():
        if not table.startswith("shadow_") or not rows:
            continue
        n = cloud.count(
            "main", f"SELECT count(*) FROM {table} WHERE {column_of(table)} < '{before}'"
        )
        if n:
            expected[table] = n
    shadows_before = cloud.tables()
    ctx = context()
    run_action(ctx, cloud.state(), "purge", {"before": before, "dry-run": True})
    assert results(ctx) == {
        "total": str(sum(expected.values())),
        "dry-run": "true",
        **{key(t): str(n) for t, n in expected.items()},
    }
    assert cloud.tables() == shadows_before

    run_action(ctx, cloud.state(), "purge-data", {"before": before})
    got = results(ctx)
    output = got.pop("output")
    assert got == {
        "total": str(sum(expected.values())),
        "dry-run": "false",
        **{key(t): str(n) for t, n in expected.items()},
    }
    # nova-manage's lines in table order: a table with no timestamp is named, not purged.
    lines = []
    with cloud.engine("main").connect() as conn:
        inspector = sa.inspect(conn)
        for table in sorted(t for t in inspector.get_table_names() if t.startswith("shadow_")):
            columns = {c["name"] for c in inspector.get_columns(table)}
            if not columns & {"deleted_at", "updated_at", "created_at"}:
                lines.append(
                    f"DB: Unable to purge table {table} because it has no timestamp column"
                )
            elif table in expected:
                column = column_of(table)
                lines.append(
                    f"DB: Deleted {expected[table]} rows from {table} based on timestamp "
                    f"column {column}"
                )
    assert output == "\n".join(lines)
    assert "DB: Unable to purge table shadow_alembic_version" in output
    # An orphan's children moved with it but were never soft-deleted: no deleted_at, kept.
    assert cloud.gen is not None and cloud.gen.orphaned_instances
    assert (
        cloud.count("main", "SELECT count(*) FROM shadow_instance_extra WHERE deleted_at IS NULL")
        == cloud.gen.orphaned_instances
    )


def test_null_instance_uuid_scan_then_delete(cloud: Cloud) -> None:
    with cloud.engine("main").begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO instance_faults (id, instance_uuid, code, message, "
                "deleted) VALUES (9001, NULL, 1, 'x', 0), (9002, NULL, 1, 'y', 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO instance_actions (id, instance_uuid, action, deleted) "
                "VALUES (9001, NULL, 'create', 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO instance_actions_events (id, action_id, event, "
                "deleted) VALUES (9001, 9001, 'compute_create', 0)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO shadow_instance_metadata (id, instance_uuid, key, "
                "deleted) VALUES (9001, NULL, 'k', 0)"
            )
        )
    before = cloud.tables()
    ctx = context()
    run_action(ctx, cloud.state(), "null-instance-uuid-scan")
    assert ctx.action_results == {
        "total": "4",
        "deleted": "false",
        "rows.main.instance-actions": "1",
        "rows.main.instance-faults": "2",
        "rows.main.shadow-instance-metadata": "1",
    }
    assert ctx.action_logs == ["main: 4 row(s) found"]
    assert cloud.tables() == before

    run_action(ctx, cloud.state(), "null-instance-uuid-scan", {"delete": True})
    assert ctx.action_results == {
        "total": "5",
        "deleted": "true",
        "rows.main.instance-actions": "1",
        "rows.main.instance-actions-events": "1",
        "rows.main.instance-faults": "2",
        "rows.main.shadow-instance-metadata": "1",
    }
    after = cloud.tables()
    assert {t: before[t] - after[t] for t in before if before[t] != after[t]} == {
        "instance_actions": 1,
        "instance_actions_events": 1,
        "instance_faults": 2,
        "shadow_instance_metadata": 1,
    }


# -- COU: archive-data and purge-data ------------------------------------------------------


def cou_archive(
    ctx: testing.Context[NovaCloudControllerCharm], state: testing.State, batch_size: int
) -> list[dict[str, str]]:
    """COU's archive step: archive-data until its output says "Nothing was archived"."""
    calls: list[dict[str, str]] = []
    while True:
        assert len(calls) < 5, calls
        run_action(ctx, state, "archive-data", {"batch-size": batch_size})
        assert ctx.action_results is not None
        calls.append(dict(ctx.action_results))
        output = ctx.action_results.get("archive-deleted-rows")
        assert output is not None, "COU raises: no archive-deleted-rows in the results"
        if "Nothing was archived" in output:
            return calls


def test_cou_archive_loop_ends_after_one_call(cloud: Cloud) -> None:
    expected = complete_archive(cloud)
    total = sum(n for t, n in expected.items() if "." not in t)
    ctx = context()
    state = cloud.state()
    calls = cou_archive(ctx, state, batch_size=10)
    assert len(calls) <= 2
    first = calls[0]
    assert float(first.pop("elapsed")) >= 0
    assert int(first.pop("batches")) >= -(-SPEC.instances // 2 // 10)
    assert first == {
        "total": str(total),
        "complete": "true",
        "dry-run": "false",
        **{key(t): str(n) for t, n in expected.items()},
        "archive-deleted-rows": nova_manage_table(expected)
        + "\nArchive complete: Nothing was archived in the final pass.",
    }
    assert cloud.count("main", "SELECT count(*) FROM instances WHERE deleted != 0") == 0
    shadows = {t: n for t, n in cloud.tables().items() if t.startswith("shadow_") and n}
    assert shadows == {f"shadow_{t}": n for t, n in expected.items() if "." not in t}

    # The next upgrade's archive step: one call, nova-manage's sentence exactly.
    calls = cou_archive(ctx, state, batch_size=1000)
    assert len(calls) == 1
    assert float(calls[0].pop("elapsed")) >= 0
    assert calls[0] == {
        "total": "0",
        "batches": "0",
        "complete": "true",
        "dry-run": "false",
        "archive-deleted-rows": "Nothing was archived.",
    }


def test_archive_data_on_a_clean_cell(head_cloud: Cloud) -> None:
    ctx = context()
    out = run_action(ctx, head_cloud.state(), "archive-data")
    assert results(ctx) == {
        "total": "0",
        "batches": "0",
        "complete": "true",
        "dry-run": "false",
        "archive-deleted-rows": "Nothing was archived.",
    }
    assert ctx.action_logs == []
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)


def test_archive_data_stopped_early_does_not_claim_nothing_is_left(cloud: Cloud) -> None:
    ctx = context()
    run_action(ctx, cloud.state(), "archive-data", {"max-runtime": 1e-9})
    got = results(ctx)
    assert got["complete"] == "false"
    assert got["stopped"] == "max-runtime"
    assert cloud.count("main", "SELECT count(*) FROM instances WHERE deleted != 0") > 0
    assert "Nothing was archived" not in got["archive-deleted-rows"]


def test_cou_purge_data(cloud: Cloud) -> None:
    expected = {f"shadow_{t}": n for t, n in complete_archive(cloud).items() if "." not in t}
    ctx = context()
    state = cloud.state()
    cou_archive(ctx, state, batch_size=1000)

    run_action(ctx, state, "purge-data")
    assert results(ctx) == {
        "total": str(sum(expected.values())),
        "dry-run": "false",
        **{key(t): str(n) for t, n in expected.items()},
        "output": "\n".join(
            f"DB: Deleted {n} rows from {t} based on timestamp column (n/a)"
            for t, n in sorted(expected.items())
        ),
    }
    assert all(n == 0 for t, n in cloud.tables().items() if t.startswith("shadow_"))

    out = run_action(ctx, state, "purge-data")
    assert results(ctx) == {
        "total": "0",
        "dry-run": "false",
        "output": "Purging stale soft-deleted rows and no data was deleted",
    }
    assert out.unit_status == ops.ActiveStatus(AT_HEAD)


# -- parameter errors ------------------------------------------------------------------------

RELEASE_LIST = ", ".join(f"{c} ({s})" for s, c in RELEASES)


@pytest.mark.parametrize(
    ("action", "params", "message"),
    [
        ("archive", {"before": "garbage"}, BAD_BEFORE),
        ("purge", {"before": "garbage"}, BAD_BEFORE),
        ("purge-data", {"before": "garbage"}, BAD_BEFORE),
        (
            "archive",
            {"batch-size": 0},
            "--batch-size must be a positive integer, e.g. --batch-size 1000",
        ),
        (
            "archive-data",
            {"batch-size": 0},
            "--batch-size must be a positive integer, e.g. --batch-size 1000",
        ),
        (
            "purge",
            {"all": True, "batch-size": 0},
            "--batch-size must be a positive integer, e.g. --batch-size 10000",
        ),
        ("archive", {"sleep": -1}, "--sleep must be zero or a positive number of seconds"),
        ("archive", {"max-runtime": 0}, "--max-runtime must be a positive number of seconds"),
        ("archive-data", {"max-runtime": 0}, "--max-runtime must be a positive number of seconds"),
        ("purge", {}, "Either --before or --all is required"),
        # Juju refuses values outside actions.yaml's enum; Scenario does not check enums,
        # so the charm's own answer shows.
        (
            "sync",
            {"database": "bogus"},
            "unknown database 'bogus'; choose one of all, api, main, placement",
        ),
        (
            "version",
            {"database": "bogus"},
            "unknown database 'bogus'; choose one of all, api, main, placement",
        ),
        ("sync", {"revision": "b30f"}, "--revision needs --database api, main or placement"),
        ("sync", {"release": "bogus"}, f"unknown release 'bogus'; known releases: {RELEASE_LIST}"),
        (
            "sync",
            {"database": "main", "revision": "zzz"},
            "unknown main revision 'zzz'; the "
            "main chain runs from 8f2f1571d55b to ab450ba04102; nothing was changed",
        ),
    ],
)
def test_bad_params_fail_with_one_line_and_change_nothing(
    cloud: Cloud, action: str, params: dict[str, Any], message: str
) -> None:
    before = cloud.tables(), cloud.tables("api"), cloud.tables("placement")
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, cloud.state(), action, params)
    assert failed.value.message == message
    assert "\n" not in failed.value.message
    assert not ctx.action_results
    assert state_after(failed.value).unit_status == ops.ActiveStatus(AT_HEAD)
    assert (cloud.tables(), cloud.tables("api"), cloud.tables("placement")) == before


# -- secrets and passwords -------------------------------------------------------------------


def assert_never_shown(
    ctx: testing.Context[NovaCloudControllerCharm], out: testing.State, message: str, password: str
) -> None:
    """The password is in none of what Juju keeps or shows of a run."""
    shown = [
        message,
        *(f"{k}={v}" for k, v in (ctx.action_results or {}).items()),
        *ctx.action_logs,
        *(line.message for line in ctx.juju_log),
        out.unit_status.message,
        *(s.message for s in ctx.unit_status_history),
    ]
    assert not [text for text in shown if password in text]


# check reports an unreachable database as a finding: test_check_action.py.
# openstack-upgrade on a unit that is not the leader touches no database.
@pytest.mark.parametrize("action", sorted(set(ACTIONS) - {"check", "openstack-upgrade"}))
def test_password_never_shown_when_access_is_denied(
    tmp_path: Path, mysql_url_base: str, action: str
) -> None:
    """A live server refusing the password: every action fails, the URL shows masked."""
    server = make_url(mysql_url_base)
    password = "s3cretpw-denied"
    urls = {
        db: f"mysql+pymysql://novadb_nobody:{password}@{server.host}:{server.port or 3306}/{db}"
        for db in FILES
    }
    conf = write_nova_conf(tmp_path / "nova.conf", urls)
    ctx = context()
    params = {"all": True} if action == "purge" else {}
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, testing.State(config={"nova-conf": str(conf)}), action, params)
    assert "novadb_nobody:***@" in failed.value.message
    assert "Access denied for user 'novadb_nobody'" in failed.value.message
    out = state_after(failed.value)
    assert isinstance(out.unit_status, ops.BlockedStatus)
    assert_never_shown(ctx, out, failed.value.message, password)


@pytest.mark.parametrize("action", ["sync", "archive-data"])
def test_password_never_shown_when_the_server_is_unreachable(tmp_path: Path, action: str) -> None:
    password = "s3cretpw"
    urls = {db: f"mysql+pymysql://nova:{password}@127.0.0.1:1/{db}" for db in FILES}
    conf = write_nova_conf(tmp_path / "nova.conf", urls)
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, testing.State(config={"nova-conf": str(conf)}), action)
    assert "mysql+pymysql://nova:***@127.0.0.1:1/api" in failed.value.message
    assert_never_shown(ctx, state_after(failed.value), failed.value.message, password)


def secret_for(urls: dict[str, str]) -> testing.Secret:
    return testing.Secret(
        tracked_content={
            "connection": urls["main"],
            "api-connection": urls["api"],
            "placement-connection": urls["placement"],
        }
    )


def test_database_secret_overrides_nova_conf(
    tmp_path: Path, populated_template: tuple[Path, GeneratedCell]
) -> None:
    template, gen = populated_template
    from_conf = make_cloud(tmp_path / "conf", template, gen)
    from_secret = make_cloud(tmp_path / "secret", template, gen)
    secret = secret_for(sqlite_urls(from_secret.directory))
    state = testing.State(
        config={
            "nova-conf": str(from_conf.conf),
            "database-secret": secret.id,
        },
        secrets={secret},
    )
    conf_before = from_conf.tables()
    ctx = context()
    try:
        out = run_action(ctx, state, "archive-data")
        assert ctx.action_results is not None
        assert ctx.action_results["total"] != "0"
        assert from_secret.count("main", "SELECT count(*) FROM instances WHERE deleted != 0") == 0
        assert from_conf.tables() == conf_before
        assert out.unit_status == ops.ActiveStatus(AT_HEAD_SECRET)
    finally:
        from_conf.dispose()
        from_secret.dispose()


def test_database_secret_without_nova_conf(head_cloud: Cloud, tmp_path: Path) -> None:
    secret = secret_for(sqlite_urls(head_cloud.directory))
    state = testing.State(
        config={
            "nova-conf": str(tmp_path / "absent.conf"),
            "database-secret": secret.id,
        },
        secrets={secret},
    )
    ctx = context()
    out = run_action(ctx, state, "version")
    assert ctx.action_results is not None and ctx.action_results["pending"] == "0"
    assert out.unit_status == ops.ActiveStatus(AT_HEAD_SECRET)


def test_database_secret_with_a_password_is_never_shown(tmp_path: Path) -> None:
    password = "s3cretpw"
    urls = {db: f"mysql+pymysql://nova:{password}@127.0.0.1:1/nova_{db}" for db in FILES}
    secret = secret_for(urls)
    state = testing.State(
        config={"nova-conf": str(tmp_path / "absent.conf"), "database-secret": secret.id},
        secrets={secret},
    )
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, state, "archive-data")
    assert "mysql+pymysql://nova:***@127.0.0.1:1/nova_api" in failed.value.message
    assert isinstance(state_after(failed.value).unit_status, ops.BlockedStatus)
    assert_never_shown(ctx, state_after(failed.value), failed.value.message, password)


def test_database_secret_not_granted(head_cloud: Cloud) -> None:
    ungranted = "secret:" + "c" * 20
    ctx = context()
    with pytest.raises(testing.ActionFailed) as failed:
        run_action(ctx, head_cloud.state(**{"database-secret": ungranted}), "version")
    message = (
        "database-secret cannot be read; grant it to the application (juju grant-secret "
        "<secret> nova-cloud-controller): SecretNotFoundError"
    )
    assert failed.value.message == message
    assert state_after(failed.value).unit_status == ops.BlockedStatus(message)


# -- progress logs ---------------------------------------------------------------------------


class TimedLog(list[str]):
    """ctx.action_logs that also notes when each line arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, message: str) -> None:
        self.times.append(time.monotonic())
        super().append(message)

    def clear(self) -> None:
        self.times.clear()
        super().clear()


def test_progress_is_logged_at_most_once_a_second(head_cloud: Cloud) -> None:
    """~300 instances in batches of 10 with a pause: dozens of batches, a line a second."""
    main, api = head_cloud.engine("main"), head_cloud.engine("api")
    gen = populate(main, api, CloudSpec(instances=300, seed=5))
    ctx = context()
    log = TimedLog()
    ctx.action_logs = log
    started = time.monotonic()
    run_action(
        ctx,
        head_cloud.state(),
        "archive",
        {"batch-size": 10, "until-complete": True, "sleep": 0.05},
    )
    wall = time.monotonic() - started
    got = results(ctx)
    batches = int(got["batches"])
    assert batches >= gen.deleted_instances // 10
    assert wall > 2.0  # long enough for the throttle to matter
    assert log[0] == "main: compute_nodes: 2 rows (total 2)"
    assert log[-1].endswith(f"rows (total {got['total']})")
    # The first line, then at most one a second, then the last one held back.
    gaps = [b - a for a, b in zip(log.times, log.times[1:-1], strict=False)]
    assert all(gap >= 0.99 for gap in gaps), gaps
    assert 2 + int(wall) // 2 <= len(log) <= 2 + int(wall) + 1, (len(log), wall)
    assert len(log) < batches


# -- online-migrate ------------------------------------------------------------------------


def test_online_migrate_fills_compute_ids_and_reports_unmigratable(cloud: Cloud) -> None:
    """Every migratable instance gets its compute_id; a never-scheduled one is reported."""
    with cloud.engine("main").begin() as conn:
        conn.execute(sa.text("UPDATE instances SET compute_id = NULL"))
        conn.execute(
            sa.text(
                "INSERT INTO instances (id, uuid, deleted, availability_zone) "
                "VALUES (9001, 'aaaaaaaa-0000-0000-0000-000000009001', 0, 'nova')"
            )
        )
        total = conn.execute(sa.text("SELECT count(*) FROM instances")).scalar_one()
    ctx = context()
    run_action(ctx, cloud.state(), "online-migrate", {"batch-size": 7})
    results = ctx.action_results
    assert results is not None
    key = "migrations.populate-instance-compute-id"
    assert results[f"{key}.found"] == str(total)
    assert results[f"{key}.done"] == str(total - 1)
    assert results[f"{key}.unmigratable"] == "1"
    assert results["complete"] == "true"
    assert results["more-to-do"] == "false"
    assert "|              Migration              |" in results["output"]
    assert (
        "instances 9001 not migrated: never scheduled (host and node are NULL)"
        in (results["output"])
    )
    with cloud.engine("main").connect() as conn:
        left = (
            conn.execute(sa.text("SELECT id FROM instances WHERE compute_id IS NULL"))
            .scalars()
            .all()
        )
    assert left == [9001]


def test_online_migrate_max_count_says_more_to_do(cloud: Cloud) -> None:
    with cloud.engine("main").begin() as conn:
        conn.execute(sa.text("UPDATE instances SET compute_id = NULL"))
    ctx = context()
    run_action(ctx, cloud.state(), "online-migrate", {"max-count": 5})
    results = ctx.action_results
    assert results is not None
    assert results["done"] == "5"
    assert results["more-to-do"] == "true"
    assert results["complete"] == "false"
